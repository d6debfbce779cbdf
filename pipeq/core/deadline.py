"""A deadline enforced on sockets: when it passes, the sockets it watches are shut down.

A per-read timeout is not a deadline: a peer that sends a byte at a time resets it with every byte and can hold a
connection for as long as it likes. :class:`SocketDeadline` runs a timer instead; when it fires it shuts down
every socket it watches (``shutdown``, which wakes a thread blocked reading or writing, TLS included), so the
exchange fails at once. A webhook attempt watches the connections httpx opens (:meth:`SocketDeadline.trace`, its
``trace`` request extension); the ingest endpoint watches the connection of each request it serves.
"""

import socket
import threading
import time
from contextlib import suppress
from typing import Any

CONNECTED = "connection.connect_tcp.complete"
"""The httpx (httpcore) trace event of a new TCP connection; its ``return_value`` is the network stream."""


class SocketDeadline:
    """``seconds`` from :meth:`start` (or entering the ``with`` block), after which the watched sockets are shut
    down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._passed = False

    def start(self) -> "SocketDeadline":
        """Start counting."""
        self._ends = time.monotonic() + self.seconds
        self._timer.start()
        return self

    def cancel(self) -> None:
        """The deadline no longer applies: nothing is shut down when it would have passed."""
        self._timer.cancel()

    def close(self) -> None:
        """Cancel, and let go of the watched sockets."""
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()  # our duplicate only: the connection itself is closed by its owner
            self._sockets.clear()

    def __enter__(self) -> "SocketDeadline":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def passed(self) -> bool:
        """Whether the deadline has passed (and the watched sockets were shut down)."""
        return self._passed or time.monotonic() >= self._ends

    def remaining(self) -> float:
        """Seconds left, never below a millisecond (a timeout of 0 means 'no timeout' to some APIs)."""
        return max(0.001, self._ends - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it has already)."""
        duplicate = sock.dup()  # the same connection; stays valid when TLS wraps (and detaches) the original
        with self._lock:
            if not self._passed:
                self._sockets.append(duplicate)
                return
        _shut_down(duplicate)
        duplicate.close()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's ``trace`` extension: watch each connection the request opens."""
        if event == CONNECTED and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                self.watch(sock)

    def _expire(self) -> None:
        with self._lock:
            self._passed = True
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    with suppress(OSError):  # already closed or reset: nothing left to stop
        sock.shutdown(socket.SHUT_RDWR)
