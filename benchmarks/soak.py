"""Chaos soak: N jobs through K pipeq workers while faults are injected, then what survived, per broker.

Everything runs offline on loopback: a private redis-server that keeps its data across kill -9 (append-only,
fsync on every write, its own data directory), moto's S3 server holding the media, tiny random models (built once
under ``.bench/soak-models``), K ``pipeq worker`` subprocesses, the ``pipeq webhooks worker`` and a webhook receiver.
Jobs are mixed: text-classification on inline text (half), image-classification on PNG/JPEG objects and
automatic-speech-recognition on espeak-ng WAV/FLAC objects (a quarter each), every fifth with a webhook. They are
submitted at a steady ``--rate`` (ids of their own, so a submission that failed is retried with the same ids), and
each accepted job's submit time is kept. Meanwhile, every ``--chaos-every`` seconds, one fault chosen at random
(seeded): kill -9 a worker (a replacement starts at once); kill -9 redis-server and start it again on the same port
(for ``--broker sentinel``: fail the primary over instead); stop the S3 server for ``--outage-s`` and start it again
on the same port; stop the webhook receiver for ``--outage-s`` and start it again. Chaos stops when the last job is
submitted; then the soak waits until every accepted job is final (or ``--settle-timeout``) and every completed
webhook arrived (or a minute).

What it counts, per broker: jobs accepted, succeeded, failed by error type, lost (accepted, never final: must be 0);
jobs run more than once (records with ``attempts`` > 1; record writes that started a job twice, or by two workers);
duplicate results (a job whose final record was written twice, as MONITOR sees Redis carry out the record scripts'
SETs, or whose succeeded webhooks carried different results); duplicate webhooks (more than one distinct
``webhook-id`` per job and event) apart from redeliveries (the same id again, e.g. after a flap cut the answer off);
submit-to-final latency p50 / p99; and per fault kind how many were injected and how long until jobs succeed again
(see ``benchmarks.soak_measure.recovery``). Workers run with ``dead_after_s = --dead-after-s`` (5 s; default 30 s),
so a killed worker's jobs come back within seconds. Brokers: ``redis`` (broker db 0, records db 1 of the same
server), ``sentinel`` (``devtools.local_services.sentinel_group()``), ``rabbitmq``
(``devtools.local_services.rabbitmq_server()``, records in the soak's Redis); several ``--broker`` run one after
the other into one table. Printed as text and as a Markdown table; written to ``.bench/soak.json``; each run's
logs (workers, webhook worker, Redis) and a line per job (``jobs.jsonl``) are kept under ``.bench/soak-logs/<broker>/``.

    .venv/bin/python -m benchmarks.soak [--jobs 20000] [--broker redis] [--workers 3] [--chaos-every 5] [--seed 0]
"""

from devtools.local_services import isolate_environment

isolate_environment("soak")  # before transformers is imported

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks import soak_chaos as chaos  # noqa: E402
from benchmarks.soak_measure import (  # noqa: E402
    RecordWriteLog,
    duplicate_results,
    job_lines,
    job_outcomes,
    latency,
    message_whereabouts,
    receipts_of,
    recovery,
    reruns,
    webhook_figures,
)
from benchmarks.soak_services import PersistentRedis, RestartableS3, WorkerPool, start_webhook_worker, stop_process  # noqa: E402
from benchmarks.throughput import BENCH, make_texts, publish  # noqa: E402
from devtools import config_files, local_services  # noqa: E402
from devtools.media import encode_audio, picture, speech  # noqa: E402
from devtools.tiny_models import build_ctc_asr, build_image_classification, build_text_classification  # noqa: E402
from pipeq.config.catalogue import ModelEntry  # noqa: E402
from pipeq.config.settings import Settings, Webhooks  # noqa: E402
from pipeq.core.records import JobRecord, RecordStore  # noqa: E402
from pipeq.core.redis_client import redis_client  # noqa: E402
from pipeq.core.storage import s3_client  # noqa: E402
from pipeq.producer.client import Client  # noqa: E402
from pipeq.webhooks.dead_letters import DeadLetters  # noqa: E402
from pipeq.webhooks.signing import new_secret  # noqa: E402
from tests.support.receiver import Receiver  # noqa: E402

