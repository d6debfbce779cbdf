"""Jobs held by a busy worker longer than dead_after_s are not redelivered: the engine keeps them alive."""

import threading
import time

import pytest
import redis

from devtools.config_files import write_config
from pipeq.config.catalogue import ModelEntry
from pipeq.producer import Client
from tests.support.hang_hook import start_hooked, with_slow_jobs
from tests.support.settings import make_settings
from tests.support.workers import kill

pytestmark = pytest.mark.slow  # a worker in a subprocess, or minutes of media

TEXT = "text-classification"
QUEUE = "keepalive"
VISIBILITY = 2
JOBS = 800


@pytest.fixture
def keepalive_setup(redis_url, s3_endpoint, tiny_models, tmp_path, redis_db):
    """One job per batch, and prefetch (4 x the largest max_batch_jobs) large enough to hold every job at once."""
    settings = make_settings(redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db, dead_after_s=VISIBILITY)
    one_at_a_time = settings.models[0].model_copy(update={"max_batch_jobs": 1, "max_wait_s": 0.01, "queue": QUEUE})
    roomy = settings.models[0].model_copy(update={"name": "roomy", "max_batch_jobs": JOBS, "queue": "keepalive-unused"})
    models = [ModelEntry(**entry.model_dump()) for entry in (one_at_a_time, roomy)]
    settings = settings.model_copy(update={"models": models})
    client = Client(settings)
    yield settings, write_config(settings, tmp_path / "pipeq.toml"), client
    client.close()


class PushCounter:
    """Counts, through Redis MONITOR, messages pushed back onto a queue of one database (redeliveries)."""

    def __init__(self, url: str, db: int, queue: str) -> None:
        self._monitor = redis.Redis.from_url(url).monitor()
        self._monitor.__enter__()
        self._db, self._queue, self.count = db, queue, 0
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        try:
            for command in self._monitor.listen():
                words = command["command"].split(" ", 2)
                if command["db"] == self._db and words[0] in ("LPUSH", "RPUSH") and words[1:2] == [self._queue]:
                    self.count += 1
        except (redis.ConnectionError, OSError, AttributeError, ValueError):
            return  # the monitor was closed

    def close(self) -> None:
        self._monitor.connection.disconnect()


def test_jobs_waiting_longer_than_dead_after_run_once(keepalive_setup, redis_url, redis_db, tmp_path):
    _settings, config, client = keepalive_setup
    inputs = with_slow_jobs([f"review number {i} was fine" for i in range(JOBS)], 2 * VISIBILITY)
    ids = client.submit_many(TEXT, inputs, model="tiny-" + TEXT)
    pushes = PushCounter(redis_url, redis_db, QUEUE)  # from now on, a push onto the queue is a redelivery
    log = tmp_path / "worker.log"
    worker = start_hooked(["--device", "cpu", "--queues", QUEUE], config, log, tmp_path / "hook")
    try:
        records = client.wait_many(ids, timeout=120)
        time.sleep(VISIBILITY)  # a redelivery of a job that just finished would show up now
    finally:
        pushes.close()
        kill(worker)
    assert {record.state for record in records.values()} == {"succeeded"}, log.read_text()[-3000:]
    started = sorted(record.started_at for record in records.values())
    waited = (started[-1] - started[0]).total_seconds()
    assert waited > 2 * VISIBILITY, f"the last job waited only {waited:.1f} s: nothing to keep alive"
    assert pushes.count == 0, f"{pushes.count} job(s) were redelivered while the worker held them"
    assert {record.attempts for record in records.values()} == {1}


def test_held_messages_are_touched_in_one_call_per_channel(settings):
    from pipeq.core.contract import Job, TextInput
    from pipeq.worker.engine import Delivery, Engine

    calls: list[tuple[str, list[int]]] = []

    def channel(name: str):
        return lambda tags: calls.append((name, sorted(tags)))

    first, second = channel("first"), channel("second")
    engine = Engine(settings, store=None, fetcher=None, pipelines=None)
    for tag, touch in [(1, first), (2, second), (3, first), (4, None)]:
        job = Job(task=TEXT, model="tiny-text-classification", input=TextInput(text=f"job {tag}"))
        engine.submit(Delivery(job, ack=lambda: None, requeue=lambda: None, touch=touch, tag=tag))
    engine.touch_held()
    assert sorted(calls) == [("first", [1, 3]), ("second", [2])]
