"""``pipeq webhooks``: the delivery worker, failed deliveries, redelivery, and new signing secrets."""

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from pipeq.config.settings import Settings
from pipeq.core.amqp import redis_urls
from pipeq.core.messaging import node_name
from pipeq.core.records import RecordStore
from pipeq.ops.http import PortInUse, redis_health, serve
from pipeq.webhooks.dead_letters import DeadLetters
from pipeq.webhooks.delivery import create_webhooks_app, missing_secret, redeliver
from pipeq.webhooks.signing import new_secret


def run_webhooks_worker(
    settings: Settings,
    concurrency: int = 16,
    loglevel: str = "INFO",
    name: str | None = None,
    task_events: bool = False,
) -> None:
    """Run a Celery worker (threads pool) that delivers webhooks from the webhooks queue, serving its metrics and
    health on ``[metrics] port``; PortInUse when that port is taken."""
    server = serve(settings.metrics, redis_health(*redis_urls(settings)))
    try:
        _celery_worker(settings, concurrency, loglevel, name, task_events)
    finally:
        if server is not None:
            server.close()


def _celery_worker(settings: Settings, concurrency: int, loglevel: str, name: str | None, task_events: bool) -> None:
    create_webhooks_app(settings).worker_main(
        [
            "worker",
            "-Q",
            settings.webhooks.queue,
            "-P",
            "threads",
            "-c",
            str(concurrency),
            f"--loglevel={loglevel}",
            f"--hostname={node_name('webhooks', name)}",
            "--without-gossip",
            "--without-mingle",
            *(["--task-events"] if task_events else []),
        ]
    )


def add_cli(subparsers: Any) -> None:
    """Add ``webhooks failed | redeliver ID | worker | new-secret`` to the ``pipeq`` command's subparsers."""
    webhooks = subparsers.add_parser("webhooks", help="webhook deliveries: failed ones, redelivery, the worker")
    actions = webhooks.add_subparsers(dest="webhooks_action", required=True)
    actions.add_parser("failed", help="list failed deliveries (JSON lines, oldest first)")
    again = actions.add_parser("redeliver", help="queue a failed delivery again (attempts start afresh)")
    again.add_argument("job_id")
    worker = actions.add_parser("worker", help="run the webhook delivery worker (threads pool)")
    worker.add_argument("--concurrency", type=int, default=16, help="deliveries in flight at once")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--name", help="Celery node name (default pipeq-webhooks-<pid>@host)")
    worker.add_argument("-E", "--task-events", action="store_true", help="send Celery task events (Flower)")
    actions.add_parser("new-secret", help="print a new signing secret for [webhooks] secret (whsec_ + base64)")


def run_cli(args: argparse.Namespace, load_settings: Callable[[], Settings]) -> int:
    """Run a ``pipeq webhooks`` action; the exit status. Settings are loaded only by actions that use them, so
    ``new-secret`` works while the configured secret is still refused."""
    if args.webhooks_action == "new-secret":
        print(new_secret())
        return 0
    settings = load_settings()
    if args.webhooks_action == "worker":
        refusal = missing_secret(settings.webhooks)
        if refusal:
            print(f"pipeq webhooks worker: {refusal}", file=sys.stderr)
            return 2
        try:
            run_webhooks_worker(settings, args.concurrency, args.loglevel, args.name, args.task_events)
        except PortInUse as exc:
            print(f"pipeq webhooks worker: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.webhooks_action == "failed":
        for entry in DeadLetters(RecordStore(settings.result_backend).redis).entries():
            print(json.dumps(entry))
        return 0
    try:
        entry = redeliver(settings, args.job_id)
    except KeyError as exc:
        print(f"pipeq: {exc.args[0]}", file=sys.stderr)
        return 2
    print(json.dumps({"queued": entry["id"], "url": entry["url"]}))
    return 0
