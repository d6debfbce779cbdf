"""Bucket notifications shaped as MinIO sends them (S3's records have the same fields), for ingestion tests."""

import json
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


INGEST_ID_KEY = "pipeq-tests-ingest-id-key-0123456789"
"""The ``ingest_id_key`` of the ingestion tests. The job ids they pin were computed apart from pipeq, e.g.
``printf 'media\\0reports/a.txt\\0v-7' | openssl dgst -sha256 -hmac "$INGEST_ID_KEY"`` (``s3-`` + 40 hex digits)."""
