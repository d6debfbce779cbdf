"""Job records: field names, and records written by earlier versions."""

from pipeq.core.records import JobRecord, RecordStore, now

OLD_RECORD = (
    '{"state":"succeeded","id":"j1","task":"text-classification","model":"m",'
    '"submitted_at":"2026-11-01T10:00:00Z","result":[{"label":"POSITIVE","score":0.9}],"batch_size":12,"attempts":1}'
)


def test_a_record_written_before_the_rename_reads_its_micro_batch_size():
    record = JobRecord.model_validate_json(OLD_RECORD)
    assert record.micro_batch_jobs == 12
    assert "batch_size" not in record.model_dump()
    assert record.model_dump_json().startswith('{"state":"succeeded",')  # the final-record script relies on it


def test_states_are_read_without_parsing_records(redis_url, redis_db):
    store = RecordStore(f"{redis_url}/{redis_db + 1}")
    queued = JobRecord(state="queued", id="state-1", task="text-classification", model="m", submitted_at=now())
    store.write([queued, queued.model_copy(update={"id": "state-2"}).ended("canceled", "Canceled", "no")])
    assert store.states(["state-1", "state-2", "state-none"]) == ["queued", "canceled", None]
    assert store.states([]) == []
