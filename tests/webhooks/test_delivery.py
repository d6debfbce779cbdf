"""Webhook delivery end to end: a model worker and a webhooks worker (threads) in this process, a real receiver
on loopback; retries, dead letters and redelivery, at most one successful POST per job."""

import base64
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
import redis
from celery.contrib.testing.worker import TestWorkController, setup_app_for_worker
from celery.signals import task_postrun, task_retry
from kombu.asynchronous import get_event_loop, set_event_loop

from pipeq.config.settings import Settings, Webhooks
from pipeq.core.contract import Job, TextInput
from pipeq.core.records import JobRecord, RecordStore, now
from pipeq.core.storage import s3_client
from pipeq.producer import Client
from pipeq.webhooks.dead_letters import DeadLetters
from pipeq.webhooks.delivery import (
    DELIVER_TASK,
    create_webhooks_app,
    delivered_key,
    enqueue_deliveries,
    lock_waits,
    redeliver,
    retry_delay,
)
from pipeq.webhooks.signing import verify
from pipeq.worker.app import create_app
from tests.support.receiver import Receiver, Reply
from tests.support.settings import BUCKET, make_settings, model_name
from tests.support.waiting import wait_until

TEXT = "text-classification"
SECRET = "whsec_" + base64.b64encode(b"pipeq webhook tests, 32 bytes!!!").decode()
RESULTS_BUCKET = "webhook-results"


# -- the workers and what they did ------------------------------------------------------------------------


class TaskRuns:
    """Runs of the delivery task in this process's workers, from Celery's signals, by job id."""

    def __init__(self) -> None:
        self.states: dict[str, list[str]] = defaultdict(list)
        self.on_first_retry: dict[str, Callable[[], None]] = {}
        self._changed = threading.Condition()

    def postrun(self, task=None, args=None, state=None, **_) -> None:
        if task is not None and task.name == DELIVER_TASK:
            with self._changed:
                self.states[args[0]].append(state)
                self._changed.notify_all()

    def retry(self, request=None, **_) -> None:
        callback = self.on_first_retry.pop(request.args[0], None) if request and request.args else None
        if callback:
            callback()

    def wait_finished(self, job_id: str, runs: int = 1, timeout: float = 15.0) -> list[str]:
        """Wait until ``runs`` deliveries of the job have ended (delivered, skipped or dead-lettered)."""
        with self._changed:
            ended = lambda: sum(state != "RETRY" for state in self.states[job_id]) >= runs  # noqa: E731
            if not self._changed.wait_for(ended, timeout):
                raise AssertionError(f"delivery of {job_id} not finished after {timeout} s: {self.states[job_id]}")
            return list(self.states[job_id])


@contextmanager
def embedded_worker(app, **options) -> Iterator[TestWorkController]:
    """A Celery worker in a thread, stopped by a remote shutdown aimed at it alone (celery's own start_worker
    stops through a process-wide flag, which would also stop the session's worker)."""
    setup_app_for_worker(app, "WARNING", None)
    # Celery hands a new worker the process's current event loop if there is one: two workers driving one
    # loop from two threads stall (ETA retries never run). This worker gets a loop of its own.
    previous = get_event_loop()
    set_event_loop(None)
    try:
        worker = TestWorkController(
            app=app,
            hostname=f"hooks-{uuid.uuid4().hex[:8]}@localhost",
            loglevel="WARNING",
            logfile=None,
            ready_callback=None,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            **options,
        )
    finally:
        set_event_loop(previous)
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    worker.ensure_started()
    try:
        yield worker
    finally:
        app.control.shutdown(destination=[worker.hostname])
        thread.join(30)
        assert not thread.is_alive(), "the embedded worker did not stop"


class Hooks:
    """What the tests use: settings, client, the delivery app, its task runs and the result-backend Redis."""

    def __init__(self, settings: Settings, client: Client, app, runs: TaskRuns) -> None:
        self.settings = settings
        self.client = client
        self.app = app
        self.runs = runs
        self.redis: redis.Redis = app.pipeq_deliverer.store.redis
        self.dead_letters = DeadLetters(self.redis)

    def delivered(self, job_id: str) -> bool:
        return bool(self.redis.exists(delivered_key(job_id)))


