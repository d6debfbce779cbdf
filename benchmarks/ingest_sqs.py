"""SQS ingestion: how fast one ``SqsSource`` turns S3 notifications waiting in a queue into submitted jobs.

It starts a private redis-server (no worker: every job stays queued) and moto's S3 server, which serves SQS too
(in this very process: its request handling shares the GIL with the ingester, so the figure is a floor; its SQS
bookkeeping is made linear first, see ``patch_moto``), makes a queue, a bucket and one ``[[ingest]]`` rule, and
announces N objects on the queue. By default it sends S3's own notification messages itself (``{"Records": [...]}``,
one object per message as S3 sends them, keys URL-encoded), 10 per ``send_message_batch``: much faster than
PUTting the objects, and the messages are the same. With ``--real-puts`` it PUTs N objects into a bucket whose
notifications go to the queue and lets the server announce them (plus its ``s3:TestEvent``). Then it times one
``SqsSource`` (receives of 10 messages, one ``delete_message_batch`` per receive) from its start until N jobs are
submitted, and prints objects/s, and how that time splits between handling messages (parsing, submitting the
jobs) and the calls to SQS.

    .venv/bin/python -m benchmarks.ingest_sqs [--objects 5000] [--real-puts]
"""

import argparse
import hashlib
import json
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote_plus

from devtools.local_services import isolate_environment, redis_server, s3_server
from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import IngestRule, Settings
from pipeq.core.storage import s3_client, sqs_client
from pipeq.ingest.ingester import Ingester
from pipeq.ingest.sqs import SqsSource
from pipeq.ops import metrics
from pipeq.producer.client import Client

BUCKET = "bench-media"
PREFIX = "in/"
TASK = "automatic-speech-recognition"
MODEL = "bench"


def settings_for(redis_url: str, s3_endpoint: str) -> Settings:
    """Broker in db 0, records in db 1, one rule, one catalogue model that is never loaded (no worker runs)."""
    return Settings(
        broker_url=f"{redis_url}/0",
        result_backend=f"{redis_url}/1",
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        models=[ModelEntry(name=MODEL, id="pipeq-bench/never-loaded", task=TASK)],
        allowed_object_prefixes=[f"s3://{BUCKET}/"],
        ingest=[IngestRule(bucket=BUCKET, prefix=PREFIX, task=TASK, model=MODEL)],
        ingest_id_key="pipeq-bench-ingest-id-key-0123456789",
    )


def notification(n: int) -> str:
    """S3's notification of the PUT of object ``n`` (a key with a space, as S3 encodes it)."""
    key = f"{PREFIX}call {n:06d}.wav"
    obj = {
        "key": quote_plus(key),
        "size": 1024,
        "eTag": hashlib.md5(key.encode()).hexdigest(),
        "sequencer": f"{n:016X}",
    }
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-12-01T00:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"}, "object": obj},
    }
    return json.dumps({"Records": [record]})


def announce(sqs, queue: str, count: int) -> None:
    for start in range(0, count, 10):
        entries = [{"Id": str(n), "MessageBody": notification(n)} for n in range(start, min(start + 10, count))]
        sqs.send_message_batch(QueueUrl=queue, Entries=entries)


def put_objects(s3, sqs, queue: str, count: int) -> None:
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    only_in = {"Key": {"FilterRules": [{"Name": "prefix", "Value": PREFIX}]}}
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": only_in}]
        },
    )
    for n in range(count):
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}call {n:06d}.wav", Body=f"RIFF {n}".encode())


def timed(obj: Any, *methods: str) -> list[float]:
    """Wrap ``obj``'s ``methods`` to add up the seconds spent in them, in the list returned."""
    total = [0.0]

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                total[0] += time.perf_counter() - started

        return call

    for name in methods:
        setattr(obj, name, wrap(getattr(obj, name)))
    return total


def waiting(sqs, queue: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


def patch_moto() -> None:
    """Make moto's SQS bookkeeping cheap enough for a queue of thousands: it reads the clock through two datetime
    conversions for every message of the queue at each send, receive and delete, and checks each message it hands out
    against the retention period by computing every attribute of the queue (each a pass over its messages): a
    receive of 10 from a queue of 5,000 took seconds. The same answers, from ``time.time()`` and the queue's
    retention period alone: what is timed is the ingester, not the fake server's quadratic bookkeeping."""
    import moto.sqs.models as sqs_models

    clock, clock_ms = sqs_models.unix_time, sqs_models.unix_time_millis
    sqs_models.unix_time = lambda dt=None: time.time() if dt is None else clock(dt)
    sqs_models.unix_time_millis = lambda dt=None: time.time() * 1000 if dt is None else clock_ms(dt)

    def valid(self: Any, queue_name: str, message: Any) -> bool:
        retention_s = int(self.get_queue(queue_name).message_retention_period)
        return retention_s + message.sent_timestamp / 1000 > time.time()

    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--real-puts", action="store_true", help="PUT the objects and let the S3 server announce them")
    args = parser.parse_args()
    isolate_environment("bench")
    patch_moto()
    with ExitStack() as stack:
        redis_url, s3_endpoint = stack.enter_context(redis_server()), stack.enter_context(s3_server())
        settings = settings_for(redis_url, s3_endpoint)
        s3, sqs = s3_client(settings), sqs_client(settings)
        s3.create_bucket(Bucket=BUCKET)
        queue = sqs.create_queue(QueueName="bench-ingest")["QueueUrl"]
        started = time.perf_counter()
        if args.real_puts:
            put_objects(s3, sqs, queue, args.objects)
            how = "PUT, announced by the S3 server"
        else:
            announce(sqs, queue, args.objects)
            how = "announced with send_message_batch"
        print(f"{args.objects} objects {how} in {time.perf_counter() - started:.1f} s; {waiting(sqs, queue)} messages")

        client = Client(settings)
        source = SqsSource(Ingester(settings, client), [queue], wait_s=1)
        in_sqs = timed(source.sqs, "receive_message", "delete_message_batch")
        in_ingester = timed(source, "handle")
        submitted = metrics.ingest_events.labels("sqs", "submitted")
        stop = threading.Event()
        thread = threading.Thread(target=source.run, args=(stop,))
        started = time.perf_counter()
        thread.start()
        try:
            while submitted._value.get() < args.objects:
                time.sleep(0.005)
            elapsed, handling, in_calls = time.perf_counter() - started, in_ingester[0], in_sqs[0]
            while waiting(sqs, queue):  # the last batch's delete
                time.sleep(0.005)
        finally:
            stop.set()
            thread.join()
            source.close()
        jobs = len(client.store.redis.keys("pipeq:job:*"))
        print(
            f"one SqsSource: {args.objects} objects to {jobs} submitted jobs in {elapsed:.2f} s:"
            f" {args.objects / elapsed:,.0f} objects/s; the queue left empty"
        )
        print(
            f"  of which {handling:.2f} s handling messages (parse, submit: {args.objects / handling:,.0f} objects/s"
            f" in the ingester alone) and {in_calls:.2f} s in receive_message and delete_message_batch"
        )
        client.close()


if __name__ == "__main__":
    main()
