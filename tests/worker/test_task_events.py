"""Celery task events for pipeq's jobs: what Flower and celery-exporter see of a real worker."""

import json
import logging
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from devtools.local_services import free_port
from pipeq.config.settings import Settings
from pipeq.core.messaging import TASK_NAME
from pipeq.core.records import JobRecord, now
from pipeq.producer import Client
from pipeq.worker.app import create_app
from pipeq.worker.task_events import RESULT_REPR_CHARS, TaskEvents
from tests.support.settings import model_name
from tests.support.waiting import wait_until
from tests.support.workers import worker_thread

TEXT = "text-classification"
FEATURES = "feature-extraction"
BAD_TEXT_INPUT = {"text_pair": "a pair with no first text"}  # the pipeline rejects it: a PipelineError
FINAL = ("task-succeeded", "task-failed")


@pytest.fixture
def own_settings(settings: Settings, redis_url: str, redis_db: int, s3) -> Settings:
    """The session's settings on a Redis database pair of this test's own: no other worker takes its jobs."""
    return settings.model_copy(
        update={"broker_url": f"{redis_url}/{redis_db}", "result_backend": f"{redis_url}/{redis_db + 1}"}
    )


@contextmanager
def pipeq_worker(settings: Settings, task_events: bool, heartbeat: bool = False) -> Iterator[Any]:
    """A real pipeq worker in a thread, with a name of its own; ``task_events`` is Celery's ``-E``. Its
    TaskEvents observer is closed once the worker has stopped."""
    app = create_app(settings)
    app.conf.worker_send_task_events = task_events
    hostname = f"events-{uuid.uuid4().hex[:8]}@tests"
    observers: list[TaskEvents] = []
    try:
        with worker_thread(
            app,
            hostname=hostname,
            without_heartbeat=not heartbeat,
        ) as worker:
            engine = worker.consumer.pipeq_engine
            observers = [observer for observer in engine.observer.observers if isinstance(observer, TaskEvents)]
            assert len(observers) == 1, engine.observer.observers
            yield worker
    finally:
        for observer in observers:
            observer.close()


class EventLog:
    """Every event on the broker's event exchange, captured by Celery's own receiver (as Flower and celery-exporter
    capture them) on a plain Celery app, in a thread."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("event-log", broker=broker_url, set_as_current=False)
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._connection = self.app.connection_for_read()
        self._receiver = self.app.events.Receiver(self._connection, handlers={"*": self._on_event})
        self._thread = threading.Thread(
            target=self._receiver.capture, kwargs={"limit": None, "timeout": None, "wakeup": True}, daemon=True
        )

    def __enter__(self) -> "EventLog":
        self._thread.start()
        with self.app.events.default_dispatcher(hostname="probe@tests") as dispatcher:  # listening yet?

            def probe_received() -> bool:
                dispatcher.send("probe-listening")
                return bool(self.of_type("probe-listening"))

            wait_until(probe_received, timeout=30, interval=0.2, message="the event receiver never listened")
        return self

    def __exit__(self, *exc: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)
        self._connection.close()

    def _on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self.events if event["type"] == type_]

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self.events if event.get("uuid") == job_id]

    def finished(self, job_ids: list[str]) -> bool:
        """Whether every job's final event arrived."""
        return all(any(event["type"] in FINAL for event in self.of_job(job_id)) for job_id in job_ids)


def events_of(log: EventLog, job_id: str) -> dict[str, dict[str, Any]]:
    """A job's events by type."""
    return {event["type"]: event for event in log.of_job(job_id)}


def texts(n: int) -> list[str]:
    return [f"review number {i}: the food was {'good' if i % 2 else 'cold'}" for i in range(n)]


def submit_and_wait(client: Client) -> tuple[list[str], dict]:
    """Text jobs (one the pipeline fails), then two feature-extraction jobs: a large result kept in the record and
    one too large for it (offloaded to object storage); their ids and records."""
    ids = client.submit_many(TEXT, [*texts(5), BAD_TEXT_INPUT], model=model_name(TEXT))
    ids += client.submit_many(FEATURES, ["short text", " ".join(texts(30))], model=model_name(FEATURES))
    records = client.wait_many(ids, timeout=180)
    assert [records[job_id].state for job_id in ids] == ["succeeded"] * 5 + ["failed"] + ["succeeded"] * 2
    return ids, records


