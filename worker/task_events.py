"""Celery task events for the jobs the engine runs, so Flower and celery-exporter see pipeq's jobs.

pipeq's Strategy hands messages to the micro-batching engine, so Celery's request path, which sends task events,
never runs. :class:`TaskEvents` watches the engine instead and sends, for each job, the events Celery would have
sent with the fields Celery sends: ``task-received``, ``task-started``, then ``task-succeeded``, ``task-failed`` or
(canceled, expired) ``task-revoked``.

It sends them when the worker sends task events (``-E``, ``worker_send_task_events``, or the ``enable_events``
remote-control command that Flower uses): the consumer's event dispatcher is enabled and its groups include
``task``. The engine's threads only put small tuples in a bounded queue (dropped and counted when it is full:
watching never blocks a job); one thread of its own builds the events and sends them through a dispatcher of
its own (the consumer's is Celery's main thread's, and not thread-safe): what is queued by then goes in one
message, a list of events, as Celery's own workers batch them. It connects when there is something to send and
reconnects after errors.
"""

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from celery.utils.saferepr import saferepr

from pipeq.config.catalogue import ModelEntry
from pipeq.core.contract import Job
from pipeq.core.messaging import TASK_NAME
from pipeq.core.records import JobRecord
from pipeq.worker.observers import EngineObserver

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
"""Events waiting to be sent; more are dropped (and counted)."""
RESULT_REPR_CHARS = 256
"""A succeeded event carries the start of its result's repr, never a whole transcript or embedding."""
FINAL_EVENTS = {
    "succeeded": "task-succeeded",
    "failed": "task-failed",
    "canceled": "task-revoked",
    "expired": "task-revoked",
}
"""The Celery event a job's final state is sent as: canceled and expired jobs show as revoked in Flower."""
ERROR_MESSAGE_CHARS = 1024
"""A failed event carries the start of its error's message."""
BATCH_EVENTS = 500
"""Most events sent in one message."""
LINGER_S = 0.2
"""How long the sending thread lets events gather before it sends them: monitors see a job a moment later, and the
broker gets a few messages a second however many jobs finish."""
RECONNECT_DELAY_S = 5.0
"""After a connection error, events are dropped for this long before connecting again."""
WARNING_INTERVAL_S = 60.0
"""Warnings about dropped events, at most once this often."""

_STOP = object()


