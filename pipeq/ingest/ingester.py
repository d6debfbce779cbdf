"""The Ingester: submits one job per new object version, and remembers which versions it has handled (for a
bounded time: pipeq.ingest.seen)."""

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from pipeq.config.settings import NEW_INGEST_ID_KEY, Settings
from pipeq.ingest.rules import ObjectJob, jobs_for_event
from pipeq.ingest.seen import SeenVersions
from pipeq.ops import metrics
from pipeq.producer.client import Client

log = logging.getLogger("pipeq.ingest")


class MissingIdKey(ValueError):
    """Ingestion without ``ingest_id_key``: job ids would be predictable."""


def id_key(settings: Settings) -> bytes:
    """The key of ingested jobs' ids; MissingIdKey, saying how to make one, when the settings have none."""
    if settings.ingest_id_key is None:
        raise MissingIdKey(
            "no ingest_id_key is set: ingested jobs' ids are keyed with it so that no one can compute them. Set"
            f" ingest_id_key in the config file or PIPEQ_INGEST_ID_KEY to 32+ random characters (`{NEW_INGEST_ID_KEY}`"
            " prints some), and keep it: another key gives every object a new job id"
        )
    return settings.ingest_id_key.get_secret_value().encode()


class Source(Protocol):
    """Where events or objects come from (a Redis list, an HTTP endpoint, polling): one module each."""

    def run(self, stop_event: threading.Event) -> None:
        """Hand what arrives to the ingester until ``stop_event`` is set."""

    def close(self) -> None:
        """Release connections and sockets; after ``run`` has returned."""


class Ingester:
    """Submits one job per new object version matching ``settings.ingest``, whichever source announces it.

    What has been seen is kept beside the job records, in the client's result-backend Redis. Job ids are keyed
    with ``settings.ingest_id_key`` (MissingIdKey without one).
    """

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.id_key = id_key(settings)
        self.rules = list(settings.ingest)
        self.client = client
        self.state = client.store.redis
        self.retention_s = settings.ingest_seen_retention_s
        self.seen = SeenVersions(self.state, self.retention_s)
        self._submitting = threading.Lock()  # one client, shared by every source's thread

    def submit(self, job: ObjectJob, source: str = "poll") -> str | None:
        """Submit ``job`` (a no-op if its id exists) and mark its object seen; None if the job is invalid.
        ``source`` (redis_list, http, sqs, poll) labels its count in the metrics."""
        rule = job.rule
        try:
            with self._submitting:
                job_id = self.client.submit(
                    rule.task,
                    job.input(),
                    model=rule.model,
                    parameters=rule.parameters,
                    webhook=rule.webhook,
                    job_id=job.job_id(self.id_key),
                )
        except ValueError as exc:  # InvalidJob, or a bucket or key no s3:// reference can carry
            log.error("not submitting %s: %s", job.uri, exc)
            job_id = None
        else:
            log.info("%s -> job %s (%s)", job.uri, job_id, rule.task)
        first_time = self.seen.add(job.seen)
        outcome = "refused" if job_id is None else "submitted" if first_time else "duplicate"
        metrics.ingest_events.labels(source, outcome).inc()
        return job_id

    def handle_event(self, event: Any, source: str) -> list[str]:
        """Submit the jobs a parsed bucket notification from ``source`` asks for; their ids (duplicates
        included)."""
        jobs = jobs_for_event(event, self.rules)
        if not jobs:
            metrics.ingest_events.labels(source, "unmatched").inc()
        ids = [self.submit(job, source) for job in jobs]
        return [job_id for job_id in ids if job_id is not None]

    def unseen(self, jobs: Sequence[ObjectJob]) -> list[ObjectJob]:
        """The jobs among ``jobs`` whose object versions were not handled within the retention."""
        missing = self.seen.missing([job.seen for job in jobs])
        return [job for job, new in zip(jobs, missing, strict=True) if new]

    def mark_seen(self, jobs: Sequence[ObjectJob]) -> None:
        """Remember the object versions of ``jobs`` as handled (for the retention), without submitting them."""
        self.seen.mark([job.seen for job in jobs])
