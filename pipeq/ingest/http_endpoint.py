"""Source: bucket notifications POSTed to a small HTTP endpoint (MinIO's webhook target, S3-style bodies).

What reaches it is untrusted, so it is guarded at every step:

* a token (``Authorization: Bearer <token>``, MinIO's ``auth_token``) is required unless the endpoint listens on
  loopback only: it refuses to start on any other address without one;
* a request must say its length once, in plain digits (no chunked bodies): 411 without one, 400 for a malformed
  one, 413 past ``max_body_bytes``; no byte past the stated length, nor past the cap, is ever read;
* a connection that goes quiet for ``socket_timeout_s`` while sending its request, or takes longer than
  ``request_deadline_s`` for all of it (headers and body; however slowly it trickles), is closed;
* at most ``max_connections`` are served at once; past that a connection gets a 503 and is closed;
* anything that is not a bucket notification is a malformed event: 400, and nothing is submitted.
"""

import hmac
import ipaddress
import json
import logging
import threading
from contextlib import suppress
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any

from pipeq.core.deadline import SocketDeadline
from pipeq.core.http_server import BoundedHTTPServer
from pipeq.ingest.events import MalformedEvent, parse_event
from pipeq.ingest.ingester import Ingester
from pipeq.ops import metrics

log = logging.getLogger("pipeq.ingest")

AUTH_TOKEN_ENV = "PIPEQ_INGEST_AUTH_TOKEN"
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class EndpointLimits:
    """How much one sender may ask of the endpoint."""

    max_body_bytes: int = 1024 * 1024
    """Largest event accepted (a bucket notification is a few kilobytes)."""
    socket_timeout_s: float = 10.0
    """Longest silence while a request arrives."""
    request_deadline_s: float = 30.0
    """Longest a request may take to arrive, headers and body together."""
    max_connections: int = 64
    """Connections served at once; more are answered 503 and closed."""


class UnsafeEndpoint(ValueError):
    """An endpoint that would accept events from other hosts without a (long enough) token."""


class HttpEndpoint:
    """Accepts events POSTed to ``host:port`` (bound here; port 0 picks a free one), each request in a thread.

    With ``auth_token`` a request needs ``Authorization: Bearer <auth_token>``; without one the endpoint must be
    bound to a loopback address (UnsafeEndpoint otherwise).
    """

    def __init__(
        self,
        ingester: Ingester,
        host: str,
        port: int,
        auth_token: str | None = None,
        limits: EndpointLimits | None = None,
    ) -> None:
        limits = limits or EndpointLimits()
        if auth_token is not None and len(auth_token) < MIN_TOKEN_CHARS:
            raise UnsafeEndpoint(
                f"the ingest auth token has {len(auth_token)} characters; use at least {MIN_TOKEN_CHARS} random ones"
                " (`openssl rand -hex 32` prints some)"
            )
        attributes = {"ingester": ingester, "auth_token": auth_token, "limits": limits}
        handler = type("Handler", (_EventHandler,), {**attributes, "timeout": limits.socket_timeout_s})
        self.server = BoundedHTTPServer((host, port), handler, limits.max_connections)
        if not auth_token and not self.loopback_only:
            self.server.server_close()
            raise UnsafeEndpoint(
                f"refusing to accept events on {host or '0.0.0.0'}:{port} without a token: other hosts can reach"
                f" it, and anyone who can would make jobs. Set {AUTH_TOKEN_ENV} (or --auth-token) to"
                f" {MIN_TOKEN_CHARS}+ random characters (`openssl rand -hex 32`) and give the sender the same token"
                " (MinIO: the webhook target's auth_token), or listen on 127.0.0.1 only"
            )
        self.server.server_activate()

    @property
    def loopback_only(self) -> bool:
        """Whether the endpoint listens on a loopback address, out of other hosts' reach."""
        with suppress(ValueError):
            return ipaddress.ip_address(self.server.server_address[0]).is_loopback
        return False

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def run(self, stop_event: threading.Event) -> None:
        """Serve until ``stop_event`` is set."""
        serving = threading.Thread(target=self.server.serve_forever, name="pipeq-ingest-http", daemon=True)
        serving.start()
        stop_event.wait()
        self.server.shutdown()  # returns once serve_forever has (it runs, or is about to, in ``serving``)

    def close(self) -> None:
        self.server.server_close()


class _Refused(Exception):
    """A request answered with an error status before its body is read."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def body_length(headers: Message, limit: int) -> int:
    """The body's length from the request's one Content-Length header; _Refused (411, 400 or 413) otherwise."""
    if headers.get("Transfer-Encoding"):
        raise _Refused(411, "chunked bodies are not accepted: send the event with a Content-Length header")
    values = headers.get_all("Content-Length") or []
    if not values:
        raise _Refused(411, "a Content-Length header is required")
    if len(values) > 1:
        raise _Refused(400, f"{len(values)} Content-Length headers: send exactly one")
    value = values[0].strip()
    if not (value.isascii() and value.isdigit()):
        raise _Refused(400, f"Content-Length {value[:40]!r} is not a number of bytes (digits only)")
    if len(value) > 20 or int(value) > limit:
        raise _Refused(413, f"events are limited to {limit} bytes")
    return int(value)


class _EventHandler(BaseHTTPRequestHandler):
    """POST <any path> with a bucket notification: 200 with the job ids, 4xx if it is not one."""

    ingester: Ingester
    auth_token: str | None
    limits: EndpointLimits
    server_version = "pipeq-ingest"

    def setup(self) -> None:
        super().setup()  # the socket timeout: ``timeout``, set from limits.socket_timeout_s
        self._deadline = SocketDeadline(self.limits.request_deadline_s).start()  # for the request to arrive
        self._deadline.watch(self.connection)

    def finish(self) -> None:
        self._deadline.close()
        with suppress(OSError):
            super().finish()

    def do_POST(self) -> None:
        if self._deadline.passed:
            return self._hang_up()
        if self.auth_token and not hmac.compare_digest(
            self.headers.get("Authorization", "").encode(), f"Bearer {self.auth_token}".encode()
        ):
            return self._reply(401, {"error": "missing or wrong 'Authorization: Bearer <token>' header"})
        try:
            length = body_length(self.headers, self.limits.max_body_bytes)
        except _Refused as refused:
            return self._reply(refused.status, {"error": str(refused)})
        try:
            body = self.rfile.read(length)
        except OSError:  # quiet for socket_timeout_s, or cut off at the deadline
            return self._hang_up()
        self._deadline.cancel()  # the request is in; what follows is pipeq's own work
        if len(body) < length:
            return self._hang_up()
        try:
            ids = self.ingester.handle_event(parse_event(body), "http")
        except MalformedEvent as exc:
            metrics.ingest_events.labels("http", "malformed").inc()
            return self._reply(400, {"error": str(exc)})
        except Exception as exc:  # Redis or the broker unreachable: the sender should retry
            log.exception("could not submit the jobs of a POSTed event")
            return self._reply(503, {"error": f"could not submit jobs: {exc}"})
        self._reply(200, {"jobs": ids})

    def do_GET(self) -> None:
        self._deadline.cancel()
        if self._deadline.passed:
            return self._hang_up()
        self._reply(200, {"status": "ok"})

    do_HEAD = do_GET  # MinIO checks that a webhook target is up

    def _hang_up(self) -> None:
        log.info("closing a connection from %s: its request did not arrive in time", self.client_address[0])
        self.close_connection = True

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status >= 400:
                self.send_header("Connection", "close")  # the body may be unread
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:  # the sender hung up
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.client_address[0], *args)
