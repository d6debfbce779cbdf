"""A webhook worker keeps what it holds alive, waiting retries included: a retry held longer than dead_after_s is
not redelivered, and a dead worker's waiting retry reaches another worker within dead_after_s (not minutes)."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from devtools.config_files import write_config
from pipeq.config import Webhooks
from pipeq.core.contract import Job, TextInput
from pipeq.core.records import JobRecord, RecordStore, now
from pipeq.webhooks.delivery import create_webhooks_app, enqueue_deliveries
from pipeq.webhooks.keepalive import HeldMessages
from tests.support.receiver import Receiver, Reply
from tests.support.settings import make_settings, model_name
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, kill
from tests.worker.test_keepalive import PushCounter

TEXT = "text-classification"
TASK = "pipeq.webhooks.deliver"
DEAD_AFTER_S = 2
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class FakeMessage:
    def __init__(self, tag: str, channel) -> None:
        self.delivery_tag, self.channel, self.acknowledged = tag, channel, False


def test_held_messages_touch_what_is_unsettled_on_open_channels_once_per_channel():
    touched: list[list[str]] = []
    open_channel = SimpleNamespace(closed=False, qos=SimpleNamespace(touch=lambda tags: touched.append(tags) or 2))
    closed_channel = SimpleNamespace(closed=True, qos=open_channel.qos)
    held = HeldMessages(TASK)
    messages = [FakeMessage("a", open_channel), FakeMessage("b", open_channel), FakeMessage("c", closed_channel)]
    settled = FakeMessage("d", open_channel)
    settled.acknowledged = True
    for message in [*messages, settled]:
        held.received(request=SimpleNamespace(name=TASK, message=message))
    held.received(request=SimpleNamespace(name="pipeq.infer", message=FakeMessage("e", open_channel)))  # not ours
    assert held.touch() == 2 and touched == [["a", "b"]]
    messages[0].acknowledged = True
    assert held.touch() == 2 and touched[-1] == ["b"]
    assert len(held.held()) == 1  # the settled and the closed are forgotten


@pytest.fixture
def webhook_setup(redis_url, s3_endpoint, tiny_models, redis_db, tmp_path):
    webhooks = Webhooks(secret=SECRET, allow_private=True, backoff=0.05, max_backoff=20, max_attempts=4, timeout=2)
    settings = make_settings(
        redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db, webhooks=webhooks, dead_after_s=DEAD_AFTER_S
    )
    config = write_config(settings, tmp_path / "pipeq.toml")
    app = create_webhooks_app(settings)
    yield settings, config, app
    app.close()


def webhooks_worker(config: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PIPEQ_CONFIG=str(config))
    command = [sys.executable, "-m", "pipeq.cli", "webhooks", "worker", "--loglevel", "INFO"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def deliver_one(settings, app, url: str) -> str:
    job = Job(id=str(uuid.uuid4()), task=TEXT, model=model_name(TEXT), input=TextInput(text="fine"), webhook=url)
    record = JobRecord.of(job, "succeeded", webhook=url).model_copy(update={"finished_at": now(), "result": {}})
    RecordStore(settings.result_backend).write([record])
    enqueue_deliveries(app, [job])
    return job.id


@pytest.mark.slow
def test_a_retry_waiting_longer_than_dead_after_is_not_redelivered(webhook_setup, redis_url, redis_db, tmp_path):
    settings, config, app = webhook_setup
    log = tmp_path / "webhooks.log"
    worker = webhooks_worker(config, log)
    with Receiver(Reply(503, headers={"Retry-After": str(4 * DEAD_AFTER_S)})) as receiver:
        try:
            pushes = PushCounter(redis_url, redis_db, settings.webhooks.queue)
            deliver_one(settings, app, receiver.url)
            wait_until(lambda: len(receiver.requests) >= 2, 60, message=f"never retried; its log: {log}")
            time.sleep(DEAD_AFTER_S)
        finally:
            pushes.close()
            kill(worker)
    assert len(receiver.requests) == 2  # the 503, then the retry 8 s later: delivered
    assert pushes.count == 2, f"{pushes.count} pushes: the delivery, its retry, and no redelivery of the held retry"


@pytest.mark.slow
def test_a_dead_workers_waiting_retry_reaches_another_worker_within_dead_after(webhook_setup, tmp_path):
    settings, config, app = webhook_setup
    log = tmp_path / "webhooks.log"
    first = webhooks_worker(config, log)
    with Receiver(Reply(503, headers={"Retry-After": "3"})) as receiver:
        try:
            deliver_one(settings, app, receiver.url)
            wait_until(lambda: len(receiver.requests) >= 1, 60, message=f"never delivered; its log: {log}")
            time.sleep(0.5)  # the retry is now held by the first worker, waiting for its time
            kill(first)
            killed_at = time.monotonic()
            second = webhooks_worker(config, log)
            wait_until(lambda: len(receiver.requests) >= 2, 60, message=f"the retry never came back; log: {log}")
            recovered_s = time.monotonic() - killed_at
        finally:
            for worker in (first, locals().get("second")):
                if worker is not None and worker.poll() is None:
                    kill(worker)
    assert len(receiver.requests) == 2
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]
    print(f"the dead worker's retry was delivered {recovered_s:.1f} s after the kill (dead_after_s = {DEAD_AFTER_S})")


def test_what_a_stopped_consumer_held_is_forgotten_and_no_longer_kept_alive():
    """A lost connection stops the consumer, and Celery forgets the requests it held (waiting retries too): they
    must come back from the broker, so they are no longer touched (the soak saw them kept alive for ever)."""
    touched: list[list[str]] = []
    channel = SimpleNamespace(closed=False, qos=SimpleNamespace(touch=lambda tags: touched.append(tags) or 1))
    held = HeldMessages(TASK)
    held.received(request=SimpleNamespace(name=TASK, message=FakeMessage("a", channel)))
    held.forget()
    assert held.touch() == 0 and touched == []
