"""A worker killed mid-burst: the jobs it held go to the others after dead_after_s, not after the (long) visibility
timeout, and none is lost or gives a second result."""

import signal
import time

import pytest

from devtools.config_files import write_config
from pipeq.config.catalogue import ModelEntry
from pipeq.producer import Client
from tests.support.settings import make_settings
from tests.support.waiting import wait_until
from tests.support.workers import kill, start_worker_process

pytestmark = pytest.mark.slow  # three workers in subprocesses

TEXT = "text-classification"
QUEUE = "dead-worker"
DEAD_AFTER_S = 5
JOBS = 240


@pytest.fixture
def three_workers(redis_url, s3_endpoint, tiny_models, tmp_path, redis_db):
    settings = make_settings(
        redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db, dead_after_s=DEAD_AFTER_S,
        visibility_timeout=3600,  # webhooks' redelivery time: far longer than the test
    )  # fmt: skip
    entry = settings.models[0].model_copy(update={"max_batch_jobs": 4, "max_wait_s": 0.01, "queue": QUEUE})
    settings = settings.model_copy(update={"models": [ModelEntry(**entry.model_dump())]})
    config = write_config(settings, tmp_path / "pipeq.toml")
    client = Client(settings)
    workers = [start_worker_process(config, QUEUE, tmp_path / f"worker{n}.log") for n in range(3)]
    yield settings, client, workers
    for worker in workers:
        if worker.poll() is None:
            kill(worker)
    client.close()


def test_a_killed_workers_jobs_finish_after_dead_after_not_the_visibility_timeout(three_workers):
    _settings, client, workers = three_workers
    victim = workers[0]
    ids = client.submit_many(TEXT, [f"review {i} of the burst" for i in range(JOBS)])
    name = f"pipeq-cpu-{victim.pid}@"

    def victim_holds_jobs() -> bool:
        return any(record.worker and record.worker.startswith(name) for record in client.store.get_many(ids))

    wait_until(victim_holds_jobs, 120, message="the first worker never took a job")
    kill(victim)
    killed_at = time.monotonic()
    held = [
        record.id
        for record in client.store.get_many(ids)
        if record.state == "running" and record.worker.startswith(name)
    ]
    records = client.wait_many(ids, timeout=120)
    recovered_s = time.monotonic() - killed_at
    assert {record.state for record in records.values()} == {"succeeded"}
    assert all(not records[job_id].worker.startswith(name) for job_id in held)  # finished by the others
    assert {record.worker.split("@")[0] for record in records.values()} >= {f"pipeq-cpu-{w.pid}" for w in workers[1:]}
    print(f"{len(held)} job(s) running on the killed worker; every job done {recovered_s:.1f} s after the kill")


def paused(worker, seconds: float) -> None:
    """SIGSTOP the worker for ``seconds`` (a long GC, a slow network, a debugger), then SIGCONT."""
    worker.send_signal(signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        worker.send_signal(signal.SIGCONT)


def burst_caught_running(client, workers, prefix: str) -> list[str]:
    """Submit a burst and wait until the first worker is running some of it; the jobs' ids."""
    ids = client.submit_many(TEXT, [f"{prefix} review {i}" for i in range(JOBS)])
    name = f"pipeq-cpu-{workers[0].pid}@"

    def first_is_running() -> bool:
        return any(r.state == "running" and r.worker.startswith(name) for r in client.store.get_many(ids))

    wait_until(first_is_running, 120, message="the first worker never ran a job")
    return ids


def test_a_worker_paused_for_less_than_dead_after_keeps_its_jobs(three_workers):
    _settings, client, workers = three_workers
    ids = burst_caught_running(client, workers, "short pause")
    paused(workers[0], DEAD_AFTER_S / 3)
    records = client.wait_many(ids, timeout=120)
    assert {record.state for record in records.values()} == {"succeeded"}
    assert {record.attempts for record in records.values()} == {1}  # nothing went to another worker


def test_a_worker_paused_longer_loses_its_jobs_and_its_late_results_are_discarded(three_workers):
    _settings, client, workers = three_workers
    ids = burst_caught_running(client, workers, "long pause")
    name = f"pipeq-cpu-{workers[0].pid}@"
    running = [r.id for r in client.store.get_many(ids) if r.state == "running" and r.worker.startswith(name)]
    workers[0].send_signal(signal.SIGSTOP)
    try:
        records = client.wait_many(ids, timeout=120)  # the others finish everything while it is stopped
    finally:
        workers[0].send_signal(signal.SIGCONT)
    assert {record.state for record in records.values()} == {"succeeded"}
    taken_over = [records[job_id] for job_id in running]
    assert taken_over and all(r.attempts == 2 and not r.worker.startswith(name) for r in taken_over)
    time.sleep(DEAD_AFTER_S)  # the resumed worker finishes what it was running: its results are refused
    after = client.store.get_many(ids)
    assert [r.model_dump() for r in after] == [records[job_id].model_dump() for job_id in ids]  # one result each
