"""A real webhook receiver for tests: an HTTP server on a free loopback port, in a thread.

It records every request (path, headers, body) and answers from a script (``[503, 503, 200]``, or
:class:`Reply` objects with headers, a body, a delay); once the script runs out it answers 200. It can be
created stopped (the port is reserved but refuses connections: the receiver is down) and started later, or
stopped and started again on the same port.
"""

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


@dataclass
class Received:
    """One recorded request; header names are lower case."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived


class Receiver:
    """See the module docstring. ``url`` is where to point webhooks."""

    def __init__(self, *replies: int | Reply, started: bool = True, host: str = "127.0.0.1") -> None:
        self.host = host
        self.requests: list[Received] = []
        self.broken_writes = 0  # answers the client stopped reading (e.g. past its size limit)
        self._replies: list[Reply] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._server = self._make_server(0)
        self.port = self._server.server_address[1]
        self.script(*replies)
        if started:
            self.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def script(self, *replies: int | Reply) -> None:
        """Answer the next requests with ``replies`` (ints are statuses), then 200."""
        with self._changed:
            self._replies = [Reply(reply) if isinstance(reply, int) else reply for reply in replies]

    def start(self) -> None:
        """Start listening (again, on the same port, after stop)."""
        if self._thread is not None:
            return
        if self._server is None:
            self._server = self._make_server(self.port)
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until start."""
        if self._server is None:
            return
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self._server = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The requests once there are at least ``count``; AssertionError after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} request(s) after {timeout} s, expected {count}")
            return list(self.requests)

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_server(self, port: int) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                reply = receiver._record(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the client hung up (timed out, or stopped reading)
                    with receiver._changed:
                        receiver.broken_writes += 1
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((self.host, port), Handler, bind_and_activate=False)
        server.daemon_threads = True
        server.server_bind()  # the port is ours; connections are refused until server_activate (listen)
        return server

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._changed:
            self.requests.append(Received(path, headers, body, time.monotonic()))
            self._changed.notify_all()
            return self._replies.pop(0) if self._replies else Reply()
