"""The ``pipeq ingest`` command: its arguments, and running the sources they name until Ctrl-C or SIGTERM."""

import argparse
import logging
import os
import sys
import threading
from typing import Any

from pipeq.config.settings import Settings, load_settings
from pipeq.core.amqp import redis_urls
from pipeq.core.lifetime import run_until_stopped
from pipeq.ingest.http_endpoint import AUTH_TOKEN_ENV, HttpEndpoint, UnsafeEndpoint
from pipeq.ingest.ingester import Ingester, MissingIdKey, Source, id_key
from pipeq.ingest.polling import Poller
from pipeq.ingest.redis_list import RedisListSource
from pipeq.ingest.sqs import SqsSource
from pipeq.ops.http import PortInUse, redis_health, serve
from pipeq.producer.client import Client

log = logging.getLogger("pipeq.ingest")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--http takes HOST:PORT, not {text!r}")
    return host or "0.0.0.0", int(port)


def _passes(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"--poll-full-every takes a number of passes from 1 to 10000, not {text!r}")
    return int(text)


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``pipeq ingest`` to the ``pipeq`` command's subparsers."""
    parser = subparsers.add_parser(
        "ingest",
        help="turn new objects in object storage into jobs, by the config's [[ingest]] rules",
        description="Any combination of sources; runs until Ctrl-C. One job per object version, however often "
        "an object is announced or seen.",
    )
    parser.add_argument("--redis-list", metavar="KEY", help="read bucket notifications from this Redis list")
    parser.add_argument("--redis-url", metavar="URL", help="the Redis holding --redis-list (default: broker_url)")
    parser.add_argument("--http", metavar="HOST:PORT", type=_host_port, help="accept notifications POSTed here")
    parser.add_argument(
        "--auth-token",
        metavar="TOKEN",
        default=os.environ.get(AUTH_TOKEN_ENV),
        help=f"require 'Authorization: Bearer TOKEN' on --http requests (default: ${AUTH_TOKEN_ENV}, which keeps it"
        " out of the process list); required unless --http listens on loopback",
    )
    parser.add_argument(
        "--sqs",
        metavar="QUEUE_URL",
        action="append",
        help="long-poll this SQS queue for S3 notifications (S3's own, through SNS, or EventBridge's Object Created);"
        " repeat for several queues. The client takes s3_region and the S3 credentials from the config",
    )
    parser.add_argument("--poll", type=float, metavar="SECONDS", help="list the rules' buckets every SECONDS")
    parser.add_argument(
        "--backfill", action="store_true", help="with --poll: submit objects already there (default: skip them)"
    )
    parser.add_argument(
        "--poll-full-every",
        type=_passes,
        default=1,
        metavar="N",
        help="with --poll: list everything every N-th pass, and between them only the keys after the last one seen"
        " (for keys that grow, such as dates; default 1: every pass lists everything)",
    )
    return parser


def sources(args: argparse.Namespace, ingester: Ingester) -> list[Source]:
    """The sources ``args`` name, ready to run (the HTTP endpoint already listening). UnsafeEndpoint, before any
    other source is made, for an HTTP endpoint others could reach without a token."""
    found: list[Source] = []
    if args.http:
        endpoint = HttpEndpoint(ingester, *args.http, auth_token=args.auth_token or None)
        log.info("accepting events on %s", endpoint.url)
        found.append(endpoint)
    if args.redis_list:
        found.append(RedisListSource(ingester, args.redis_list, redis_url=args.redis_url))
    if args.sqs:
        found.append(SqsSource(ingester, args.sqs))
    if args.poll:
        found.append(Poller(ingester, args.poll, backfill=args.backfill, full_every=args.poll_full_every))
    return found


def run_cli(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Run ``pipeq ingest`` until Ctrl-C or SIGTERM; 2 when there is nothing to do."""
    settings = settings or load_settings()
    if not settings.ingest:
        print("pipeq ingest: no [[ingest]] rules in the configuration", file=sys.stderr)
        return 2
    if not (args.redis_list or args.http or args.poll or args.sqs):
        print("pipeq ingest: name at least one source: --redis-list, --http, --sqs or --poll", file=sys.stderr)
        return 2
    try:
        id_key(settings)
    except MissingIdKey as exc:
        print(f"pipeq ingest: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = serve(settings.metrics, redis_health(*redis_urls(settings)))
    except PortInUse as exc:
        print(f"pipeq ingest: {exc}", file=sys.stderr)
        return 2
    client = Client(settings)
    try:
        running = sources(args, Ingester(settings, client))
    except UnsafeEndpoint as exc:
        client.close()
        if server is not None:
            server.close()
        print(f"pipeq ingest: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    threads = [threading.Thread(target=source.run, args=(stop,)) for source in running]
    for thread in threads:
        thread.start()
    try:
        run_until_stopped(stop)
    finally:
        for thread in threads:
            thread.join()
        for source in running:
            source.close()
        client.close()
        if server is not None:
            server.close()
    return 0