@pytest.mark.own_worker
def test_every_job_sends_the_task_events_celery_would_send(own_settings: Settings) -> None:
    with (
        pipeq_worker(own_settings, task_events=True) as worker,
        EventLog(own_settings.broker_url) as log,
        closing(Client(own_settings)) as client,
    ):
        ids, records = submit_and_wait(client)
        wait_until(lambda: log.finished(ids), timeout=30, message=lambda: f"events: {log.events}")

    for job_id in ids:
        record = records[job_id]
        events = events_of(log, job_id)
        types = [event["type"] for event in log.of_job(job_id)]
        assert sorted(types) == sorted(["task-received", "task-started", FINAL[record.state == "failed"]]), types
        assert all(event["hostname"] == worker.hostname and event["pid"] == os.getpid() for event in events.values())
        received = events["task-received"]
        assert received["name"] == TASK_NAME
        assert (received["args"], received["kwargs"]) == (f"[job {job_id}]", "{}")
        assert (received["root_id"], received["parent_id"], received["retries"]) == (job_id, None, 0)
        assert events["task-started"]["timestamp"] == record.started_at.timestamp()
        if record.state == "succeeded":
            succeeded = events["task-succeeded"]
            assert succeeded["runtime"] == pytest.approx((record.finished_at - record.started_at).total_seconds())
            assert succeeded["timestamp"] == record.finished_at.timestamp()
            assert len(succeeded["result"]) <= RESULT_REPR_CHARS
            shown = {"result_ref": record.result_ref} if record.result_ref else record.result
            assert succeeded["result"] == repr(shown)[: len(succeeded["result"])]
        else:
            failed = events["task-failed"]
            assert record.error.type == "PipelineError"
            assert failed["exception"] == f"PipelineError({record.error.message!r})"
            assert record.error.message in failed["traceback"]
    inline, offloaded = (records[job_id] for job_id in ids[-2:])
    assert inline.result_ref is None and len(repr(inline.result)) > RESULT_REPR_CHARS  # shown capped (above)
    assert offloaded.result_ref and events_of(log, offloaded.id)["task-succeeded"]["result"] == repr(
        {"result_ref": offloaded.result_ref}
    )

    state = Celery(set_as_current=False).events.State()  # what Flower and celery-exporter make of them
    for event in log.events:
        state.event(event)
    for job_id in ids:
        task = state.tasks[job_id]
        assert (task.name, task.worker.hostname) == (TASK_NAME, worker.hostname)
        assert task.state == ("SUCCESS" if records[job_id].state == "succeeded" else "FAILURE")
        assert (task.runtime is not None) == (records[job_id].state == "succeeded")


@pytest.mark.own_worker
def test_no_task_events_until_they_are_enabled_then_every_job_sends_them(own_settings: Settings) -> None:
    """A worker without ``-E`` sends heartbeats only; Flower's ``enable_events`` command turns task events on."""
    with (
        pipeq_worker(own_settings, task_events=False, heartbeat=True) as worker,
        EventLog(own_settings.broker_url) as log,
        closing(Client(own_settings)) as client,
    ):
        before, _ = submit_and_wait(client)
        replies = worker.app.control.enable_events(destination=[worker.hostname], reply=True, timeout=10)
        assert replies == [{worker.hostname: {"ok": "task events enabled"}}]
        after, records = submit_and_wait(client)
        # One thread sends the events in order: any event of the first jobs would have come before these.
        wait_until(lambda: log.finished(after), timeout=30, message=lambda: f"events: {log.events}")
        heartbeats = lambda: [e for e in log.of_type("worker-heartbeat") if e["hostname"] == worker.hostname]  # noqa: E731
        wait_until(heartbeats, timeout=30, message="the receiver saw no heartbeat of the worker")  # it listens

    assert [event for job_id in before for event in log.of_job(job_id)] == []
    for job_id in after:
        final = FINAL[records[job_id].state == "failed"]
        assert sorted(events_of(log, job_id)) == sorted(["task-received", "task-started", final])


def consumer_with(dispatcher: object, broker_url: str = "memory://") -> SimpleNamespace:
    """What TaskEvents reads of Celery's worker Consumer."""
    app = Celery("fake-worker", broker=broker_url, set_as_current=False)
    app.conf.broker_connection_timeout = 0.2
    return SimpleNamespace(app=app, hostname="fake@tests", event_dispatcher=dispatcher)


@pytest.mark.parametrize(
    ("dispatcher", "enabled"),
    [
        (None, False),  # before Celery's Events bootstep started
        (SimpleNamespace(enabled=False, groups=set()), False),  # no -E, no heartbeats
        (SimpleNamespace(enabled=True, groups={"worker"}), False),  # heartbeats only: a worker without -E
        (SimpleNamespace(enabled=True, groups={"worker", "task"}), True),  # after the enable_events command
        (SimpleNamespace(enabled=True, groups=set()), True),  # -E: every group
    ],
)
def test_task_events_are_sent_when_the_workers_dispatcher_sends_task_events(dispatcher, enabled) -> None:
    assert TaskEvents(consumer_with(dispatcher)).enabled() is enabled


