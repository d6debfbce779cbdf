"""Source: listing the rules' buckets (``list_objects_v2``), for object stores without notifications."""

import logging
import threading
from typing import Any

from pipeq.core.storage import s3_client
from pipeq.ingest.events import unquoted
from pipeq.ingest.ingester import Ingester
from pipeq.ingest.rules import ObjectJob, match

log = logging.getLogger("pipeq.ingest")

PRIMED_KEY = "pipeq:ingest:primed"  # set of "bucket/prefix" listings polled at least once


class Poller:
    """Lists every rule's bucket and prefix each ``interval`` seconds and submits the objects not seen before.

    The first pass over a bucket/prefix only marks the objects already there as seen, unless ``backfill``.
    """

    def __init__(self, ingester: Ingester, interval: float, backfill: bool = False, page_size: int = 1000) -> None:
        self.ingester = ingester
        self.interval = interval
        self.backfill = backfill
        self.page_size = page_size  # objects per list_objects_v2 call
        self.s3 = s3_client(ingester.settings)

    def poll(self) -> list[str]:
        """One pass over every rule's bucket and prefix; the ids of the jobs submitted."""
        ingester = self.ingester
        ids: list[str] = []
        for bucket, prefix in dict.fromkeys((rule.bucket, rule.prefix) for rule in ingester.rules):
            listing = f"{bucket}/{prefix}"
            submitting = self.backfill or ingester.state.sismember(PRIMED_KEY, listing)
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size}
            ):
                jobs = [job for obj in page.get("Contents", []) if (job := self._listed(bucket, obj))]
                fresh = ingester.unseen(jobs)
                if submitting:
                    ids.extend(job_id for job in fresh if (job_id := ingester.submit(job)) is not None)
                else:
                    ingester.mark_seen(fresh)
            ingester.state.sadd(PRIMED_KEY, listing)
        return ids

    def _listed(self, bucket: str, obj: dict[str, Any]) -> ObjectJob | None:
        etag = unquoted(obj.get("ETag"))  # quoted in listings, unquoted in events: the same id either way
        return match(self.ingester.rules, bucket, obj["Key"], etag) if etag else None

    def run(self, stop_event: threading.Event) -> None:
        """Poll every ``interval`` seconds until ``stop_event`` is set; a failed pass is logged and retried."""
        while not stop_event.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("polling failed; trying again in %s s", self.interval)
            stop_event.wait(self.interval)

    def close(self) -> None:
        """Nothing to release: the S3 client's connections close with it."""
