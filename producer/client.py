"""The Python client: submit jobs (validated before anything is enqueued), then read, list, wait for or cancel them."""

from __future__ import annotations  # Client.list shadows the builtin in the class body's annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from pydantic import ValidationError

from pipeq.config.catalogue import UnknownModel
from pipeq.config.settings import Settings, load_settings
from pipeq.config.tasks import UnknownTask
from pipeq.core import job_index
from pipeq.core.contract import InvalidJob, Job, check_object_access, make_input, payload_sha256
from pipeq.core.job_index import JobIndex, Position
from pipeq.core.messaging import make_celery
from pipeq.core.publish import publish_jobs
from pipeq.core.records import FINAL_STATES, STATES, JobRecord, RecordStore, now
from pipeq.core.replication import NotReplicated, replica_wait
from pipeq.core.results import ResultStorage
from pipeq.core.storage import s3_client
from pipeq.core.webhook_events import enqueue_events, wants


class UnknownJob(LookupError):
    """No record exists for this job id (never submitted, or expired)."""


class JobConflict(InvalidJob):
    """A job id submitted again with another payload (task, model, input, parameters or webhook)."""


class SubmittedIds(list):
    """The ids of submitted jobs, in submission order; ``existing`` counts those whose id already named the same
    job (not enqueued again)."""

    existing: int = 0


@dataclass(frozen=True)
class JobPage:
    """A page of :meth:`Client.list`: records newest first, and the cursor of the next page (None at the end)."""

    records: list[JobRecord]
    cursor: str | None


def _failed_at(exc: InvalidJob, index: int, enqueued: list[str]) -> InvalidJob:
    """``exc``, raised for item ``index`` of a streamed submission, saying what was enqueued before it: the error has
    ``index``, ``reason`` (``exc``'s message) and ``enqueued`` (the ids of the earlier chunks' jobs)."""
    done = len(enqueued)
    after = (
        f"the {done} job(s) before item {done} were enqueued (the error's .enqueued), none from item {done} on"
        if done
        else "nothing was enqueued"
    )
    error = type(exc)(f"item {index}: {exc}; {after}", exc.field)
    error.index, error.reason, error.enqueued = index, str(exc), enqueued
    return error


_END = object()


def _paired(inputs: Iterable[Any], job_ids: Iterable[str] | None) -> Iterator[tuple[Any, str | None]]:
    """Each input with its job id (None without ``job_ids``); InvalidJob where one runs out before the other."""
    if job_ids is None:
        yield from ((item, None) for item in inputs)
        return
    ids = iter(job_ids)
    for count, item in enumerate(inputs):
        job_id = next(ids, _END)
        if job_id is _END:
            raise InvalidJob(f"job_ids ran out after {count} id(s): give one id per input")
        yield item, job_id
    if next(ids, _END) is not _END:
        raise InvalidJob("more job_ids than inputs: give one id per input")


def _one_line(exc: ValueError) -> str:
    """An error's message on one line: pydantic's as each problem (``field: problem`` where the problem does not
    name its field itself), ``; ``-separated."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = []
    for error in exc.errors()[:5]:
        message = error["msg"]
        if message.startswith("Value error, "):  # pipeq's own validators say which field
            problems.append(message.removeprefix("Value error, "))
        else:
            problems.append(f"{'.'.join(map(str, error['loc'])) or 'job'}: {message}")
    return "; ".join(problems)


def _field(exc: ValueError) -> str | None:
    """The part of a job an error is about: an InvalidJob's own field, or the first field pydantic names."""
    if isinstance(exc, ValidationError):
        locations = [error["loc"] for error in exc.errors() if error["loc"]]
        return str(locations[0][0]) if locations else None
    return getattr(exc, "field", None)


