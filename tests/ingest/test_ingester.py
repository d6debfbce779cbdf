"""The Ingester: one submission per object version, and what it remembers having seen."""

import logging
import time

import pytest

from pipeq.config.settings import IngestRule
from pipeq.ingest.ingester import Ingester
from pipeq.ingest.rules import match
from pipeq.ingest.seen import LEGACY_KEY as LEGACY_SEEN_KEY
from pipeq.ops import metrics
from pipeq.producer import Client
from tests.ingest.conftest import INGEST_ID_KEY
from tests.support.s3_events import put
from tests.support.settings import make_settings


@pytest.mark.parametrize("bucket_name", ["ingest-submit-once"])
def test_submitting_a_version_twice_queues_one_job_and_marks_it_seen(offline, s3, bucket):
    etag = put(s3, bucket, "notes/n", b"hello")["s3"]["object"]["eTag"]
    job = match(offline.ingester.rules, bucket, "notes/n", etag)
    assert offline.ingester.unseen([job]) == [job]

    assert offline.ingester.submit(job) == "s3-417bcda0f2dbac7b7f058917abbf179b0b5e0d2a"
    assert offline.ingester.submit(job) == "s3-417bcda0f2dbac7b7f058917abbf179b0b5e0d2a"
    assert offline.ingester.unseen([job]) == []
    [queued] = offline.queued()
    assert (queued["id"], queued["task"], queued["model"], queued["parameters"]) == (
        "s3-417bcda0f2dbac7b7f058917abbf179b0b5e0d2a",
        "text-classification",
        "tiny-text-classification",  # the catalogue's model for the task: the notes/ rule names none
        {"top_k": 2},
    )
    assert offline.records() == 1


def test_marking_seen_submits_nothing_and_hides_only_those_versions(offline, bucket):
    first, second = (match(offline.ingester.rules, bucket, "notes/n", tag) for tag in ("e1", "e2"))
    offline.ingester.mark_seen([first])
    offline.ingester.mark_seen([])
    assert offline.ingester.unseen([first, second]) == [second]
    assert offline.ingester.unseen([]) == []
    assert offline.queued() == []


def test_an_invalid_job_is_logged_and_marked_seen_but_not_submitted(offline, bucket, caplog):
    rule = IngestRule(bucket=bucket, task="text-classification", parameters={"no_such_parameter": 1})
    ingester = Ingester(offline.settings.model_copy(update={"ingest": [rule]}), offline.client)
    job = match(ingester.rules, bucket, "notes/n", "e1")
    with caplog.at_level(logging.ERROR, logger="pipeq.ingest"):
        assert ingester.submit(job) is None
    [logged] = [r.getMessage() for r in caplog.records]
    assert logged.startswith(f"not submitting s3://{bucket}/notes/n: ")
    assert "no_such_parameter" in logged
    assert ingester.unseen([job]) == []  # a listing will not try it again
    assert offline.queued() == []
    assert offline.records() == 0


def _eventually(check, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow
def test_what_10000_ingested_objects_leave_in_redis_expires_after_the_retention(
    redis_url, s3_endpoint, tiny_models, rules, redis_db
):
    settings = make_settings(
        redis_url, s3_endpoint, tiny_models, db=redis_db, ingest=rules, ingest_id_key=INGEST_ID_KEY,
        ingest_seen_retention_s=2, result_ttl=2,
    )  # fmt: skip
    client = Client(settings)
    try:
        state = client.store.redis
        baseline = state.dbsize()
        ingester = Ingester(settings, client)
        bucket = rules[0].bucket
        jobs = [match(rules, bucket, f"reports/{n}.txt", f"{n:032x}") for n in range(10_000)]
        ingester.mark_seen(jobs[:9_900])  # as a poller's first pass does
        ids = [ingester.submit(job) for job in jobs[9_900:]]  # the same seen keys, and job records
        assert len(set(ids)) == 100 and ingester.unseen(jobs) == []
        windows = list(state.scan_iter("pipeq:ingest:seen:*"))
        assert sum(state.scard(key) for key in windows) == 10_000 and len(windows) <= 2
        assert _eventually(lambda: state.dbsize() == baseline)  # seen keys, records and index: all gone
        assert ingester.unseen(jobs) == jobs
    finally:
        client.close()


def test_versions_remembered_by_an_earlier_release_still_count(offline, s3, bucket):
    job = match(offline.ingester.rules, bucket, "notes/old", "0" * 32)
    offline.client.store.redis.sadd(LEGACY_SEEN_KEY, job.seen)  # the set earlier releases kept for ever
    restarted = Ingester(offline.settings, offline.client)
    assert restarted.unseen([job]) == []
    assert 0 < offline.client.store.redis.ttl(LEGACY_SEEN_KEY) <= offline.settings.ingest_seen_retention_s
    duplicates = metrics.ingest_events.labels("poll", "duplicate")
    before = duplicates._value.get()
    restarted.submit(job)
    assert duplicates._value.get() == before + 1  # seen before, by the old set
