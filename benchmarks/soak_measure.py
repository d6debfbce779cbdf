"""What the soak observes and how it adds up: every record write Redis accepted (seen through MONITOR), the
webhook deliveries the receiver got, the faults injected, and the figures of one broker run made from them."""

import json
import re
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from pipeq.core.records import FINAL_STATES, JobRecord
from tests.support.receiver import Received

MEDIA_TASKS = ("image-classification", "automatic-speech-recognition")
"""Tasks whose jobs read an object from S3: their successes show that S3 is back."""


@dataclass(frozen=True)
class RecordWrite:
    """One write of a job's record that Redis carried out (a refused write never reaches SET)."""

    at: float  # Redis's clock, seconds since the epoch
    job_id: str
    state: str
    worker: str | None
    attempts: int
    result: str  # the record's result as its JSON spells it: equal results, equal strings


@dataclass
class Fault:
    """One fault the chaos loop injected: what, when it began, when the service was back, and details."""

    kind: str
    began: float  # time.time()
    mended: float
    detail: dict[str, Any] = field(default_factory=dict)


_SET_RECORD = re.compile(r'^SET pipeq:job:(\S+) (\{"state":"(\w+)",.*) EX \d+$', re.S)
_ATTEMPTS = re.compile(r'"attempts":(\d+)')
_WORKER = re.compile(r'"worker":"([^"]*)"')
_RESULT = re.compile(r'"result":(.*?),"result_ref":', re.S)


def parse_record_write(command: dict[str, Any]) -> RecordWrite | None:
    """The record write in one MONITOR line, or None: pipeq's record scripts SET ``pipeq:job:<id>``, and MONITOR
    shows the commands a script runs as those of client ``lua``."""
    if command["client_type"] != "lua":
        return None
    match = _SET_RECORD.match(command["command"])
    if match is None:
        return None
    job_id, record, state = match.groups()
    attempts, worker, result = _ATTEMPTS.search(record), _WORKER.search(record), _RESULT.search(record)
    return RecordWrite(
        at=command["time"],
        job_id=job_id,
        state=state,
        worker=worker[1] if worker else None,
        attempts=int(attempts[1]) if attempts else 0,
        result=result[1] if result else "",
    )


class RecordWriteLog:
    """Watches Redis with MONITOR in a daemon thread and keeps every record write; reconnects after a restart or
    a failover (``address`` says where the records' server is now; ``reconnects`` counts them: writes made while it
    was away are not seen)."""

    def __init__(self, address: Callable[[], str], trace: re.Pattern[str] | None = None) -> None:
        self.address = address
        self.trace = trace
        self.writes: list[RecordWrite] = []
        self.traced: dict[str, list[dict[str, Any]]] = defaultdict(list)
        """Job id (what ``trace`` matched) -> every command naming it (to follow a lost job's message)."""
        self.inflight: list[dict[str, Any]] = []
        """With ``trace``: every command on an in-flight list or moving a message out of a queue."""
        self.reconnects = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="record-writes", daemon=True).start()
        if not self._connected.wait(10):
            raise RuntimeError("MONITOR did not start")

    def snapshot(self) -> list[RecordWrite]:
        with self._lock:
            return list(self.writes)

    def _watch(self) -> None:
        while True:
            try:
                with redis.Redis.from_url(self.address()).monitor() as monitor:
                    self._connected.set()
                    for command in monitor.listen():
                        self._note(command)
            except Exception:  # the server restarted (or is stopping): watch again once it is back
                self.reconnects += 1
                time.sleep(0.02)

    def _note(self, command: dict[str, Any]) -> None:
        write = parse_record_write(command)
        if write is not None:
            with self._lock:
                self.writes.append(write)
        if self.trace is not None:
            line = {key: command.get(key) for key in ("time", "db", "client_port", "client_type")}
            line["command"] = command["command"][:200]
            for job_id in set(self.trace.findall(command["command"])):
                self.traced[job_id].append(line)
            if "pipeq.inflight" in command["command"] or "MOVE pipeq" in command["command"]:
                self.inflight.append(line)


@dataclass(frozen=True)
class Receipt:
    """One webhook request the receiver got."""

    at: float  # time.time()
    webhook_id: str
    job_id: str
    event: str
    sequence: int | None
    status: str
    result: str


def receipts_of(requests: Iterable[Received], clock_offset: float) -> list[Receipt]:
    """The receiver's requests as receipts; ``clock_offset`` turns their time.monotonic() into time.time()."""
    receipts = []
    for request in requests:
        body = json.loads(request.body)
        receipts.append(
            Receipt(
                at=request.at + clock_offset,
                webhook_id=request.headers.get("webhook-id", ""),
                job_id=body.get("id", ""),
                event=body.get("event", ""),
                sequence=body.get("sequence"),
                status=body.get("status", ""),
                result=json.dumps(body.get("result"), sort_keys=True),
            )
        )
    return receipts


# -- the figures of one run -----------------------------------------------------------------------------------------


