"""A worker killed mid-burst: the jobs it held go to the others after dead_after_s, not after the (long) visibility
timeout, and none is lost or gives a second result."""

import time

import pytest

from devtools.config_files import write_config
from pipeq.config.catalogue import ModelEntry
from pipeq.producer import Client
from tests.support.guarantees import (
    check_a_long_pause_loses_the_jobs,
    check_a_short_pause_keeps_the_jobs,
    node,
    running_on,
)
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
    name = node(victim)

    def victim_holds_jobs() -> bool:
        return any(record.worker and record.worker.startswith(name) for record in client.store.get_many(ids))

    wait_until(victim_holds_jobs, 120, message="the first worker never took a job")
    kill(victim)
    killed_at = time.monotonic()
    held = running_on(client, ids, victim)
    records = client.wait_many(ids, timeout=120)
    recovered_s = time.monotonic() - killed_at
    assert {record.state for record in records.values()} == {"succeeded"}
    assert all(not records[job_id].worker.startswith(name) for job_id in held)  # finished by the others
    assert {record.worker.split("@")[0] for record in records.values()} >= {f"pipeq-cpu-{w.pid}" for w in workers[1:]}
    print(f"{len(held)} job(s) running on the killed worker; every job done {recovered_s:.1f} s after the kill")


def test_a_worker_paused_for_less_than_dead_after_keeps_its_jobs(three_workers):
    _settings, client, workers = three_workers
    check_a_short_pause_keeps_the_jobs(client, workers, JOBS, DEAD_AFTER_S / 3)


def test_a_worker_paused_longer_loses_its_jobs_and_its_late_results_are_discarded(three_workers):
    _settings, client, workers = three_workers
    check_a_long_pause_loses_the_jobs(client, workers, JOBS, DEAD_AFTER_S)
