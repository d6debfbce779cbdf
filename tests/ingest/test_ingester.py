"""The Ingester: one submission per object version, and what it remembers having seen."""

import logging

import pytest

from pipeq.config.settings import IngestRule
from pipeq.ingest.ingester import Ingester
from pipeq.ingest.rules import match
from tests.support.s3_events import put


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
