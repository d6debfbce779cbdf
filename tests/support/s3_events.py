"""Bucket notifications shaped as MinIO sends them (S3's records have the same fields), and as they reach SQS
through SNS or EventBridge, for ingestion tests."""

import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

CREATED = "s3:ObjectCreated:Put"
REMOVED = "s3:ObjectRemoved:Delete"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(
    bucket: str, key: str, etag: str | None, event_name: str = CREATED, version_id: str | None = None, size: int = 0
) -> dict[str, Any]:
    """One event record; the key URL-encoded as S3 and MinIO encode it ('+' for spaces, %XX, '/' as %2F)."""
    obj: dict[str, Any] = {"key": quote_plus(key), "sequencer": "17F5A3C2D1E0B9A8"}
    if etag is not None:
        obj.update(size=size, eTag=etag.strip('"'), contentType="text/plain", userMetadata={})
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": _now(),
        "eventName": event_name,
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-id-2": "dd9025bab4ad464b", "x-amz-request-id": "17F5A3C2D1E0B9A8"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "minioadmin"}, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"},
    }


def put(s3: Any, bucket: str, key: str, body: bytes) -> dict[str, Any]:
    """Upload ``body`` and return the created-event record for it (ETag and, in versioned buckets, versionId)."""
    response = s3.put_object(Bucket=bucket, Key=key, Body=body)
    return record(bucket, key, response["ETag"], version_id=response.get("VersionId"), size=len(body))


def redis_entry(*records: dict[str, Any]) -> str:
    """What MinIO's Redis target ("access" format) appends to its list for one event."""
    return json.dumps([{"Event": list(records), "EventTime": _now()}])


def webhook_body(*records: dict[str, Any]) -> dict[str, Any]:
    """What MinIO's webhook target POSTs for one event."""
    first = records[0]["s3"]
    return {
        "EventName": records[0]["eventName"],
        "Key": f"{first['bucket']['name']}/{first['object']['key']}",
        "Records": list(records),
    }


TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:media-uploads"


def _sns_message(kind: str, message: str, **fields: Any) -> dict[str, Any]:
    return {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        **fields,
        "TopicArn": TOPIC_ARN,
        "Message": message,
        "Timestamp": _now(),
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858=",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
    }


def sns_envelope(event: dict[str, Any]) -> str:
    """What an SQS queue subscribed to an SNS topic (raw message delivery off) receives when S3 publishes ``event``
    (e.g. ``{"Records": [...]}``) to the topic: the event as the JSON string ``Message``."""
    unsubscribe = f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC_ARN}:2bcfbf39"
    return json.dumps(
        _sns_message("Notification", json.dumps(event), Subject="Amazon S3 Notification", UnsubscribeURL=unsubscribe)
    )


def sns_subscription_confirmation() -> str:
    """What SNS sends a queue subscribed to its topic until the subscription is confirmed."""
    token = "2336412f37fb687f5d51e6e2425c464de12884c0c7a7b8d2e3e3f1e0a1b2c3d4"
    return json.dumps(
        _sns_message(
            "SubscriptionConfirmation",
            f"You have chosen to subscribe to the topic {TOPIC_ARN}.\nTo confirm the subscription, visit the"
            " SubscribeURL included in this message.",
            Token=token,
            SubscribeURL=f"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC_ARN}"
            f"&Token={token}",
        )
    )


def eventbridge_event(
    bucket: str,
    key: str,
    etag: str | None,
    detail_type: str = "Object Created",
    version_id: str | None = None,
    size: int = 0,
    reason: str = "PutObject",
) -> str:
    """An S3 event as an EventBridge rule delivers it to an SQS queue; the key as it is (EventBridge does not
    URL-encode it), the ETag unquoted."""
    obj: dict[str, Any] = {"key": key, "size": size, "sequencer": "617f08299329d189"}
    if etag is not None:
        obj["etag"] = etag.strip('"')
    if version_id is not None:
        obj["version-id"] = version_id
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": "aws.s3",
            "account": "123456789012",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {
                "version": "0",
                "bucket": {"name": bucket},
                "object": obj,
                "request-id": "N4N7GDK58NMKJ12R",
                "requester": "123456789012",
                "source-ip-address": "1.2.3.4",
                "reason": reason,
            },
        }
    )


INGEST_ID_KEY = "pipeq-tests-ingest-id-key-0123456789"
"""The ``ingest_id_key`` of the ingestion tests. The job ids they pin were computed apart from pipeq, e.g.
``printf 'media\\0reports/a.txt\\0v-7' | openssl dgst -sha256 -hmac "$INGEST_ID_KEY"`` (``s3-`` + 40 hex digits)."""