@pytest.fixture(scope="module")
def hook_settings(redis_url, s3_endpoint, tiny_models, new_redis_db) -> Settings:
    """Settings on Redis databases of their own: the session worker never sees these jobs."""
    webhooks = Webhooks(secret=SECRET, allow_private=True, backoff=0.05, max_backoff=0.2, max_attempts=4, timeout=2)
    base = make_settings(
        redis_url,
        s3_endpoint,
        {TEXT: tiny_models[TEXT]},
        db=new_redis_db(),
        webhooks=webhooks,
        results_bucket=RESULTS_BUCKET,
        max_inline_result_bytes=1,  # every result goes to object storage; the webhook must read it back
    )
    return base.model_copy(update={"models": [entry.model_copy(update={"queue": "hooks"}) for entry in base.models]})


@pytest.fixture(scope="module")
def hooks(redis_url, hook_settings) -> Iterator[Hooks]:
    s3 = s3_client(hook_settings)
    if RESULTS_BUCKET not in [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=RESULTS_BUCKET)
    runs = TaskRuns()
    task_postrun.connect(runs.postrun, weak=False)
    task_retry.connect(runs.retry, weak=False)
    models, deliveries = create_app(hook_settings), create_webhooks_app(hook_settings)
    client = Client(hook_settings)
    try:
        with (
            embedded_worker(models, queues=["hooks"]),
            embedded_worker(deliveries, pool="threads", concurrency=4, queues=[hook_settings.webhooks.queue]),
        ):
            yield Hooks(hook_settings, client, deliveries, runs)
    finally:
        client.close()
        task_postrun.disconnect(runs.postrun)
        task_retry.disconnect(runs.retry)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiving:
        yield receiving


def submit(hooks: Hooks, url: str, text: str = "a fine product", job_id: str | None = None) -> str:
    return hooks.client.submit(TEXT, text, webhook=url, job_id=job_id)


def store_final_record(hooks: Hooks, webhook: str | None) -> str:
    """A succeeded job with this webhook, written straight to Redis, for deliveries queued by hand."""
    job_id = str(uuid.uuid4())
    record = JobRecord(
        state="succeeded",
        id=job_id,
        task=TEXT,
        model=model_name(TEXT),
        submitted_at=now(),
        finished_at=now(),
        webhook=webhook,
    )
    RecordStore(hooks.settings.result_backend).write([record.model_copy(update={"result": {"label": "ok"}})])
    return job_id


def queue_delivery(hooks: Hooks, job_id: str, url: str, times: int = 1) -> None:
    job = Job(id=job_id, task=TEXT, model=model_name(TEXT), input=TextInput(text="-"), webhook=url)
    enqueue_deliveries(hooks.app, [job] * times)


# -- delivery end to end ----------------------------------------------------------------------------------


def test_a_finished_job_is_posted_signed_with_its_record(hooks, receiver):
    job_id = submit(hooks, receiver.url)
    record = hooks.client.wait(job_id, timeout=30)
    [request] = receiver.wait_for(1)
    hooks.runs.wait_finished(job_id)

    payload = verify(request.headers, request.body, SECRET)
    assert payload == {
        "id": job_id,
        "task": TEXT,
        "model": model_name(TEXT),
        "event": "completed",
        "sequence": 1,
        "status": "succeeded",
        "result": record.result,
        "timings": {
            "submitted_at": record.submitted_at.isoformat(),
            "started_at": record.started_at.isoformat(),
            "finished_at": record.finished_at.isoformat(),
        },
    }
    assert hooks.client.store.get(job_id).result_ref.startswith(f"s3://{RESULTS_BUCKET}/")  # read back for the body
    assert record.result and datetime.fromisoformat(payload["timings"]["finished_at"]).tzinfo is not None
    assert request.headers["webhook-id"] == job_id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "pipeq"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 30
    assert hooks.delivered(job_id)


def test_a_failed_job_gets_its_webhook_with_the_error(hooks, receiver):
    missing = f"s3://{BUCKET}/webhook-tests/no-such-object.txt"  # inside the media bucket, which jobs may read
    job_id = hooks.client.submit(TEXT, missing, webhook=receiver.url)
    assert hooks.client.wait(job_id, timeout=30).state == "failed"
    [request] = receiver.wait_for(1)
    payload = verify(request.headers, request.body, SECRET)
    assert payload["status"] == "failed"
    assert "result" not in payload
    assert payload["error"]["type"] == "MediaNotFound"
    assert missing in payload["error"]["message"]


