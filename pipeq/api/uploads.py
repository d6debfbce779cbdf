"""``POST /v1/uploads``: a presigned PUT URL under the caller's own folder of ``api.uploads_prefix``, with the
content type and exact size signed into it, so media go straight to object storage and never through the API."""

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from pipeq.api.problems import Problem
from pipeq.api.tokens import Principal, upload_folder
from pipeq.config.api import CONTENT_TYPE
from pipeq.config.settings import Settings
from pipeq.core.records import now

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def plain_filename(filename: str | None) -> str:
    """``filename`` as a plain last key segment: A-Z a-z 0-9 . _ - only, no leading dot, at most 100 characters."""
    name = _UNSAFE.sub("-", (filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip(".-")[:100]
    return name or "upload"


def content_type_allowed(content_type: str, allowed: list[str]) -> bool:
    kind = content_type.split("/", 1)[0]
    return content_type in allowed or f"{kind}/*" in allowed


def presign_upload(
    s3: Any, settings: Settings, principal: Principal, content_type: str, size: int, filename: str | None
) -> dict[str, Any]:
    """The upload's URL, the headers to send with it, its ``s3://`` input and when the URL stops working; Problem
    403 where uploads are off, 422 for a refused type or size."""
    api = settings.api
    if api.uploads_prefix is None:
        raise Problem(403, "uploads-off", "uploads are off on this API: an operator sets api.uploads_prefix")
    content_type = content_type.strip().lower()
    if not CONTENT_TYPE.match(content_type) or content_type.endswith("/*"):
        raise Problem(
            422, "invalid-upload", f"content_type {content_type[:60]!r} is not a type/subtype such as audio/wav"
        )
    if not content_type_allowed(content_type, api.upload_content_types):
        raise Problem(
            422,
            "invalid-upload",
            f"uploads of {content_type} are not accepted; accepted: {', '.join(api.upload_content_types)}",
            [{"field": "content_type", "detail": "not an accepted upload type"}],
        )
    largest = api.max_upload_bytes or settings.limits.max_media_bytes
    if size > largest:
        raise Problem(
            413,
            "upload-too-large",
            f"an upload of {size} bytes exceeds the largest accepted, {largest} bytes",
            [{"field": "size", "detail": f"at most {largest}"}],
        )
    folder = upload_folder(api.uploads_prefix, principal.owner)
    bucket, _, key_prefix = folder.removeprefix("s3://").partition("/")
    key = f"{key_prefix}{uuid.uuid4().hex}/{plain_filename(filename)}"
    url = s3.generate_presigned_url(
        "put_object",
        Params={"Bucket": bucket, "Key": key, "ContentType": content_type, "ContentLength": size},
        ExpiresIn=api.upload_expires_s,
    )
    expires: datetime = now() + timedelta(seconds=api.upload_expires_s)
    return {
        "url": url,
        "method": "PUT",
        "headers": {"Content-Type": content_type, "Content-Length": str(size)},
        "input": f"s3://{bucket}/{key}",
        "expires_at": expires,
    }
