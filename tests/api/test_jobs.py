"""Jobs over HTTP against a real worker: submit (one, a list), read, wait, cancel, list, idempotency."""

import uuid

from tests.api.conftest import PARKED, bearer
from tests.support.settings import model_name

TEXT = model_name("text-classification")


def submit(http, body, token="alpha", **headers):
    return http.post("/v1/jobs", json=body, headers={**bearer(token), **headers})


def parked(http, token="alpha", **fields):
    """A job no worker takes (its model's queue is not served): it stays queued."""
    response = submit(http, {"task": "text-classification", "input": "waits", "model": PARKED, **fields}, token)
    assert response.status_code == 201, response.text
    return response.json()


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
    assert not {"owner", "payload_sha256", "result_ref", "worker"} & set(done.json())


def test_prefer_wait_on_post_returns_the_finished_job(http, worker):
    response = submit(http, {"task": "text-classification", "input": "hello"}, Prefer="wait=30")
    assert response.status_code == 201
    assert response.json()["state"] == "succeeded"
    assert response.headers["preference-applied"] == "wait=30"


def test_prefer_wait_returns_the_job_as_it_is_when_the_time_is_up(http):
    job = parked(http)
    response = http.get(f"/v1/jobs/{job['id']}", headers={**bearer("alpha"), "Prefer": "wait=1"})
    assert response.status_code == 200 and response.json()["state"] == "queued"
    assert response.headers["preference-applied"] == "wait=1"


def test_prefer_wait_is_capped_at_max_wait_s(http):
    job = parked(http, ttl=2)  # expires after 2 s, well within the 30 s cap
    response = http.get(f"/v1/jobs/{job['id']}", headers={**bearer("alpha"), "Prefer": "respond-async, wait=99999"})
    assert response.headers["preference-applied"] == "wait=30"
    assert response.json()["state"] == "expired"  # settled by the API while it waited: no worker saw it


def test_a_list_of_jobs_is_submitted_together(http, worker, client):
    bodies = [{"task": "text-classification", "input": f"text {i}", "model": TEXT} for i in range(5)]
    response = submit(http, bodies)
    assert response.status_code == 201, response.text
    ids = response.json()["ids"]
    assert len(ids) == 5 and response.json()["existing"] == 0
    for job_id in ids:
        done = http.get(f"/v1/jobs/{job_id}", headers={**bearer("alpha"), "Prefer": "wait=30"}).json()
        assert done["state"] == "succeeded"


def test_a_list_with_one_invalid_job_enqueues_nothing_and_names_the_item(http, client):
    tag = uuid.uuid4().hex
    bodies = [
        {"task": "text-classification", "input": "fine", "model": TEXT, "id": f"{tag}-0"},
        {"task": "text-classification", "input": "bad", "model": TEXT, "id": f"{tag}-1", "parameters": {"top_k": "x"}},
    ]
    response = submit(http, bodies)
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["errors"][0]["index"] == 1 and problem["errors"][0]["field"] == "parameters"
    assert client.store.get(f"alpha:{tag}-0") is None


def test_idempotency_key_submits_once_and_refuses_another_payload(http, client):
    key = uuid.uuid4().hex
    body = {"task": "text-classification", "input": "once", "model": PARKED}
    first = submit(http, body, **{"Idempotency-Key": key})
    again = submit(http, body, **{"Idempotency-Key": key})
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true" and first.json()["id"] == again.json()["id"]
    other = submit(http, {**body, "input": "another"}, **{"Idempotency-Key": key})
    assert other.status_code == 409 and other.json()["type"] == "urn:pipeq:problem:job-conflict"
    assert submit(http, {**body, "id": "x"}, **{"Idempotency-Key": key}).status_code == 422
    assert submit(http, body, **{"Idempotency-Key": "k" * 256}).status_code == 400


