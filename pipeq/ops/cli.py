"""``pipeq queues``, ``pipeq metrics`` and ``pipeq health``: each queue's backlog for people and for Prometheus,
and a readiness probe for a local pipeq process."""

import argparse
import http.client
import json
import logging
import math
import sys
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from pipeq.config.settings import Settings
from pipeq.core.lifetime import run_until_stopped
from pipeq.core.redis_client import is_redis_url, redis_address
from pipeq.ops.backlog import (
    READ_TIMEOUT_S,
    BacklogCollector,
    QueueBacklog,
    backlog_queues,
    read_backlog,
)
from pipeq.ops.http import PORT_SETTING, Health, MetricsServer, PortInUse, impatient_redis

log = logging.getLogger("pipeq.ops")

MAX_QUEUE_NAME_CHARS = 200
DEFAULT_PROBE_TIMEOUT_S = 5.0
MAX_PROBE_BODY_BYTES = 64 * 1024
MAX_REASON_CHARS = 500


# -- arguments -----------------------------------------------------------------------------------------------


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut short when long."""
    return repr(text if len(text) <= 60 else text[:60] + "...")


def queue_name(text: str) -> str:
    """A ``--queue`` value: non-empty, at most 200 characters, printable, no whitespace."""
    if not text:
        raise argparse.ArgumentTypeError("expected a queue name, got an empty string")
    if len(text) > MAX_QUEUE_NAME_CHARS:
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is too long for a queue name: {len(text)} characters, at most {MAX_QUEUE_NAME_CHARS}"
        )
    if any(char.isspace() or not char.isprintable() for char in text):
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not a queue name: it holds whitespace or control characters"
        )
    return text


def tcp_port(text: str) -> int:
    """A ``--port`` value: 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port, 1 to 65535, got {_shown(text)}")
    return port


def listen_host(text: str) -> str:
    """A ``--host`` value: an address to listen on, e.g. 127.0.0.1 or 0.0.0.0."""
    if not text or any(char.isspace() or not char.isprintable() for char in text):
        raise argparse.ArgumentTypeError(
            f"expected an address to listen on (127.0.0.1, 0.0.0.0, ::), got {_shown(text)}"
        )
    return text


def seconds(text: str) -> float:
    """A ``--timeout`` value: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {_shown(text)}")
    return value


def probe_url(text: str) -> str:
    """A ``--url`` value: an http:// or https:// URL with a host (and a valid port, if any)."""
    example = "e.g. http://127.0.0.1:9100/readyz"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL ({example}), got {_shown(text)}")
    try:
        parts.port  # noqa: B018 (validates it)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(text)} has no valid port ({example})") from None
    if not parts.hostname:
        raise argparse.ArgumentTypeError(f"{_shown(text)} names no host ({example})")
    return text


def add_cli(subparsers: Any) -> None:
    """Add ``queues``, ``metrics`` and ``health`` to the ``pipeq`` command's subparsers."""
    queues = subparsers.add_parser(
        "queues",
        help="print each queue's backlog: jobs waiting (and by priority), jobs held by workers, the oldest waiting"
        " job's age",
        description="Read from the broker's Redis alone: no worker needs to run. Every catalogue queue and the"
        " webhooks queue are shown, and any named with --queue.",
    )
    queues.add_argument("--queue", action="append", type=queue_name, default=[], help="also show this queue")
    queues.add_argument(
        "--json",
        action="store_true",
        help="print JSON: queue -> waiting, waiting_by_priority (high, normal, low), held, oldest_age_s",
    )

    metrics = subparsers.add_parser(
        "metrics",
        help="serve the backlog of every queue to Prometheus (/metrics, /healthz, /readyz) until Ctrl-C",
        description="Each scrape reads the backlog from the broker's Redis: pipeq_queue_waiting_jobs,"
        " pipeq_queue_held_jobs, pipeq_queue_oldest_waiting_age_seconds (by queue) and pipeq_backlog_up.",
    )
    metrics.add_argument("--host", type=listen_host, help="address to listen on (default: [metrics] host)")
    metrics.add_argument("--port", type=tcp_port, help="port to listen on (default: [metrics] port)")
    metrics.add_argument("--queue", action="append", type=queue_name, default=[], help="also export this queue")

    health = subparsers.add_parser(
        "health",
        help="exit 0 when the local pipeq process's /readyz says ready (a Kubernetes exec probe), else 1",
    )
    health.add_argument(
        "--url", type=probe_url, help="the readiness URL to ask (default: http://127.0.0.1:<port>/readyz)"
    )
    health.add_argument("--port", type=tcp_port, help="the local metrics port (default: [metrics] port)")
    health.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_PROBE_TIMEOUT_S,
        help=f"seconds to wait for an answer (default {DEFAULT_PROBE_TIMEOUT_S:g})",
    )