def test_a_job_asking_for_started_and_completed_gets_both_in_order(hooks, receiver):
    job_id = hooks.client.submit(
        TEXT, "tell me it started", webhook=receiver.url, webhook_events=["started", "completed"]
    )
    assert hooks.client.wait(job_id, timeout=30).state == "succeeded"
    requests = receiver.wait_for(2)
    bodies = sorted((verify(r.headers, r.body, SECRET) for r in requests), key=lambda body: body["sequence"])
    assert [(body["event"], body["sequence"], body["status"]) for body in bodies] == [
        ("started", 1, "running"),
        ("completed", 2, "succeeded"),
    ]
    assert sorted(r.headers["webhook-id"] for r in requests) == sorted([f"{job_id}:1", job_id])


def test_a_job_asking_only_for_started_gets_no_completed(hooks, receiver):
    job_id = hooks.client.submit(TEXT, "only the start", webhook=receiver.url, webhook_events=["started"])
    assert hooks.client.wait(job_id, timeout=30).state == "succeeded"
    [request] = receiver.wait_for(1)
    hooks.runs.wait_finished(job_id)
    time.sleep(0.3)  # room for a stray completed, were there one
    assert len(receiver.requests) == 1 and verify(request.headers, request.body, SECRET)["event"] == "started"


def test_a_canceled_job_gets_its_completed_event_from_the_client(hooks, receiver):
    """A job still queued (recorded, its message not yet sent to any worker) is canceled: the canceling client
    queues its completed event."""
    job = Job(task=TEXT, model=model_name(TEXT), input=TextInput(text="x"), webhook=receiver.url)
    assert hooks.client.store.create([JobRecord.of(job, "queued", webhook=job.webhook)]) == [None]
    assert hooks.client.cancel(job.id).state == "canceled"
    [request] = receiver.wait_for(1)
    body = verify(request.headers, request.body, SECRET)
    assert (body["event"], body["status"], body["error"]["type"]) == ("completed", "canceled", "Canceled")
    assert request.headers["webhook-id"] == job.id


def test_5xx_is_retried_with_the_same_webhook_id_and_delivered_once(hooks):
    with Receiver(503, 502, 200) as receiver:
        job_id = submit(hooks, receiver.url)
        hooks.runs.wait_finished(job_id)
        requests = receiver.wait_for(3)
    assert len(requests) == 3
    assert {request.headers["webhook-id"] for request in requests} == {job_id}
    assert all(verify(request.headers, request.body, SECRET)["id"] == job_id for request in requests)
    assert hooks.runs.states[job_id] == ["RETRY", "RETRY", "SUCCESS"]
    assert hooks.delivered(job_id)
    assert hooks.redis.hget("pipeq:webhooks:failed", job_id) is None


def test_a_receiver_that_is_down_then_up_gets_the_webhook_exactly_once(hooks):
    with Receiver(started=False) as receiver:  # connections refused
        job_id = str(uuid.uuid4())
        hooks.runs.on_first_retry[job_id] = receiver.start  # the first attempt failed: bring it up
        submit(hooks, receiver.url, job_id=job_id)
        hooks.runs.wait_finished(job_id)
        time.sleep(0.3)  # room for a stray second POST, were there one
        [request] = receiver.requests
    assert hooks.runs.states[job_id].count("RETRY") >= 1
    assert verify(request.headers, request.body, SECRET)["id"] == job_id
    assert hooks.delivered(job_id)


def test_a_retry_that_cannot_be_queued_requeues_its_delivery_instead_of_dropping_it(hooks, monkeypatch):
    """The broker away when a retry is queued (a failover): Celery would drop the delivery (the chaos soak lost 7
    webhooks so); it goes back to the queue instead and is delivered once the receiver answers."""
    task = hooks.app.tasks[DELIVER_TASK]
    queue_retry, refused = task.apply_async, []
    with Receiver(503, 200) as receiver:
        job_id = store_final_record(hooks, receiver.url)

        def broker_away_once(args=None, kwargs=None, **options):
            if args and args[0] == job_id and not refused:
                refused.append(job_id)
                raise redis.exceptions.ConnectionError("Error 111 connecting to the broker. Connection refused.")
            return queue_retry(args, kwargs, **options)

        monkeypatch.setattr(task, "apply_async", broker_away_once)
        queue_delivery(hooks, job_id, receiver.url)
        wait_until(lambda: hooks.delivered(job_id), 20, message="the delivery was dropped with its retry")
        requests = receiver.wait_for(2)
    assert refused == [job_id]
    assert [request.headers["webhook-id"] for request in requests] == [job_id, job_id]
    assert job_id not in [entry["id"] for entry in hooks.dead_letters.entries()]


