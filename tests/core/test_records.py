"""Job records: field names, and records written by earlier versions."""

from pipeq.core.records import JobRecord

OLD_RECORD = (
    '{"state":"succeeded","id":"j1","task":"text-classification","model":"m",'
    '"submitted_at":"2026-11-01T10:00:00Z","result":[{"label":"POSITIVE","score":0.9}],"batch_size":12,"attempts":1}'
)


def test_a_record_written_before_the_rename_reads_its_micro_batch_size():
    record = JobRecord.model_validate_json(OLD_RECORD)
    assert record.micro_batch_jobs == 12
    assert "batch_size" not in record.model_dump()
    assert record.model_dump_json().startswith('{"state":"succeeded",')  # the final-record script relies on it