BROKERS = ("redis", "sentinel", "rabbitmq")
BUCKET = "soak-media"
TASK_SHARES = {"text-classification": 0.5, "image-classification": 0.25, "automatic-speech-recognition": 0.25}
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "text-classification": build_text_classification,
    "image-classification": build_image_classification,
    "automatic-speech-recognition": build_ctc_asr,
}
WEBHOOK_SHARE = 0.2
MEDIA_PER_TASK = 12
SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "please call me back tomorrow morning",
    "the train to the city leaves at nine",
    "thank you for your order",
    "it is going to rain this afternoon",
    "turn left at the second traffic light",
)
LOGS = BENCH / "soak-logs"


@dataclass
class Endpoints:
    """Where one broker run's broker and records are, how to watch the records' server, and the faults only this
    broker has (beside killing workers, stopping S3 and flapping the receiver)."""

    broker_url: str
    records_url: str
    records_server: Callable[[], str]
    faults: dict[str, chaos.Action] = field(default_factory=dict)
    broker_database: Callable[[], str] | None = None
    """Where the broker's messages are now, when it is a Redis database (for the whereabouts of lost jobs)."""


@dataclass
class Submitted:
    """What the producer got done: each accepted job's submit time (time.time() when the accepted call began),
    and the errors of the calls that failed (and were retried with the same job ids)."""

    accepted: dict[str, float] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)


# -- preparing: models, media, jobs, settings ------------------------------------------------------------------------


def build_models() -> dict[str, Path]:
    """One tiny random model per task, built under ``.bench/soak-models`` unless already there."""
    models = {}
    for task, build in BUILDERS.items():
        path = BENCH / "soak-models" / task
        if not (path / "config.json").is_file():
            print(f"building the tiny {task} model ...", flush=True)
            build(path)
        models[task] = path
    return models


def make_media() -> dict[str, dict[str, bytes]]:
    """Object keys and bytes per media task: pictures as PNG and JPEG, espeak-ng speech as WAV and FLAC."""
    images = {
        f"images/{n:02d}.{fmt.lower()}": picture(96, 64, seed=n, fmt=fmt)
        for n, fmt in zip(range(MEDIA_PER_TASK), ["PNG", "JPEG"] * MEDIA_PER_TASK, strict=False)
    }
    clips = {}
    for n in range(MEDIA_PER_TASK):
        fmt = ["WAV", "FLAC"][n % 2]
        clips[f"speech/{n:02d}.{fmt.lower()}"] = encode_audio(speech(SENTENCES[n % len(SENTENCES)]), fmt)
    return {"image-classification": images, "automatic-speech-recognition": clips}


def upload(s3: Any, media: dict[str, dict[str, bytes]]) -> dict[str, list[str]]:
    """Put the media in the soak's bucket; their ``s3://`` URIs per task."""
    s3.create_bucket(Bucket=BUCKET)
    uris: dict[str, list[str]] = {}
    for task, objects in media.items():
        for key, data in objects.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        uris[task] = [f"s3://{BUCKET}/{key}" for key in objects]
    return uris


def missing_objects(s3: Any, media: dict[str, dict[str, bytes]]) -> Callable[[], int]:
    """A check counting the uploaded objects the S3 server no longer has, or has with other bytes."""

    def count() -> int:
        missing = 0
        for objects in media.values():
            for key, data in objects.items():
                try:
                    missing += s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() != data
                except Exception:
                    missing += 1
        return missing

    return count


def make_requests(
    count: int, prefix: str, uris: dict[str, list[str]], webhook: str, rng: random.Random
) -> list[dict[str, Any]]:
    """``count`` job requests of mixed tasks (TASK_SHARES), a WEBHOOK_SHARE of them with a webhook, ids of their
    own."""
    texts = make_texts(count, seed=rng.randrange(1 << 30))
    tasks = rng.choices(list(TASK_SHARES), weights=list(TASK_SHARES.values()), k=count)
    requests = []
    for n, task in enumerate(tasks):
        request: dict[str, Any] = {"id": f"{prefix}-{n:06d}", "task": task, "model": f"soak-{task}"}
        request["input"] = texts[n] if task == "text-classification" else rng.choice(uris[task])
        if rng.random() < WEBHOOK_SHARE:
            request["webhook"] = webhook
        requests.append(request)
    return requests


