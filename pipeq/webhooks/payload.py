"""What a webhook says: a job's record as the documented JSON body of one event (started, progress, completed)."""

import json
from typing import Any

from pipeq.core.records import JobRecord


def payload(record: JobRecord, event: str = "completed", sequence: int | None = None) -> dict[str, Any]:
    """The JSON body of ``event`` for a job's record: id, task, model, the event and its sequence number, status;
    then the result or error of a final record, or the progress of a running one; timings."""
    body: dict[str, Any] = {
        "id": record.id,
        "task": record.task,
        "model": record.model,
        "event": event,
        "sequence": sequence,
        "status": record.state,
    }
    if record.state == "succeeded":
        body["result"] = record.result
    elif record.done:
        body["error"] = record.error.model_dump() if record.error else None
    else:
        body["progress"] = record.progress.model_dump(mode="json") if record.progress else None
    body["timings"] = {
        name: value.isoformat() if value else None
        for name, value in (
            ("submitted_at", record.submitted_at),
            ("started_at", record.started_at),
            ("finished_at", record.finished_at),
        )
    }
    return body


def encode(record: JobRecord, event: str = "completed", sequence: int | None = None) -> bytes:
    """The request body: the payload of the record's ``event`` as compact JSON (these exact bytes are signed)."""
    return json.dumps(payload(record, event, sequence), separators=(",", ":")).encode()
