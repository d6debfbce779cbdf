"""Fetching a job's input: objects from S3 (bounded, in parallel), inline bytes and text as they are.

Knows nothing of models or tasks. Transient storage trouble (endpoint unreachable) is raised as is, so the
job is retried; a missing or oversized object fails its job.

An object is fetched only where every :class:`ObjectAccess` in force allows it: the fetcher's own (a worker's
settings) and the one a call passes (the model's). An object outside them, a missing one and one the
credentials may not read fail their jobs with one and the same message, which never says which it was: jobs
cannot probe the store for buckets and keys.

Objects up to ``spool_bytes`` come back as bytes; larger ones are streamed, in chunks, into an anonymous
temporary file (gone from the disk as soon as it is closed, or the process dies), so that an hour of audio
never sits in memory compressed. Whoever takes a fetched value calls :func:`release` on it when done.
"""

import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import IO, Any

from botocore.exceptions import ClientError

from pipeq.config.object_prefixes import SETTING, ObjectAccess
from pipeq.core.contract import DictInput, InlineInput, JobInput, ObjectInput, TextInput, replace_media
from pipeq.worker.errors import JobFailure, MediaNotFound, MediaTooLarge

Fetched = str | bytes | dict | IO[bytes]
"""Text, media bytes, a spooled object, or a dict input with each media reference replaced by its bytes or file."""
SPOOL_BYTES = 8 * 1024 * 1024
"""Objects larger than this go to a temporary file instead of memory."""
READ_CHUNK = 1024 * 1024
NOT_READABLE_CODES = frozenset(
    {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "404", "AccessDenied", "AllAccessDisabled", "403"}
    | {"Forbidden", "InvalidBucketName", "InvalidArgument"}  # InvalidArgument: a malformed version id
)
"""Storage errors that mean this object cannot be read by this worker, now or later: its job fails."""


def not_readable(ref: ObjectInput) -> MediaNotFound:
    """The failure of an object that is missing, forbidden or not allowed: the same message for all three."""
    return MediaNotFound(
        f"object {ref.uri} does not exist or is not readable by this worker: check the bucket and the key, and that"
        f" the object lies under the {SETTING}"
    )


class MediaFetcher:
    """Turns job inputs into raw values: text, bytes or a dict."""

    def __init__(
        self,
        s3: Any,
        max_bytes: int,
        concurrency: int = 8,
        spool_bytes: int = SPOOL_BYTES,
        access: ObjectAccess | None = None,
        observe: Callable[[int, float, bool], None] = lambda size, seconds, ok: None,
    ) -> None:
        self.s3 = s3
        self.max_bytes = max_bytes
        self.spool_bytes = spool_bytes
        self.access = access
        """The objects every fetch may read (a worker's settings); None: any the credentials can read."""
        self.observe = observe
        """Told of every object read from storage: its size in bytes, the seconds it took, whether it worked."""
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="pipeq-fetch")

    def fetch_many(self, inputs: list[JobInput], access: ObjectAccess | None = None) -> list[Fetched | JobFailure]:
        """Fetch every input, objects in parallel, those ``access`` (the model's) allows too; a failure stands in
        for its input's value."""
        return list(self._pool.map(partial(self._fetch_or_failure, access=access), inputs))

    def _fetch_or_failure(self, item: JobInput, access: ObjectAccess | None = None) -> Fetched | JobFailure:
        try:
            return self.fetch(item, access)
        except JobFailure as failure:
            return failure

    def fetch(self, item: JobInput, access: ObjectAccess | None = None) -> Fetched:
        """The raw value of one input, reading only objects both the fetcher's ``access`` and this one allow."""
        if isinstance(item, TextInput):
            return item.text
        if isinstance(item, InlineInput):
            return item.data
        if isinstance(item, DictInput):
            fetched: list[Fetched] = []

            def fetch_reference(ref: ObjectInput | InlineInput) -> Fetched:
                fetched.append(self.fetch(ref, access))
                return fetched[-1]

            try:
                return replace_media(item.value, fetch_reference)
            except BaseException:
                release(fetched)  # the objects fetched before the one that failed
                raise
        return self._get_object(item, access)

    def _allows(self, ref: ObjectInput, access: ObjectAccess | None) -> bool:
        return all(rule.allows(ref.bucket, ref.key) for rule in (self.access, access) if rule is not None)

    def _get_object(self, ref: ObjectInput, access: ObjectAccess | None) -> bytes | IO[bytes]:
        if not self._allows(ref, access):
            raise not_readable(ref)
        began = time.monotonic()
        try:
            value = self._read_object(ref)
        except BaseException:
            self.observe(0, time.monotonic() - began, False)
            raise
        size = len(value) if isinstance(value, bytes) else value.seek(0, 2)
        if not isinstance(value, bytes):
            value.seek(0)
        self.observe(size, time.monotonic() - began, True)
        return value

    def _read_object(self, ref: ObjectInput) -> bytes | IO[bytes]:
        extra = {"VersionId": ref.version_id} if ref.version_id else {}
        try:
            response = self.s3.get_object(Bucket=ref.bucket, Key=ref.key, **extra)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if exc.response.get("Error", {}).get("Code", "") in NOT_READABLE_CODES or status in (403, 404):
                raise not_readable(ref) from None
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