def soak_settings(
    endpoints: Endpoints,
    s3_url: str,
    models: dict[str, Path],
    dead_after_s: float,
    visibility_timeout: int | None,
    submit_replicas: int = 0,
) -> Settings:
    """One catalogue entry per tiny model (small micro-batches, as in the tests), media readable in the soak's
    bucket, signed webhooks to loopback retried within seconds, and a short ``dead_after_s``; ``visibility_timeout``
    (webhook deliveries) where given."""
    entries = [
        ModelEntry(
            name=f"soak-{task}", id=str(path), task=task, max_batch_jobs=16, max_wait_s=0.05, pipeline_batch_size=8
        )
        for task, path in models.items()
    ]
    return Settings(
        broker_url=endpoints.broker_url,
        result_backend=endpoints.records_url,
        s3_endpoint_url=s3_url,
        s3_region="us-east-1",
        models=entries,
        allowed_object_prefixes=[f"s3://{BUCKET}/"],
        dead_after_s=dead_after_s,
        visibility_timeout=visibility_timeout,
        submit_replicas=submit_replicas,
        webhooks=Webhooks(secret=new_secret(), allow_private=True, timeout=5.0, max_backoff=10.0),
    )


# -- brokers ---------------------------------------------------------------------------------------------------------


@contextmanager
def broker_endpoints(broker: str, redis: PersistentRedis) -> Iterator[Endpoints]:
    """The broker of one run and its own faults; records stay in ``redis`` unless the broker is Sentinel's."""
    if broker == "redis":
        faults = {"restart_redis": chaos.restart_redis(redis)}
        yield Endpoints(f"{redis.url}/0", f"{redis.url}/1", lambda: redis.url, faults, lambda: f"{redis.url}/0")
    elif broker == "sentinel":
        with sentinel_endpoints() as endpoints:
            yield endpoints
    elif broker == "rabbitmq":
        with rabbitmq_endpoints(redis) as endpoints:
            yield endpoints
    else:
        raise ValueError(f"unknown broker {broker!r}; one of {', '.join(BROKERS)}")


@contextmanager
def sentinel_endpoints() -> Iterator[Endpoints]:
    """A Sentinel group holding broker (db 0) and records (db 1); its fault is a failover of the primary."""
    with local_services.sentinel_group() as group:

        def primary() -> str:
            return f"redis://127.0.0.1:{group.primary_port()}"

        faults = {"fail_over": chaos.fail_over(group)}
        yield Endpoints(group.url(0), group.url(1), primary, faults, lambda: f"{primary()}/0")


@contextmanager
def rabbitmq_endpoints(redis: PersistentRedis) -> Iterator[Endpoints]:
    """A private rabbitmq-server as the broker, records in ``redis``, whose restarts stay a fault."""
    with local_services.rabbitmq_server() as url:
        yield Endpoints(url, f"{redis.url}/1", lambda: redis.url, {"restart_redis": chaos.restart_redis(redis)})


# -- running ---------------------------------------------------------------------------------------------------------


def warm_up(client: Client, uris: dict[str, list[str]]) -> None:
    """A few jobs of each task, waited for: the models load and the workers answer before the clock starts."""
    ids = []
    for task in TASK_SHARES:
        inputs = make_texts(3) if task == "text-classification" else uris[task][:3]
        ids += client.submit_many(task, inputs, model=f"soak-{task}")
    records = client.wait_many(ids, timeout=300)
    failed = [record.error for record in records.values() if record.state != "succeeded"]
    if failed:
        raise RuntimeError(f"warm-up jobs failed: {failed}")


def submit_steadily(
    client: Client, requests: list[dict[str, Any]], rate: float, report: Callable[[], str]
) -> Submitted:
    """Submit ``requests`` at ``rate`` jobs/s, those due at each moment in one call; a call that fails (Redis
    restarting, ...) is retried with the same job ids until accepted. Prints progress every 15 s."""
    submitted = Submitted()
    started = printed = time.monotonic()
    done = 0
    while done < len(requests):
        due = min(len(requests), int((time.monotonic() - started) * rate) + 1)
        if due <= done:
            time.sleep(min(0.05, (done + 1 - (time.monotonic() - started) * rate) / rate))
            continue
        chunk, at = requests[done:due], time.time()
        try:
            client.submit_requests(chunk)
        except Exception as exc:
            submitted.errors[type(exc).__name__] += 1
            time.sleep(0.1)
            continue
        submitted.accepted.update((request["id"], at) for request in chunk)
        done = due
        if time.monotonic() - printed > 15:
            printed = time.monotonic()
            print(f"  {done} submitted in {printed - started:.0f} s; {report()}", flush=True)
    return submitted


