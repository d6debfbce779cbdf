"""The metrics and health endpoint every long-running pipeq process serves (``[metrics] port``).

* ``GET /metrics``: Prometheus text format (OpenMetrics when the scraper asks for it), every metric of the
  process's default registry;
* ``GET /healthz``: 200 while the process is alive and its loops run (a liveness probe);
* ``GET /readyz``: 200 when it can do its work now (a worker: connected to the broker, its models loadable, not
  draining); 503 with the reason otherwise (a readiness probe; ``pipeq health`` asks it).

Anything else is 404; only GET and HEAD are served. It runs in daemon threads of its own, each request in a
thread, at most :data:`MAX_CONNECTIONS` at once, each with a socket timeout: a slow or stuck scraper holds one of
those threads, never a job. Metrics are read from counters the job path only increments.
"""

import errno
import json
import logging
import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import redis
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeq.config.settings import Metrics
from pipeq.core.http_server import BoundedHTTPServer
from pipeq.core.redis_client import redis_client

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
SOCKET_TIMEOUT_S = 10.0
PORT_SETTING = "[metrics] port (PIPEQ_METRICS__PORT)"
REDIS_PING_TIMEOUT_S = 2.0
"""How long a readiness check waits for each Redis to answer."""

Check = Callable[[], str | None]
"""A health check: None when healthy, else why not (one line)."""


@dataclass
class Health:
    """What ``/healthz`` and ``/readyz`` ask: each check returns None when healthy, or the reason it is not."""

    live: Check = lambda: None
    ready: Check = lambda: None


class PortInUse(OSError):
    """The metrics port is taken by another process."""


class MetricsServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (port 0 picks a free one) until
    :meth:`close`; PortInUse, naming the port and the setting, when the port is taken."""

    def __init__(
        self, host: str, port: int, health: Health | None = None, registry: CollectorRegistry = REGISTRY
    ) -> None:
        attributes = {"health": health or Health(), "registry": registry, "timeout": SOCKET_TIMEOUT_S}
        handler = type("Handler", (_OpsHandler,), attributes)
        try:
            self.server = BoundedHTTPServer((host, port), handler, MAX_CONNECTIONS)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(_in_use_message(host, port)) from None
            raise
        self.server.server_activate()
        self._thread = threading.Thread(target=self.server.serve_forever, name="pipeq-metrics", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def impatient_redis(url: str, timeout_s: float) -> redis.Redis:
    """A Redis client whose every command gives up after ``timeout_s`` seconds, without retries: for probes and
    scrapes, which try again next time."""
    return redis_client(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))


def redis_health(*urls: str) -> Health:
    """Probes of a process whose work is Redis's: live while it runs, ready while every Redis at ``urls``
    answers a PING (within :data:`REDIS_PING_TIMEOUT_S`)."""
    clients = [impatient_redis(url, REDIS_PING_TIMEOUT_S) for url in dict.fromkeys(urls)]

    def ready() -> str | None:
        for client in clients:
            try:
                client.ping()
            except Exception as exc:
                return f"Redis does not answer: {type(exc).__name__}: {exc}"
        return None

    return Health(ready=ready)


def _in_use_message(host: str, port: int) -> str:
    return (
        f"the metrics port {host}:{port} is already in use by another process: choose a free port with"
        f" {PORT_SETTING}, or stop the process holding it"
    )


def check_port_free(config: Metrics, port_offset: int = 0) -> None:
    """PortInUse (naming the port and the setting) when the endpoint ``config`` asks for could not listen now."""
    if config.port is None:
        return
    port = config.port + port_offset
    with socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no owner
        try:
            probe.bind((config.host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(_in_use_message(config.host, port)) from None
            raise


def serve(config: Metrics, health: Health | None = None, port_offset: int = 0) -> MetricsServer | None:
    """The endpoint ``config`` asks for, serving (None when ``[metrics] port`` is not set)."""
    if config.port is None:
        return None
    server = MetricsServer(config.host, config.port + port_offset, health)
    log.info("metrics and health on %s/metrics", server.url)
    return server


class _OpsHandler(BaseHTTPRequestHandler):
    health: Health
    registry: CollectorRegistry
    server_version = "pipeq-metrics"

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            return self._reply(200, encoder(self.registry), content_type)
        if path in ("/healthz", "/readyz"):
            check = self.health.live if path == "/healthz" else self.health.ready
            try:
                problem = check()
            except Exception as exc:  # a check that fails says so; it never takes the endpoint down
                problem = f"the check raised {type(exc).__name__}: {exc}"
            body = {"status": "ok"} if problem is None else {"status": "unavailable", "reason": problem}
            return self._reply(200 if problem is None else 503, json.dumps(body).encode(), "application/json")
        self._reply(404, b'{"error": "not found: try /metrics, /healthz or /readyz"}', "application/json")

    do_HEAD = do_GET

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        with suppress(OSError):  # the scraper hung up
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http %s: " + format, self.client_address[0], *args)