def test_a_full_queue_or_an_unreachable_broker_drops_events_and_never_blocks_the_engine(caplog) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    events = TaskEvents(consumer_with(SimpleNamespace(enabled=True, groups=set()), unreachable), capacity=5)
    started = now()
    records = [
        JobRecord(state="succeeded", id=f"job-{i}", task=TEXT, model="m", submitted_at=started, started_at=started)
        for i in range(50)
    ]
    with caplog.at_level(logging.WARNING, logger="pipeq.worker.task_events"):
        events.finished(records)  # returns at once: at most 5 wait, the rest are dropped
        events.close(timeout=30)  # the sender found the broker unreachable: it dropped what waited
    assert events.dropped == len(records)
    assert len([r for r in caplog.records if "dropped task event" in r.getMessage()]) == 1  # once a minute at most


def flower_tasks(port: int) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tasks", timeout=5) as response:
        return json.loads(response.read())


def flower_has(port: int, job_ids: list[str], states: tuple[str, ...]) -> bool:
    try:
        tasks = flower_tasks(port)
    except OSError:
        return False
    return all(tasks.get(job_id, {}).get("state") in states for job_id in job_ids)


@contextmanager
def flower(broker_url: str, log_path: Path) -> Iterator[int]:
    """Flower in a subprocess, its HTTP API open on a free loopback port (yielded)."""
    port = free_port()
    env = dict(os.environ, FLOWER_UNAUTHENTICATED_API="true")
    command = [sys.executable, "-m", "celery", f"--broker={broker_url}", "flower", f"--port={port}"]
    with open(log_path, "ab") as output:
        process = subprocess.Popen([*command, "--address=127.0.0.1"], env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.mark.own_worker
def test_flower_shows_every_job_of_a_worker_it_turned_task_events_on_for(
    own_settings: Settings, tmp_path: Path
) -> None:
    log_path = tmp_path / "flower.log"
    with (
        flower(own_settings.broker_url, log_path) as port,
        pipeq_worker(own_settings, task_events=False, heartbeat=True) as worker,
        closing(Client(own_settings)) as client,
    ):

        def tail() -> str:
            return log_path.read_text(errors="replace")[-3000:]

        groups = worker.consumer.event_dispatcher.groups
        wait_until(lambda: "task" in groups, timeout=60, message=lambda: f"Flower never enabled events:\n{tail()}")
        probe = f"probe-{uuid.uuid4()}"  # Flower listens once it shows an event sent now
        with Celery(broker=own_settings.broker_url, set_as_current=False).events.default_dispatcher() as dispatcher:

            def flower_listens() -> bool:
                dispatcher.send("task-received", uuid=probe, name="probe")
                return flower_has(port, [probe], ("RECEIVED",))

            wait_until(flower_listens, timeout=60, interval=0.5, message=lambda: f"Flower never listened:\n{tail()}")
        ids, records = submit_and_wait(client)
        wait_until(
            lambda: flower_has(port, ids, ("SUCCESS", "FAILURE")),
            timeout=60,
            message=lambda: f"Flower's tasks: {flower_tasks(port)}\n{tail()}",
        )
        tasks = flower_tasks(port)

    for job_id in ids:
        task = tasks[job_id]
        assert (task["name"], task["worker"]) == (TASK_NAME, worker.hostname)
        assert task["state"] == ("SUCCESS" if records[job_id].state == "succeeded" else "FAILURE")
        if records[job_id].state == "failed":
            assert task["exception"].startswith("PipelineError(")
        else:
            assert task["runtime"] == pytest.approx(
                (records[job_id].finished_at - records[job_id].started_at).total_seconds()
            )


def test_canceled_and_expired_jobs_are_sent_as_celery_revokes() -> None:
    from pipeq.worker.task_events import FINAL_EVENTS, _fields

    queued = JobRecord(state="queued", id="job-r", task=TEXT, model=model_name(TEXT), submitted_at=now())
    canceled = queued.model_copy(update={"started_at": now()}).ended("canceled", "Canceled", "canceled")
    expired = queued.ended("expired", "Expired", "not started by its deadline")
    assert FINAL_EVENTS[canceled.state] == FINAL_EVENTS[expired.state] == "task-revoked"
    assert _fields("task-revoked", canceled, None) | {"timestamp": 0} == {
        "uuid": "job-r",
        "timestamp": 0,
        "terminated": True,
        "signum": None,
        "expired": False,
    }
    assert _fields("task-revoked", expired, None)["expired"] is True
    assert _fields("task-revoked", expired, None)["terminated"] is False
