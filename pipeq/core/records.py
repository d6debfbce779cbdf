"""Job records in Redis: one JSON document per job, written by producers (queued) and workers (running, done).

Keys are ``pipeq:job:<id>``. When a record reaches a final state, its state is published on
``pipeq:done:<id>`` so waiters need not poll; the record itself, results included, stays in the key. A
final record is never overwritten: a redelivered job cannot produce a second result. A record's payload digest
(set by the producer that created it) is kept by every later write, so a resubmission of the id can always be
compared with the job it names.
"""

import logging
import re
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, Literal

import redis.exceptions
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from pipeq.core import job_index
from pipeq.core.redis_client import redis_client
from pipeq.core.replication import NotReplicated, ReplicaWait

log = logging.getLogger(__name__)

UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""Redis away for now (restarting, failing over: Sentinel's MasterNotFoundError is a ConnectionError)."""
OUTAGE_LIMIT_S = 300.0
"""Longest time a wait rides out Redis being unreachable before it raises."""

State = Literal["queued", "running", "succeeded", "failed", "canceled", "expired"]
STATES: tuple[State, ...] = ("queued", "running", "succeeded", "failed", "canceled", "expired")
FINAL_STATES: tuple[State, ...] = ("succeeded", "failed", "canceled", "expired")
"""States a record never leaves: it is not overwritten, waiters are told, webhooks are sent."""

# Sets a record unless the stored one is final; announces final states. The record's JSON starts with its
# state (``state`` is JobRecord's first field), so reading it there is exact. A record written without a payload
# digest takes the stored one: ``payload_sha256`` is JobRecord's last field, so its JSON ends the document.
# ARGV[5], when given, is the state the stored record must be in (nothing is written otherwise).
_WRITE_UNLESS_FINAL = """
local current = redis.call('GET', KEYS[1])
local state = current and string.match(current, '^{"state":"(%a+)",')
if state == 'succeeded' or state == 'failed' or state == 'canceled' or state == 'expired' then
  return 0
end
if ARGV[5] and ARGV[5] ~= '' and state ~= ARGV[5] then
  return 0
end
local record = ARGV[1]
local unset = ',"payload_sha256":null}'
if current and string.sub(record, -#unset) == unset then
  local digest = string.match(current, ',"payload_sha256":"(%x+)"}$')
  if digest then
    record = string.sub(record, 1, -#unset - 1) .. ',"payload_sha256":"' .. digest .. '"}'
  end
end
redis.call('SET', KEYS[1], record, 'EX', ARGV[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""

# Sets a new record unless one exists; returns the existing record's JSON, or nil where it set the new one. A new
# record's job enters the listing index: KEYS[2...] (pipeq.core.job_index), with the score ARGV[3] and id ARGV[4].
_CREATE_OR_GET = """
-- KEYS: the record, its unpublished marker, the listing index keys. A new record comes with its marker.
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
for i = 3, #KEYS do redis.call('ZADD', KEYS[i], ARGV[3], ARGV[4]) end
return false
"""


_STATE = re.compile(rb'^\{"state":"([a-z]+)"')
_STATE_BYTES = 31
"""A stored record's state, the first field of its JSON (JobRecord's first field)."""


class JobError(BaseModel):
    """Why a job failed: an error type a program can branch on and a message a person can act on."""

    model_config = ConfigDict(extra="forbid")

    type: str
    message: str


class Progress(BaseModel):
    """How far a running job is: a fraction of its work done and what that means (``"chunk 3 of 40"``)."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(ge=0.0, le=1.0)
    detail: str = ""
    updated_at: datetime