def run_cli(args: argparse.Namespace, load_settings: Callable[[], Settings]) -> int:
    """Run ``pipeq queues``, ``pipeq metrics`` or ``pipeq health``; the exit status (2: bad configuration)."""
    command = f"pipeq {args.command}"
    if args.command == "health" and (args.url or args.port):
        return _health(command, args.url or _readyz_url(args.port), args.timeout)
    try:
        settings = load_settings()
    except (ValueError, OSError) as exc:  # pydantic's ValidationError, a missing or unreadable file
        print(f"{command}: the configuration could not be read: {exc}", file=sys.stderr)
        return 2
    if args.command == "health":
        if settings.metrics.port is None:
            print(f"{command}: no port to ask: set {PORT_SETTING}, or pass --port or --url", file=sys.stderr)
            return 2
        return _health(command, _readyz_url(settings.metrics.port), args.timeout)
    if not is_redis_url(settings.broker_url):
        print(
            f"{command}: the backlog is read from a Redis broker, and broker_url (PIPEQ_BROKER_URL) is not a"
            f" redis://, rediss://, unix:// or sentinel:// URL (on RabbitMQ, its management API counts queues)",
            file=sys.stderr,
        )
        return 2
    try:
        client = impatient_redis(settings.broker_url, READ_TIMEOUT_S)
    except ValueError as exc:  # e.g. a port that is not a number
        print(f"{command}: broker_url (PIPEQ_BROKER_URL) is not a usable Redis URL: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "queues":
            return _queues(command, settings, client, args.queue, args.json)
        return _metrics(command, settings, client, args.host, args.port, args.queue)
    finally:
        client.close()


# -- pipeq queues --------------------------------------------------------------------------------------------


def _queues(command: str, settings: Settings, client: redis.Redis, extra: list[str], as_json: bool) -> int:
    where = redis_address(settings.broker_url)
    try:
        backlog = read_backlog(client, backlog_queues(settings, extra))
    except Exception as exc:  # RedisError mostly; nothing read is trusted
        print(
            f"{command}: could not read the backlog from the broker's Redis at {where} ({type(exc).__name__}:"
            f" {str(exc).rstrip('.')}). Check that Redis runs and is reachable there, and that broker_url"
            " (PIPEQ_BROKER_URL) names it",
            file=sys.stderr,
        )
        return 1
    if as_json:
        print(json.dumps({queue: counts.as_json() for queue, counts in backlog.items()}, indent=2))
    else:
        print(backlog_table(backlog))
    return 0


def backlog_table(backlog: dict[str, QueueBacklog]) -> str:
    """The backlog as an aligned table: QUEUE, WAITING, of them HIGH, NORMAL and LOW, HELD, OLDEST AGE (``-`` when
    nothing waits)."""
    rows = [("QUEUE", "WAITING", "HIGH", "NORMAL", "LOW", "HELD", "OLDEST AGE")]
    for queue, counts in backlog.items():
        age = format_age(counts.oldest_age_s) if counts.waiting else "-"
        by_priority = [str(n) for n in counts.waiting_by_priority().values()]
        rows.append((queue, str(counts.waiting), *by_priority, str(counts.held), age))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for queue, *counts in rows:  # names to the left, numbers to the right
        cells = [queue.ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(counts, widths[1:], strict=True))]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def format_age(age_s: float) -> str:
    """A duration for people: 42s, 3m05s, 2h07m, 3d04h."""
    whole = int(age_s)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


# -- pipeq metrics -------------------------------------------------------------------------------------------


def _metrics(
    command: str, settings: Settings, client: redis.Redis, host: str | None, port: int | None, extra: list[str]
) -> int:
    port = port if port is not None else settings.metrics.port
    if port is None:
        print(f"{command}: no port to serve on: set {PORT_SETTING}, or pass --port", file=sys.stderr)
        return 2
    host = host or settings.metrics.host
    where = redis_address(settings.broker_url)
    collector = BacklogCollector(client, backlog_queues(settings, extra), f"the broker's Redis at {where}")
    registry = exporter_registry(collector)
    try:
        server = MetricsServer(host, port, Health(ready=collector.problem), registry)
    except PortInUse as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{command}: cannot listen on {host}:{port}: {exc}; check --host / [metrics] host", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("the backlog of %s, read from %s, on %s/metrics", ", ".join(collector.queues), where, server.url)
    try:
        run_until_stopped(threading.Event())
    finally:
        server.close()
    return 0


def exporter_registry(collector: BacklogCollector) -> CollectorRegistry:
    """What the exporter serves: the backlog and its own process's metrics; not the (empty) metrics of workers,
    which would only blur sums across targets."""
    registry = CollectorRegistry()
    for make in (ProcessCollector, PlatformCollector, GCCollector):
        make(registry=registry)
    registry.register(collector)
    return registry


# -- pipeq health --------------------------------------------------------------------------------------------


def _readyz_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/readyz"


def _health(command: str, url: str, timeout_s: float) -> int:
    problem = readiness_problem(url, timeout_s)
    if problem is not None:
        print(f"{command}: not ready: {problem}", file=sys.stderr)
        return 1
    print("ready")
    return 0


def readiness_problem(url: str, timeout_s: float) -> str | None:
    """None when ``url`` answers 200 within ``timeout_s`` seconds; else why not: the reason in the JSON body of
    pipeq's ``/readyz``, the HTTP status, or the connection error. A URL without a path asks ``/readyz``."""
    parts = urlsplit(url)
    path = (parts.path or "/readyz") + (f"?{parts.query}" if parts.query else "")
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.hostname or "", parts.port, timeout=timeout_s)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(MAX_PROBE_BODY_BYTES)
    except (OSError, http.client.HTTPException) as exc:
        return f"no answer from {url}: {type(exc).__name__}: {exc or 'no detail'}"
    finally:
        connection.close()
    if response.status == 200:
        return None
    return f"{url} answered {response.status}: {_reason(body) or response.reason or 'no reason given'}"


def _reason(body: bytes) -> str | None:
    """The ``reason`` of a pipeq health answer, on one printable line and cut short; None if there is none."""
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(reason, str) or not reason:
        return None
    line = "".join(char if char.isprintable() else " " for char in reason)
    return line if len(line) <= MAX_REASON_CHARS else line[:MAX_REASON_CHARS] + "..."
