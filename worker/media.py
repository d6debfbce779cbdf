"""Fetching a job's input: objects from S3 (bounded, in parallel), inline bytes and text as they are.

Knows nothing of models or tasks. Transient storage trouble (endpoint unreachable) is raised as is, so the
job is retried; a missing or oversized object fails its job.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from pipeq.contract import DictInput, InlineInput, JobInput, ObjectInput, TextInput
from worker.errors import JobFailure, MediaNotFound, MediaTooLarge

Fetched = str | bytes | dict
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404", "NotFound", "AccessDenied", "403"}


class MediaFetcher:
    """Turns job inputs into raw values: text, bytes or a dict."""

    def __init__(self, s3: Any, max_bytes: int, concurrency: int = 8) -> None:
        self.s3 = s3
        self.max_bytes = max_bytes
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="pipeq-fetch")

    def fetch_many(self, inputs: list[JobInput]) -> list[Fetched | JobFailure]:
        """Fetch every input, objects in parallel; a failure stands in for its input's value."""
        return list(self._pool.map(self._fetch_or_failure, inputs))

    def _fetch_or_failure(self, item: JobInput) -> Fetched | JobFailure:
        try:
            return self.fetch(item)
        except JobFailure as failure:
            return failure

    def fetch(self, item: JobInput) -> Fetched:
        """The raw value of one input."""
        if isinstance(item, TextInput):
            return item.text
        if isinstance(item, InlineInput):
            return item.data
        if isinstance(item, DictInput):
            return dict(item.value)
        return self._get_object(item)

    def _get_object(self, ref: ObjectInput) -> bytes:
        extra = {"VersionId": ref.version_id} if ref.version_id else {}
        try:
            response = self.s3.get_object(Bucket=ref.bucket, Key=ref.key, **extra)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _MISSING:
                raise MediaNotFound(f"{ref.uri} cannot be read ({code}): check the bucket and key") from None
            raise
        body = response["Body"]
        with body:
            if response.get("ContentLength", 0) > self.max_bytes:
                raise MediaTooLarge(f"{ref.uri} is {response['ContentLength']} bytes; the limit is {self.max_bytes}")
            data = body.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise MediaTooLarge(f"{ref.uri} is larger than the limit of {self.max_bytes} bytes")
        return data

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
