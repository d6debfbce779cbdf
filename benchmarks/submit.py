"""Bulk submission: how fast ``Client.submit_requests`` queues jobs, and the Redis memory each queued job holds.

It starts a private redis-server (no worker: every job stays queued), streams N small text-classification
requests (a generator, or with ``--jsonl`` a JSON lines file read as ``pipeq submit --from`` reads it) through
``Client.submit_requests``, and prints jobs/s from the first request to the last publish, then Redis's
``used_memory`` growth divided by N, split into the queue's messages, the job records and the listing index,
and the client's peak RSS.

``--send-task`` publishes each job with Celery's ``send_task`` instead (pipeq's publishing before it pipelined
chunks), everything else equal: the comparison.

    .venv/bin/python -m benchmarks.submit [--jobs 100000] [--jsonl] [--send-task]
"""

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import redis

from devtools.local_services import isolate_environment, redis_server
from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import Settings
from pipeq.core import job_index, publish
from pipeq.producer.client import Client
from pipeq.producer.jsonl import max_line_bytes, read_requests

TASK = "text-classification"
MODEL = "bench"
_WORDS = "great terrible solid flimsy comfortable noisy reliable disappointing excellent cheap sturdy".split()
_THINGS = "blender headphones jacket backpack novel keyboard vacuum tent charger printer speaker".split()


def requests(count: int) -> Iterator[dict]:
    """``count`` small text-classification requests, a few dozen characters of text each."""
    for i in range(count):
        text = f"review {i}: the {_THINGS[i % len(_THINGS)]} is {_WORDS[i % len(_WORDS)]}, would buy again"
        yield {"task": TASK, "input": text, "model": MODEL}


def settings_for(url: str) -> Settings:
    """Broker in db 0, records in db 1, one catalogue model that is never loaded (no worker runs)."""
    return Settings(
        broker_url=f"{url}/0",
        result_backend=f"{url}/1",
        s3_endpoint_url="http://127.0.0.1:9",  # never reached: results are only read from finished jobs
        s3_region="us-east-1",
        models=[ModelEntry(name=MODEL, id="pipeq-bench/never-loaded", task=TASK)],
    )


def memory_usage(client: redis.Redis, key: str) -> int:
    return client.memory_usage(key, samples=0) or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--jsonl", action="store_true", help="read the requests from a JSON lines file")
    parser.add_argument("--send-task", action="store_true", help="publish one job at a time with send_task")
    args = parser.parse_args()
    if args.send_task:
        publish._pipelines = lambda app, channel: False
    isolate_environment("bench")
    with ExitStack() as stack:
        url = stack.enter_context(redis_server())
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeq-submit-"))
        broker, records = redis.Redis.from_url(f"{url}/0"), redis.Redis.from_url(f"{url}/1")
        client = Client(settings_for(url))
        source: Iterator[dict] = requests(args.jobs)
        if args.jsonl:
            path = Path(workdir) / "jobs.jsonl"
            with path.open("w") as out:
                out.writelines(json.dumps(request) + "\n" for request in source)
            stream = stack.enter_context(path.open("rb"))
            source = read_requests(stream, [], max_line_bytes(client.settings.limits))
        before = broker.info("memory")["used_memory"]
        started = time.perf_counter()
        ids = client.submit_requests(source, on_progress=lambda done: None)
        elapsed = time.perf_counter() - started
        used = broker.info("memory")["used_memory"] - before
        queue = sum(
            memory_usage(broker, key.decode()) for key in broker.scan_iter("pipeq*") if broker.type(key) == b"list"
        )
        index = sum(memory_usage(records, key) for key in (job_index.ALL_KEY, job_index.model_key(MODEL)))
        sample = ids[:: max(1, len(ids) // 1000)]
        record = sum(memory_usage(records, f"pipeq:job:{job_id}") for job_id in sample) / len(sample)
        n = len(ids)
        how = ("a JSON lines file" if args.jsonl else "a generator") + (", send_task" if args.send_task else "")
        print(f"submitted {n} jobs from {how} in {elapsed:.1f} s: {n / elapsed:,.0f} jobs/s")
        print(f"Redis memory per queued job: {used / n:,.0f} B (used_memory growth / jobs)")
        print(f"  queue message {queue / n:,.0f} B, record ~{record:,.0f} B, listing index {index / n:,.0f} B")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"client peak RSS {peak:,.0f} MiB (inputs streamed: only the ids are held)")
        client.close()


if __name__ == "__main__":
    main()
