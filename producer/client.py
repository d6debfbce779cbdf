"""The Python client: submit jobs (validated before anything is enqueued), then read or wait for results."""

from collections.abc import Iterable, Sequence
from typing import Any

from pipeq.config.catalogue import UnknownModel
from pipeq.config.settings import Settings, load_settings
from pipeq.config.tasks import UnknownTask
from pipeq.core.contract import InvalidJob, Job, check_object_access, make_input, payload_sha256
from pipeq.core.messaging import TASK_NAME, make_celery, sent_now
from pipeq.core.records import JobRecord, RecordStore
from pipeq.core.results import ResultStorage
from pipeq.core.storage import s3_client


class UnknownJob(LookupError):
    """No record exists for this job id (never submitted, or expired)."""


class JobConflict(InvalidJob):
    """A job id submitted again with another payload (task, model, input, parameters or webhook)."""


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
    ) -> tuple[Job, str]:
        """A validated job and the queue it goes to; InvalidJob says what is wrong (objects the model may not read
        included: see ``allowed_object_prefixes``)."""
        try:
            entry = self.settings.catalogue.resolve(task, model)
            fields: dict[str, Any] = {
                "task": task,
                "model": entry.name,
                "input": make_input(input),
                "parameters": parameters or {},
                "webhook": webhook,
            }
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
    ) -> str:
        """Enqueue one job and return its id. Resubmitting an existing id with the same payload enqueues nothing
        and returns the id (idempotency); with another payload it raises JobConflict."""
        return self.submit_many(
            task,
            [input],
            model=model,
            parameters=parameters,
            webhook=webhook,
            job_ids=None if job_id is None else [job_id],
        )[0]

    def submit_many(
        self,
        task: str,
        inputs: Iterable[Any],
        model: str | None = None,
        parameters: dict | None = None,
        webhook: str | None = None,
        job_ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Enqueue one job per input; every job is validated before any is enqueued, and a JobConflict on any id
        enqueues none (see :meth:`enqueue`)."""
        inputs = list(inputs)
        if job_ids is not None and len(job_ids) != len(inputs):
            raise InvalidJob(f"{len(job_ids)} job ids for {len(inputs)} inputs")
        made = [
            self.make_job(task, item, model, parameters, webhook, None if job_ids is None else job_ids[i])
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
                    )
                    published.append(job.id)
        except Exception:
            self.store.forget([job.id for job, _ in fresh if job.id not in published])
            raise
        return [job.id for job, _ in jobs]

    def status(self, job_id: str) -> JobRecord:
        """The job's record: state queued / running / succeeded / failed, with its result or error."""
        record = self.store.get(job_id)
        if record is None:
            raise UnknownJob(f"no job {job_id!r}: never submitted, or its record expired")
        return self.results.resolve(record)

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
