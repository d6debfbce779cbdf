"""Webhook signatures, exactly as Standard Webhooks: :func:`sign` for senders, :func:`verify` for receivers.

Every delivery carries three headers: ``webhook-id`` (the job id, the same on every attempt, for
de-duplication), ``webhook-timestamp`` (unix seconds of the attempt) and ``webhook-signature``:
``v1,`` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")). The secret is ``whsec_`` + the base64 of the
key (at least 24 random bytes; :func:`new_secret` or ``pipeq webhooks new-secret`` makes one), so any
Standard Webhooks receiver checks pipeq's deliveries without pipeq installed::

    from standardwebhooks import Webhook

    payload = Webhook(secret).verify(request.body, request.headers)  # raises WebhookVerificationError

or, with pipeq at hand::

    from pipeq.webhooks.signing import WebhookVerificationError, verify

    payload = verify(request.headers, request.body, secret)
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from pipeq.config.settings import WEBHOOK_SECRET_PREFIX, webhook_signing_key

NEW_SECRET_BYTES = 32


class WebhookVerificationError(ValueError):
    """A webhook request that is not signed with the shared secret, or is too old or too new."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + the base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(NEW_SECRET_BYTES)).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key of ``secret`` (the base64 after ``whsec_``); ValueError for anything else."""
    return webhook_signing_key(secret)


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes | str) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) of one message."""
    if isinstance(body, str):
        body = body.encode()
    message = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str | None, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The ``webhook-*`` headers of one attempt, stamped now unless ``timestamp`` is given; no signature
    without a secret."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if secret:
        headers["webhook-signature"] = sign(secret, msg_id, timestamp, body)
    return headers


def verify(headers: Mapping[str, str], body: bytes, secret: str, tolerance: int = 300, now: float | None = None) -> Any:
    """The JSON body of a webhook request whose signature and timestamp check out.

    Header names are case-insensitive; ``webhook-signature`` may hold several space-separated signatures
    (during a secret rotation) and one match is enough. Raises :class:`WebhookVerificationError` otherwise.
    """
    found = {name.lower(): value for name, value in headers.items()}
    try:
        msg_id, stamp, signatures = (found[f"webhook-{name}"] for name in ("id", "timestamp", "signature"))
    except KeyError as missing:
        raise WebhookVerificationError(f"missing header {missing.args[0]!r}") from None
    _check_timestamp(stamp, tolerance, time.time() if now is None else now)
    expected = sign(secret, msg_id, stamp, body).encode()
    if not any(hmac.compare_digest(expected, given.encode()) for given in signatures.split()):
        raise WebhookVerificationError("no signature matches: wrong secret, or the body or headers were altered")
    try:
        return json.loads(body)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None


def _check_timestamp(stamp: str, tolerance: int, now: float) -> None:
    try:
        sent = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp {stamp!r} is not unix seconds") from None
    if sent < now - tolerance:
        raise WebhookVerificationError(f"webhook-timestamp is {int(now - sent)} s old (tolerance {tolerance} s)")
    if sent > now + tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {int(sent - now)} s in the future (tolerance {tolerance} s)"
        )
