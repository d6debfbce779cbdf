"""pipeq on Redis Sentinel: a primary, a replica and three sentinels; workers keep their guarantees (reliable fetch,
keep-alive, dead-worker detection) through a failover mid-burst, and a durable submit loses no job it accepted."""

import threading
import time
from collections import Counter

import pytest
import redis

from devtools.config_files import write_config
from pipeq.config.catalogue import ModelEntry
from pipeq.core.replication import NotReplicated
from pipeq.producer import Client
from tests.support.guarantees import burst_caught_running, node, running_on
from tests.support.hang_hook import start_hooked, with_slow_jobs
from tests.support.settings import make_settings
from tests.support.waiting import wait_until
from tests.support.workers import kill, start_worker_process
from tests.worker.test_keepalive import PushCounter

pytestmark = pytest.mark.slow  # workers in subprocesses, servers failing over

TEXT = "text-classification"
QUEUE = "sentinel"
DEAD_AFTER_S = 3
CHUNKS, CHUNK = 40, 10


@pytest.fixture
def group(sentinel):
    return sentinel


@pytest.fixture
def sentinel_settings(group, s3_endpoint, tiny_models):
    group.wait_for_replica()
    with redis.Redis(port=group.primary_port()) as primary:
        primary.flushall()
    settings = make_settings("redis://unused", s3_endpoint, {TEXT: tiny_models[TEXT]}, dead_after_s=DEAD_AFTER_S)
    entry = settings.models[0].model_copy(update={"max_batch_jobs": 4, "max_wait_s": 0.01, "queue": QUEUE})
    return settings.model_copy(
        update={
            "broker_url": group.url(0),
            "result_backend": group.url(1),
            "models": [ModelEntry(**entry.model_dump())],
        }
    )


def workers_for(settings, tmp_path, count: int) -> list:
    config = write_config(settings, tmp_path / "pipeq.toml")
    return [start_worker_process(config, QUEUE, tmp_path / f"worker{n}.log") for n in range(count)]


def submit_until_accepted(client: Client, chunk: int, failures: Counter) -> list[str]:
    """Submit one chunk, again with the same ids while Redis fails over, until a submit returns."""
    ids = [f"chunk{chunk}-{i}" for i in range(CHUNK)]
    inputs = [f"review {i} of chunk {chunk}" for i in range(CHUNK)]
    while True:
        try:
            return client.submit_many(TEXT, inputs, job_ids=ids)
        except (redis.RedisError, NotReplicated) as exc:
            failures[type(exc).__name__] += 1
            time.sleep(0.1)


def test_a_durable_submit_loses_no_job_when_the_primary_fails_over_mid_burst(group, sentinel_settings, tmp_path):
    settings = sentinel_settings.model_copy(update={"submit_replicas": 1, "submit_replicas_timeout_s": 2.0})
    client = Client(settings)
    workers = workers_for(settings, tmp_path, 2)
    accepted: list[str] = []
    failures: Counter = Counter()

    def submit_all() -> None:
        for chunk in range(CHUNKS):
            accepted.extend(submit_until_accepted(client, chunk, failures))
            time.sleep(0.02)

    submitter = threading.Thread(target=submit_all)
    try:
        submitter.start()
        wait_until(lambda: len(accepted) >= CHUNKS * CHUNK // 3, 120, message="the burst never got going")
        down_s = group.fail_over()
        submitter.join(180)
        assert not submitter.is_alive(), "submissions never resumed after the failover"
        records = client.wait_many(accepted, timeout=180)
    finally:
        for worker in workers:
            kill(worker)
        client.close()
    states = Counter(record.state for record in records.values())
    assert len(accepted) == CHUNKS * CHUNK
    assert states == {"succeeded": CHUNKS * CHUNK}, (states, (tmp_path / "worker0.log").read_text()[-3000:])
    print(f"failover: {down_s:.1f} s without a primary; submit retries {dict(failures)}; 0 of {len(accepted)} lost")


def test_a_killed_workers_jobs_come_back_after_dead_after_on_sentinel(group, sentinel_settings, tmp_path):
    client = Client(sentinel_settings)
    victim, survivor = workers_for(sentinel_settings, tmp_path, 2)
    try:
        ids = burst_caught_running(client, victim, "killed", 200)
        name = node(victim)
        kill(victim)
        held = running_on(client, ids, victim)
        records = client.wait_many(ids, timeout=120)
    finally:
        for worker in (victim, survivor):
            if worker.poll() is None:
                kill(worker)
        client.close()
    assert {record.state for record in records.values()} == {"succeeded"}
    assert held and all(not records[job_id].worker.startswith(name) for job_id in held)


def test_jobs_held_through_a_failover_run_once_each(group, sentinel_settings, tmp_path):
    """Workers holding jobs when the primary dies reconnect to the new one; what they held comes back after
    dead_after_s (or is finished by them), and each job keeps one result."""
    client = Client(sentinel_settings)
    ids = client.submit_many(TEXT, [f"held review {i}" for i in range(300)])
    group.wait_for_replica()
    workers = workers_for(sentinel_settings, tmp_path, 2)
    try:
        wait_until(
            lambda: Counter(r.state for r in client.store.get_many(ids))["succeeded"] >= 40,
            120,
            message="the workers never got going",
        )
        group.fail_over()
        records = client.wait_many(ids, timeout=180)
    finally:
        for worker in workers:
            kill(worker)
        client.close()
    assert {record.state for record in records.values()} == {"succeeded"}
    assert all(record.result is not None for record in records.values())


def test_jobs_held_longer_than_dead_after_run_once_on_sentinel(group, sentinel_settings, tmp_path):
    """pipeq's keep-alive on the Sentinel transport: one job per batch, a prefetch that holds every job, and each
    waits longer than dead_after_s; none is redelivered (kombu's stock Sentinel transport would redeliver them)."""
    jobs = 800
    one = sentinel_settings.models[0].model_copy(update={"max_batch_jobs": 1})
    roomy = one.model_copy(update={"name": "roomy", "max_batch_jobs": jobs, "queue": "unused"})
    settings = sentinel_settings.model_copy(update={"models": [ModelEntry(**m.model_dump()) for m in (one, roomy)]})
    client = Client(settings)
    inputs = with_slow_jobs([f"review number {i} was fine" for i in range(jobs)], 2 * DEAD_AFTER_S)
    ids = client.submit_many(TEXT, inputs, model=one.name)
    pushes = PushCounter(f"redis://127.0.0.1:{group.primary_port()}", 0, QUEUE)  # a push now is a redelivery
    config = write_config(settings, tmp_path / "pipeq.toml")
    worker = start_hooked(["--device", "cpu", "--queues", QUEUE], config, tmp_path / "worker.log", tmp_path / "hook")
    try:
        records = client.wait_many(ids, timeout=120)
        time.sleep(DEAD_AFTER_S)  # a redelivery of a job that just finished would show up now
    finally:
        pushes.close()
        kill(worker)
        client.close()
    assert pushes.count == 0, f"{pushes.count} job(s) were redelivered while the worker held them"
    started = sorted(record.started_at for record in records.values())
    assert (started[-1] - started[0]).total_seconds() > 2 * DEAD_AFTER_S, "no job waited long enough to matter"
    assert {record.state for record in records.values()} == {"succeeded"}
    assert {record.attempts for record in records.values()} == {1}
