"""Source: listing the rules' buckets (``list_objects_v2``), for object stores without notifications.

**What a pass costs.** S3 offers no "changed since" listing, so the floor is the listing itself: one request per
1000 objects. Above that floor a pass pays only for what changed:

* the poller remembers, per bucket and prefix, each key's ETag as the previous passes listed it (in memory: one
  entry per listed object); an object listed with the same ETag again reaches neither the rules nor Redis;
* S3 lists keys in order, so with ``full_every`` N above 1 (``pipeq ingest --poll-full-every N``), between full
  passes a pass lists only the keys after the last one it has seen (``StartAfter``): where keys grow (dates,
  sequence numbers) such a pass costs one request plus the new objects. Every N-th pass lists everything, which
  finds new keys that sort earlier and overwritten objects (so those wait up to N intervals) and forgets deleted
  ones. The default, 1, lists everything every pass, right for keys in no order (uuids);
* an object last modified before the ingester's retention (``ingest_seen_retention_s``) is not looked up once the
  prefix has been polled before: it was handled then, and what remembers it may have expired.

The first pass over a bucket/prefix only marks the objects already there as seen, unless ``backfill``.
"""

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeq.core.storage import s3_client
from pipeq.ingest.events import unquoted
from pipeq.ingest.ingester import Ingester
from pipeq.ingest.rules import match

log = logging.getLogger("pipeq.ingest")

PRIMED_KEY = "pipeq:ingest:primed"  # set of "bucket/prefix" listings polled at least once
FULL_EVERY = 1


class Poller:
    """Lists every rule's bucket and prefix each ``interval`` seconds and submits the objects not seen before."""

    def __init__(
        self,
        ingester: Ingester,
        interval: float,
        backfill: bool = False,
        page_size: int = 1000,
        full_every: int = FULL_EVERY,
    ) -> None:
        self.ingester = ingester
        self.interval = interval
        self.backfill = backfill
        self.page_size = page_size  # objects per list_objects_v2 call
        self.full_every = max(1, full_every)
        self.s3 = s3_client(ingester.settings)
        self.listed: dict[str, dict[str, str]] = {}
        """Per "bucket/prefix": key -> ETag of the objects the passes since the last full one listed."""
        self.passes = 0

    def poll(self) -> list[str]:
        """One pass over every rule's bucket and prefix; the ids of the jobs submitted."""
        full = self.passes % self.full_every == 0
        self.passes += 1
        ids: list[str] = []
        for bucket, prefix in dict.fromkeys((rule.bucket, rule.prefix) for rule in self.ingester.rules):
            ids += self._poll_listing(bucket, prefix, full)
        return ids

    def _poll_listing(self, bucket: str, prefix: str, full: bool) -> list[str]:
        ingester = self.ingester
        listing = f"{bucket}/{prefix}"
        primed = bool(ingester.state.sismember(PRIMED_KEY, listing))
        known = self.listed.get(listing)
        current = {} if full or known is None else known
        options: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if not full and known:
            options["StartAfter"] = max(known)
        horizon = datetime.now(UTC) - timedelta(seconds=ingester.retention_s)
        ids: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(**options, PaginationConfig={"PageSize": self.page_size}):
            listed = {obj["Key"]: (unquoted(obj.get("ETag")), obj) for obj in page.get("Contents", [])}
            changed = [
                job
                for key, (etag, obj) in listed.items()
                if etag is not None
                and (known is None or known.get(key) != etag)
                and not (primed and _modified(obj) < horizon)
                and (job := match(ingester.rules, bucket, key, etag))
            ]
            fresh = ingester.unseen(changed)
            if self.backfill or primed:
                ids.extend(job_id for job in fresh if (job_id := ingester.submit(job)) is not None)
            else:
                ingester.mark_seen(fresh)
            current.update((key, etag) for key, (etag, _) in listed.items())  # only once the page is handled
        self.listed[listing] = current
        if not primed:
            ingester.state.sadd(PRIMED_KEY, listing)
        return ids

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


def _modified(obj: dict[str, Any]) -> datetime:
    """A listed object's LastModified (aware), or now where the store gave none."""
    modified = obj.get("LastModified")
    return modified if isinstance(modified, datetime) and modified.tzinfo else datetime.now(UTC)
