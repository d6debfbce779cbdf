"""Polling: listing the rules' buckets finds objects no notification announced, each version once."""

import time

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


def test_objects_listed_unchanged_reach_neither_the_rules_nor_redis(offline, s3, bucket, monkeypatch):
    poller = Poller(offline.ingester, interval=1.0, page_size=3)
    for n in range(7):
        put(s3, bucket, f"reports/{n}.txt", b"there")
    poller.poll()
    looked_up: list[int] = []
    unseen = offline.ingester.unseen
    monkeypatch.setattr(offline.ingester, "unseen", lambda jobs: looked_up.append(len(jobs)) or unseen(jobs))
    assert poller.poll() == []
    assert len(looked_up) == 4 and not any(looked_up)  # reports/: 3 pages, notes/: 1, nothing to look up
    put(s3, bucket, "reports/3.txt", b"overwritten")
    put(s3, bucket, "reports/new.txt", b"new")
    looked_up.clear()
    assert len(poller.poll()) == 2 and sum(looked_up) == 2


def test_between_full_passes_only_keys_after_the_last_are_listed(offline, s3, bucket):
    poller = Poller(offline.ingester, interval=1.0, full_every=3)
    put(s3, bucket, "reports/2026-12-01.txt", b"first")
    assert poller.poll() == []  # pass 1, full: primes
    put(s3, bucket, "reports/2026-12-02.txt", b"later key")
    put(s3, bucket, "reports/2026-11-30.txt", b"earlier key")
    assert len(poller.poll()) == 1  # pass 2: after the last key only
    assert [job["input"]["uri"].rsplit("/", 1)[1] for job in offline.queued()] == ["2026-12-02.txt"]
    assert poller.poll() == []  # pass 3: nothing after the last key
    assert len(poller.poll()) == 1  # pass 4, full: the earlier key
    assert offline.records() == 2


def test_a_page_whose_jobs_failed_is_listed_again(offline, s3, bucket, monkeypatch):
    poller = Poller(offline.ingester, interval=1.0)
    poller.poll()
    put(s3, bucket, "reports/late.txt", b"arrives while Redis is away")

    def unreachable(job, source="poll"):
        raise ConnectionError("Redis is away")

    with monkeypatch.context() as patched:
        patched.setattr(offline.ingester, "submit", unreachable)
        with pytest.raises(ConnectionError):
            poller.poll()
    assert len(poller.poll()) == 1


@pytest.mark.slow
def test_objects_older_than_the_retention_are_not_looked_up(redis_url, s3_endpoint, tiny_models, rules, redis_db, s3):
    from pipeq.producer import Client
    from tests.ingest.conftest import INGEST_ID_KEY
    from tests.support.settings import make_settings

    settings = make_settings(
        redis_url, s3_endpoint, tiny_models, db=redis_db, ingest=rules, ingest_id_key=INGEST_ID_KEY,
        ingest_seen_retention_s=3,  # S3 times are whole seconds, and a loaded machine may take a second to poll
    )  # fmt: skip
    client = Client(settings)
    try:
        bucket = rules[0].bucket
        assert Poller(Ingester(settings, client), interval=1.0).poll() == []
        put(s3, bucket, "reports/old.txt", b"modified 4 s ago, after the prefix was first polled")
        time.sleep(4.2)
        put(s3, bucket, "reports/new.txt", b"modified now")
        ids = Poller(Ingester(settings, client), interval=1.0).poll()  # a restarted poller: no memory of listings
        assert len(ids) == 1 and client.status(ids[0]).state == "queued"
    finally:
        client.close()
