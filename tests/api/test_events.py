"""Server-Sent Events: a job's state changes and progress, read to the end of the stream."""

import json
import uuid

import httpx
import pytest

from tests.api.conftest import PARKED, bearer
from tests.support.settings import model_name


def read_events(http: httpx.Client, job_id: str, token: str = "alpha") -> list[tuple[str, int, dict]]:
    """Every event of the job's stream until the API closes it: (event, id, data)."""
    events, fields = [], {}
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=bearer(token)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "data" in fields:
                    events.append((fields["event"], int(fields["id"]), json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return events


def test_the_stream_follows_a_job_to_its_end(http, worker):
    job = http.post(
        "/v1/jobs",
        json={"task": "text-generation", "input": "once upon", "parameters": {"max_new_tokens": 40}},
        headers=bearer("alpha"),
    ).json()
    events = read_events(http, job["id"])
    kinds = [kind for kind, _, _ in events]
    assert kinds[-1] == "state" and events[-1][2]["state"] == "succeeded" and events[-1][2]["result"]
    assert events[-1][2]["id"] == job["id"]
    numbers = [number for _, number, _ in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    states = [data["state"] for kind, _, data in events if kind == "state"]
    assert len(states) == len(set(states))  # one event per state it passed through
    for kind, _, data in events:
        if kind == "progress":
            assert 0 <= data["fraction"] <= 1 and data["updated_at"]


def test_a_final_job_streams_one_event_and_closes(http, worker):
    done = http.post(
        "/v1/jobs",
        json={"task": "text-classification", "input": "fine", "model": model_name("text-classification")},
        headers={**bearer("alpha"), "Prefer": "wait=30"},
    ).json()
    assert done["state"] == "succeeded"
    events = read_events(http, done["id"])
    assert [(kind, data["state"]) for kind, _, data in events] == [("state", "succeeded")]


def test_a_canceled_job_ends_its_stream(http):
    job = http.post(
        "/v1/jobs",
        json={"task": "text-classification", "input": "x", "model": PARKED, "ttl": 1},
        headers=bearer("alpha"),
    ).json()
    events = read_events(http, job["id"])  # no worker serves it: it expires, and the API says so
    assert [data["state"] for _, _, data in events] == ["queued", "expired"]


def test_open_streams_are_bounded_per_process(settings):
    from tests.api.conftest import serve, with_api

    with serve(with_api(settings, max_streams=1)) as url, httpx.Client(base_url=url, timeout=30) as http:
        job = http.post("/v1/jobs", json={"task": "text-classification", "input": "x", "model": PARKED}).json()
        with http.stream("GET", f"/v1/jobs/{job['id']}/events") as first:
            lines = first.iter_lines()  # kept: a dropped iterator closes the stream
            assert next(lines) == "retry: 2000"  # the stream is open and holds the one slot
            second = http.get(f"/v1/jobs/{job['id']}/events")
            assert second.status_code == 429 and second.headers["retry-after"]
            waited = http.get(f"/v1/jobs/{job['id']}", headers={"Prefer": "wait=5"})
            assert waited.status_code == 200 and "preference-applied" not in waited.headers


def test_one_token_cannot_take_every_stream(redis_url, s3_endpoint, tiny_models, redis_db):
    from tests.api.conftest import api_tokens, serve, with_api
    from tests.support.settings import make_settings

    own = make_settings(redis_url, s3_endpoint, tiny_models, db=redis_db)  # limits of its own
    configured = with_api(own, tokens=api_tokens(), max_streams_per_token=1)
    with serve(configured) as url, httpx.Client(base_url=url, timeout=30) as http:
        body = {"task": "text-classification", "input": "x", "model": PARKED}
        alphas = http.post("/v1/jobs", json=body, headers=bearer("alpha")).json()
        betas = http.post("/v1/jobs", json=body, headers=bearer("capped")).json()
        with http.stream("GET", f"/v1/jobs/{alphas['id']}/events", headers=bearer("alpha")) as first:
            lines = first.iter_lines()
            assert next(lines) == "retry: 2000"
            second = http.get(f"/v1/jobs/{alphas['id']}/events", headers=bearer("alpha"))
            assert second.status_code == 429 and "token 'alpha'" in second.json()["detail"]
            with http.stream("GET", f"/v1/jobs/{betas['id']}/events", headers=bearer("capped")) as other:
                assert other.status_code == 200 and next(other.iter_lines()) == "retry: 2000"


@pytest.mark.slow
def test_a_long_transcription_streams_its_progress(http, worker, s3):
    from devtools.media import repeated, speech
    from tests.support.settings import BUCKET

    audio = repeated(speech("Long recordings are split into chunks of ten seconds."), "OGG", "VORBIS", minutes=4)
    key = f"uploads/alpha/{uuid.uuid4().hex}/long.ogg"
    s3.put_object(Bucket=BUCKET, Key=key, Body=audio)
    job = http.post(
        "/v1/jobs",
        json={
            "task": "automatic-speech-recognition",
            "input": f"s3://{BUCKET}/{key}",
            "parameters": {"chunk_length_s": 2, "stride_length_s": 0.25},  # many pieces: a few seconds
        },
        headers=bearer("alpha"),
    )
    assert job.status_code == 201, job.text
    events = read_events(http, job.json()["id"])
    progress = [data for kind, _, data in events if kind == "progress"]
    assert events[-1][2]["state"] == "succeeded" and events[-1][2]["result"]["text"]
    assert progress, [(kind, data.get("state")) for kind, _, data in events]
    fractions = [data["fraction"] for data in progress]
    assert fractions == sorted(fractions) and fractions[0] > 0 and fractions[-1] <= 1
    assert all(data["detail"].startswith("chunk ") for data in progress)
