"""What a webhook says: a finished job's record as the documented JSON body."""

import json
from typing import Any

from pipeq.core.records import JobRecord


def payload(record: JobRecord) -> dict[str, Any]:
    """The JSON body for a finished job's record: id, task, model, status, result or error, timings."""
    body: dict[str, Any] = {"id": record.id, "task": record.task, "model": record.model, "status": record.state}
    if record.state == "succeeded":
        body["result"] = record.result
    else:
        body["error"] = record.error.model_dump() if record.error else None
    body["timings"] = {
        name: value.isoformat() if value else None
        for name, value in (
            ("submitted_at", record.submitted_at),
            ("started_at", record.started_at),
            ("finished_at", record.finished_at),
        )
    }
    return body


def encode(record: JobRecord) -> bytes:
    """The request body: the record's payload as compact JSON (these exact bytes are signed)."""
    return json.dumps(payload(record), separators=(",", ":")).encode()
