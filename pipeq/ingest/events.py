"""Bucket notifications (S3, MinIO) read into the object versions they announce: pure functions, no I/O."""

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

log = logging.getLogger("pipeq.ingest")


class MalformedEvent(ValueError):
    """An event (or one of its records) that is not a bucket notification pipeq can read."""


@dataclass(frozen=True)
class ObjectVersion:
    """One version of an object, as a notification announces it."""

    bucket: str
    key: str
    tag: str  # ETag (unquoted), else versionId, else the event's sequencer: what identifies this version
    version_id: str | None = None


def unquoted(value: Any) -> str | None:
    """A string field of an event or listing, without ETag quotes; None when absent or empty."""
    if not isinstance(value, str):
        return None
    return value.strip().strip('"') or None


def parse_event(body: bytes | str) -> Any:
    """The JSON document in ``body``; MalformedEvent when it is not JSON (or nested too deep to read)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"the event is not JSON: {exc}") from None
    except RecursionError:
        raise MalformedEvent("the event is JSON nested too deep to read") from None


def event_records(event: Any) -> list[Any]:
    """The S3 records in an event: ``{"Records": [...]}`` (S3, MinIO's webhook body, which adds EventName and
    Key) or MinIO's access-format Redis entry ``[{"Event": [...], "EventTime": ...}]``; S3's test event has none."""
    entries = event if isinstance(event, list) else [event]
    records: list[Any] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise MalformedEvent(f"an event must be a JSON object (or a list of them), not {type(entry).__name__}")
        found = entry.get("Records", entry.get("Event"))
        if isinstance(found, list):
            records.extend(found)
        elif entry.get("Event") != "s3:TestEvent":
            raise MalformedEvent('an event needs a "Records" list (S3, MinIO webhook) or an "Event" list (MinIO)')
    return records


def created_object(record: Any) -> ObjectVersion | None:
    """The object version a record says was created, its key decoded; None for deletions, reads, restores.

    MalformedEvent when the record is not one pipeq can read.
    """
    if not isinstance(record, dict):
        raise MalformedEvent(f"a record must be a JSON object, not {type(record).__name__}")
    name = record.get("eventName")
    if not isinstance(name, str):
        raise MalformedEvent("the record has no eventName")
    if not name.removeprefix("s3:").startswith("ObjectCreated"):
        return None
    try:
        bucket, obj = record["s3"]["bucket"]["name"], record["s3"]["object"]
        key = obj["key"]
    except (KeyError, TypeError):
        raise MalformedEvent(f"{name} record without s3.bucket.name and s3.object.key") from None
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key and isinstance(obj, dict)):
        raise MalformedEvent(f"{name} record with an empty or non-string bucket name or key")
    key = unquote_plus(key)  # S3 and MinIO URL-encode keys in events ('+' for spaces)
    version_id = unquoted(obj.get("versionId"))
    tag = unquoted(obj.get("eTag")) or version_id or unquoted(obj.get("sequencer"))
    if tag is None:
        raise MalformedEvent(f"{name} record for s3://{bucket}/{key} has no eTag, versionId or sequencer")
    return ObjectVersion(bucket, key, tag, version_id)


def created_objects(event: Any) -> list[ObjectVersion]:
    """The object versions a parsed notification says were created, in order.

    A malformed record is logged and skipped (the others still count); MalformedEvent when the event as a whole
    is not a notification.
    """
    objects = []
    for index, record in enumerate(event_records(event)):
        try:
            created = created_object(record)
        except MalformedEvent as exc:
            log.warning("skipping record %d of an event: %s", index, exc)
            continue
        if created is not None:
            objects.append(created)
    return objects
