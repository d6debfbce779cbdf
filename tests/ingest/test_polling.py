"""Polling: listing the rules' buckets finds objects no notification announced, each version once."""

import pytest

from pipeq.ingest.ingester import Ingester
from pipeq.ingest.polling import Poller
from tests.support.s3_events import put

OLD = "s3-93c5af16c2267d92e430170068c530992e22b5eb"
NEW = "s3-f0a42d6891043051c10ae0fa19bcd2031b29f607"
ANNOUNCED = "s3-789d5d95fe029b5601bef48384c97f8df34f0e72"
CHANGED = "s3-c9af9f281f11114419bf05e090f98950729fb310"


@pytest.mark.parametrize("bucket_name", ["ingest-polling-later"])
def test_polling_submits_objects_that_appear_after_the_first_pass(offline, s3, bucket):
    poller = Poller(offline.ingester, interval=1.0)
    existing = put(s3, bucket, "reports/old.txt", b"was here before")
    assert poller.poll() == []  # the first pass only marks what is there as seen
    assert offline.queued() == []

    new = put(s3, bucket, "reports/new report.txt", b"arrived later")
    put(s3, bucket, "reports/new.pdf", b"no rule for this")
    assert poller.poll() == [NEW]
    assert poller.poll() == []

    announced = put(s3, bucket, "notes/announced", b"an event told us first")
    assert offline.ingester.handle_event({"Records": [announced]}, "redis_list") == [ANNOUNCED]
    assert poller.poll() == []

    restarted = Ingester(offline.settings, offline.client)
    assert Poller(restarted, interval=1.0).poll() == []
    assert restarted.handle_event({"Records": [existing, new, announced]}, "redis_list") == [OLD, NEW, ANNOUNCED]
    put(s3, bucket, "reports/new report.txt", b"overwritten: a new version")
    assert Poller(restarted, interval=1.0).poll() == [CHANGED]

    assert [job["id"] for job in offline.queued()] == [NEW, ANNOUNCED, OLD, CHANGED]
    assert offline.records() == 4  # new, announced, old (its event came), the new version


def test_polling_with_backfill_submits_what_is_already_there_page_by_page(offline, s3, bucket):
    keys = [f"reports/{n:02}.txt" for n in range(5)] + ["notes/a", "notes/b", "reports/skip.pdf", "elsewhere/c"]
    for key in keys:
        put(s3, bucket, key, key.encode())
    ids = Poller(offline.ingester, interval=1.0, backfill=True, page_size=2).poll()
    assert len(ids) == len(set(ids)) == 7
    assert sorted(job["input"]["uri"] for job in offline.queued()) == sorted(f"s3://{bucket}/{key}" for key in keys[:7])
    restarted = Poller(Ingester(offline.settings, offline.client), interval=1.0, backfill=True)
    assert restarted.poll() == []
    assert offline.records() == 7
