"""A real ``pipeq worker`` process, as an operator sees it: metrics and probes on its port, and a drain on SIGTERM
that finishes the micro-batch in hand, gives back the rest, loses nothing, runs nothing twice, and exits within
the drain timeout."""

import os
import socket
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.config_files import write_config
from devtools.local_services import free_port
from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import Metrics
from pipeq.ops.http import MAX_CONNECTIONS
from pipeq.producer import Client
from tests.support.guarantees import check_sigterm_drains
from tests.support.settings import make_settings
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, kill, start_worker_process

pytestmark = pytest.mark.slow  # worker subprocesses

TEXT = "text-classification"
QUEUE = "ops"


@pytest.fixture
def ops_setup(redis_url, s3_endpoint, tiny_models, tmp_path, redis_db):
    """Settings on their own Redis databases, one small-batch model on queue ``ops`` with a short
    expected_seconds (so a short drain timeout), a metrics port, and their config file."""
    settings = make_settings(redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db, visibility_timeout=60)
    entry = settings.models[0].model_copy(update={"max_batch_jobs": 4, "queue": QUEUE, "expected_seconds": 10.0})
    metrics = Metrics(port=free_port())
    settings = settings.model_copy(update={"models": [ModelEntry(**entry.model_dump())], "metrics": metrics})
    client = Client(settings)
    yield settings, write_config(settings, tmp_path / "pipeq.toml"), client
    client.close()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample the endpoint serves: (name, sorted labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_worker_process_serves_its_metrics_and_probes(ops_setup, tmp_path):
    settings, config, client = ops_setup
    port = settings.metrics.port
    log = tmp_path / "worker.log"
    worker = start_worker_process(config, QUEUE, log)
    try:
        wait_until(lambda: ready(port), 120, message=f"the worker never got ready; its log: {log}")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        health = subprocess.run(
            [sys.executable, "-m", "pipeq.cli", "health", "--port", str(port)], cwd=ROOT, capture_output=True
        )
        assert health.returncode == 0, health.stderr

        stuck = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS + 4)]  # say nothing
        try:
            ids = client.submit_many(TEXT, [f"review {i} was fine" for i in range(30)], model=settings.models[0].name)
            records = client.wait_many(ids, timeout=120).values()
            assert {record.state for record in records} == {"succeeded"}
            # a node name of its own: device, pid, host
            assert {record.worker for record in records} == {f"pipeq-cpu-{worker.pid}@{socket.gethostname()}"}
        finally:  # jobs ran while every slot of the endpoint was held by a scraper that never asked
            for connection in stuck:
                connection.close()

        samples = scrape(port)
        labels = (("device", "cpu"), ("model", settings.models[0].name), ("queue", QUEUE))
        assert samples[("pipeq_jobs_finished_total", (*labels[:2], labels[2], ("state", "succeeded")))] == 30
        assert samples[("pipeq_micro_batch_jobs_sum", labels)] == 30
        assert samples[("pipeq_micro_batch_jobs_count", labels)] >= 30 / 4  # batches of at most 4
        assert samples[("pipeq_job_latency_seconds_count", labels)] == 30
        load = (("device", "cpu"), ("model", settings.models[0].name), ("outcome", "loaded"))
        assert samples[("pipeq_model_load_seconds_count", load)] == 1
        assert samples[("pipeq_worker_held_jobs", (("device", "cpu"),))] == 0
        assert ("process_cpu_seconds_total", ()) in samples  # prometheus_client's process metrics come too
    finally:
        kill(worker)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    health = subprocess.run(
        [sys.executable, "-m", "pipeq.cli", "health", "--port", str(port)], cwd=ROOT, capture_output=True, text=True
    )
    assert health.returncode == 1 and str(port) in health.stdout + health.stderr


def test_a_second_worker_on_a_taken_metrics_port_refuses_to_start(ops_setup, tmp_path):
    settings, config, _ = ops_setup
    port = settings.metrics.port
    first = start_worker_process(config, QUEUE, tmp_path / "first.log")
    try:
        wait_until(lambda: ready(port), 120, message="the first worker never got ready")
        second = subprocess.run(
            [sys.executable, "-m", "pipeq.cli", "worker", "--device", "cpu", "--queues", QUEUE],
            cwd=ROOT,
            env={**os.environ, "PIPEQ_CONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        kill(first)
    assert second.returncode != 0
    assert f"127.0.0.1:{port} is already in use" in second.stderr
    assert "PIPEQ_METRICS__PORT" in second.stderr


def test_sigterm_drains_finishes_the_batch_in_hand_and_gives_back_the_rest(ops_setup, tmp_path):
    settings, config, client = ops_setup
    broker = client.store.redis.from_url(settings.broker_url)
    check_sigterm_drains(
        settings,
        config,
        client,
        tmp_path,
        waiting=lambda: broker.llen(QUEUE),
        worker_ready=lambda: ready(settings.metrics.port),
        held=lambda: broker.hlen("unacked"),
    )
