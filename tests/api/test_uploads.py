"""Uploads: a presigned PUT under the caller's own folder, with its type and size signed in; then a job on it, all
with curl (a client nobody here wrote)."""

import json
import shutil
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.media import encode_audio, speech
from tests.api.conftest import TOKENS, UPLOADS, bearer
from tests.support.settings import BUCKET, model_name

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(*args: str) -> tuple[int, str]:
    """Run curl; the HTTP status and the body."""
    done = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_media_uploaded_and_submitted_with_curl_is_transcribed(api_url, worker, tmp_path, client):
    audio = tmp_path / "hello.wav"
    audio.write_bytes(encode_audio(speech("hello world"), "WAV"))
    auth = f"Authorization: Bearer {TOKENS['alpha'][0]}"
    wanted = json.dumps({"content_type": "audio/wav", "size": audio.stat().st_size, "filename": "my hello.wav"})
    status, body = curl(
        "-X", "POST", f"{api_url}/v1/uploads", "-H", auth, "-H", "Content-Type: application/json", "-d", wanted
    )
    assert status == 201, body
    upload = json.loads(body)
    assert upload["input"].startswith(f"{UPLOADS}alpha/") and upload["input"].endswith("/my-hello.wav")
    status, body = curl("-X", "PUT", upload["url"], "-H", "Content-Type: audio/wav", "--data-binary", f"@{audio}")
    assert status == 200, body
    job = json.dumps({"task": "automatic-speech-recognition", "input": upload["input"]})
    status, body = curl(
        "-X",
        "POST",
        f"{api_url}/v1/jobs",
        "-H",
        auth,
        "-H",
        "Content-Type: application/json",
        "-H",
        "Prefer: wait=30",
        "-d",
        job,
    )
    assert status == 201, body
    done = json.loads(body)
    assert done["state"] == "succeeded", done
    reference = client.wait(client.submit("automatic-speech-recognition", upload["input"]), timeout=60)
    assert done["result"] == reference.result


def test_the_type_and_size_are_signed_into_the_url(http):
    response = http.post("/v1/uploads", json={"content_type": "image/png", "size": 1234}, headers=bearer("beta"))
    assert response.status_code == 201, response.text
    upload = response.json()
    signed = parse_qs(urlsplit(upload["url"]).query)["X-Amz-SignedHeaders"][0].split(";")
    assert {"content-type", "content-length", "host"} <= set(signed)
    assert upload["headers"] == {"Content-Type": "image/png", "Content-Length": "1234"}
    assert upload["input"].startswith(f"s3://{BUCKET}/uploads/beta/") and upload["input"].endswith("/upload")


def test_uploads_refuse_what_they_should(http):
    post = lambda body: http.post("/v1/uploads", json=body, headers=bearer("alpha"))  # noqa: E731
    assert post({"content_type": "application/x-sh", "size": 10}).status_code == 422
    assert post({"content_type": "image/*", "size": 10}).status_code == 422
    assert post({"content_type": "text/html\r\nX-Evil: 1", "size": 10}).status_code == 422
    assert post({"content_type": "image/png", "size": 0}).status_code == 422
    assert post({"content_type": "image/png", "size": 10**12}).status_code == 413
    assert post({"content_type": "image/png", "size": 10, "surprise": 1}).status_code == 422
    named = post({"content_type": "image/png", "size": 10, "filename": "../../etc/passwd"}).json()
    assert named["input"].endswith("/passwd") and ".." not in named["input"]


def test_an_upload_is_the_uploaders_own_input(http, s3):
    upload = http.post("/v1/uploads", json={"content_type": "text/plain", "size": 5}, headers=bearer("beta")).json()
    bucket, _, key = upload["input"].removeprefix("s3://").partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=b"hello")
    job = {"task": "text-classification", "input": upload["input"], "model": model_name("text-classification")}
    assert http.post("/v1/jobs", json=job, headers=bearer("beta")).status_code == 201
    assert http.post("/v1/jobs", json=job, headers=bearer("alpha")).status_code == 403