def _instant(value: datetime | str, name: str) -> datetime:
    """``value`` (a datetime or an ISO 8601 string) as an aware datetime; InvalidJob otherwise."""
    if isinstance(value, str):
        try:
            if len(value) > 64:
                raise ValueError(value)
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidJob(f"{name} {value[:40]!r} is not an ISO 8601 time (2026-12-01T12:00:00Z)", name) from None
    if not isinstance(value, datetime):
        raise InvalidJob(f"{name} must be a datetime or an ISO 8601 string, not {type(value).__name__}", name)
    if value.tzinfo is None:
        raise InvalidJob(f"{name} {value.isoformat()} has no time zone: give one (e.g. +00:00 or Z)", name)
    return value


CANCELED_MESSAGE = "canceled by its producer"
SUBMIT_CHUNK = 1000
"""Jobs validated, recorded and published together by :meth:`Client.submit_many` and :meth:`Client.submit_requests`."""
LIST_LIMIT = 1000
"""Most records one :meth:`Client.list` page holds."""
LIST_SCAN = 10_000
"""Most index entries one :meth:`Client.list` call reads (filtering by state may read many per record it returns)."""
LIST_BATCH = 500
"""Index entries read at a time while filtering by state."""
REQUEST_KEYS = (
    "task",
    "input",
    "model",
    "parameters",
    "webhook",
    "id",
    "priority",
    "deadline",
    "ttl",
    "webhook_events",
    "result_ttl",
)
"""The keys of a :meth:`Client.submit_requests` request: task and input, and optionally the rest."""
ACTIVE_STATES = tuple(state for state in STATES if state not in FINAL_STATES)


def _deadline(deadline: datetime | str | None, ttl: float | None, longest_s: int, at: datetime) -> datetime | None:
    """The absolute deadline of a job given ``deadline`` or ``ttl`` (seconds from ``at``); InvalidJob unless it lies
    after ``at`` and within ``longest_s`` (the record's lifetime) of it."""
    if deadline is not None and ttl is not None:
        raise InvalidJob("give a deadline or a ttl, not both", "ttl")
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise InvalidJob(f"ttl must be a number of seconds above 0, not {str(ttl)[:40]!r}", "ttl")
        if ttl > longest_s:
            raise InvalidJob(
                f"ttl of {ttl:g} s exceeds result_ttl ({longest_s} s): the job's record expires first", "ttl"
            )
        return at + timedelta(seconds=ttl)
    if deadline is None:
        return None
    deadline = _instant(deadline, "deadline")
    if deadline <= at:
        raise InvalidJob(f"deadline {deadline.isoformat()} is in the past (now {at.isoformat()})", "deadline")
    if deadline > at + timedelta(seconds=longest_s):
        raise InvalidJob(
            f"deadline {deadline.isoformat()} lies more than result_ttl ({longest_s} s) ahead: the job's record"
            " would expire first",
            "deadline",
        )
    return deadline