def test_a_receiver_that_keeps_failing_is_dead_lettered_then_redelivered(hooks):
    with Receiver(*[500] * 4) as receiver:  # four attempts, all 500; then it answers 200
        job_id = submit(hooks, receiver.url)
        hooks.runs.wait_finished(job_id)
        assert len(receiver.wait_for(4)) == 4
        assert not hooks.delivered(job_id)

        [entry] = [entry for entry in hooks.dead_letters.entries() if entry["id"] == job_id]
        assert entry["url"] == receiver.url
        assert entry["attempts"] == 4
        assert "answered 500" in entry["last_error"]

        assert redeliver(hooks.settings, job_id) == entry
        hooks.runs.wait_finished(job_id, runs=2)
        requests = receiver.wait_for(5)
    assert len(requests) == 5
    assert {request.headers["webhook-id"] for request in requests} == {job_id}
    assert hooks.delivered(job_id)
    assert job_id not in [listed["id"] for listed in hooks.dead_letters.entries()]
    with pytest.raises(KeyError, match="no failed webhook delivery"):
        redeliver(hooks.settings, job_id)


def test_4xx_is_not_retried(hooks):
    with Receiver(Reply(404, body=b"no such hook")) as receiver:
        job_id = submit(hooks, receiver.url)
        hooks.runs.wait_finished(job_id)
        assert len(receiver.requests) == 1
    assert hooks.runs.states[job_id] == ["SUCCESS"]
    entry = json.loads(hooks.redis.hget("pipeq:webhooks:failed", job_id))
    assert entry["attempts"] == 1
    assert "answered 404: no such hook" in entry["last_error"]


def test_429_is_retried_after_retry_after(hooks):
    with Receiver(Reply(429, headers={"Retry-After": "1"}), 200) as receiver:
        job_id = submit(hooks, receiver.url)
        hooks.runs.wait_finished(job_id)
        first, second = receiver.wait_for(2)
    # Retry-After: 1, capped at max_backoff (0.2 s); jitter alone would have waited at most backoff (0.05 s).
    assert second.at - first.at >= 0.18
    assert hooks.delivered(job_id)


def test_a_delivered_job_is_not_posted_again_when_its_delivery_is_queued_again(hooks, receiver):
    job_id = submit(hooks, receiver.url)
    hooks.runs.wait_finished(job_id)
    receiver.wait_for(1)
    queue_delivery(hooks, job_id, receiver.url, times=2)  # as a re-run after a worker crash would
    hooks.runs.wait_finished(job_id, runs=3)
    assert len(receiver.requests) == 1


def test_deliveries_of_one_job_running_at_once_post_once(hooks):
    with Receiver(Reply(200, delay=0.3)) as receiver:
        job_id = store_final_record(hooks, receiver.url)
        queue_delivery(hooks, job_id, receiver.url, times=3)  # three threads pick them up together
        hooks.runs.wait_finished(job_id, runs=3)
        assert len(receiver.requests) == 1


def test_a_delivery_finding_its_lock_taken_waits_for_it_without_using_its_attempts(hooks):
    """A lock left by an attempt cut off after its POST (Redis restarted before the delivered marker and the lock's
    release): the retry waits for the lock to expire instead of spending its 4 attempts (0.2 s apart at most) on
    it and dead-lettering a webhook the receiver has."""
    with Receiver() as receiver:
        job_id = store_final_record(hooks, receiver.url)
        hooks.redis.set(f"pipeq:webhooks:sending:{job_id}", "an attempt cut off by a restart", px=1500)
        taken_at = time.monotonic()
        queue_delivery(hooks, job_id, receiver.url)
        states = hooks.runs.wait_finished(job_id)
        [request] = receiver.requests
    assert request.at - taken_at >= 1.4  # sent once the lock expired, not before
    assert states[-1] == "SUCCESS" and "RETRY" in states
    assert hooks.delivered(job_id)
    assert job_id not in [entry["id"] for entry in hooks.dead_letters.entries()]


