"""The producer's commands: ``pipeq submit`` (``--from``: a jobs file), ``status`` (``--follow``: a live progress
bar), ``wait``, ``cancel`` (by id, or every job of a model or queue), ``jobs`` (a listing)."""

import argparse
import json
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from pipeq.core.contract import PRIORITIES, WEBHOOK_EVENTS, InvalidJob
from pipeq.core.records import STATES, JobRecord
from pipeq.producer.jsonl import max_line_bytes, read_requests

PER_JOB_OPTIONS = ("model", "param", "webhook", "webhook_events", "job_id", "deadline", "ttl", "result_ttl", "wait")
"""``pipeq submit`` options a jobs file gives per line instead (``--priority`` too, unless left normal)."""
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
    submit = commands.add_parser(
        "submit", help="submit one job and print its id (or its record with --wait), or every job of a jobs file"
    )
    submit.add_argument("task", nargs="?", help="e.g. text-classification, automatic-speech-recognition")
    submit.add_argument("input", nargs="?", help="text, s3://bucket/key, or @local-file to send inline")
    submit.add_argument(
        "--from",
        dest="source",
        metavar="FILE",
        help="submit the jobs of a JSON lines file (- for stdin) instead: one object per line with task, input and"
        " optionally model, parameters, webhook, id, priority, deadline, ttl, webhook_events, result_ttl",
    )
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
    cancel.add_argument("job_ids", nargs="*", metavar="ID")
    matching = cancel.add_mutually_exclusive_group()
    matching.add_argument("--model", help="cancel every job not yet final of this catalogue model")
    matching.add_argument("--queue", help="cancel every job not yet final of the models served on this queue")

    jobs = commands.add_parser("jobs", help="list jobs, newest first (the next page's cursor goes to stderr)")
    jobs.add_argument(
        "--state", action="extend", nargs="+", dest="states", metavar="S", help=f"only these: {', '.join(STATES)}"
    )
    jobs.add_argument("--model", help="only this catalogue model's jobs")
    jobs.add_argument("--since", help="submitted at or after this ISO 8601 time (with a zone)")
    jobs.add_argument("--until", help="submitted at or before this ISO 8601 time (with a zone)")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many jobs, 1 to 1000 (default 50)")
    jobs.add_argument("--cursor", help="the cursor a previous page printed: go on from there")
    jobs.add_argument("--json", action="store_true", help="one JSON record per line instead of a table")


def run_cli(args: argparse.Namespace, client_factory: Any) -> int:
    """Run a producer command; 0 when it worked (1: the job failed, 2: bad input or unknown job, 3: timeout)."""
    from pipeq.producer import InvalidJob, UnknownJob

    try:
        client = client_factory()
        if args.command == "submit":
            return _submit_from(client, args) if args.source is not None else _submit(client, args)
        if args.command == "cancel":
            return _cancel(client, args)
        if args.command == "jobs":
            return _jobs(client, args)
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
    if args.task is None or args.input is None:
        raise InvalidJob("pipeq submit takes a TASK and an INPUT, or --from FILE")
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


def _submit_from(client: Any, args: argparse.Namespace) -> int:
    """``pipeq submit --from FILE``: every job of a jobs file, a progress line on stderr, a summary on stdout; 2 with
    the line that is wrong (the jobs of the lines before its chunk stay submitted)."""
    if args.task is not None or args.input is not None:
        raise InvalidJob("give TASK and INPUT, or --from FILE, not both")
    given = [name for name in PER_JOB_OPTIONS if getattr(args, name) not in (None, [], False)]
    given += ["priority"] if args.priority != "normal" else []
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise InvalidJob(f"with --from each line gives its own options: drop {options}")
    lines: list[int] = []
    progress = SubmitProgress(sys.stderr)
    stream: BinaryIO = sys.stdin.buffer if args.source == "-" else open(args.source, "rb")  # noqa: SIM115
    try:
        requests = read_requests(stream, lines, max_line_bytes(client.settings.limits))
        ids = client.submit_requests(requests, on_progress=progress)
    except InvalidJob as exc:
        progress.end()
        index = getattr(exc, "index", None)
        if index is None or index >= len(lines):
            raise
        done = len(exc.enqueued)
        after = f"the {done} job(s) before line {lines[done]} were submitted, none from it on" if done else ""
        print(f"pipeq: line {lines[index]}: {exc.reason} ({after or 'nothing was submitted'})", file=sys.stderr)
        return 2
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    progress.end()
    print(f"submitted {len(ids)} job(s): {len(ids) - ids.existing} new, {ids.existing} already existing")
    return 0


class SubmitProgress:
    """``on_progress`` of a streamed submission: one line on ``out`` with the jobs submitted and their rate."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, done: int) -> None:
        rate = done / max(time.monotonic() - self.started, 1e-6)
        self.out.write(f"\rsubmitted {done} job(s), {rate:,.0f}/s")
        self.out.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            self.out.write("\n")
            self.shown = False


def _cancel(client: Any, args: argparse.Namespace) -> int:
    """``pipeq cancel ID...`` (each job's state after) or ``--model M`` / ``--queue Q`` (how many were canceled)."""
    matching = args.model is not None or args.queue is not None
    if matching == bool(args.job_ids):
        raise InvalidJob("pipeq cancel takes job ids, or --model M, or --queue Q")
    if matching:
        print(f"canceled {client.cancel_matching(model=args.model, queue=args.queue)} job(s)")
        return 0
    for record in client.cancel_many(args.job_ids):
        print(f"{record.id}\t{record.state}")
    return 0


def _jobs(client: Any, args: argparse.Namespace) -> int:
    """``pipeq jobs``: a page of the listing as a table or JSON lines; the next page's cursor on stderr."""
    page = client.list(
        state=args.states,
        model=args.model,
        since=args.since,
        until=args.until,
        limit=args.limit,
        cursor=args.cursor,
    )
    if args.json:
        for record in page.records:
            print(record.model_dump_json())
    else:
        print(jobs_table(page.records))
    if page.cursor is not None:
        print(f"next page: --cursor {page.cursor}", file=sys.stderr)
    return 0


def jobs_table(records: list[JobRecord]) -> str:
    """Records as a table: id, state, model, submitted (UTC, to the second), progress."""
    rows = [("ID", "STATE", "MODEL", "SUBMITTED", "PROGRESS")]
    for record in records:
        fraction = done_fraction(record)
        submitted = record.submitted_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        rows.append((record.id, record.state, record.model, submitted, "-" if fraction is None else f"{fraction:.0%}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


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


def done_fraction(record: JobRecord) -> float | None:
    """How much of the job is done: all of a succeeded one, else its last progress, if it reported any."""
    if record.state == "succeeded":
        return 1.0
    return record.progress.fraction if record.progress else None


def progress_line(record: JobRecord) -> str:
    """One line for a terminal: a bar of the job's progress, its percentage, state and detail."""
    fraction = done_fraction(record) or 0.0
    filled = round(fraction * BAR_WIDTH)
    detail = record.progress.detail if record.progress and not record.done else ""
    text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%} {record.state}"
    return f"{text} {detail}".rstrip()[:120].ljust(80)
