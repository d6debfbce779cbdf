"""Redis Sentinel failover: how many accepted jobs a failover loses, with the defaults and with a durable submit.

It starts a private Redis primary, its replica and three sentinels (devtools.local_services.sentinel_group), then,
for each mode, submits small text jobs in chunks from a thread as fast as the client goes, and kills the primary
(SIGKILL) mid-stream ``--failovers`` times, waiting for the sentinels to promote the replica and restarting the old
primary as its replica between failovers. No worker runs: a job counts as kept when the new primary holds both its
record and its message, and as lost when its submit returned but either is missing. Submits that raise (no
primary, NotReplicated) are not accepted, and counted apart.

Modes: ``default`` (submit_replicas = 0: a submit returns once the primary has the jobs; Redis replicates
afterwards) and ``durable`` (submit_replicas = 1: Redis WAIT until the replica has them, pipeq.core.replication).

    .venv/bin/python -m benchmarks.failover [--failovers 5] [--chunk 20]
"""

import argparse
import json
import statistics
import threading
import time
from collections import Counter
from contextlib import suppress

import redis

from devtools.local_services import isolate_environment, sentinel_group
from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import Settings
from pipeq.core.records import RecordStore
from pipeq.producer.client import Client

TASK = "text-classification"
MODEL = "bench"
QUEUE = "failover"


def settings_for(group, db: int, replicas: int) -> Settings:
    """Broker in ``db``, records in ``db + 1``; one catalogue model that is never loaded (no worker runs)."""
    return Settings(
        broker_url=group.url(db),
        result_backend=group.url(db + 1),
        s3_endpoint_url="http://127.0.0.1:9",  # never reached
        s3_region="us-east-1",
        submit_replicas=replicas,
        models=[ModelEntry(name=MODEL, id="pipeq-bench/never-loaded", task=TASK, queue=QUEUE)],
    )


class Submitter(threading.Thread):
    """Submits chunks of jobs until stopped, remembering the ids of each accepted chunk and how long it took."""

    def __init__(self, client: Client, prefix: str, chunk: int) -> None:
        super().__init__(daemon=True)
        self.client, self.prefix, self.chunk = client, prefix, chunk
        self.accepted: list[str] = []
        self.refused: Counter = Counter()
        self.latencies: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        number = 0
        while not self.stopping.is_set():
            number += 1
            ids = [f"{self.prefix}-{number}-{i}" for i in range(self.chunk)]
            started = time.perf_counter()
            try:
                self.client.submit_many(TASK, [f"review {i} of chunk {number}" for i in range(self.chunk)], job_ids=ids)
            except Exception as exc:  # no primary, or not replicated: not accepted
                self.refused[type(exc).__name__] += 1
                time.sleep(0.05)
                continue
            self.latencies.append(time.perf_counter() - started)
            self.accepted.extend(ids)


def kept(group, db: int) -> set[str]:
    """The ids of jobs whose record and message the primary holds."""
    with redis.Redis(port=group.primary_port(), db=db) as broker:
        messages = {json.loads(raw)["headers"]["id"] for raw in broker.lrange(QUEUE, 0, -1)}
    with redis.Redis(port=group.primary_port(), db=db + 1) as records:
        stored = {key.decode().removeprefix(RecordStore.key("")) for key in records.scan_iter(RecordStore.key("*"))}
    return messages & stored


def run_mode(group, mode: str, db: int, failovers: int, chunk: int, replica_lag_s: float) -> dict:
    group.wait_for_replica()
    with redis.Redis(port=group.primary_port()) as primary:
        primary.flushall()  # each run from an empty Redis: a replica's full sync stays quick
    client = Client(settings_for(group, db, 1 if mode == "durable" else 0))
    submitter = Submitter(client, mode, chunk)
    outages = []
    submitter.start()
    for _ in range(failovers):
        time.sleep(1.5)
        outages.append(group.fail_over(replica_lag_s=replica_lag_s))
        time.sleep(1.0)
        group.wait_for_replica()
    submitter.stopping.set()
    submitter.join(30)
    with suppress(Exception):
        client.close()
    lost = set(submitter.accepted) - kept(group, db)
    seconds = sum(outages) + failovers * (2.5 + replica_lag_s)
    return {
        "mode": mode,
        "replica_lag_s": replica_lag_s,
        "failovers": failovers,
        "accepted": len(submitter.accepted),
        "lost": len(lost),
        "lost_per_failover": len(lost) / failovers,
        "refused_submits": dict(submitter.refused),
        "submit_p50_ms": 1000 * statistics.median(submitter.latencies),
        "submit_p99_ms": 1000 * statistics.quantiles(submitter.latencies, n=100)[98],
        "jobs_per_s": len(submitter.accepted) / seconds,
        "no_primary_s": statistics.median(outages),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=20, help="jobs per submit call")
    parser.add_argument(
        "--replica-lag",
        type=float,
        action="append",
        help="seconds the replica is stalled (SIGSTOP) before the primary dies; repeat for several (default: 0, 0.5)",
    )
    args = parser.parse_args()
    isolate_environment()
    rows = []
    with sentinel_group() as group:
        db = 0
        for lag in args.replica_lag or [0.0, 0.5]:
            for mode in ("default", "durable"):
                rows.append(run_mode(group, mode, db, args.failovers, args.chunk, lag))
                print(json.dumps(rows[-1]), flush=True)
                db += 2
    print(
        f"\n| replica lag | mode | accepted | lost | lost per failover | refused submits |"
        f" submit p50 / p99 ({args.chunk} jobs) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        refused = sum(row["refused_submits"].values())
        print(
            f"| {row['replica_lag_s']:g} s | {row['mode']} | {row['accepted']} | {row['lost']} |"
            f" {row['lost_per_failover']:.1f} | {refused} |"
            f" {row['submit_p50_ms']:.1f} / {row['submit_p99_ms']:.1f} ms |"
        )
    default, durable = rows[:2]
    print(f"\ndurable / default: submit latency {durable['submit_p50_ms'] / default['submit_p50_ms']:.2f}x")


if __name__ == "__main__":
    main()
