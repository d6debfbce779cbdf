"""Webhook signatures (Standard Webhooks): :func:`sign` for senders, :func:`verify` for receivers.

Every delivery carries three headers: ``webhook-id`` (the job id, the same on every attempt, for
de-duplication), ``webhook-timestamp`` (unix seconds of the attempt) and ``webhook-signature``:
``v1,`` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")). The key is the base64-decoded part after
``whsec_`` when the secret starts with it, else the secret's UTF-8 bytes.

A receiver checks a request with::

    from pipeq.webhooks.signing import WebhookVerificationError, verify

    try:
        payload = verify(request.headers, request.body, secret)
    except WebhookVerificationError:
        return 400
"""

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

SECRET_PREFIX = "whsec_"


class WebhookVerificationError(ValueError):
    """A webhook request that is not signed with the shared secret, or is too old or too new."""


def signing_key(secret: str) -> bytes:
    """The HMAC key of ``secret``: base64-decoded after ``whsec_``, else its UTF-8 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a secret starting with 'whsec_' must continue in base64") from None


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes | str) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) of one message."""
    if isinstance(body, str):
        body = body.encode()
    message = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


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
