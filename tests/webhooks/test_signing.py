"""Webhook signatures: Standard Webhooks' reference vector, and what verify() accepts and refuses."""

import base64
import json

import pytest

from pipeq.webhooks.signing import WebhookVerificationError, sign, verify

# The Standard Webhooks specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = "whsec_" + base64.b64encode(b"pipeq-test-secret-32-bytes-long!").decode()
NOW = 1_700_000_000
BODY = json.dumps({"id": "job-1", "status": "succeeded", "result": [{"label": "POSITIVE"}]}).encode()


def headers(body: bytes = BODY, secret: str = SECRET, timestamp: int = NOW, msg_id: str = "job-1") -> dict:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def test_sign_reproduces_the_standard_webhooks_reference_vector():
    assert sign(VECTOR_SECRET, *VECTOR) == VECTOR_SIGNATURE
    assert sign(VECTOR_SECRET, VECTOR[0], str(VECTOR[1]), VECTOR[2].decode()) == VECTOR_SIGNATURE


def test_verify_accepts_the_reference_vector_and_returns_the_body():
    sent = {"Webhook-Id": VECTOR[0], "WEBHOOK-TIMESTAMP": str(VECTOR[1]), "webhook-signature": VECTOR_SIGNATURE}
    assert verify(sent, VECTOR[2], VECTOR_SECRET, now=VECTOR[1] + 10) == {"test": 2432232314}


def test_a_plain_string_secret_is_used_as_its_bytes():
    assert verify(headers(secret="not-base64 at all"), BODY, "not-base64 at all", now=NOW)["id"] == "job-1"
    with pytest.raises(WebhookVerificationError):
        verify(headers(secret="not-base64 at all"), BODY, SECRET, now=NOW)


def test_one_matching_signature_among_several_is_enough():
    sent = headers()
    other = sign("whsec_" + base64.b64encode(b"an older secret").decode(), "job-1", NOW, BODY)
    sent["webhook-signature"] = f"v1a,ignored {other} {sent['webhook-signature']}"
    assert verify(sent, BODY, SECRET, now=NOW)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("sent", "body", "secret", "message"),
    [
        (headers(), BODY.replace(b"POSITIVE", b"NEGATIVE"), SECRET, "no signature matches"),
        (headers(), BODY, "whsec_" + base64.b64encode(b"some other secret").decode(), "no signature matches"),
        (headers(msg_id="job-2") | {"webhook-id": "job-1"}, BODY, SECRET, "no signature matches"),
        (headers(timestamp=NOW - 301), BODY, SECRET, "301 s old"),
        (headers(timestamp=NOW + 301), BODY, SECRET, "in the future"),
        (headers() | {"webhook-timestamp": "yesterday"}, BODY, SECRET, "not unix seconds"),
        ({k: v for k, v in headers().items() if k != "webhook-signature"}, BODY, SECRET, "'webhook-signature'"),
        (headers() | {"webhook-signature": ""}, BODY, SECRET, "no signature matches"),
    ],
    ids=["tampered-body", "wrong-secret", "other-id", "stale", "future", "bad-timestamp", "unsigned", "empty"],
)
def test_verify_refuses(sent, body, secret, message):
    with pytest.raises(WebhookVerificationError, match=message):
        verify(sent, body, secret, now=NOW)


def test_a_timestamp_within_the_tolerance_is_accepted():
    assert verify(headers(timestamp=NOW - 299), BODY, SECRET, now=NOW)["id"] == "job-1"
    with pytest.raises(WebhookVerificationError, match="old"):
        verify(headers(timestamp=NOW - 299), BODY, SECRET, tolerance=60, now=NOW)
