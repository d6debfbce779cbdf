"""Webhook signatures: Standard Webhooks' reference vector, interoperation with the ``standardwebhooks`` package
both ways, what verify() accepts and refuses, and which secrets settings take."""

import base64
import json
from datetime import UTC, datetime

import pytest
import standardwebhooks
from pydantic import ValidationError

from pipeq.config.settings import Settings, Webhooks
from pipeq.webhooks.signing import WebhookVerificationError, new_secret, sign, signed_headers, signing_key, verify

# The Standard Webhooks specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = "whsec_" + base64.b64encode(b"pipeq-test-secret-32-bytes-long!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another secret, 32 bytes long!!!").decode()
NOW = 1_700_000_000
BODY = json.dumps({"id": "job-1", "status": "succeeded", "result": [{"label": "POSITIVE"}]}).encode()


def headers(body: bytes = BODY, secret: str = SECRET, timestamp: int = NOW, msg_id: str = "job-1") -> dict:
    return signed_headers(secret, msg_id, body, timestamp=timestamp)


def test_sign_reproduces_the_standard_webhooks_reference_vector():
    assert sign(VECTOR_SECRET, *VECTOR) == VECTOR_SIGNATURE
    assert sign(VECTOR_SECRET, VECTOR[0], str(VECTOR[1]), VECTOR[2].decode()) == VECTOR_SIGNATURE


def test_verify_accepts_the_reference_vector_and_returns_the_body():
    sent = {"Webhook-Id": VECTOR[0], "WEBHOOK-TIMESTAMP": str(VECTOR[1]), "webhook-signature": VECTOR_SIGNATURE}
    assert verify(sent, VECTOR[2], VECTOR_SECRET, now=VECTOR[1] + 10) == {"test": 2432232314}


# -- with the standardwebhooks package --------------------------------------------------------------------


def test_standardwebhooks_verifies_what_pipeq_signs():
    sent = signed_headers(SECRET, "job-1", BODY)  # stamped now: standardwebhooks checks against the clock
    assert standardwebhooks.Webhook(SECRET).verify(BODY, sent) == json.loads(BODY)
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="No matching signature"):
        standardwebhooks.Webhook(SECRET).verify(BODY.replace(b"POSITIVE", b"NEGATIVE"), sent)
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="No matching signature"):
        standardwebhooks.Webhook(OTHER_SECRET).verify(BODY, sent)


def test_pipeq_verifies_what_standardwebhooks_signs():
    at = datetime.fromtimestamp(NOW, UTC)
    signature = standardwebhooks.Webhook(SECRET).sign("msg-7", at, BODY.decode())
    sent = {"webhook-id": "msg-7", "webhook-timestamp": str(NOW), "webhook-signature": signature}
    assert signature == sign(SECRET, "msg-7", NOW, BODY)
    assert verify(sent, BODY, SECRET, now=NOW) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(sent, BODY + b" ", SECRET, now=NOW)


def test_a_new_secret_works_with_standardwebhooks():
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(signing_key(secret)) == 32
    assert secret != new_secret()
    sent = signed_headers(secret, "job-2", BODY)
    assert standardwebhooks.Webhook(secret).verify(BODY, sent)["id"] == "job-1"


# -- verify -----------------------------------------------------------------------------------------------


def test_one_matching_signature_among_several_is_enough():
    sent = headers()
    other = sign(OTHER_SECRET, "job-1", NOW, BODY)
    sent["webhook-signature"] = f"v1a,ignored {other} {sent['webhook-signature']}"
    assert verify(sent, BODY, SECRET, now=NOW)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("sent", "body", "secret", "message"),
    [
        (headers(), BODY.replace(b"POSITIVE", b"NEGATIVE"), SECRET, "no signature matches"),
        (headers(), BODY, OTHER_SECRET, "no signature matches"),
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


def test_without_a_secret_requests_are_unsigned_but_identified():
    assert signed_headers(None, "job-1", b"{}", timestamp=NOW) == {
        "webhook-id": "job-1",
        "webhook-timestamp": "1700000000",
    }


# -- which secrets are taken ------------------------------------------------------------------------------

HOW_TO = "followed by the base64 of at least 24 random bytes"


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("a long plain passphrase, used as bytes", "it does not start with 'whsec_'"),
        (base64.b64encode(b"x" * 32).decode(), "it does not start with 'whsec_'"),
        ("whsec_not base64!", "what follows 'whsec_' is not base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "its key is 23 bytes"),
    ],
    ids=["plain", "no-prefix", "not-base64", "short"],
)
def test_settings_refuse_a_secret_standard_receivers_cannot_use(secret, problem):
    with pytest.raises(ValidationError) as refused:
        Settings(webhooks={"secret": secret})
    message = str(refused.value)
    assert problem in message
    assert HOW_TO in message
    assert "`pipeq webhooks new-secret` prints one" in message
    assert secret not in message  # a refused secret may still be someone's real one: never echoed
    with pytest.raises(ValueError, match=problem):
        sign(secret, "job-1", NOW, BODY)


def test_a_plain_secret_from_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("PIPEQ_WEBHOOKS__SECRET", "hunter2-but-longer-than-24-characters")
    with pytest.raises(ValidationError, match=r"webhooks\.secret") as refused:
        Settings()
    assert "pipeq webhooks new-secret" in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_settings_take_a_standard_secret_of_24_bytes_or_more():
    assert Webhooks(secret=VECTOR_SECRET).secret.get_secret_value() == VECTOR_SECRET  # 24 bytes
    assert Settings(webhooks={"secret": SECRET}).webhooks.secret.get_secret_value() == SECRET
    assert Webhooks().secret is None  # no secret: deliveries go unsigned