def job_outcomes(accepted: dict[str, float], records: dict[str, JobRecord | None]) -> dict[str, Any]:
    """Accepted, succeeded, failed by error type, other final states, and the jobs never final (lost) by state."""
    states = Counter(record.state if record else "missing" for record in records.values())
    failed = Counter(record.error.type for record in records.values() if record and record.state == "failed")
    lost = {state: count for state, count in states.items() if state not in FINAL_STATES}
    return {
        "accepted": len(accepted),
        "succeeded": states["succeeded"],
        "failed_by_type": dict(failed),
        "canceled_or_expired": states["canceled"] + states["expired"],
        "lost": sum(lost.values()),
        "lost_by_state": lost,
        "lost_ids": sorted(job_id for job_id, record in records.items() if not record or not record.done)[:20],
    }


def reruns(records: dict[str, JobRecord | None], writes: list[RecordWrite] | None) -> dict[str, Any]:
    """Jobs run more than once: by their records (``attempts`` > 1), and by the record writes (started more than
    once, or by more than one worker; the record keeps only the last worker's name)."""
    figures: dict[str, Any] = {"attempts_over_1": sum(1 for r in records.values() if r and r.attempts > 1)}
    if writes is None:
        return figures
    starts: dict[str, list[RecordWrite]] = defaultdict(list)
    for write in writes:
        if write.state == "running" and write.job_id in records:
            starts[write.job_id].append(write)
    figures["started_more_than_once"] = sum(1 for runs in starts.values() if len(runs) > 1)
    figures["started_by_several_workers"] = sum(1 for runs in starts.values() if len({w.worker for w in runs}) > 1)
    return figures


def duplicate_results(
    records: dict[str, Any], writes: list[RecordWrite] | None, receipts: list[Receipt]
) -> dict[str, Any]:
    """Jobs with more than one final record write (a second result stored), more than one distinct result among
    the succeeded webhooks delivered for them, or a delivered result unlike the stored one."""
    figures: dict[str, Any] = {}
    if writes is not None:
        finals = Counter(w.job_id for w in writes if w.state in FINAL_STATES and w.job_id in records)
        figures["final_written_twice"] = sum(1 for count in finals.values() if count > 1)
    delivered: dict[str, set[str]] = defaultdict(set)
    for receipt in receipts:
        if receipt.event == "completed" and receipt.status == "succeeded" and receipt.job_id in records:
            delivered[receipt.job_id].add(receipt.result)
    figures["webhook_results_differ"] = sum(1 for results in delivered.values() if len(results) > 1)
    figures["webhook_result_not_stored"] = sum(
        1
        for job_id, results in delivered.items()
        if records[job_id] is not None
        and results != {json.dumps(records[job_id].result, sort_keys=True)}
        and records[job_id].result_ref is None
    )
    return figures


def webhook_figures(
    with_webhook: set[str], records: dict[str, Any], receipts: list[Receipt], dead_lettered: set[str]
) -> dict[str, Any]:
    """Per (job, event): duplicates (more than one distinct webhook id), redeliveries (the same id received
    again, e.g. after a flap cut the answer off; with another sequence number: a second message for the event),
    and jobs whose completed webhook never came: dead-lettered (given up after max_attempts, kept for
    ``pipeq webhooks redeliver``) or missing (neither: lost). ``dead_lettered``: the job ids in the dead letters."""
    ids: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    sequences: dict[tuple[str, str], set[int | None]] = defaultdict(set)
    for receipt in receipts:
        ids[(receipt.job_id, receipt.event)][receipt.webhook_id] += 1
        sequences[(receipt.job_id, receipt.event)].add(receipt.sequence)
    final = {job_id for job_id in with_webhook if records.get(job_id) is not None and records[job_id].done}
    unreceived = sorted(job_id for job_id in final if (job_id, "completed") not in ids)
    given_up = [job_id for job_id in unreceived if job_id in dead_lettered]
    missing = [job_id for job_id in unreceived if job_id not in dead_lettered]
    return {
        "expected": len(final),
        "received": len(receipts),
        "dead_lettered": len(given_up),
        "dead_lettered_ids": given_up[:20],
        "dead_letters_received": len(dead_lettered & {job_id for job_id, event in ids if event == "completed"}),
        "missing": len(missing),
        "missing_ids": missing[:20],
        "duplicate": sum(1 for counts in ids.values() if len(counts) > 1),
        "redelivered": sum(sum(counts.values()) - len(counts) for counts in ids.values()),
        "redelivered_other_sequence": sum(1 for seqs in sequences.values() if len(seqs) > 1),
    }


def job_lines(
    accepted: dict[str, float],
    with_webhook: set[str],
    records: dict[str, JobRecord | None],
    receipts: list[Receipt],
    writes: list[RecordWrite] = (),
) -> list[dict[str, Any]]:
    """One line per job, to look into a run afterwards: submit time, record (state, attempts, worker, error,
    timings), the record writes MONITOR saw (time, state, worker, attempts) and how many webhooks came for it."""
    received = Counter(receipt.job_id for receipt in receipts)
    written: dict[str, list[list[Any]]] = defaultdict(list)
    for write in writes:
        written[write.job_id].append([write.at, write.state, write.worker, write.attempts])
    lines = []
    for job_id, submitted in accepted.items():
        record = records.get(job_id)
        line: dict[str, Any] = {"id": job_id, "submitted": submitted, "webhook": job_id in with_webhook}
        if record is not None:
            line.update(record.model_dump(mode="json", include={"state", "task", "attempts", "worker", "error"}))
            line.update(started=record.started_at and record.started_at.timestamp())
            line.update(finished=record.finished_at and record.finished_at.timestamp())
        line["writes"] = written.get(job_id, [])
        line["webhooks_received"] = received[job_id]
        lines.append(line)
    return lines


