"""A worker's Prometheus metrics count what it really did: jobs by state, latencies, micro-batches and the pipeline
calls they became, model loads, media fetched. Read from the process's registry, as a scrape would."""

import pytest
from prometheus_client import REGISTRY

from devtools.media import picture
from pipeq.producer import Client
from pipeq.worker.app import create_app
from pipeq.worker.metrics import WorkerMetrics, cuda_memory
from tests.support.jobs import run
from tests.support.settings import model_name
from tests.support.workers import worker_thread

TEXT = "text-classification"
IMAGE = "image-classification"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def values(names: list[str], **labels: str) -> dict[str, float]:
    return {name: value(name, **labels) for name in names}


JOB_SERIES = [
    "pipeq_job_latency_seconds_count",
    "pipeq_job_queue_wait_seconds_count",
    "pipeq_job_run_seconds_count",
    "pipeq_micro_batch_jobs_sum",
    "pipeq_micro_batch_jobs_count",
    "pipeq_micro_batch_pipeline_calls_sum",
    "pipeq_pipeline_call_seconds_count",
    "pipeq_pipeline_call_inputs_sum",
]


@pytest.mark.usefixtures("worker")
def test_jobs_micro_batches_and_calls_are_counted(client, settings):
    entry = settings.catalogue.models[model_name(TEXT)]
    labels = {"model": entry.name, "queue": entry.queue, "device": "cpu"}
    before = values(JOB_SERIES, **labels)
    succeeded_before = value("pipeq_jobs_finished_total", **labels, state="succeeded")
    failed_before = value("pipeq_jobs_finished_total", **labels, state="failed")

    inputs = [f"review {i}: " + "good " * (i % 7) for i in range(40)] + [{"text_pair": "no first text"}]
    records = run(client, TEXT, inputs)

    after = values(JOB_SERIES, **labels)
    delta = {name: after[name] - before[name] for name in JOB_SERIES}
    assert [record.state for record in records].count("failed") == 1
    assert value("pipeq_jobs_finished_total", **labels, state="succeeded") - succeeded_before == 40
    assert value("pipeq_jobs_finished_total", **labels, state="failed") - failed_before == 1
    for name in (
        "pipeq_job_latency_seconds_count",
        "pipeq_job_queue_wait_seconds_count",
        "pipeq_job_run_seconds_count",
    ):
        assert delta[name] == 41, name
    assert delta["pipeq_micro_batch_jobs_sum"] == 41  # every job in exactly one micro-batch
    assert 1 <= delta["pipeq_micro_batch_jobs_count"] < 41  # ... and they were batched
    assert delta["pipeq_micro_batch_pipeline_calls_sum"] == delta["pipeq_pipeline_call_seconds_count"]
    assert delta["pipeq_pipeline_call_inputs_sum"] >= 41  # the failing input went through a split too


@pytest.mark.usefixtures("worker")
def test_media_fetches_are_counted_with_their_bytes(client, upload):
    image = picture()
    before_bytes = value("pipeq_media_fetch_bytes_total", device="cpu")
    before_ok = value("pipeq_media_fetch_seconds_count", device="cpu", outcome="ok")
    before_failed = value("pipeq_media_fetch_seconds_count", device="cpu", outcome="failed")

    good, missing = run(client, IMAGE, [upload(image, ".png"), "s3://media/no-such-picture.png"])

    assert (good.state, missing.state) == ("succeeded", "failed")
    assert value("pipeq_media_fetch_bytes_total", device="cpu") - before_bytes == len(image)
    assert value("pipeq_media_fetch_seconds_count", device="cpu", outcome="ok") - before_ok == 1
    assert value("pipeq_media_fetch_seconds_count", device="cpu", outcome="failed") - before_failed == 1


@pytest.mark.own_worker
def test_a_model_load_is_timed_and_the_loaded_model_counted(settings, redis_url, redis_db, s3):
    """A worker of its own, whose pipeline cache starts empty."""
    own = settings.model_copy(
        update={"broker_url": f"{redis_url}/{redis_db}", "result_backend": f"{redis_url}/{redis_db + 1}"}
    )
    name = model_name(TEXT)
    loads_before = value("pipeq_model_load_seconds_count", model=name, device="cpu", outcome="loaded")
    app = create_app(own)
    client = Client(own)
    try:
        with worker_thread(app):
            [record] = run(client, TEXT, ["a fine day"])
            assert record.state == "succeeded"
            assert (
                value("pipeq_model_load_seconds_count", model=name, device="cpu", outcome="loaded") == loads_before + 1
            )
            assert value("pipeq_loaded_models", device="cpu") >= 1
            assert value("pipeq_loaded_model_bytes", model=name, device="cpu") > 1000
            assert value("pipeq_worker_held_jobs", device="cpu") == 0  # the job is settled
        assert value("pipeq_worker_draining", device="cpu") == 1  # it drained on the way out
    finally:
        client.close()


def test_accelerator_memory_is_read_at_scrape_time_and_absent_on_cpu(settings):
    """No GPU here: the reading is faked, what the worker does with it is real."""
    reading = [(100, 300)]
    WorkerMetrics(settings.catalogue, "cuda:7", dict, int, lambda: reading[0])
    reading[0] = (150, 400)  # the allocator moved on after the worker started
    assert value("pipeq_accelerator_memory_allocated_bytes", device="cuda:7") == 150
    assert value("pipeq_accelerator_memory_reserved_bytes", device="cuda:7") == 400
    WorkerMetrics(settings.catalogue, "cpu-only", dict, int, cuda_memory("cpu"))
    assert REGISTRY.get_sample_value("pipeq_accelerator_memory_allocated_bytes", {"device": "cpu-only"}) is None
