"""Jobs over HTTP against a real worker: submit, read, wait, cancel, list, idempotency."""

import pytest

from tests.api.conftest import bearer
from tests.support.settings import model_name

TEXT = model_name("text-classification")


def submit(http, body, token="alpha", **headers):
    return http.post("/v1/jobs", json=body, headers={**bearer(token), **headers})


def test_a_job_submitted_over_http_runs_and_matches_the_client(http, worker, client):
    response = submit(http, {"task": "text-classification", "input": "what a day", "model": TEXT})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] == "queued" and response.headers["location"] == f"/v1/jobs/{job['id']}"
    done = http.get(f"/v1/jobs/{job['id']}", headers={**bearer("alpha"), "Prefer": "wait=30"})
    assert done.status_code == 200 and done.headers["preference-applied"] == "wait=30"
    assert done.json()["state"] == "succeeded"
    reference = client.wait(client.submit("text-classification", "what a day", model=TEXT), timeout=60)
    assert done.json()["result"] == reference.result
    assert "owner" not in done.json() and "payload_sha256" not in done.json()


def test_prefer_wait_on_post_returns_the_finished_job(http, worker):
    response = submit(http, {"task": "text-classification", "input": "hello"}, Prefer="wait=30")
    assert response.status_code == 201
    assert response.json()["state"] == "succeeded"
    assert response.headers["preference-applied"] == "wait=30"
