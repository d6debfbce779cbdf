"""Source: bucket notifications POSTed to a small HTTP endpoint (MinIO's webhook target, S3-style bodies)."""

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeq.ingest.events import MalformedEvent, parse_event
from pipeq.ingest.ingester import Ingester

log = logging.getLogger("pipeq.ingest")

MAX_BODY_BYTES = 16 * 1024 * 1024


class HttpEndpoint:
    """Accepts events POSTed to ``host:port`` (bound here; port 0 picks a free one), each request in a thread.

    With ``auth_token`` a request needs ``Authorization: Bearer <auth_token>`` (MinIO's auth_token).
    """

    def __init__(self, ingester: Ingester, host: str, port: int, auth_token: str | None = None) -> None:
        handler = type("Handler", (_EventHandler,), {"ingester": ingester, "auth_token": auth_token})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True

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


class _EventHandler(BaseHTTPRequestHandler):
    """POST <any path> with a bucket notification: 200 with the job ids, 400 if it is not one."""

    ingester: Ingester
    auth_token: str | None
    server_version = "pipeq-ingest"

    def do_POST(self) -> None:
        if self.auth_token and not hmac.compare_digest(
            self.headers.get("Authorization", "").encode(), f"Bearer {self.auth_token}".encode()
        ):
            return self._reply(401, {"error": "missing or wrong 'Authorization: Bearer <token>' header"})
        try:
            length = int(self.headers["Content-Length"])
        except (TypeError, ValueError):
            return self._reply(411, {"error": "a Content-Length header is required"})
        if length > MAX_BODY_BYTES:
            return self._reply(413, {"error": f"events are limited to {MAX_BODY_BYTES} bytes"})
        body = self.rfile.read(length)
        try:
            ids = self.ingester.handle_event(parse_event(body))
        except MalformedEvent as exc:
            return self._reply(400, {"error": str(exc)})
        except Exception as exc:  # Redis or the broker unreachable: the sender should retry
            log.exception("could not submit the jobs of a POSTed event")
            return self._reply(503, {"error": f"could not submit jobs: {exc}"})
        self._reply(200, {"jobs": ids})

    def do_GET(self) -> None:
        self._reply(200, {"status": "ok"})

    do_HEAD = do_GET  # MinIO checks that a webhook target is up

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            self.send_header("Connection", "close")  # the body may be unread
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.client_address[0], *args)
