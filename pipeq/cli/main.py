"""The ``pipeq`` command line: submit, status, wait, cancel, jobs, ingest (producers); worker, webhooks (workers);
queues, metrics, health (operators); api (the HTTP API)."""

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeq", description="Event-driven inference for Hugging Face pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a Celery worker pinned to one device (or one per device)")
    where = worker.add_mutually_exclusive_group()
    where.add_argument("--device", default="cpu", help="cpu, cuda:N, or cuda:N,M (one worker seeing GPUs N and M)")
    where.add_argument("--devices", help="one worker process per device: all (every GPU), cpu, or GPU indices 0,1")
    worker.add_argument("--queues", help="comma-separated queues (default: every catalogue queue)")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--name", help="Celery node name (default pipeq-<device>-<pid>@host: unique on a host)")
    worker.add_argument(
        "-E",
        "--task-events",
        action="store_true",
        help="send Celery task events for every job (Flower, celery-exporter)",
    )

    from pipeq.api.cli import add_cli as add_api
    from pipeq.ingest.cli import add_cli as add_ingest
    from pipeq.ops.cli import add_cli as add_ops
    from pipeq.producer.cli import add_cli as add_producer
    from pipeq.webhooks.cli import add_cli as add_webhooks

    add_producer(commands)
    add_ingest(commands)
    add_webhooks(commands)
    add_ops(commands)
    add_api(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        return _worker(args)
    if args.command == "api":
        from pipeq.api.cli import run_cli as api
        from pipeq.config.settings import load_settings

        return api(args, load_settings)
    if args.command in ("ingest", "webhooks", "queues", "metrics", "health"):
        from pipeq.config.settings import load_settings
        from pipeq.ingest.cli import run_cli as ingest
        from pipeq.ops.cli import run_cli as ops
        from pipeq.webhooks.cli import run_cli as webhooks

        if args.command in ("queues", "metrics", "health"):
            return ops(args, load_settings)
        if args.command == "webhooks":
            return webhooks(args, load_settings)  # loaded when needed: new-secret works while the secret is refused
        return ingest(args, load_settings())

    from pipeq.producer import Client
    from pipeq.producer.cli import run_cli as producer

    return producer(args, Client)


def _worker(args: argparse.Namespace) -> int:
    """``pipeq worker``: this process pinned to ``--device``, or one child per device of ``--devices``."""
    from pipeq.worker.launcher import parse_devices, run_worker, run_workers

    queues = args.queues.split(",") if args.queues else None
    if args.devices is None:
        run_worker(args.device, queues, args.loglevel, args.name, args.task_events)
        return 0
    try:
        devices = parse_devices(args.devices)
    except ValueError as exc:
        print(f"pipeq: {exc}", file=sys.stderr)
        return 2
    return run_workers(devices, queues, args.loglevel, args.name, args.task_events)


if __name__ == "__main__":
    sys.exit(main())
