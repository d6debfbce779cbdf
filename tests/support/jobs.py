"""Running jobs through the test worker and checking their records: results against the pipeline's, failures
against the error they should carry."""

from typing import Any

from pipeq.core.records import JobRecord
from tests.support.compare import same
from tests.support.settings import model_name


def run(
    client, task: str, inputs: list, parameters: dict | None = None, model: str | None = None, timeout: float = 180
) -> list[JobRecord]:
    """Submit ``inputs`` as jobs of ``task`` (on the task's tiny model unless ``model``); their records, in order."""
    ids = client.submit_many(task, inputs, model=model or model_name(task), parameters=parameters)
    records = client.wait_many(ids, timeout=timeout)
    return [records[job_id] for job_id in ids]


def check(records: list[JobRecord], expected: list[Any]) -> None:
    """Every job succeeded with the expected pipeline output."""
    for record, want in zip(records, expected, strict=True):
        assert record.state == "succeeded", record.error
        assert same(record.result, want), (record.result, want)


def failed(record: JobRecord, error_type: str, message: str) -> None:
    """The job failed with an error of ``error_type`` whose message contains ``message``."""
    assert record.state == "failed", record.result
    assert record.error.type == error_type, record.error
    assert message in record.error.message, record.error.message
