"""Polling a large prefix: what one pass costs, and the Redis memory ingestion keeps per remembered object.

A private redis-server and moto's S3 server (in this process: objects are put straight into its backend, which
takes seconds for 100,000 of them where PUTs would take minutes), one ``[[ingest]]`` rule on ``in/``, and
``--objects`` objects under it. Passes of one Poller, each timed, with the S3 list requests and the Redis commands
it made:

* the first pass (it primes the prefix: marks every object seen);
* a pass with nothing new;
* a pass after ``--new`` objects arrived.

With ``--ordered`` the keys grow (``in/000000001``, ...) and the poller lists everything only every
``--full-every`` passes (``StartAfter`` between). Then the Redis memory of the seen state, divided by the objects
remembered. Runs the same way on code before the bounded seen state (no ``full_every`` there): compare the two.

    .venv/bin/python -m benchmarks.ingest_poll [--objects 100000] [--new 100] [--ordered --full-every 10]
"""

import argparse
import inspect
import time
import uuid
from typing import Any

import redis

from devtools.local_services import isolate_environment, redis_server, s3_server

BUCKET = "media"
ACCOUNT = "123456789012"  # moto's default account


def redis_calls(client: redis.Redis) -> int:
    """Commands the server has run so far (INFO commandstats)."""
    return sum(stats["calls"] for stats in client.info("commandstats").values())


def put_objects(keys: list[str]) -> None:
    """Objects straight into the in-process moto server's backend (no HTTP, no notifications)."""
    from moto.s3.models import s3_backends

    backend = s3_backends[ACCOUNT]["aws"]
    for key in keys:
        backend.put_object(BUCKET, key, key.encode(), disable_notification=True)


def keys_for(count: int, start: int, ordered: bool) -> list[str]:
    if ordered:
        return [f"in/{n:09d}.txt" for n in range(start, start + count)]
    return [f"in/{uuid.uuid4().hex}.txt" for _ in range(count)]


def timed_pass(poller: Any, state: redis.Redis, lists: list[int]) -> dict[str, float]:
    """One pass: seconds, jobs submitted, S3 list requests, Redis commands."""
    calls, listed = redis_calls(state), sum(lists)
    started = time.perf_counter()
    ids = poller.poll()
    return {
        "seconds": time.perf_counter() - started,
        "jobs": len(ids),
        "list_requests": sum(lists) - listed,
        "redis_commands": redis_calls(state) - calls - 1,  # the INFO itself
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=100, help="objects that arrive before the last pass")
    parser.add_argument("--ordered", action="store_true", help="keys that grow, and --full-every")
    parser.add_argument("--full-every", type=int, default=10)
    args = parser.parse_args()
    isolate_environment("bench")

    from pipeq.config.settings import IngestRule, Settings
    from pipeq.core import storage
    from pipeq.ingest.ingester import Ingester
    from pipeq.ingest.polling import Poller
    from pipeq.producer.client import Client

    with redis_server() as redis_url, s3_server() as s3_url:
        settings = Settings(
            broker_url=f"{redis_url}/0",
            result_backend=f"{redis_url}/1",
            s3_endpoint_url=s3_url,
            s3_region="us-east-1",
            allowed_object_prefixes=[f"s3://{BUCKET}/"],
            models=[{"name": "m", "id": "pipeq-bench/never-loaded", "task": "text-classification"}],
            ingest=[IngestRule(bucket=BUCKET, prefix="in/", suffix=".txt", task="text-classification")],
            ingest_id_key="bench-ingest-id-key-0123456789abcdefghij",
        )
        s3 = storage.s3_client(settings)
        s3.create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        put_objects(keys_for(args.objects, 0, args.ordered))
        print(f"{args.objects:,} objects put in {time.perf_counter() - started:.1f} s")

        client = Client(settings)
        state = client.store.redis
        ingester = Ingester(settings, client)
        options = {}
        if args.ordered and "full_every" in inspect.signature(Poller).parameters:
            options["full_every"] = args.full_every
        poller = Poller(ingester, interval=1.0, **options)
        lists: list[int] = []
        poller.s3.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: lists.append(1))

        memory_before = state.info("memory")["used_memory"]
        passes = {"first pass (primes: marks all seen)": timed_pass(poller, state, lists)}
        remembered = state.info("memory")["used_memory"] - memory_before
        passes["a pass with nothing new"] = timed_pass(poller, state, lists)
        put_objects(keys_for(args.new, args.objects, args.ordered))
        passes[f"a pass after {args.new} new objects"] = timed_pass(poller, state, lists)
        client.close()

    shown = f", ordered keys, a full listing every {options['full_every']} passes" if options else ""
    print(f"\none rule on in/, {args.objects:,} objects{shown}")
    print(f"{'':40}{'seconds':>9}{'jobs':>7}{'S3 lists':>10}{'Redis cmds':>12}")
    for name, row in passes.items():
        print(f"{name:40}{row['seconds']:9.2f}{row['jobs']:7d}{row['list_requests']:10d}{row['redis_commands']:12,d}")
    print(f"\nRedis memory of the seen state: {remembered / args.objects:.0f} bytes per remembered object")


if __name__ == "__main__":
    main()
