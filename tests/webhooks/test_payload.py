"""A job's record as the documented webhook body of each event, and the bytes that are signed."""

from datetime import UTC, datetime

from pipeq.core.records import JobError, JobRecord, Progress
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
    assert payload(record, "completed", 4) == {
        "id": "job-9",
        "task": "text-classification",
        "model": "m",
        "event": "completed",
        "sequence": 4,
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
    assert encode(record, "completed", 2) == (
        b'{"id":"job-1","task":"text-classification","model":"m","event":"completed","sequence":2,'
        b'"status":"succeeded",'
        b'"result":[{"label":"POSITIVE","score":0.5}],'
        b'"timings":{"submitted_at":"2025-01-01T00:00:00+00:00","started_at":"2025-01-01T00:00:01+00:00",'
        b'"finished_at":"2025-01-01T00:00:02.500000+00:00"}}'
    )


def test_a_running_record_tells_its_progress_not_a_result():
    at = datetime(2025, 1, 1, 0, 0, 3, tzinfo=UTC)
    record = JobRecord(
        state="running",
        id="job-2",
        task="automatic-speech-recognition",
        model="m",
        submitted_at=SUBMITTED,
        progress=Progress(fraction=0.25, detail="chunk 1 of 4", updated_at=at),
    )
    body = payload(record, "progress", 3)
    assert body["event"] == "progress" and body["sequence"] == 3 and body["status"] == "running"
    assert body["progress"] == {"fraction": 0.25, "detail": "chunk 1 of 4", "updated_at": "2025-01-01T00:00:03Z"}
    assert "result" not in body and "error" not in body


def test_a_canceled_record_carries_why():
    record = JobRecord(state="queued", id="job-3", task="text-classification", model="m", submitted_at=SUBMITTED)
    canceled = record.ended("canceled", "Canceled", "canceled by its producer")
    body = payload(canceled)
    assert body["status"] == "canceled"
    assert body["error"] == {"type": "Canceled", "message": "canceled by its producer"}
