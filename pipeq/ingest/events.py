"""Bucket notifications (S3, MinIO; directly, or as SQS message bodies) read into the object versions they
announce: pure functions, no I/O."""

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, unquote_plus

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


def sqs_event(body: bytes | str) -> dict[str, Any] | None:
    """The bucket notification an SQS message body carries, in S3's ``{"Records": [...]}`` shape (what
    ``jobs_for_event`` reads); None for a message that announces nothing and is only to be acknowledged.

    A body is one of: S3's own notification (``Records``; its test event, ``"Event": "s3:TestEvent"``, gives
    None); an SNS envelope (``"Type": "Notification"``, such a notification as the string ``Message``; a
    subscription's confirmations give None, logged); or an EventBridge event from ``aws.s3`` (``Object Created``
    becomes one record, its key, which EventBridge does not URL-encode, encoded as S3 does; other detail types
    give None). MalformedEvent for anything else.
    """
    return _sqs_event(parse_event(body), in_sns=False)


def _sqs_event(message: Any, in_sns: bool) -> dict[str, Any] | None:
    if not isinstance(message, dict):
        raise MalformedEvent(f"an SQS message must hold a JSON object, not {type(message).__name__}")
    if "Records" in message:
        if not isinstance(message["Records"], list):
            raise MalformedEvent('an S3 notification\'s "Records" must be a list')
        return message
    if message.get("Event") == "s3:TestEvent":
        return None
    if "detail-type" in message and "detail" in message:
        return _eventbridge_event(message)
    kind = message.get("Type")
    if not in_sns and isinstance(kind, str) and "TopicArn" in message:
        return _sns_event(message, kind)
    raise MalformedEvent(
        "not an S3 notification (Records), an SNS envelope (Type, TopicArn, Message) or an EventBridge event"
        " (detail-type, detail)"
    )


def _sns_event(envelope: dict[str, Any], kind: str) -> dict[str, Any] | None:
    topic = envelope["TopicArn"]
    if kind == "SubscriptionConfirmation":
        log.warning(
            "SNS topic %s asks this queue to confirm its subscription: nothing published there reaches the queue"
            " until someone does (open its SubscribeURL %s, or `aws sns confirm-subscription --topic-arn %s"
            " --token ...` with the Token of the message); pipeq never confirms one itself",
            topic,
            envelope.get("SubscribeURL"),
            topic,
        )
        return None
    if kind == "UnsubscribeConfirmation":
        log.info("SNS topic %s says this queue's subscription was deleted", topic)
        return None
    if kind != "Notification":
        raise MalformedEvent(f"an SNS message of type {kind!r}, not a Notification")
    inner = envelope.get("Message")
    if not isinstance(inner, str):
        raise MalformedEvent("an SNS Notification without a Message string")
    try:
        return _sqs_event(parse_event(inner), in_sns=True)
    except MalformedEvent as exc:
        raise MalformedEvent(f"the Message of an SNS Notification from {topic}: {exc}") from None


def _eventbridge_event(event: dict[str, Any]) -> dict[str, Any] | None:
    source, detail_type = event.get("source"), event["detail-type"]
    if source != "aws.s3":
        raise MalformedEvent(f"an EventBridge event from {source!r}, not from aws.s3")
    if detail_type != "Object Created":
        return None  # Object Deleted, Object Restore Completed, Object Tags Added, ...: nothing to do
    try:
        bucket, obj = event["detail"]["bucket"]["name"], event["detail"]["object"]
        key = obj["key"]
    except (KeyError, TypeError):
        raise MalformedEvent(
            "an EventBridge Object Created event without detail.bucket.name and detail.object.key"
        ) from None
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key):
        raise MalformedEvent("an EventBridge Object Created event with an empty or non-string bucket name or key")
    try:
        encoded = quote_plus(key)  # created_object decodes keys, as S3 encodes them in its own notifications
    except UnicodeEncodeError:
        raise MalformedEvent("an EventBridge Object Created event whose key is not valid Unicode") from None
    reason = event["detail"].get("reason")
    record = {
        "eventName": f"ObjectCreated:{reason if isinstance(reason, str) else 'Put'}",
        "eventTime": event.get("time"),
        "s3": {
            "bucket": {"name": bucket},
            "object": {
                "key": encoded,
                "size": obj.get("size"),
                "eTag": obj.get("etag"),
                "versionId": obj.get("version-id"),
                "sequencer": obj.get("sequencer"),
            },
        },
    }
    created_object(record)  # MalformedEvent when it names no version (no etag, version-id or sequencer)
    return {"Records": [record]}
