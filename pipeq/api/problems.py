"""Errors as RFC 9457 problem details (``application/problem+json``): what was wrong and what to do, per field
where a job is at fault, in the same words the Python client's ``InvalidJob`` uses. Never a traceback."""

from typing import Any

from fastapi.responses import JSONResponse

MEDIA_TYPE = "application/problem+json"
TITLES = {
    400: "Malformed request",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid job",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}

KIND_TITLES = {
    "invalid-upload": "Invalid upload",
    "upload-too-large": "Upload too large",
    "uploads-off": "Uploads are off",
    "job-conflict": "Job id taken",
    "out-of-scope": "Outside the token's scope",
    "unknown-job": "Unknown job",
    "too-many-jobs": "Too many jobs in one request",
    "too-many-streams": "Too many open streams",
    "bad-query": "Malformed query",
}
"""Titles of the kinds that say more than their status's."""


class Problem(Exception):
    """An error the API answers with a problem document: ``status``, a ``kind`` (the ``type``'s last part), a
    ``detail`` saying what was wrong and what to do, and optionally per-field ``errors`` and response headers."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail
        self.errors = errors
        self.headers = headers or {}

    def document(self, instance: str | None = None) -> dict[str, Any]:
        """The problem document (RFC 9457 members, and ``errors`` where a job's fields are at fault)."""
        body: dict[str, Any] = {
            "type": f"urn:pipeq:problem:{self.kind}",
            "title": KIND_TITLES.get(self.kind) or TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        return body

    def response(self, instance: str | None = None) -> JSONResponse:
        return JSONResponse(
            self.document(instance), status_code=self.status, headers=self.headers, media_type=MEDIA_TYPE
        )


def too_many(detail: str, retry_after_s: float) -> Problem:
    """A 429 that says when to try again (``Retry-After``, whole seconds, at least 1)."""
    return Problem(429, "rate-limited", detail, headers={"Retry-After": str(max(1, int(retry_after_s + 0.999)))})


def unavailable(detail: str) -> Problem:
    """A 503: a service the API needs (Redis, the broker, object storage) does not answer."""
    return Problem(503, "unavailable", detail, headers={"Retry-After": "5"})