def test_a_client_chosen_id_is_the_callers_and_cannot_collide_across_tokens(http, client):
    job_id = f"order-{uuid.uuid4().hex[:8]}"
    alpha = parked(http, id=job_id)
    beta = submit(http, {"task": "text-classification", "input": "other", "model": TEXT, "id": job_id}, "beta")
    assert alpha["id"] == job_id and beta.status_code == 201 and beta.json()["id"] == job_id
    assert client.status(f"alpha:{job_id}").owner == "alpha"
    assert client.status(f"beta:{job_id}").owner == "beta"
    assert submit(http, {"task": "text-classification", "input": "x", "id": "bad id!"}).status_code == 422
    too_long = submit(http, {"task": "text-classification", "input": "x", "id": "a" * 128})  # 128 + "alpha:"
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "id"


def test_cancel_a_queued_job_and_another_tokens_job_is_not_found(http):
    job = parked(http)
    assert http.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer("beta")).status_code == 404
    response = http.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer("alpha"))
    assert response.status_code == 200 and response.json()["state"] == "canceled"
    assert response.json()["error"]["type"] == "Canceled"
    again = http.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer("alpha"))
    assert again.json()["state"] == "canceled" and again.json()["finished_at"] == response.json()["finished_at"]


def test_another_tokens_job_is_a_404_everywhere(http):
    job = parked(http)
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/events"):
        response = http.get(path, headers=bearer("beta"))
        assert response.status_code == 404 and response.json()["type"] == "urn:pipeq:problem:unknown-job"
    assert http.get("/v1/jobs/never-submitted", headers=bearer("alpha")).status_code == 404
    assert http.get("/v1/jobs/bad%20id", headers=bearer("alpha")).status_code == 404


def test_listing_shows_only_the_tokens_own_jobs_a_page_at_a_time(http):
    tag = uuid.uuid4().hex[:8]
    mine = [parked(http, id=f"{tag}-{i}")["id"] for i in range(5)]
    submit(http, {"task": "text-classification", "input": "theirs", "model": TEXT}, "beta")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "state": "queued", "model": PARKED, **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/jobs", params=params, headers=bearer("alpha")).json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(mine) <= set(seen) and len(seen) == len(set(seen))
    beta = http.get("/v1/jobs", headers=bearer("beta")).json()["jobs"]
    assert beta and not set(mine) & {job["id"] for job in beta}
    assert {job["model"] for job in beta} == {TEXT}


def test_listing_refuses_bad_queries(http):
    for params in ({"cursor": "forged.0000"}, {"state": "sleeping"}, {"limit": 0}, {"since": "yesterday"}):
        response = http.get("/v1/jobs", params=params, headers=bearer("alpha"))
        assert response.status_code == 400, params
        assert response.json()["detail"]


def test_a_large_result_is_read_back_and_a_listing_points_to_it(http, worker, client):
    text = " ".join(f"word{i}" for i in range(100))
    body = {"task": "feature-extraction", "input": text, "id": f"big-{uuid.uuid4().hex[:8]}"}
    done = submit(http, body, Prefer="wait=30").json()
    assert done["state"] == "succeeded", done["error"]
    assert done["result_offloaded"] is False
    stored = client.status(f"alpha:{done['id']}")
    assert client.store.get(f"alpha:{done['id']}").result_ref is not None  # it went to the results bucket
    assert done["result"] == stored.result and len(str(done["result"])) > 20_000
    listed = http.get("/v1/jobs", params={"limit": 5}, headers=bearer("alpha")).json()["jobs"]
    mine = next(job for job in listed if job["id"] == done["id"])
    assert mine["result"] is None and mine["result_offloaded"] is True


def test_a_list_of_one_job_answers_as_a_list(http):
    response = submit(http, [{"task": "text-classification", "input": "alone", "model": PARKED}])
    assert response.status_code == 201 and set(response.json()) == {"ids", "existing"}
    assert len(response.json()["ids"]) == 1