def lost_whereabouts(endpoints: Endpoints, lost_ids: list[str]) -> dict[str, list[str]]:
    """Where a Redis broker still holds the messages of jobs never final (none for RabbitMQ)."""
    if not lost_ids or endpoints.broker_database is None:
        return {}
    broker = redis_client(endpoints.broker_database())
    try:
        return retried(lambda: message_whereabouts(broker, lost_ids))
    finally:
        broker.close()


def read_records(store: RecordStore, ids: list[str]) -> dict[str, JobRecord | None]:
    """The jobs' records, read in chunks (retried while Redis is away)."""
    records: dict[str, JobRecord | None] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        records.update(zip(chunk, retried(lambda chunk=chunk: store.get_many(chunk)), strict=True))
    return records


def retried(call: Callable[[], Any], attempts: int = 100) -> Any:
    """``call()``, tried again every 0.1 s while it raises (a service restarting), up to ``attempts`` times."""
    for _ in range(attempts - 1):
        try:
            return call()
        except Exception:
            time.sleep(0.1)
    return call()


def wait_final(store: RecordStore, ids: list[str], timeout_s: float) -> float:
    """Block until every job is final or ``timeout_s`` passed; the seconds waited."""
    started = printed = time.monotonic()
    pending = list(ids)
    while pending and time.monotonic() - started < timeout_s:
        states: list[str | None] = []
        for start in range(0, len(pending), 1000):
            chunk = pending[start : start + 1000]
            states += retried(lambda chunk=chunk: store.states(chunk))
        pending = [job_id for job_id, state in zip(pending, states, strict=True) if state not in FINAL]
        if pending and time.monotonic() - printed > 10:
            printed = time.monotonic()
            print(f"  waiting for {len(pending)} job(s) to finish ...", flush=True)
        time.sleep(0.5 if pending else 0)
    return time.monotonic() - started


FINAL = {"succeeded", "failed", "canceled", "expired"}


