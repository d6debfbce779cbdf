"""A finished job's record as the documented webhook body, and the bytes that are signed."""

from datetime import UTC, datetime

from pipeq.core.records import JobError, JobRecord
from pipeq.webhooks.payload import encode, payload

SUBMITTED = datetime(2025, 1, 1, tzinfo=UTC)


def test_a_failed_record_becomes_the_documented_body():
    record = JobRecord(
        state="failed",
        id="job-9",
        task="text-classification",
        model="m",
        submitted_at=SUBMITTED,
        error=JobError(type="PipelineError", message="boom"),
    )
    assert payload(record) == {
        "id": "job-9",
        "task": "text-classification",
        "model": "m",
        "status": "failed",
        "error": {"type": "PipelineError", "message": "boom"},
        "timings": {"submitted_at": "2025-01-01T00:00:00+00:00", "started_at": None, "finished_at": None},
    }


def test_a_succeeded_record_carries_its_result_as_compact_json():
    record = JobRecord(
        state="succeeded",
        id="job-1",
        task="text-classification",
        model="m",
        submitted_at=SUBMITTED,
        started_at=datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC),
        finished_at=datetime(2025, 1, 1, 0, 0, 2, 500000, tzinfo=UTC),
        result=[{"label": "POSITIVE", "score": 0.5}],
    )
    assert encode(record) == (
        b'{"id":"job-1","task":"text-classification","model":"m","status":"succeeded",'
        b'"result":[{"label":"POSITIVE","score":0.5}],'
        b'"timings":{"submitted_at":"2025-01-01T00:00:00+00:00","started_at":"2025-01-01T00:00:01+00:00",'
        b'"finished_at":"2025-01-01T00:00:02.500000+00:00"}}'
    )
