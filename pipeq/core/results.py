"""Results too large for Redis: written to object storage, the job record keeping an ``s3://`` reference.

Workers offload; clients resolve, so ``Client.wait()`` returns the full result either way.
"""

import json
from typing import Any

from pipeq.core.contract import S3_URI_PATTERN
from pipeq.core.records import JobRecord


class ResultStorage:
    """Moves large results to ``s3://<bucket>/<job-id>.json`` and back."""

    def __init__(self, s3: Any, bucket: str | None, max_inline_bytes: int) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.max_inline_bytes = max_inline_bytes

    def offload(self, record: JobRecord) -> JobRecord:
        """The record with its result in object storage when the result is too large to keep inline."""
        if self.bucket is None or record.result is None:
            return record
        body = json.dumps(record.result, separators=(",", ":")).encode()
        if len(body) <= self.max_inline_bytes:
            return record
        key = f"{record.id}.json"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        return record.model_copy(update={"result": None, "result_ref": f"s3://{self.bucket}/{key}"})

    def resolve(self, record: JobRecord) -> JobRecord:
        """The record with its result read back from object storage when it was offloaded."""
        if record.result_ref is None or record.result is not None:
            return record
        match = S3_URI_PATTERN.match(record.result_ref)
        body = self.s3.get_object(Bucket=match["bucket"], Key=match["key"])["Body"].read()
        return record.model_copy(update={"result": json.loads(body)})