def wait_webhooks(receiver: Receiver, job_ids: set[str], timeout_s: float) -> None:
    """Block until the receiver has a completed webhook of each job or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = {request.body.split(b'"id":"', 1)[-1].split(b'"', 1)[0].decode() for request in list(receiver.requests)}
        if job_ids <= got:
            return
        time.sleep(0.5)


def run_soak(
    broker: str, args: argparse.Namespace, models: dict[str, Path], media: dict[str, dict[str, bytes]]
) -> dict[str, Any]:
    """One broker's soak: services up, workers ready, jobs submitted under chaos, then the figures."""
    logs = LOGS / broker
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeq-soak-")))
        redis = PersistentRedis(workdir / "redis")
        redis.start()
        stack.callback(lambda: shutil.copy(redis.data_dir / "redis.log", logs / "redis.log"))
        stack.callback(redis.stop)
        endpoints = stack.enter_context(broker_endpoints(broker, redis))
        s3 = RestartableS3()
        s3.start()
        stack.callback(s3.stop)
        receiver = stack.enter_context(Receiver())
        replicas = args.submit_replicas if args.submit_replicas is not None else int(broker == "sentinel")
        settings = soak_settings(endpoints, s3.url, models, args.dead_after_s, args.visibility_timeout, replicas)
        config = config_files.write_config(settings, workdir / "soak.toml")
        storage = s3_client(settings)
        uris = upload(storage, media)
        writes = RecordWriteLog(endpoints.records_server, re.compile(rf"soak-{broker}-\d+") if args.trace else None)
        writes.start()

        pool = WorkerPool(config, logs, args.workers)
        stack.callback(pool.stop)
        pool.start()
        webhooks = start_webhook_worker(config, logs / "webhooks.log")
        stack.callback(stop_process, webhooks)
        pool.wait_ready()
        client = Client(settings)
        stack.callback(client.close)
        print(f"[{broker}] {args.workers} workers ready; warming up ...", flush=True)
        warm_up(client, uris)

        requests = make_requests(args.jobs, f"soak-{broker}", uris, receiver.url, rng)
        faults: dict[str, chaos.Action] = {
            "kill_worker": chaos.kill_worker(pool, rng),
            "stop_s3": chaos.stop_s3(s3, args.outage_s, missing_objects(storage, media)),
            "flap_receiver": chaos.flap_receiver(receiver, args.outage_s),
            **endpoints.faults,
        }
        if args.faults:
            faults = {kind: action for kind, action in faults.items() if kind in args.faults}
        loop = chaos.ChaosLoop(faults, args.chaos_every, rng)
        print(f"[{broker}] submitting {args.jobs} jobs at {args.rate}/s under chaos ({', '.join(sorted(faults))}) ...")
        began = time.monotonic()
        loop.start()
        try:
            submitted = submit_steadily(client, requests, args.rate, lambda: f"{len(loop.faults)} faults")
        finally:
            loop.stop()
        submit_s = time.monotonic() - began
        ids = list(submitted.accepted)
        settle_s = wait_final(client.store, ids, args.settle_timeout)
        with_webhook = {
            request["id"] for request in requests if "webhook" in request and request["id"] in submitted.accepted
        }
        wait_webhooks(receiver, with_webhook, args.webhook_wait_s)
        records = read_records(client.store, ids)
        dead_lettered = {entry["id"] for entry in retried(lambda: DeadLetters(client.store.redis).entries())}
        clock_offset = time.time() - time.monotonic()
        receipts = receipts_of(list(receiver.requests), clock_offset)
        write_log = writes.snapshot()
        outcomes = job_outcomes(submitted.accepted, records)
        whereabouts = lost_whereabouts(endpoints, outcomes["lost_ids"])
        jobs_file = logs / "jobs.jsonl"
        lines = job_lines(submitted.accepted, with_webhook, records, receipts, write_log)
        if args.trace:
            traced = {job_id: writes.traced.get(job_id, []) for job_id in outcomes["lost_ids"]}
            (logs / "lost-trace.json").write_text(json.dumps(traced, indent=1))
            (logs / "inflight-trace.jsonl").write_text("".join(json.dumps(line) + "\n" for line in writes.inflight))
        jobs_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return {
            "broker": broker if not replicas else f"{broker}, submit_replicas={replicas}",
            "jobs": args.jobs,
            "rate": args.rate,
            "workers": args.workers,
            "chaos_every_s": args.chaos_every,
            "outage_s": args.outage_s,
            "dead_after_s": args.dead_after_s,
            "visibility_timeout": settings.broker_visibility_timeout(),
            "seed": args.seed,
            "submit_s": submit_s,
            "settle_s": settle_s,
            "submit_errors": dict(submitted.errors),
            **outcomes,
            "lost_whereabouts": whereabouts,
            "run_more_than_once": reruns(records, write_log),
            "duplicate_results": duplicate_results(records, write_log, receipts),
            "webhooks": webhook_figures(with_webhook, records, receipts, dead_lettered),
            "latency": latency(submitted.accepted, records),
            "faults": recovery(loop.faults, records, write_log, receipts),
            "fault_details": [fault.__dict__ for fault in loop.faults],
            "chaos_errors": loop.errors,
            "monitor_reconnects": writes.reconnects,
            "record_writes_seen": len(write_log),
        }


# -- reporting -------------------------------------------------------------------------------------------------------

FAULT_KINDS = ("kill_worker", "restart_redis", "fail_over", "stop_s3", "flap_receiver")


def fault_cell(entry: dict[str, Any] | None) -> str:
    """``count: back median/max s`` and, for worker kills, how long their orphaned jobs took to be final."""
    if not entry:
        return "-"

    def span(figures: dict[str, float] | None) -> str:
        return f"{figures['median']:.1f}/{figures['max']:.1f} s" if figures else "n/a"

    cell = f"{entry['injected']}: back {span(entry['back_s'])}"
    if entry.get("never_back"):
        cell += f" ({entry['never_back']} never)"
    if "orphans" in entry:
        cell += f"; {entry['orphans']} orphans final in {span(entry['orphans_s'])}"
    return cell