def latency(accepted: dict[str, float], records: dict[str, JobRecord | None]) -> dict[str, float | None]:
    """Submit (the accepted call) to final record, p50 / p99 / max in seconds."""
    seconds = [
        record.finished_at.timestamp() - accepted[job_id]
        for job_id, record in records.items()
        if record and record.done and record.finished_at
    ]
    if not seconds:
        return {"p50_s": None, "p99_s": None, "max_s": None}
    return {
        "p50_s": float(np.percentile(seconds, 50)),
        "p99_s": float(np.percentile(seconds, 99)),
        "max_s": max(seconds),
    }


def recovery(
    faults: list[Fault], records: dict[str, JobRecord | None], writes: list[RecordWrite] | None, receipts: list[Receipt]
) -> dict[str, Any]:
    """Per fault kind: how many, and seconds from each fault until things work again (median, max):

    * ``back_s``: until the first success after the service was mended: a job succeeding (a media job after an
      S3 outage), or a webhook received after a receiver flap;
    * ``orphans_s`` (worker kills): until the last job the killed worker was running is final, i.e. its jobs came
      back (after ``dead_after_s``) and ran elsewhere; ``orphans``: how many such jobs (jobs it held but had not
      started come back the same way, unseen here).
    """
    successes = sorted(
        (record.finished_at.timestamp(), record.task)
        for record in records.values()
        if record and record.state == "succeeded" and record.finished_at
    )
    deliveries = sorted(receipt.at for receipt in receipts)
    by_kind: dict[str, list[Fault]] = defaultdict(list)
    for fault in faults:
        by_kind[fault.kind].append(fault)
    figures: dict[str, Any] = {}
    for kind, injected in by_kind.items():
        back = [_first_after(fault, successes, deliveries) for fault in injected]
        entry: dict[str, Any] = {"injected": len(injected), "back_s": _median_max([b for b in back if b is not None])}
        entry["never_back"] = sum(1 for b in back if b is None)
        if kind == "kill_worker" and writes is not None:
            settled = [_orphans_settled(fault, records, writes) for fault in injected]
            entry["orphans"] = sum(count for count, _ in settled)
            entry["orphans_s"] = _median_max([seconds for count, seconds in settled if count])
        figures[kind] = entry
    return figures


def _first_after(fault: Fault, successes: list[tuple[float, str]], deliveries: list[float]) -> float | None:
    if fault.kind == "flap_receiver":
        later = [at for at in deliveries if at > fault.mended]
    else:
        media_only = fault.kind == "stop_s3"
        later = [at for at, task in successes if at > fault.mended and (not media_only or task in MEDIA_TASKS)]
    return min(later) - fault.began if later else None


def _orphans_settled(
    fault: Fault, records: dict[str, JobRecord | None], writes: list[RecordWrite]
) -> tuple[int, float | None]:
    """The jobs the killed worker (its pid in its node name) was running when it was killed (their last record
    write before the kill: ``running`` by it), and the seconds from the kill until the last of them was final."""
    marker = f"-{fault.detail['pid']}@"
    last: dict[str, RecordWrite] = {}
    for write in writes:
        if write.at <= fault.began:
            last[write.job_id] = write
    running = [
        records.get(job_id)
        for job_id, write in last.items()
        if write.state == "running" and write.worker and marker in write.worker
    ]
    # MONITOR misses writes while Redis restarts: a job that was final before the kill was no orphan.
    orphans = [r for r in running if r is None or not r.finished_at or r.finished_at.timestamp() > fault.began]
    ends = [r.finished_at.timestamp() for r in orphans if r is not None and r.done and r.finished_at]
    return len(orphans), (max(ends) - fault.began if ends else None)


def _median_max(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "max": max(values)}


def message_whereabouts(broker: redis.Redis, job_ids: Iterable[str]) -> dict[str, list[str]]:
    """Where a Redis broker database still holds a message of each of ``job_ids`` (a job's id is its message's task
    id, in plain text in the message): the keys of the lists (queues, in-flight lists) and hashes (kombu's
    ``unacked``) naming it, ``[]`` where none does. Tells a job the broker lost from one it still holds."""
    wanted = list(job_ids)
    found: dict[str, list[str]] = {job_id: [] for job_id in wanted}
    for key in broker.scan_iter(count=1000):
        kind = broker.type(key)
        if kind == b"list":
            values = broker.lrange(key, 0, -1)
        elif kind == b"hash":
            values = broker.hvals(key)
        else:
            continue
        for job_id in wanted:
            if any(job_id.encode() in value for value in values):
                found[job_id].append(key.decode())
    return found
