"""Keep-alive of the delivery messages a webhook worker holds, so a dead one's come back within ``dead_after_s``.

A delivery waiting for its retry is a message Celery holds unacked until its ETA, for up to ``max_backoff``. Left
alone, its delivery time would have to outlast that wait (the broker would otherwise hand it to a second worker),
and a message held by a worker that died, or whose Redis restarted, would wait as long to come back. Instead, the
worker touches (pipeq.core.broker's ``QoS.touch``) every message it received and has not settled, every
``dead_after_s / 6``, as the model workers do; so the webhook queue's redelivery time is ``dead_after_s`` too. When
the consumer stops (its connection was lost, e.g. Redis restarted: Celery forgets the requests it held), so does
the touching of what it held, and those messages come back to a live worker within ``dead_after_s``.
"""

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import bootsteps, signals

log = logging.getLogger(__name__)


class HeldMessages:
    """The messages a worker received and has not settled, touched together (one call per channel)."""

    def __init__(self, task_name: str) -> None:
        self.task_name = task_name
        self._messages: dict[int, Any] = {}
        self._lock = threading.Lock()

    def received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        """Celery's ``task_received`` signal: hold ``request``'s message, if it is one of ours."""
        if request is not None and request.name == self.task_name:
            with self._lock:
                self._messages[id(request.message)] = request.message

    def forget(self) -> None:
        """Forget every held message: the consumer stopped (a lost connection, a shutdown), and Celery with it
        forgot the requests it held, waiting retries included; the broker redelivers their messages once they
        are left untouched for the redelivery time."""
        with self._lock:
            self._messages.clear()

    def held(self) -> list[Any]:
        """The messages still held: not settled, on a channel still open (the others are forgotten)."""
        with self._lock:
            for key, message in list(self._messages.items()):
                if message.acknowledged or getattr(message.channel, "closed", True):
                    del self._messages[key]
            return list(self._messages.values())

    def touch(self) -> int:
        """Touch every held message; returns how many the broker still had unacked."""
        by_touch: dict[Callable[[list[str]], int], list[str]] = {}
        for message in self.held():
            touch = getattr(getattr(message.channel, "qos", None), "touch", None)
            if touch is not None:  # off pipeq's Redis transport there is nothing to touch
                by_touch.setdefault(touch, []).append(message.delivery_tag)
        touched = 0
        for touch, tags in by_touch.items():
            try:
                touched += touch(tags)
            except Exception as exc:  # Redis away: the next round tries again
                log.warning("could not keep %d held webhook deliveries alive: %s", len(tags), exc)
        return touched


class KeepAlive(bootsteps.StartStopStep):
    """A consumer step: holds what the worker receives, and touches it every ``interval_s`` in a thread."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        app = parent.app
        self.messages = HeldMessages(app.pipeq_keepalive_task)
        self.interval_s = app.pipeq_keepalive_interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        signals.task_received.connect(self.messages.received, weak=False)
        self._stopping.set()  # a thread of an earlier start (the consumer restarts after a lost connection) ends
        self._stopping = stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(stopping,), name="pipeq-webhooks-keepalive")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, parent: Any) -> None:
        signals.task_received.disconnect(self.messages.received)
        self._stopping.set()
        self.messages.forget()

    shutdown = stop

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.interval_s):
            self.messages.touch()