def markdown(rows: list[dict[str, Any]]) -> str:
    """The runs as a Markdown table for the README."""
    kinds = [kind for kind in FAULT_KINDS if any(kind in row["faults"] for row in rows)]
    header = [
        "broker",
        "jobs (rate)",
        "succeeded",
        "failed (by type)",
        "lost",
        "run > once (attempts > 1 / started twice / by 2 workers)",
        "duplicate results (final written twice / webhook results differ)",
        "webhooks: duplicate / redelivered / dead-lettered / missing",
        "latency p50 / p99",
        *[f"{kind} (count: back median/max)" for kind in kinds],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        failed = ", ".join(f"{count} {kind}" for kind, count in sorted(row["failed_by_type"].items())) or "0"
        runs, dup, hooks, lat = row["run_more_than_once"], row["duplicate_results"], row["webhooks"], row["latency"]
        cells = [
            row["broker"],
            f"{row['accepted']} ({row['rate']:g}/s)",
            str(row["succeeded"]),
            failed,
            str(row["lost"]),
            f"{runs['attempts_over_1']} / {runs.get('started_more_than_once', 'n/a')} /"
            f" {runs.get('started_by_several_workers', 'n/a')}",
            f"{dup.get('final_written_twice', 'n/a')} / {dup['webhook_results_differ']}",
            f"{hooks['duplicate']} / {hooks['redelivered']} / {hooks['dead_lettered']} / {hooks['missing']}",
            f"{lat['p50_s']:.2f} / {lat['p99_s']:.2f} s" if lat["p50_s"] is not None else "n/a",
            *[fault_cell(row["faults"].get(kind)) for kind in kinds],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_report(row: dict[str, Any]) -> str:
    """One run's figures in full, for the console."""
    lines = [
        f"{row['broker']}: {row['accepted']} of {row['jobs']} jobs accepted in {row['submit_s']:.0f} s"
        f" (submit errors retried: {row['submit_errors'] or 'none'}), all final {row['settle_s']:.0f} s later",
        f"  succeeded {row['succeeded']}, failed {row['failed_by_type'] or 0}, canceled/expired"
        f" {row['canceled_or_expired']}, lost {row['lost']} {row['lost_by_state'] or ''}",
        f"  run more than once: {row['run_more_than_once']}",
        f"  duplicate results: {row['duplicate_results']}",
        f"  webhooks: {row['webhooks']}",
        f"  latency: {row['latency']}",
        f"  record writes seen {row['record_writes_seen']}, MONITOR reconnects {row['monitor_reconnects']}",
    ]
    for kind, entry in row["faults"].items():
        lines.append(f"  {kind}: {fault_cell(entry)}")
    if row["lost_ids"]:
        lines.append(f"  lost, e.g.: {', '.join(row['lost_ids'][:10])}")
        for job_id, keys in row.get("lost_whereabouts", {}).items():
            lines.append(f"    {job_id}: {'held in ' + ', '.join(keys) if keys else 'no message in the broker'}")
    if row["chaos_errors"]:
        lines.append(f"  chaos errors: {row['chaos_errors']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--broker", action="append", choices=BROKERS, help="repeat for several (default: redis)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--chaos-every", type=float, default=5.0, help="seconds from one fault to the next")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--faults", action="append", choices=FAULT_KINDS, help="only these faults (repeat; default: all the broker has)"
    )
    parser.add_argument("--rate", type=float, default=15.0, help="jobs submitted per second")
    parser.add_argument("--outage-s", type=float, default=3.0, help="how long S3 and the receiver stay down")
    parser.add_argument("--dead-after-s", type=float, default=5.0, help="the workers' dead_after_s")
    parser.add_argument(
        "--visibility-timeout",
        type=int,
        help="seconds before an unacked webhook delivery is redelivered (pipeq's default)",
    )
    parser.add_argument(
        "--submit-replicas",
        type=int,
        help="Redis replicas a submit waits for (durable submission; default: 1 with sentinel, else 0)",
    )
    parser.add_argument(
        "--trace", action="store_true", help="keep every command naming a lost job (MONITOR) in lost-trace.json"
    )
    parser.add_argument("--webhook-wait-s", type=float, default=60.0, help="longest wait for the last webhooks")
    parser.add_argument("--settle-timeout", type=float, default=600.0, help="longest wait for jobs to be final")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup on SIGTERM too
    started = time.monotonic()
    models, media = build_models(), make_media()
    rows = []
    for broker in args.broker or ["redis"]:
        rows.append(run_soak(broker, args, models, media))
        print(text_report(rows[-1]), flush=True)
    wall_s = time.monotonic() - started
    publish({"runs": rows, "wall_seconds": wall_s}, markdown(rows), "soak.json")


if __name__ == "__main__":
    main()
