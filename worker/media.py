"""Fetching a job's input: objects from S3 (bounded, in parallel), inline bytes and text as they are.

Knows nothing of models or tasks. Transient storage trouble (endpoint unreachable) is raised as is, so the
job is retried; a missing or oversized object fails its job.

Objects up to ``spool_bytes`` come back as bytes; larger ones are streamed, in chunks, into an anonymous
temporary file (gone from the disk as soon as it is closed, or the process dies), so that an hour of audio
never sits in memory compressed. Whoever takes a fetched value calls :func:`release` on it when done.
"""

import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from botocore.exceptions import ClientError
from pipeq.worker.errors import JobFailure, MediaNotFound, MediaTooLarge

from pipeq.core.contract import DictInput, InlineInput, JobInput, ObjectInput, TextInput, replace_media

Fetched = str | bytes | dict | IO[bytes]
"""Text, media bytes, a spooled object, or a dict input with each media reference replaced by its bytes or file."""
SPOOL_BYTES = 8 * 1024 * 1024
"""Objects larger than this go to a temporary file instead of memory."""
READ_CHUNK = 1024 * 1024
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404", "NotFound", "AccessDenied", "403"}


class MediaFetcher:
    """Turns job inputs into raw values: text, bytes or a dict."""

    def __init__(self, s3: Any, max_bytes: int, concurrency: int = 8, spool_bytes: int = SPOOL_BYTES) -> None:
        self.s3 = s3
        self.max_bytes = max_bytes
        self.spool_bytes = spool_bytes
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
            fetched: list[Fetched] = []

            def fetch_reference(ref: ObjectInput | InlineInput) -> Fetched:
                fetched.append(self.fetch(ref))
                return fetched[-1]

            try:
                return replace_media(item.value, fetch_reference)
            except BaseException:
                release(fetched)  # the objects fetched before the one that failed
                raise
        return self._get_object(item)

    def _get_object(self, ref: ObjectInput) -> bytes | IO[bytes]:
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
            head = body.read(min(self.max_bytes, self.spool_bytes) + 1)
            if len(head) <= self.spool_bytes:
                if len(head) > self.max_bytes:
                    raise MediaTooLarge(f"{ref.uri} is larger than the limit of {self.max_bytes} bytes")
                return head
            return self._spool(ref, head, body)

    def _spool(self, ref: ObjectInput, head: bytes, body: Any) -> IO[bytes]:
        """``head`` and the rest of ``body`` in a temporary file, read in chunks, at most ``max_bytes``."""
        spooled = tempfile.TemporaryFile(prefix="pipeq-media-")  # noqa: SIM115 (the caller releases it)
        try:
            size, chunk = 0, head
            while chunk:
                size += len(chunk)
                if size > self.max_bytes:
                    raise MediaTooLarge(f"{ref.uri} is larger than the limit of {self.max_bytes} bytes")
                spooled.write(chunk)
                chunk = body.read(READ_CHUNK)
            spooled.seek(0)
        except BaseException:
            spooled.close()
            raise
        return spooled

    def close(self) -> None:
        """Stop the fetch threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def release(value: Fetched | Any) -> None:
    """Free what a fetched value holds: spooled objects' temporary files (in dicts too) are closed, hence deleted."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            release(item)
    elif hasattr(value, "close") and hasattr(value, "read"):
        value.close()
