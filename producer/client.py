"""The Python client: submit jobs (validated before anything is enqueued), then read, wait for or cancel them."""

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pipeq.config.catalogue import UnknownModel
from pipeq.config.settings import Settings, load_settings
from pipeq.config.tasks import UnknownTask
from pipeq.core.contract import InvalidJob, Job, check_object_access, make_input, payload_sha256
from pipeq.core.messaging import TASK_NAME, broker_priority, make_celery, sent_now
from pipeq.core.records import JobRecord, RecordStore, now
from pipeq.core.results import ResultStorage
from pipeq.core.storage import s3_client
from pipeq.core.webhook_events import enqueue_events, wants_completed


class UnknownJob(LookupError):
    """No record exists for this job id (never submitted, or expired)."""


class JobConflict(InvalidJob):
    """A job id submitted again with another payload (task, model, input, parameters or webhook)."""


CANCELED_MESSAGE = "canceled by its producer"
EXPIRED_MESSAGE = "not started by its deadline ({deadline}): it never ran"


def expired(record: JobRecord) -> JobRecord:
    """``record`` made final as expired (its job was not started by its deadline)."""
    return record.ended("expired", "Expired", EXPIRED_MESSAGE.format(deadline=record.deadline.isoformat()))


def _deadline(deadline: datetime | str | None, ttl: float | None, longest_s: int, at: datetime) -> datetime | None:
    """The absolute deadline of a job given ``deadline`` or ``ttl`` (seconds from ``at``); InvalidJob unless it lies
    after ``at`` and within ``longest_s`` (the record's lifetime) of it."""
    if deadline is not None and ttl is not None:
        raise InvalidJob("give a deadline or a ttl, not both")
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise InvalidJob(f"ttl must be a number of seconds above 0, not {str(ttl)[:40]!r}")
        if ttl > longest_s:
            raise InvalidJob(f"ttl of {ttl:g} s exceeds result_ttl ({longest_s} s): the job's record expires first")
        return at + timedelta(seconds=ttl)
    if deadline is None:
        return None
    if isinstance(deadline, str):
        try:
            deadline = datetime.fromisoformat(deadline)
        except ValueError:
            raise InvalidJob(f"deadline {deadline[:40]!r} is not an ISO 8601 time (2026-12-01T12:00:00Z)") from None
    if not isinstance(deadline, datetime):
        raise InvalidJob(f"deadline must be a datetime or an ISO 8601 string, not {type(deadline).__name__}")
    if deadline.tzinfo is None:
        raise InvalidJob(f"deadline {deadline.isoformat()} has no time zone: give one (e.g. +00:00 or Z)")
    if deadline <= at:
        raise InvalidJob(f"deadline {deadline.isoformat()} is in the past (now {at.isoformat()})")
    if deadline > at + timedelta(seconds=longest_s):
        raise InvalidJob(
            f"deadline {deadline.isoformat()} lies more than result_ttl ({longest_s} s) ahead: the job's record"
            " would expire first"
        )
    return deadline


class Client:
    """Submits jobs to pipeq workers and reads their records from Redis."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.store = RecordStore(self.settings.result_backend, self.settings.result_ttl)
        self.results = ResultStorage(
            s3_client(self.settings), self.settings.results_bucket, self.settings.max_inline_result_bytes
        )
        self.celery = make_celery(self.settings)

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
                    raise InvalidJob("webhook_events names what a webhook is told: give a webhook too")
                fields["webhook_events"] = webhook_events
            if result_ttl is not None:
                if isinstance(result_ttl, bool) or not isinstance(result_ttl, int) or not 0 < result_ttl <= longest:
                    raise InvalidJob(
                        f"result_ttl must be whole seconds from 1 to {longest} (the settings' result_ttl), not"
                        f" {str(result_ttl)[:40]!r}"
                    )
                fields["result_ttl"] = result_ttl
            if job_id is not None:
                fields["id"] = job_id
            job = check_object_access(
                Job(**fields).check(self.settings.limits, entry), self.settings.object_access(entry)
            )
        except (UnknownModel, UnknownTask) as exc:
            raise InvalidJob(str(exc)) from None
        except ValueError as exc:  # pydantic's ValidationError included
            raise InvalidJob(str(exc)) from None
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
        return self.submit_many(
            task,
            [input],
            model=model,
            parameters=parameters,
            webhook=webhook,
            job_ids=None if job_id is None else [job_id],
            **lifecycle,
        )[0]

    def submit_many(
        self,
        task: str,
        inputs: Iterable[Any],
        model: str | None = None,
        parameters: dict | None = None,
        webhook: str | None = None,
        job_ids: Sequence[str] | None = None,
        **lifecycle: Any,
    ) -> list[str]:
        """Enqueue one job per input; every job is validated before any is enqueued, and a JobConflict on any id
        enqueues none (see :meth:`enqueue`). Lifecycle options as :meth:`submit`'s, for every job."""
        inputs = list(inputs)
        if job_ids is not None and len(job_ids) != len(inputs):
            raise InvalidJob(f"{len(job_ids)} job ids for {len(inputs)} inputs")
        made = [
            self.make_job(task, item, model, parameters, webhook, None if job_ids is None else job_ids[i], **lifecycle)
            for i, item in enumerate(inputs)
        ]
        return self.enqueue(made)

    def enqueue(self, jobs: list[tuple[Job, str]]) -> list[str]:
        """Record validated jobs as queued and publish them; jobs whose id already exists with the same payload are
        skipped. If any id exists with another payload, nothing is published: the records just created are
        removed again and JobConflict names the id."""
        records = [
            JobRecord.of(job, "queued", webhook=job.webhook, payload_sha256=payload_sha256(job)) for job, _ in jobs
        ]
        existing = self.store.create(records)
        conflicts = [
            record.id
            for record, stored in zip(records, existing, strict=True)
            if stored is not None and stored.payload_sha256 not in (None, record.payload_sha256)
        ]
        fresh = [pair for pair, stored in zip(jobs, existing, strict=True) if stored is None]
        if conflicts:
            self.store.forget([job.id for job, _ in fresh])
            raise JobConflict(
                f"job id {conflicts[0]!r} already exists with another payload (task, model, input, parameters or"
                " webhook); nothing was enqueued. Choose a new job id, or resubmit the same payload to get the"
                " existing job"
            )
        published: list[str] = []
        try:
            with self.celery.producer_or_acquire() as producer:
                for job, queue in fresh:
                    self.celery.send_task(
                        TASK_NAME,
                        args=[job.model_dump(mode="json")],
                        task_id=job.id,
                        queue=queue,
                        argsrepr=f"[job {job.id}]",  # Celery would repr the whole job for logs
                        kwargsrepr="{}",
                        producer=producer,
                        headers=sent_now(),
                        priority=broker_priority(job.priority),
                    )
                    published.append(job.id)
        except Exception:
            self.store.forget([job.id for job, _ in fresh if job.id not in published])
            raise
        return [job.id for job, _ in jobs]

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
                final = expired(record)
                if self.store.write([final], only_if="queued")[0]:
                    settled[i] = final
                    self._announce([final])
                else:
                    settled[i] = self.store.get(record.id) or record
        return settled

    def _announce(self, finals: list[JobRecord]) -> None:
        """Queue the completed webhook of jobs this client made final (canceled, expired) that asked for one."""
        wanted = [(record.id, "completed", None) for record in finals if wants_completed(record)]
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
        return {job_id: self.results.resolve(record) for job_id, record in self.store.wait(ids, timeout).items()}

    def close(self) -> None:
        self.store.redis.close()
