"""Tokens: authentication, scopes (models, tasks, input prefixes, own jobs), rate limits and the queued cap."""

import time
import uuid

import pytest

from pipeq.api.problems import Problem
from pipeq.api.tokens import Principal, authenticate, new_token, token_sha256
from pipeq.config.api import ApiToken
from tests.api.conftest import PARKED, TOKENS, bearer
from tests.support.settings import BUCKET, model_name

TEXT = model_name("text-classification")


def job(**fields):
    return {"task": "text-classification", "input": "some text", "model": PARKED, **fields}


def test_no_token_or_an_unknown_one_is_a_401(http):
    for headers in ({}, {"Authorization": "Bearer pq_" + "x" * 43}, {"Authorization": "Basic abc"}):
        response = http.get("/v1/models", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"
    secret, _ = TOKENS["alpha"]
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {secret}x"}).status_code == 401


def test_tokens_are_recognised_by_their_hash_only():
    secret, digest = new_token()
    assert secret.startswith("pq_") and len(secret) >= 40 and digest == token_sha256(secret)
    token = ApiToken(name="t", sha256=digest)
    assert authenticate(f"Bearer {secret}", {digest: token}).token == token
    with pytest.raises(Problem) as refused:
        authenticate(f"Bearer {digest}", {digest: token})  # the hash is not the token
    assert refused.value.status == 401
    assert authenticate(None, {}).token is None  # no token configured: an open (loopback) API
    with pytest.raises(ValueError, match="64 lowercase hex"):
        ApiToken(name="t", sha256=secret)  # a secret pasted where its hash belongs


def test_a_model_outside_the_scope_is_a_403(http):
    response = http.post("/v1/jobs", json=job(), headers=bearer("beta"))
    assert response.status_code == 403 and PARKED in response.json()["detail"]
    allowed = http.post("/v1/jobs", json=job(model=TEXT), headers=bearer("beta"))
    assert allowed.status_code == 201, allowed.text


def test_an_input_prefix_outside_the_scope_is_a_403(http, s3):
    s3.put_object(Bucket=BUCKET, Key="beta/in.txt", Body=b"inside")
    s3.put_object(Bucket=BUCKET, Key="other/in.txt", Body=b"outside")
    inside = http.post("/v1/jobs", json=job(model=TEXT, input=f"s3://{BUCKET}/beta/in.txt"), headers=bearer("beta"))
    assert inside.status_code == 201, inside.text
    outside = job(model=TEXT, input=f"s3://{BUCKET}/other/in.txt")
    response = http.post("/v1/jobs", json=outside, headers=bearer("beta"))
    assert response.status_code == 403 and "input_prefixes of API token 'beta'" in response.json()["detail"]
    others_upload = job(model=TEXT, input=f"s3://{BUCKET}/uploads/alpha/x/in.txt")
    assert http.post("/v1/jobs", json=others_upload, headers=bearer("beta")).status_code == 403
    # alpha has no input_prefixes: its own uploads only
    assert http.post("/v1/jobs", json=outside, headers=bearer("alpha")).status_code == 403


def test_models_are_listed_within_the_scope(http):
    alpha = {model["name"] for model in http.get("/v1/models", headers=bearer("alpha")).json()["models"]}
    beta = [model["name"] for model in http.get("/v1/models", headers=bearer("beta")).json()["models"]]
    assert beta == [TEXT] and {TEXT, PARKED} <= alpha


def test_the_submission_rate_limit_answers_429_with_retry_after(http):
    first = http.post("/v1/jobs", json=[job(), job()], headers=bearer("slow"))
    assert first.status_code == 201, first.text
    over = http.post("/v1/jobs", json=job(), headers=bearer("slow"))
    assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
    assert "1 jobs per second" in over.json()["detail"]
    too_big = http.post("/v1/jobs", json=[job()] * 3, headers=bearer("slow"))
    assert too_big.status_code == 429 and "burst of 2" in too_big.json()["detail"]
    time.sleep(int(over.headers["retry-after"]))
    assert http.post("/v1/jobs", json=job(), headers=bearer("slow")).status_code == 201


def test_the_request_rate_limit_covers_every_endpoint(http):
    statuses = [http.get("/v1/models", headers=bearer("chatty")).status_code for _ in range(12)]
    assert statuses[:10] == [200] * 10 and statuses[-1] == 429


def test_the_queued_cap_answers_429_until_a_job_ends(http):
    ids = [http.post("/v1/jobs", json=job(), headers=bearer("capped")).json()["id"] for _ in range(3)]
    over = http.post("/v1/jobs", json=job(), headers=bearer("capped"))
    assert over.status_code == 429 and "at most 3" in over.json()["detail"] and over.headers["retry-after"]
    resubmitted = http.post("/v1/jobs", json=job(id=ids[0]), headers=bearer("capped"))
    assert resubmitted.status_code == 200  # the same job again takes no new place
    http.post(f"/v1/jobs/{ids[0]}/cancel", headers=bearer("capped"))
    assert http.post("/v1/jobs", json=job(), headers=bearer("capped")).status_code == 201


def test_a_refused_submission_gives_its_places_back(http, client):
    tag = uuid.uuid4().hex
    assert http.post("/v1/jobs", json=job(id=f"{tag}-taken"), headers=bearer("alpha")).status_code == 201
    batch = [job(id=f"{tag}-new"), job(id=f"{tag}-taken", input="another payload")]
    response = http.post("/v1/jobs", json=batch, headers=bearer("alpha"))
    assert response.status_code == 409 and response.json()["errors"][0]["index"] == 1
    assert client.store.get(f"alpha:{tag}-new") is None
    assert client.store.redis.zscore("pipeq:api:active:alpha", f"alpha:{tag}-new") is None
    assert client.store.redis.zscore("pipeq:api:active:alpha", f"alpha:{tag}-taken") is not None


def test_principal_ids_are_namespaced_per_token():
    alpha = Principal(ApiToken(name="alpha", sha256="0" * 64))
    assert alpha.stored_id("a:b") == "alpha:a:b" and alpha.public_id("alpha:a:b") == "a:b"
    assert Principal(None).stored_id("a") == "a"
    with pytest.raises(Problem):
        alpha.stored_id("x" * 123)