class Client:
    """Submits jobs to pipeq workers and reads their records from Redis."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.store = RecordStore(self.settings.result_backend, self.settings.result_ttl)
        self.index = JobIndex(self.store.redis)
        self.results = ResultStorage(
            s3_client(self.settings), self.settings.results_bucket, self.settings.max_inline_result_bytes
        )
        self.celery = make_celery(self.settings)
        self.replica_wait = replica_wait(self.settings)

    def make_job(
        self,
        task: str,
        input: Any,
        model: str | None = None,
        parameters: dict | None = None,
        webhook: str | None = None,
        job_id: str | None = None,
        *,
        priority: str = "normal",
        deadline: datetime | str | None = None,
        ttl: float | None = None,
        webhook_events: Sequence[str] | None = None,
        result_ttl: int | None = None,
    ) -> tuple[Job, str]:
        """A validated job and the queue it goes to; InvalidJob says what is wrong (objects the model may not read
        included: see ``allowed_object_prefixes``). The lifecycle options are :meth:`submit`'s."""
        try:
            entry = self.settings.catalogue.resolve(task, model)
            submitted = now()
            longest = self.settings.result_ttl
            fields: dict[str, Any] = {
                "task": task,
                "model": entry.name,
                "input": make_input(input),
                "parameters": parameters or {},
                "webhook": webhook,
                "submitted_at": submitted,
                "priority": priority,
                "deadline": _deadline(deadline, ttl, longest, submitted),
            }
            if webhook_events is not None:
                if webhook is None:
                    raise InvalidJob(
                        "webhook_events names what a webhook is told: give a webhook too", "webhook_events"
                    )
                fields["webhook_events"] = webhook_events
            if result_ttl is not None:
                if isinstance(result_ttl, bool) or not isinstance(result_ttl, int) or not 0 < result_ttl <= longest:
                    raise InvalidJob(
                        f"result_ttl must be whole seconds from 1 to {longest} (the settings' result_ttl), not"
                        f" {str(result_ttl)[:40]!r}",
                        "result_ttl",
                    )
                fields["result_ttl"] = result_ttl
            if job_id is not None:
                fields["id"] = job_id
            job = Job(**fields)
            try:
                check_object_access(job.check(self.settings.limits, entry), self.settings.object_access(entry))
            except InvalidJob as exc:
                exc.field = exc.field or "input"
                raise
        except UnknownModel as exc:
            raise InvalidJob(str(exc), "model") from None
        except UnknownTask as exc:
            raise InvalidJob(str(exc), "task") from None
        except ValueError as exc:  # pydantic's ValidationError included
            raise InvalidJob(_one_line(exc), _field(exc)) from None
        return job, entry.queue

    def submit(
        self,
        task: str,
        input: Any,
        model: str | None = None,
        parameters: dict | None = None,
        webhook: str | None = None,
        job_id: str | None = None,
        **lifecycle: Any,
    ) -> str:
        """Enqueue one job and return its id. Resubmitting an existing id with the same payload enqueues nothing
        and returns the id (idempotency); with another payload it raises JobConflict.

        Lifecycle options (keywords): ``priority`` (low, normal, high: higher is fetched and batched first within
        its queue); ``deadline`` (a time) or ``ttl`` (seconds): a job not started by then is expired and never
        runs; ``webhook_events`` (among started, progress, completed; default completed); ``result_ttl`` (seconds
        its record is kept, at most the settings' ``result_ttl``)."""
        made = self.make_job(task, input, model, parameters, webhook, job_id, **lifecycle)
        return self.enqueue([made])[0]

    def submit_many(
        self,
        task: str,
        inputs: Iterable[Any],
        model: str | None = None,
        parameters: dict | None = None,
        webhook: str | None = None,
        job_ids: Iterable[str] | None = None,
        *,
        on_progress: Callable[[int], None] | None = None,
        **lifecycle: Any,
    ) -> SubmittedIds:
        """Enqueue one job per input and return their ids (with ``existing``: how many ids already named the same
        job). ``inputs`` and ``job_ids`` may be any iterables, generators included: they are read in chunks of
        SUBMIT_CHUNK, and each chunk is validated, recorded and published before the next is read, then
        ``on_progress`` is told how many inputs are done. An InvalidJob (JobConflict included) enqueues nothing of
        its chunk; earlier chunks stay enqueued, and the error names the item and the jobs enqueued before it
        (see :func:`_failed_at`): resubmitting with the same job ids goes on where it stopped. Lifecycle options
        as :meth:`submit`'s, for every job."""
        if isinstance(job_ids, str):
            raise InvalidJob("job_ids is a list of ids, not one string")
        if isinstance(inputs, Sequence) and isinstance(job_ids, Sequence) and len(job_ids) != len(inputs):
            raise InvalidJob(f"{len(job_ids)} job ids for {len(inputs)} inputs")
        made = (
            self.make_job(task, item, model, parameters, webhook, job_id, **lifecycle)
            for item, job_id in _paired(inputs, job_ids)
        )
        return self._stream(made, on_progress)

    def submit_requests(
        self,
        requests: Iterable[dict],
        on_progress: Callable[[int], None] | None = None,
        owner: str | None = None,
    ) -> SubmittedIds:
        """Enqueue jobs of any tasks and models, one per request, streamed in chunks as :meth:`submit_many`. A
        request is a dict with ``task`` and ``input`` and optionally ``model``, ``parameters``, ``webhook``, ``id``
        and the lifecycle options (``priority``, ``deadline``, ``ttl``, ``webhook_events``, ``result_ttl``):
        REQUEST_KEYS. ``owner``: the API token submitting them (their records say so, and it lists them)."""
        return self._stream((self.make_request(request) for request in requests), on_progress, owner)

    def make_request(self, request: Any) -> tuple[Job, str]:
        """:meth:`make_job` for a request of :meth:`submit_requests`; InvalidJob names unknown or missing keys."""
        if not isinstance(request, dict):
            raise InvalidJob(f"a request is a dict (a JSON object) with task and input, not {type(request).__name__}")
        unknown = sorted(str(key)[:40] for key in request if key not in REQUEST_KEYS)
        if unknown:
            raise InvalidJob(
                f"unknown request key(s) {', '.join(map(repr, unknown[:10]))}; a request has {', '.join(REQUEST_KEYS)}"
            )
        missing = [key for key in ("task", "input") if key not in request]
        if missing:
            raise InvalidJob(f"a request needs {' and '.join(missing)}", missing[0])
        for key in ("task", "model", "webhook", "id", "priority"):
            value = request.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidJob(f"a request's {key} is a string, not {type(value).__name__}", key)
        options = {key: request[key] for key in ("deadline", "ttl", "webhook_events", "result_ttl") if key in request}
        return self.make_job(
            request["task"],
            request["input"],
            request.get("model"),
            request.get("parameters"),
            request.get("webhook"),
            request.get("id"),
            priority=request.get("priority") or "normal",
            **options,
        )

    def _stream(
        self,
        made: Iterator[tuple[Job, str]],
        on_progress: Callable[[int], None] | None,
        owner: str | None = None,
    ) -> SubmittedIds:
        """Enqueue the jobs ``made`` yields, SUBMIT_CHUNK at a time (see :meth:`submit_many`)."""
        ids = SubmittedIds()
        while True:
            chunk: list[tuple[Job, str]] = []
            try:
                chunk.extend(islice(made, SUBMIT_CHUNK))
                enqueued = self.enqueue(chunk, owner) if chunk else SubmittedIds()
            except InvalidJob as exc:
                position = getattr(exc, "position", len(chunk))
                raise _failed_at(exc, len(ids) + position, list(ids)) from None
            ids.extend(enqueued)
            ids.existing += enqueued.existing
            if chunk and on_progress is not None:
                on_progress(len(ids))
            if len(chunk) < SUBMIT_CHUNK:
                return ids

    def enqueue(self, jobs: list[tuple[Job, str]], owner: str | None = None) -> SubmittedIds:
        """Record validated jobs as queued (submitted by ``owner``, an API token, where given) and publish them
        (pipeq.core.publish: in one Redis transaction on pipeq's transport); jobs whose id already exists with the
        same payload are skipped (counted in ``existing``; those still queued whose message may never have been
        published are published now). If any id exists with another payload, nothing is
        published: the records just created are removed again and JobConflict names the id (its ``position`` in
        ``jobs``)."""
        records = [
            JobRecord.of(job, "queued", webhook=job.webhook, owner=owner, payload_sha256=payload_sha256(job))
            for job, _ in jobs
        ]
        try:
            existing = self.store.create(records, self.replica_wait)
        except NotReplicated as exc:  # the records may not survive a failover: enqueue nothing, say so
            self.store.forget(exc.job_ids, {job.model for job, _ in jobs}, owner)  # those it created, no others
            earlier = len(jobs) - len(exc.job_ids)
            kept = f" ({earlier} job(s) submitted before keep their records)" if earlier else ""
            raise NotReplicated(
                f"nothing was enqueued{kept}: the job records were written to the Redis primary, but {exc}. Check"
                " that the replicas run and keep up (INFO replication), then submit again",
                exc.job_ids,
            ) from None
        conflicts = [
            position
            for position, (record, stored) in enumerate(zip(records, existing, strict=True))
            if stored is not None and stored.payload_sha256 not in (None, record.payload_sha256)
        ]
        fresh = [pair for pair, stored in zip(jobs, existing, strict=True) if stored is None]
        if conflicts:
            self.store.forget([job.id for job, _ in fresh], {job.model for job, _ in fresh}, owner)
            nothing = "nothing was enqueued" if len(jobs) == 1 else f"none of these {len(jobs)} jobs was enqueued"
            conflict = JobConflict(
                f"job id {records[conflicts[0]].id!r} already exists with another payload (task, model, input,"
                f" parameters or webhook); {nothing}. Choose a new job id, or resubmit the same payload to get the"
                " existing job"
            )
            conflict.position = conflicts[0]
            raise conflict
        # A resubmitted job still queued whose marker says its message may never have been published (a submit cut
        # short by a crash or a failover, between the record and the message): publish it now. At worst it was
        # published after all and runs twice, keeping one result (pipeq.core.records' final-record rule).
        resumed = [job.id for (job, _), kept in zip(jobs, existing, strict=True) if kept and kept.state == "queued"]
        unpublished = set(self.store.unpublished(resumed))
        again = [pair for pair in jobs if pair[0].id in unpublished]
        published: set[str] = set()
        try:
            publish_jobs(self.celery, fresh + again, published.update, self.replica_wait)
        except Exception:
            left = [job for job, _ in fresh if job.id not in published]
            self.store.forget([job.id for job in left], {job.model for job in left}, owner)
            raise
        self.store.published([job.id for job, _ in fresh + again])
        ids = SubmittedIds(job.id for job, _ in jobs)
        ids.existing = len(jobs) - len(fresh)
        return ids

    def status(self, job_id: str) -> JobRecord:
        """The job's record: state queued / running / succeeded / failed / canceled / expired, with its result,
        error or progress."""
        record = self.store.get(job_id)
        if record is None:
            raise UnknownJob(f"no job {job_id!r}: never submitted, or its record expired")
        return self.results.resolve(self.settle_overdue([record])[0])

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job and return its record. A queued job never runs (wherever it waits: in the queue, prefetched
        by a worker, in a micro-batch); a running one stops at its next piece (a chunk of audio, a generated token)
        or its result is discarded. A job already final keeps its state, returned unchanged. UnknownJob if there is
        no such job."""
        return self.cancel_many([job_id])[0]

    def cancel_many(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """:meth:`cancel` for several jobs, their records in order; UnknownJob (nothing canceled) if any is
        unknown."""
        ids = list(job_ids)
        records = self.store.get_many(ids)
        missing = [job_id for job_id, record in zip(ids, records, strict=True) if record is None]
        if missing:
            raise UnknownJob(
                f"no job(s) {', '.join(map(repr, missing[:5]))}: never submitted, or their records expired;"
                " nothing was canceled"
            )
        result: dict[str, JobRecord] = {}
        pending = [record for record in records if record is not None]
        for _ in range(5):  # compare and set: a worker may move a job on between the read and the write
            result.update((record.id, record) for record in pending if record.done)
            retry: list[str] = []
            for state in {record.state for record in pending if not record.done}:
                live = [record for record in pending if record.state == state]
                ended = [record.ended("canceled", "Canceled", CANCELED_MESSAGE) for record in live]
                written = self.store.write(ended, only_if=state)
                done = [record for record, ok in zip(ended, written, strict=True) if ok]
                result.update((record.id, record) for record in done)
                self._announce(done)
                retry += [record.id for record, ok in zip(live, written, strict=True) if not ok]
            pending = [record for record in self.store.get_many(retry) if record is not None]
            if not pending:
                break
        return [self.results.resolve(result[job_id]) if job_id in result else self.status(job_id) for job_id in ids]

    def settle_overdue(self, records: list[JobRecord]) -> list[JobRecord]:
        """``records`` with every queued job past its deadline made expired, stored so and announced (no worker
        needs to see it first). Records read as they are otherwise."""
        settled = list(records)
        at = now()
        for i, record in enumerate(records):
            if record.state == "queued" and record.past_deadline(at):
                final = record.expired(at)
                if self.store.write([final], only_if="queued")[0]:
                    settled[i] = final
                    self._announce([final])
                else:
                    settled[i] = self.store.get(record.id) or record
        return settled

    def _announce(self, finals: list[JobRecord]) -> None:
        """Queue the completed webhook of jobs this client made final (canceled, expired) that asked for one."""
        wanted = [(record.id, "completed", None) for record in finals if wants(record, "completed")]
        enqueue_events(self.celery, self.settings.webhooks.queue, self.store.redis, self.settings.result_ttl, wanted)

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job succeeds or fails and return its record; TimeoutError after ``timeout`` s."""
        return self.wait_many([job_id], timeout)[job_id]

    def wait_many(self, job_ids: Sequence[str], timeout: float | None = None) -> dict[str, JobRecord]:
        """Block until every job is done; records by job id, results read back from object storage if offloaded."""
        ids = list(job_ids)
        missing = [job_id for job_id, record in zip(ids, self.store.get_many(ids), strict=True) if record is None]
        if missing:
            raise UnknownJob(f"no job(s) {', '.join(missing[:5])}: never submitted, or their records expired")
        final = self.store.wait(ids, timeout, settle=self.settle_overdue)
        return {job_id: self.results.resolve(record) for job_id, record in final.items()}

    def list(
        self,
        state: str | Iterable[str] | None = None,
        model: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> JobPage:
        """A page of job records, newest first (by submission time), from the listing index (pipeq.core.job_index:
        the jobs submitted within the settings' ``result_ttl`` whose record still exists).

        ``state``: one state or several, matched against the records' current state (queued jobs past their
        deadline are made expired first, as :meth:`status` does); ``model``: a catalogue model; ``since`` /
        ``until``: submission times, both included (datetimes with a zone or ISO 8601 strings); ``limit``: 1 to
        LIST_LIMIT records; ``cursor``: the page's ``cursor`` to go on with (None: from the newest). A later page
        never repeats or skips a job, even while jobs are submitted. One call reads at most LIST_SCAN index
        entries, so a page filtered by state may hold fewer than ``limit`` records and still have a cursor. Results
        offloaded to object storage are not read: such records carry their ``result_ref`` (:meth:`status` reads
        them). ``owner``: only the jobs this API token submitted. InvalidJob says what is wrong with an argument."""
        states = self._states(state)
        model = None if model is None else self._model(model)
        if owner is not None:
            key = job_index.owner_key(owner)
        else:
            key = job_index.ALL_KEY if model is None else job_index.model_key(model)
        low = job_index.LOWEST if since is None else job_index.score(_instant(since, "since"))
        high = job_index.HIGHEST if until is None else job_index.score(_instant(until, "until"))
        if low > high:
            raise InvalidJob(f"since ({since}) is after until ({until}): nothing lies between them")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT:
            raise InvalidJob(f"limit must be a whole number from 1 to {LIST_LIMIT}, not {str(limit)[:40]!r}")
        last = None if cursor is None else self.index.position(cursor)
        names = [model] if model is not None else list(self.settings.catalogue.models)
        listed_in = [job_index.ALL_KEY, *map(job_index.model_key, names)]
        if owner is not None:
            listed_in.append(key)
        filtered = states is not None or (owner is not None and model is not None)
        found: list[JobRecord] = []
        scanned = 0
        while len(found) < limit and scanned < LIST_SCAN:
            want = LIST_BATCH if filtered else limit - len(found)
            entries = self.index.entries(key, low, high, last, min(want, LIST_SCAN - scanned))
            if not entries:
                return JobPage(found, None)
            records = self._listed(entries, listed_in)
            for entry, record in zip(entries, records, strict=True):
                scanned += 1
                last = entry
                if record is None or (states is not None and record.state not in states):
                    continue
                if model is None or record.model == model:
                    found.append(record)
                    if len(found) == limit:
                        break
        more = last is not None and bool(self.index.entries(key, low, high, last, 1))
        return JobPage(found, self.index.cursor(last) if more else None)

    def _listed(self, entries: list[Position], keys: list[str]) -> list[JobRecord | None]:
        """The records of index entries (settled: overdue queued jobs expired), None where a record is gone; gone
        ones leave ``keys``."""
        records = self.store.get_many([entry.job_id for entry in entries])
        self.index.remove(
            [entry.job_id for entry, record in zip(entries, records, strict=True) if record is None], keys
        )
        settled = iter(self.settle_overdue([record for record in records if record is not None]))
        return [None if record is None else next(settled) for record in records]

    def _states(self, state: str | Iterable[str] | None) -> frozenset[str] | None:
        """The states a listing keeps (None: all); InvalidJob for an unknown one."""
        if state is None:
            return None
        states = [state] if isinstance(state, str) else list(islice(state, len(STATES) + 1))
        unknown = [str(name)[:40] for name in states if name not in STATES]
        if unknown or not states or len(states) > len(STATES):
            what = f"unknown state(s) {', '.join(map(repr, unknown))}" if unknown else "give one to six states"
            raise InvalidJob(f"{what}; states: {', '.join(STATES)}")
        return frozenset(states)

    def _model(self, model: Any) -> str:
        """``model``, a catalogue model's name; InvalidJob otherwise."""
        if not isinstance(model, str) or model not in self.settings.catalogue.models:
            names = ", ".join(list(self.settings.catalogue.models)[:20])
            raise InvalidJob(f"model {str(model)[:80]!r} is not in the catalogue; models: {names}")
        return model

    def cancel_matching(self, model: str | None = None, queue: str | None = None) -> int:
        """Cancel every job not yet final of ``model``, or of every catalogue model served on ``queue`` (one of the
        two), as :meth:`cancel` does; how many were canceled. Walks the listing index, so it reaches the jobs
        :meth:`list` shows; jobs submitted while it runs may be left alone."""
        if (model is None) == (queue is None):
            raise InvalidJob("give a model or a queue to cancel the jobs of (one of the two)")
        if model is not None:
            models = [self._model(model)]
        else:
            queues = self.settings.catalogue.queues()
            if not isinstance(queue, str) or queue not in queues:
                raise InvalidJob(
                    f"no catalogue model is served on queue {str(queue)[:80]!r}; queues: {', '.join(queues)}"
                )
            models = [entry.name for entry in self.settings.catalogue.for_queues([queue])]
        canceled = 0
        for name in models:
            cursor = None
            while True:
                page = self.list(state=ACTIVE_STATES, model=name, limit=LIST_LIMIT, cursor=cursor)
                canceled += self._cancel_listed([record.id for record in page.records])
                if page.cursor is None:
                    break
                cursor = page.cursor
        return canceled

    def _cancel_listed(self, job_ids: list[str]) -> int:
        """:meth:`cancel_many` of jobs just listed (those whose record expired meanwhile left out); how many of them
        are canceled now."""
        if not job_ids:
            return 0
        try:
            records = self.cancel_many(job_ids)
        except UnknownJob:
            present = [record.id for record in self.store.get_many(job_ids) if record is not None]
            records = self.cancel_many(present) if present else []
        return sum(record.state == "canceled" for record in records)

    def close(self) -> None:
        self.store.redis.close()
