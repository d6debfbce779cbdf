"""Every error is a problem document with the listed status; a Redis that stops answering gives 503, and the API
recovers when it is back."""

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis

from devtools.local_services import free_port
from pipeq.producer import Client
from tests.api.conftest import PARKED, bearer, serve, with_api
from tests.support.settings import make_settings, model_name

PROBLEM = "application/problem+json"


def job(**fields):
    return {"task": "text-classification", "input": "some text", "model": PARKED, **fields}


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status and problem["type"].startswith("urn:pipeq:problem:") and problem["detail"]
    assert "Traceback" not in response.text
    return problem


def test_a_body_over_the_limit_is_a_413_declared_or_not(http):
    big = b'{"task": "text-classification", "input": "' + b"x" * 70_000 + b'"}'
    headers = {**bearer("alpha"), "Content-Type": "application/json"}
    assert_problem(http.post("/v1/jobs", content=big, headers=headers), 413)

    def chunks():  # no Content-Length: the API stops reading past the limit
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    assert_problem(http.post("/v1/jobs", content=chunks(), headers=headers), 413)
    too_many = [job()] * 1001
    assert_problem(http.post("/v1/jobs", json=too_many, headers=bearer("alpha")), 413)


def test_malformed_json_and_other_media_types_are_refused(http):
    headers = {**bearer("alpha"), "Content-Type": "application/json"}
    for body in (b"{", b'{"task": NaN}', b"[" * 50_000, "é".encode("latin-1")):
        assert_problem(http.post("/v1/jobs", content=body, headers=headers), 400)
    form = {**bearer("alpha"), "Content-Type": "application/x-www-form-urlencoded"}
    assert_problem(http.post("/v1/jobs", content=b"task=x", headers=form), 415)
    assert_problem(http.post("/v1/jobs", json=[], headers=bearer("alpha")), 422)
    assert_problem(http.post("/v1/jobs", json=["text"], headers=bearer("alpha")), 422)


def test_an_invalid_job_is_a_422_in_the_clients_words(http, api_client):
    bad = {"task": "text-classification", "input": "x", "model": model_name("text-classification")}
    cases = [
        ({**bad, "parameters": {"trust_remote_code": True}}, "parameters"),
        ({**bad, "model": "nope"}, "model"),
        ({**bad, "task": "mind-reading"}, "task"),
        ({**bad, "ttl": -1}, "ttl"),
        ({**bad, "deadline": "tomorrow"}, "deadline"),
        ({**bad, "priority": "urgent"}, "priority"),
        ({**bad, "surprise": 1}, None),
        ({**bad, "input": "s3://media/../etc/passwd"}, "input"),
    ]
    for body, field in cases:
        problem = assert_problem(http.post("/v1/jobs", json=body, headers=bearer("alpha")), 422)
        with pytest.raises(ValueError) as raised:
            api_client.make_request(body)
        assert problem["detail"] == str(raised.value)
        assert problem["errors"][0]["field"] == field, body


def test_unknown_paths_and_methods_are_problems_too(http):
    assert_problem(http.get("/v2/jobs", headers=bearer("alpha")), 404)
    assert_problem(http.delete("/v1/jobs/x", headers=bearer("alpha")), 405)
    assert_problem(http.get("/v1/jobs", params={"limit": "many"}, headers=bearer("alpha")), 400)


class StoppableRedis:
    """A redis-server that can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.workdir = tempfile.mkdtemp(prefix="pipeq-redis-")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", self.workdir, "--databases", "4"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.025)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextmanager
def stoppable_redis() -> Iterator[StoppableRedis]:
    server = StoppableRedis()
    server.start()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.mark.slow
def test_redis_stopped_mid_request_is_a_503_and_the_api_recovers(s3_endpoint, tiny_models):
    with stoppable_redis() as server:
        settings = with_api(make_settings(server.url, s3_endpoint, tiny_models))  # open API: no tokens
        with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
            queued = http.post("/v1/jobs", json=job())
            assert queued.status_code == 201, queued.text
            waiting: dict[str, httpx.Response] = {}

            def wait() -> None:
                waiting["response"] = http.get(f"/v1/jobs/{queued.json()['id']}", headers={"Prefer": "wait=20"})

            thread = threading.Thread(target=wait)
            thread.start()
            time.sleep(0.5)
            server.stop()
            thread.join(30)
            assert_problem(waiting["response"], 503)
            assert waiting["response"].headers["retry-after"]
            assert_problem(http.post("/v1/jobs", json=job()), 503)
            assert_problem(http.get(f"/v1/jobs/{queued.json()['id']}"), 503)
            assert_problem(http.get("/v1/jobs"), 503)
            server.start()
            again = http.post("/v1/jobs", json=job())
            assert again.status_code == 201, again.text
            assert http.get(f"/v1/jobs/{again.json()['id']}").json()["state"] == "queued"
            assert Client(settings).status(again.json()["id"]).state == "queued"
