"""The ``pipeq`` command line: submit, status, wait, ingest (producers); worker, webhooks (workers)."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _param(text: str) -> tuple[str, Any]:
    """``k=v``; ``v`` is read as JSON when it parses (numbers, lists, true), else kept as a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--param takes name=value, not {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _input(text: str) -> Any:
    """``@path`` sends a local file's bytes inline; anything else is text or an s3:// reference."""
    if text.startswith("@"):
        return Path(text[1:]).read_bytes()
    return text


def _print_record(record: Any) -> None:
    print(record.model_dump_json(indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeq", description="Event-driven inference for Hugging Face pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("submit", help="submit one job and print its id (or its record with --wait)")
    submit.add_argument("task", help="e.g. text-classification, automatic-speech-recognition")
    submit.add_argument("input", help="text, s3://bucket/key, or @local-file to send inline")
    submit.add_argument("--model", help="a catalogue model (default: the task's default)")
    submit.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE")
    submit.add_argument("--webhook", help="URL to POST the result to")
    submit.add_argument("--id", dest="job_id", help="job id / idempotency key (default: a new UUID)")
    submit.add_argument("--wait", action="store_true", help="wait for the result and print the record")
    submit.add_argument("--timeout", type=float, default=None)

    status = commands.add_parser("status", help="print a job's record")
    status.add_argument("job_id")

    wait = commands.add_parser("wait", help="wait until a job is done and print its record")
    wait.add_argument("job_id")
    wait.add_argument("--timeout", type=float, default=None)

    worker = commands.add_parser("worker", help="run a Celery worker pinned to one device (or one per device)")
    where = worker.add_mutually_exclusive_group()
    where.add_argument("--device", default="cpu", help="cpu, cuda:N, or cuda:N,M (one worker seeing GPUs N and M)")
    where.add_argument("--devices", help="one worker process per device: all (every GPU), cpu, or GPU indices 0,1")
    worker.add_argument("--queues", help="comma-separated queues (default: every catalogue queue)")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--name", help="Celery node name (default pipeq-<device>@host)")
    worker.add_argument(
        "-E",
        "--task-events",
        action="store_true",
        help="send Celery task events for every job (Flower, celery-exporter)",
    )

    from pipeq.ingest.cli import add_cli as add_ingest
    from pipeq.ops.cli import add_cli as add_ops
    from pipeq.webhooks.cli import add_cli as add_webhooks

    add_ingest(commands)
    add_webhooks(commands)
    add_ops(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        return _worker(args)
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

    from pipeq.producer import Client, InvalidJob, UnknownJob

    try:
        client = Client()
        if args.command == "submit":
            job_id = client.submit(
                args.task,
                _input(args.input),
                model=args.model,
                parameters=dict(args.param),
                webhook=args.webhook,
                job_id=args.job_id,
            )
            if not args.wait:
                print(job_id)
                return 0
            record = client.wait(job_id, args.timeout)
        elif args.command == "status":
            record = client.status(args.job_id)
        else:
            record = client.wait(args.job_id, args.timeout)
    except (InvalidJob, UnknownJob, FileNotFoundError) as exc:
        print(f"pipeq: {exc}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"pipeq: {exc}", file=sys.stderr)
        return 3
    _print_record(record)
    return 0 if record.state != "failed" else 1


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