class TaskEvents(EngineObserver):
    """Sends Celery's task events for each job the engine runs (see the module docstring)."""

    def __init__(self, consumer: Any, capacity: int = QUEUE_SIZE) -> None:
        self.consumer = consumer
        self.dropped = 0
        """Events not sent: the queue was full, or the broker unreachable."""
        task = consumer.app.tasks.get(TASK_NAME)
        self._task_sends_events = getattr(task, "send_events", True)
        self._events: queue.Queue[Any] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._dispatcher: Any = None
        self._retry_at = 0.0
        self._warned_at = -WARNING_INTERVAL_S

    # -- the engine's threads -----------------------------------------------------------------------------

    def enabled(self) -> bool:
        """Whether the worker sends task events now (the consumer's dispatcher may change at any time)."""
        dispatcher = getattr(self.consumer, "event_dispatcher", None)
        if dispatcher is None or not dispatcher.enabled or not self._task_sends_events or self._closed:
            return False
        groups = dispatcher.groups
        return not groups or "task" in groups

    def received(self, job: Job) -> None:
        if self.enabled():
            self._put(("task-received", job, time.time()))

    def started(self, entry: ModelEntry, records: Sequence[JobRecord]) -> None:
        if self.enabled():
            for record in records:
                self._put(("task-started", record, None))

    def finished(self, records: Sequence[JobRecord]) -> None:
        if self.enabled():
            for record in records:
                self._put((FINAL_EVENTS.get(record.state, "task-failed"), record, None))

    def redelivered(self, records: Sequence[JobRecord]) -> None:
        """A job delivered again after it finished ends again for the monitors, who saw it received anew."""
        self.finished(records)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop the thread and disconnect. Optional: the
        thread is a daemon, and waits idle for events until the process ends."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # the thread then stops once it has emptied the queue
            self._events.put(_STOP, timeout=timeout)
        thread.join(max(0.0, deadline - time.monotonic()))

    def _put(self, item: tuple[str, Any, float | None]) -> None:
        if self._thread is None:
            self._start()
        try:
            self._events.put_nowait(item)
        except queue.Full:
            self._drop(1, "the queue of task events is full")

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._send_loop, name="pipeq-task-events", daemon=True)
                self._thread.start()

    def _drop(self, count: int, why: str) -> None:
        with self._lock:
            self.dropped += count
            now = time.monotonic()
            if now - self._warned_at < WARNING_INTERVAL_S:
                return
            self._warned_at = now
            dropped = self.dropped
        log.warning("dropped task event(s): %s (%d dropped so far)", why, dropped)

    # -- the sending thread -------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        try:
            while True:
                items = [self._events.get()]  # what else is queued by a moment later goes with it, in one message
                if items[0] is not _STOP and not self._closed:
                    time.sleep(LINGER_S)
                while len(items) < BATCH_EVENTS and not self._events.empty():
                    items.append(self._events.get_nowait())
                events = [item for item in items if item is not _STOP]
                if events and time.monotonic() < self._retry_at:
                    self._drop(len(events), "the broker was unreachable")
                elif events:
                    self._send(events)
                if len(events) < len(items) or (self._closed and self._events.empty()):  # closed, maybe when full
                    return
        finally:
            self._disconnect()

    def _send(self, items: list[tuple[str, Any, float | None]]) -> None:
        """Send these events in one message: a list of events, as Celery's own workers batch them (Flower's and
        celery-exporter's receivers read it as such). When sending fails (the broker unreachable: kombu's
        connection errors, or its OperationalError when connecting fails) they are dropped, and so are the next
        ones for ``RECONNECT_DELAY_S``; then the thread connects again."""
        events = []
        for type_, subject, timestamp in items:
            try:
                events.append((type_, _fields(type_, subject, timestamp)))
            except Exception as exc:  # never let one event stop the thread
                log.debug("building a %s event failed", type_, exc_info=True)
                self._drop(1, f"building a {type_} event raised {type(exc).__name__}: {exc}")
        try:
            if self._dispatcher is None:
                self._dispatcher = self._connect()
            for type_, fields in events:
                self._dispatcher.send(type_, **fields)
            self._dispatcher.flush()
        except Exception as exc:
            self._disconnect()
            self._retry_at = time.monotonic() + RECONNECT_DELAY_S
            why = f"sending failed ({type(exc).__name__}: {exc}); connecting again in {RECONNECT_DELAY_S:g} s"
            self._drop(len(events), why)

    def _connect(self) -> Any:
        app = self.consumer.app
        return app.events.Dispatcher(
            app.connection_for_write(),
            hostname=self.consumer.hostname,
            enabled=True,
            buffer_while_offline=False,
            buffer_group=["task"],
            buffer_limit=BATCH_EVENTS,
        )

    def _disconnect(self) -> None:
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is None:
            return
        try:
            dispatcher.close()
            dispatcher.connection.close()
        except Exception:
            log.debug("closing the task events connection failed", exc_info=True)


def _fields(type_: str, subject: Any, timestamp: float | None) -> dict[str, Any]:
    """The fields Celery sends with an event of ``type_`` (see celery.worker.strategy and .request), for a job
    (received) or its record (the others); timestamps are when it happened, not when it is sent."""
    if type_ == "task-received":
        job: Job = subject
        return {
            "uuid": job.id,
            "name": TASK_NAME,
            "args": f"[job {job.id}]",  # as producers put it in the message: never the whole job
            "kwargs": "{}",
            "root_id": job.id,
            "parent_id": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "timestamp": timestamp,
        }
    record: JobRecord = subject
    if type_ == "task-started":
        return {"uuid": record.id, "timestamp": _epoch(record.started_at)}
    fields: dict[str, Any] = {"uuid": record.id, "timestamp": _epoch(record.finished_at)}
    if type_ == "task-revoked":  # canceled (terminated if it had started) or expired, as Celery reports revokes
        return {
            **fields,
            "terminated": record.started_at is not None,
            "signum": None,
            "expired": record.state == "expired",
        }
    if type_ == "task-succeeded":
        result = {"result_ref": record.result_ref} if record.result_ref else record.result
        fields["result"] = saferepr(result, maxlen=RESULT_REPR_CHARS)[:RESULT_REPR_CHARS]
        fields["runtime"] = _runtime(record)
        return fields
    error_type = record.error.type if record.error else "Error"
    message = record.error.message[:ERROR_MESSAGE_CHARS] if record.error else ""
    fields["exception"] = f"{error_type}({message!r})"
    fields["traceback"] = f"{error_type}: {message}"  # pipeq records no traceback: the line a traceback ends with
    return fields


def _epoch(moment: datetime | None) -> float:
    return moment.timestamp() if moment else time.time()


def _runtime(record: JobRecord) -> float:
    """Seconds the job's attempt ran."""
    if record.started_at is None or record.finished_at is None:
        return 0.0
    return max(0.0, (record.finished_at - record.started_at).total_seconds())