class JobRecord(BaseModel):
    """What is known of one job: its state and, once done, its result or error."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    state: State
    id: str
    task: str
    model: str
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: JsonValue = None
    result_ref: str | None = None
    """Where a result too large for Redis was written (``s3://bucket/<id>.json``); see pipeq.core.results."""
    error: JobError | None = None
    micro_batch_jobs: int | None = None
    """How many jobs shared this job's micro-batch (not the pipeline's ``batch_size``)."""
    attempts: int = 0
    worker: str | None = None
    webhook: str | None = None
    """The job's webhook URL, as its producer submitted it: deliveries go here and nowhere else (a delivery
    message naming another URL is refused). Later writes copy it from the stored record, never from a message."""
    webhook_events: tuple[str, ...] = ("completed",)
    """Which events the webhook is told of (pipeq.core.contract.WEBHOOK_EVENTS); copied like ``webhook``."""
    priority: str = "normal"
    deadline: datetime | None = None
    """A job not started by then is expired and never runs."""
    result_ttl: int | None = None
    """Seconds the record is kept after each write, when the job asked for less than the settings'."""
    progress: Progress | None = None
    """How far a running job is, where its pipeline works in pieces (chunks of audio, tokens of generation)."""
    owner: str | None = None
    """The API token that submitted the job (pipeq.api): only it sees and cancels the job there, and its jobs are
    listed on their own (pipeq.core.job_index). None for jobs submitted otherwise."""
    payload_sha256: str | None = None
    """The digest of the job's payload (pipeq.core.contract.payload_sha256), set by the producer; a resubmission
    of the id with another payload is refused. Kept by every later write of the record, and last on purpose
    (see _WRITE_UNLESS_FINAL). None on records of jobs never submitted through a producer."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_fields(cls, data: Any) -> Any:
        """Records written before ``batch_size`` was renamed ``micro_batch_jobs`` still read."""
        if isinstance(data, dict) and "batch_size" in data:
            data = dict(data)
            data.setdefault("micro_batch_jobs", data.pop("batch_size"))
        return data

    @classmethod
    def of(cls, job: Any, state: State, **fields: Any) -> "JobRecord":
        """A record of ``job`` (a :class:`pipeq.core.contract.Job`) in ``state``: its id, task, model and submission
        time, and ``fields``. The webhook is not copied: whoever makes the record says where it comes from."""
        lifecycle = {
            "priority": job.priority,
            "deadline": job.deadline,
            "webhook_events": job.webhook_events,
            "result_ttl": job.result_ttl,
        }
        return cls(
            state=state,
            id=job.id,
            task=job.task,
            model=job.model,
            submitted_at=job.submitted_at,
            **{**lifecycle, **fields},
        )

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    def past_deadline(self, at: datetime | None = None) -> bool:
        """Whether the job has a deadline and ``at`` (now) is past it."""
        return self.deadline is not None and (at or now()) > self.deadline

    def ended(self, state: State, error_type: str, message: str, at: datetime | None = None) -> "JobRecord":
        """This record made final in ``state`` (canceled, expired) with an error saying why; progress kept."""
        error = JobError(type=error_type, message=message)
        return self.model_copy(update={"state": state, "error": error, "finished_at": at or now(), "result": None})

    def expired(self, at: datetime | None = None) -> "JobRecord":
        """This record made final as expired: its job was not started by its deadline, and never ran."""
        message = f"not started by its deadline ({self.deadline.isoformat()}): it never ran"
        return self.ended("expired", "Expired", message, at)


def now() -> datetime:
    return datetime.now(UTC)


class RecordStore:
    """Reads and writes job records in the result-backend Redis."""

    def __init__(self, url: str, ttl: int = 7 * 24 * 3600) -> None:
        self.redis = redis_client(url)
        self.ttl = ttl
        self._write_unless_final = self.redis.register_script(_WRITE_UNLESS_FINAL)
        self._create_or_get = self.redis.register_script(_CREATE_OR_GET)

    @staticmethod
    def key(job_id: str) -> str:
        return f"pipeq:job:{job_id}"

    @staticmethod
    def unpublished_key(job_id: str) -> str:
        """Set with a new record, deleted once its job's message is published (and replicated, where asked): a
        resubmission publishes a job whose marker is still there (a submit cut short between the two)."""
        return f"pipeq:unpublished:{job_id}"

    @staticmethod
    def channel(job_id: str) -> str:
        return f"pipeq:done:{job_id}"

    def create(self, records: list[JobRecord], wait: ReplicaWait | None = None) -> list[JobRecord | None]:
        """Store new queued records, listing their jobs in the index (pipeq.core.job_index, trimmed in the same
        pipeline): None where one was stored, the existing record where its id was taken. With ``wait``, then wait
        for Redis replicas to hold them: NotReplicated where fewer did in time (the records stay; its ``job_ids`` are
        those of the records created, not of those that existed)."""
        pipe = self.redis.pipeline(transaction=False)
        touched: set[str] = set()
        for record in records:
            listed = job_index.keys_of(record.model, record.owner)
            touched.update(listed)
            args = [record.model_dump_json(), self.ttl_of(record), job_index.score(record.submitted_at), record.id]
            keys = [self.key(record.id), self.unpublished_key(record.id), *listed]
            self._create_or_get(keys=keys, args=args, client=pipe)
        job_index.trim(pipe, touched, self.ttl, now())
        if wait is not None:
            wait.add_to(pipe)
        replies = pipe.execute()
        created = replies[: len(records)]
        if wait is not None and wait.missing(replies[-1]):
            # Only the records this call created: those that existed belong to an earlier submit and stay.
            fresh = [record.id for record, existing in zip(records, created, strict=True) if existing is None]
            raise NotReplicated(f"only {wait.describe(replies[-1])}", fresh)
        return [None if existing is None else JobRecord.model_validate_json(existing) for existing in created]

    def unpublished(self, job_ids: list[str]) -> list[str]:
        """The ids among ``job_ids`` whose message may never have been published (their marker is there)."""
        if not job_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.exists(self.unpublished_key(job_id))
        return [job_id for job_id, there in zip(job_ids, pipe.execute(), strict=True) if there]

    def published(self, job_ids: list[str]) -> None:
        """Drop the unpublished markers of jobs whose messages are published."""
        if job_ids:
            self.redis.delete(*map(self.unpublished_key, job_ids))

    def forget(self, job_ids: Iterable[str], models: Iterable[str] = (), owner: str | None = None) -> None:
        """Remove records (used when their jobs could not be enqueued), and their jobs from the listing index of
        every job, of ``models`` and of ``owner``."""
        ids = list(job_ids)
        if ids:
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(*[self.key(job_id) for job_id in ids], *map(self.unpublished_key, ids))
            owned = [] if owner is None else [job_index.owner_key(owner)]
            for key in dict.fromkeys([job_index.ALL_KEY, *map(job_index.model_key, models), *owned]):
                pipe.zrem(key, *ids)
            pipe.execute()

    def get(self, job_id: str) -> JobRecord | None:
        return self.get_many([job_id])[0]

    def states(self, job_ids: list[str]) -> list[str | None]:
        """The state of each job's record (None where there is none), read without reading the records whole: a
        record's JSON starts with its state."""
        if not job_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.getrange(self.key(job_id), 0, _STATE_BYTES)
        return [_STATE.match(value)[1].decode() if value else None for value in pipe.execute()]

    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        if not job_ids:
            return []
        raw = self.redis.mget([self.key(job_id) for job_id in job_ids])
        return [JobRecord.model_validate_json(value) if value else None for value in raw]

    def ttl_of(self, record: JobRecord) -> int:
        """Seconds ``record`` is kept: the job's own ``result_ttl`` when shorter than the store's."""
        return min(self.ttl, record.result_ttl) if record.result_ttl else self.ttl

    def write(
        self, records: list[JobRecord], only_if: State | None = None, wait: ReplicaWait | None = None
    ) -> list[bool]:
        """Store records unless already final (publishing the final ones); False where one was final, or, with
        ``only_if``, where the stored record is not in that state. With ``wait``, then wait for Redis replicas to
        hold them: NotReplicated where fewer did in time (they are written on the primary)."""
        pipe = self.redis.pipeline(transaction=False)
        for record in records:
            channel = self.channel(record.id) if record.done else ""
            self._write_unless_final(
                keys=[self.key(record.id)],
                args=[record.model_dump_json(), self.ttl_of(record), channel, record.state, only_if or ""],
                client=pipe,
            )
        if wait is not None:
            wait.add_to(pipe)
        replies = pipe.execute()
        if wait is not None and wait.missing(replies[-1]):
            raise NotReplicated(f"only {wait.describe(replies[-1])}", [record.id for record in records])
        return [bool(written) for written in replies[: len(records)]]

    def wait(
        self,
        job_ids: list[str],
        timeout: float | None = None,
        poll: float = 1.0,
        settle: Callable[[list[JobRecord]], list[JobRecord]] | None = None,
    ) -> dict[str, JobRecord]:
        """Block until every job is final; TimeoutError after ``timeout`` seconds.

        Listens on the jobs' channels and re-reads the records every ``poll`` seconds as a safety net; ``settle``
        (e.g. expiring jobs past their deadline) is applied to the records read then. Rides out Redis being
        unreachable (a restart, a Sentinel failover with no primary for a while) for up to ``OUTAGE_LIMIT_S`` at a
        time, listening again once it is back; a longer outage raises its error.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = set(job_ids)
        done: dict[str, JobRecord] = {}
        listening: _Listener | None = None
        unreachable_since: float | None = None
        try:
            while pending:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    if listening is None:
                        listening = _Listener(self, pending)
                    for record in listening.step(pending, poll, remaining, settle):
                        done[record.id] = record
                        pending.discard(record.id)
                    unreachable_since = None
                except UNREACHABLE as exc:
                    if unreachable_since is None:
                        unreachable_since = time.monotonic()
                        log.warning(
                            "waiting for jobs: Redis unreachable (%s: %s); trying again", type(exc).__name__, exc
                        )
                    elif time.monotonic() - unreachable_since > OUTAGE_LIMIT_S:
                        raise
                    if listening is not None:
                        listening.close()
                        listening = None
                    time.sleep(poll if remaining is None else min(poll, remaining))
                if pending and deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{len(pending)} of {len(job_ids)} job(s) not done after {timeout} s")
        finally:
            if listening is not None:
                listening.close()
        return {job_id: done[job_id] for job_id in job_ids}


class _Listener:
    """One subscription of :meth:`RecordStore.wait` to its jobs' channels, with the safety-net re-reads."""

    def __init__(self, store: RecordStore, job_ids: Iterable[str]) -> None:
        self.store = store
        self.pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
        self.next_poll = 0.0  # re-read at once: jobs may have finished while nobody listened
        try:
            channels = [store.channel(job_id) for job_id in job_ids]
            for start in range(0, len(channels), 500):
                self.pubsub.subscribe(*channels[start : start + 500])
        except BaseException:
            self.close()
            raise

    def step(
        self,
        pending: set[str],
        poll: float,
        remaining: float | None,
        settle: Callable[[list[JobRecord]], list[JobRecord]] | None,
    ) -> list[JobRecord]:
        """The ``pending`` jobs found final: by a re-read when one is due (``settle`` applied), else by listening
        until the next re-read (at most ``remaining`` seconds) for the jobs announced done."""
        if time.monotonic() >= self.next_poll:
            records = [record for record in self.store.get_many(sorted(pending)) if record is not None]
            self.next_poll = time.monotonic() + poll
            return [record for record in (settle(records) if settle else records) if record.done]
        limit = poll if remaining is None else remaining
        announced = set()
        message = self.pubsub.get_message(timeout=max(0.0, min(self.next_poll - time.monotonic(), limit)))
        while message is not None:
            announced.add(message["channel"].decode().removeprefix("pipeq:done:"))
            message = self.pubsub.get_message(timeout=0)
        return [
            record for record in self.store.get_many(sorted(announced & pending)) if record is not None and record.done
        ]

    def close(self) -> None:
        with suppress(*UNREACHABLE):
            self.pubsub.close()