def test_a_message_cannot_buy_attempts_by_claiming_lock_waits(hooks):
    with Receiver(*[500] * 10) as receiver:
        job_id = store_final_record(hooks, receiver.url)
        hooks.app.send_task(DELIVER_TASK, args=[job_id], kwargs={"waited": 10**9}, queue=hooks.settings.webhooks.queue)
        hooks.runs.wait_finished(job_id)
        assert len(receiver.requests) == hooks.settings.webhooks.max_attempts  # 4, as with no claim
    [entry] = [entry for entry in hooks.dead_letters.entries() if entry["id"] == job_id]
    assert entry["attempts"] == hooks.settings.webhooks.max_attempts


@pytest.mark.parametrize(
    ("waited", "retries", "counted"),
    [(0, 3, 0), (2, 3, 2), (3, 3, 3), (4, 3, 3), (10**9, 3, 3), (-5, 3, 0), (True, 3, 0), ("2", 3, 0), (1.5, 3, 0)],
)
def test_lock_waits_are_whole_numbers_no_more_than_the_retries(waited, retries, counted):
    assert lock_waits(waited, retries) == counted


def test_an_unsafe_url_is_dead_lettered_without_an_attempt(hooks):
    strict = hooks.settings.model_copy(
        update={"webhooks": hooks.settings.webhooks.model_copy(update={"allow_private": False})}
    )
    deliver = create_webhooks_app(strict).tasks[DELIVER_TASK]
    for url, reason in [("http://169.254.169.254/latest/meta-data/", "link-local"), ("http://10.0.0.1/", "private")]:
        job_id = store_final_record(hooks, url)
        deliver.apply(args=[job_id])  # in this thread; nothing is sent anywhere
        entry = json.loads(hooks.redis.hget("pipeq:webhooks:failed", job_id))
        assert entry["attempts"] == 1
        assert reason in entry["last_error"]
        assert "public addresses only" in entry["last_error"]


def test_a_delivery_goes_to_the_url_in_the_job_record_and_nowhere_else(hooks, receiver):
    with Receiver() as elsewhere:
        job_id = store_final_record(hooks, receiver.url)
        hooks.app.send_task(DELIVER_TASK, args=[job_id, elsewhere.url], queue=hooks.settings.webhooks.queue)
        hooks.runs.wait_finished(job_id)
        assert elsewhere.requests == [] and receiver.requests == []
    entry = json.loads(hooks.redis.hget("pipeq:webhooks:failed", job_id))
    assert entry["url"] == receiver.url  # the record's, not the message's
    assert f"refusing a delivery of job {job_id} to {elsewhere.url}" in entry["last_error"]
    assert "deliveries go only to the URL in the job's record" in entry["last_error"]

    queue_delivery(hooks, job_id, elsewhere.url)  # as pipeq queues them: the job id alone
    hooks.runs.wait_finished(job_id, runs=2)
    [request] = receiver.wait_for(1)
    assert verify(request.headers, request.body, SECRET)["id"] == job_id


def test_a_job_whose_record_names_no_webhook_gets_no_delivery(hooks, receiver):
    job_id = store_final_record(hooks, None)
    queue_delivery(hooks, job_id, receiver.url)
    hooks.runs.wait_finished(job_id)
    assert receiver.requests == []
    entry = json.loads(hooks.redis.hget("pipeq:webhooks:failed", job_id))
    assert f"job {job_id}'s record names no webhook" in entry["last_error"]


# -- retry timing -----------------------------------------------------------------------------------------


def test_retry_delays_use_full_jitter_and_honour_retry_after_up_to_the_cap():
    config = Webhooks(backoff=1.0, max_backoff=5.0)
    for retries, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (10, 5.0)]:
        delays = [retry_delay(config, retries) for _ in range(200)]
        assert all(0 <= delay <= cap for delay in delays)
        assert max(delays) > cap / 2
    assert retry_delay(config, 0, retry_after=3.0) == 3.0
    assert retry_delay(config, 0, retry_after=3600.0) == 5.0
