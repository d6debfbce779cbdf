"""kill -9 of a worker mid-batch loses no job, and redelivered jobs keep one result."""

from collections import Counter

import pytest

from devtools.config_files import write_config
from pipeq.config.catalogue import ModelEntry
from pipeq.core.broker import priority_lists
from pipeq.producer import Client
from tests.support.guarantees import caught_mid_batch, submit_by_priority
from tests.support.settings import make_settings
from tests.support.waiting import wait_until
from tests.support.workers import kill, start_worker_process

pytestmark = pytest.mark.slow  # a worker in a subprocess, or minutes of media

TEXT = "text-classification"


@pytest.fixture
def crash_setup(redis_url, s3_endpoint, tiny_models, tmp_path, redis_db):
    """Settings on their own Redis databases, a killed worker's jobs back after 3 s, and their config file."""
    settings = make_settings(redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db, dead_after_s=3)
    entry = settings.models[0].model_copy(update={"max_batch_jobs": 2, "max_wait_s": 0.01, "queue": "crash"})
    settings = settings.model_copy(update={"models": [ModelEntry(**entry.model_dump())]})
    client = Client(settings)
    yield settings, write_config(settings, tmp_path / "pipeq.toml"), client
    client.close()


@pytest.mark.parametrize("priorities", [["normal"], ["low", "normal", "high"]], ids=["normal", "mixed-priorities"])
def test_a_worker_killed_mid_batch_loses_no_job(crash_setup, tmp_path, priorities):
    settings, config, client = crash_setup
    log = tmp_path / "worker.log"
    ids = submit_by_priority(client, priorities)
    first = start_worker_process(config, "crash", log)
    try:
        wait_until(
            caught_mid_batch(client, ids), 120, message=f"never caught the worker mid-batch in 120 s; its log: {log}"
        )
        kill(first)
        states = [r.state for r in client.store.get_many(ids)]
        assert states.count("succeeded") < len(ids), "the worker finished before it could be killed"
        broker = client.store.redis.from_url(settings.broker_url)
        held = broker.hlen("unacked")
        assert held > 0, "the killed worker held no job: nothing to redeliver"
    finally:
        if first.poll() is None:
            kill(first)

    second = start_worker_process(config, "crash", log, plain_celery=True)  # `celery -A pipeq.worker.app worker`
    try:
        records = client.wait_many(ids, timeout=120)
    except TimeoutError:
        states = Counter(record.state for record in client.store.get_many(ids))
        queued = {priority: broker.llen(key) for priority, key in priority_lists("crash").items()}
        unacked = broker.hlen("unacked")
        raise AssertionError(f"jobs left undone: {states}; in the queue {queued}, unacked {unacked}") from None
    finally:
        kill(second)
    assert {record.state for record in records.values()} == {"succeeded"}, log.read_text()[-3000:]
    assert {record.priority for record in records.values()} == set(priorities)
    workers = {record.worker.split("@")[0] for record in records.values()}
    assert "plain" in workers  # the second worker, started as plain Celery, finished what the first left
