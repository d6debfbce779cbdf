"""The producer's commands: ``pipeq submit``, ``status`` (``--follow``: a live progress bar), ``wait``, ``cancel``."""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pipeq.core.contract import PRIORITIES, WEBHOOK_EVENTS
from pipeq.core.records import JobRecord

COMMANDS = ("submit", "status", "wait", "cancel")
FOLLOW_POLL_S = 0.5
"""How often ``pipeq status --follow`` reads the record (workers write progress at most twice a second)."""
BAR_WIDTH = 30


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


def add_cli(commands: Any) -> None:
    """Add the producer's commands to the ``pipeq`` parser's subcommands."""
    submit = commands.add_parser("submit", help="submit one job and print its id (or its record with --wait)")
    submit.add_argument("task", help="e.g. text-classification, automatic-speech-recognition")
    submit.add_argument("input", help="text, s3://bucket/key, or @local-file to send inline")
    submit.add_argument("--model", help="a catalogue model (default: the task's default)")
    submit.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE")
    submit.add_argument("--webhook", help="URL to POST the result to")
    submit.add_argument(
        "--webhook-event",
        action="append",
        dest="webhook_events",
        metavar="EVENT",
        help=f"an event the webhook is told of, repeatable: {', '.join(WEBHOOK_EVENTS)} (default: completed)",
    )
    submit.add_argument("--id", dest="job_id", help="job id / idempotency key (default: a new UUID)")
    submit.add_argument("--priority", default="normal", help=f"{', '.join(PRIORITIES)} (default normal)")
    when = submit.add_mutually_exclusive_group()
    when.add_argument("--deadline", help="ISO 8601 time with a zone: not started by then, the job expires")
    when.add_argument("--ttl", type=float, help="seconds from now: not started by then, the job expires")
    submit.add_argument("--result-ttl", type=int, help="seconds the job's record is kept (at most the settings')")
    submit.add_argument("--wait", action="store_true", help="wait for the result and print the record")
    submit.add_argument("--timeout", type=float, default=None)

    status = commands.add_parser("status", help="print a job's record")
    status.add_argument("job_id")
    status.add_argument(
        "--follow", action="store_true", help="show a live progress bar until the job is final, then its record"
    )
    status.add_argument("--timeout", type=float, default=None, help="with --follow: give up after this many seconds")

    wait = commands.add_parser("wait", help="wait until a job is final and print its record")
    wait.add_argument("job_id")
    wait.add_argument("--timeout", type=float, default=None)

    cancel = commands.add_parser(
        "cancel", help="cancel jobs: queued ones never run, running ones stop at their next piece"
    )
    cancel.add_argument("job_ids", nargs="+", metavar="ID")


def run_cli(args: argparse.Namespace, client_factory: Any) -> int:
    """Run a producer command; 0 when it worked (1: the job failed, 2: bad input or unknown job, 3: timeout)."""
    from pipeq.producer import InvalidJob, UnknownJob

    try:
        client = client_factory()
        if args.command == "submit":
            return _submit(client, args)
        if args.command == "cancel":
            for record in client.cancel_many(args.job_ids):
                print(f"{record.id}\t{record.state}")
            return 0
        if args.command == "status":
            record = follow(client, args.job_id, args.timeout) if args.follow else client.status(args.job_id)
        else:
            record = client.wait(args.job_id, args.timeout)
    except (InvalidJob, UnknownJob, FileNotFoundError) as exc:
        print(f"pipeq: {exc}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"pipeq: {exc}", file=sys.stderr)
        return 3
    return _print_record(record)


def _submit(client: Any, args: argparse.Namespace) -> int:
    job_id = client.submit(
        args.task,
        _input(args.input),
        model=args.model,
        parameters=dict(args.param),
        webhook=args.webhook,
        job_id=args.job_id,
        priority=args.priority,
        deadline=args.deadline,
        ttl=args.ttl,
        webhook_events=args.webhook_events,
        result_ttl=args.result_ttl,
    )
    if not args.wait:
        print(job_id)
        return 0
    return _print_record(client.wait(job_id, args.timeout))


def _print_record(record: JobRecord) -> int:
    print(record.model_dump_json(indent=2))
    return 0 if record.state in ("queued", "running", "succeeded") else 1


def follow(client: Any, job_id: str, timeout: float | None = None, out: TextIO | None = None) -> JobRecord:
    """Read the job's record every FOLLOW_POLL_S, drawing its state and progress on one line of ``out`` (stderr),
    until it is final; its final record. TimeoutError after ``timeout`` seconds."""
    out = out or sys.stderr
    give_up = None if timeout is None else time.monotonic() + timeout
    while True:
        record = client.status(job_id)
        out.write("\r" + progress_line(record))
        out.flush()
        if record.done:
            out.write("\n")
            return record
        if give_up is not None and time.monotonic() >= give_up:
            out.write("\n")
            raise TimeoutError(f"job {job_id} is still {record.state} after {timeout} s")
        time.sleep(FOLLOW_POLL_S)


def progress_line(record: JobRecord) -> str:
    """One line for a terminal: a bar of the job's progress, its percentage, state and detail."""
    fraction = 1.0 if record.state == "succeeded" else record.progress.fraction if record.progress else 0.0
    filled = round(fraction * BAR_WIDTH)
    detail = record.progress.detail if record.progress and not record.done else ""
    text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%} {record.state}"
    return f"{text} {detail}".rstrip()[:120].ljust(80)
