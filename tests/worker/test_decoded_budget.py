"""A micro-batch holds at most ``limits.max_decoded_bytes_per_batch`` of decoded media; jobs past it wait."""

import numpy as np
import pytest
from PIL import Image

from pipeq.config.settings import Limits
from pipeq.core.contract import Job, TextInput
from pipeq.core.records import RecordStore
from pipeq.worker.decoding import resident_bytes
from pipeq.worker.samples import SpooledSamples
from tests.support.engines import Labeller, Messages, OnePipeline, engine_on, run_through
from tests.support.settings import make_settings, model_name

TEXT = "text-classification"


def test_resident_bytes_counts_what_sits_in_memory(tmp_path):
    assert resident_bytes("abcd") == 4
    assert resident_bytes(np.zeros(10, dtype=np.float32)) == 40
    assert resident_bytes(Image.new("RGB", (10, 4))) == 120
    assert resident_bytes({"images": [Image.new("L", (5, 5))], "text": "hi"}) == 27
    spooled = np.memmap(tmp_path / "samples", dtype=np.float32, mode="w+", shape=(1000,)).view(SpooledSamples)
    assert resident_bytes(spooled) == 0  # on disk, paged in chunk by chunk


@pytest.fixture
def budget_setup(redis_url, s3_endpoint, tiny_models, redis_db):
    settings = make_settings(
        redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db, limits=Limits(max_decoded_bytes_per_batch=10)
    )
    store = RecordStore(settings.result_backend)
    engine = engine_on(settings, store, OnePipeline(Labeller()), start=False)
    yield engine, store
    engine.stop(5)


def test_jobs_past_the_batch_budget_go_back_to_the_queue_with_their_attempt_unused(budget_setup):
    engine, store = budget_setup
    jobs = [Job(task=TEXT, model=model_name(TEXT), input=TextInput(text=text)) for text in ("a" * 8, "b" * 8, "cc")]
    messages = Messages()
    run_through(engine, messages, jobs, then=engine.start)  # one micro-batch: the engine starts after all arrive
    first, second, third = store.get_many([job.id for job in jobs])
    assert (first.state, third.state) == ("succeeded", "succeeded")
    assert (first.result, third.result) == ([{"label": "LEN8", "score": 1.0}], [{"label": "LEN2", "score": 1.0}])
    assert (second.state, second.attempts) == ("queued", 0)  # 8 + 8 bytes would pass the 10-byte budget
    assert messages.requeued == [jobs[1].id]
    assert sorted(messages.acked) == sorted([jobs[0].id, jobs[2].id])


def test_an_input_larger_than_the_budget_still_runs_alone(budget_setup):
    engine, store = budget_setup
    job = Job(task=TEXT, model=model_name(TEXT), input=TextInput(text="x" * 50))
    messages = Messages()
    run_through(engine, messages, [job], then=engine.start)
    assert store.get(job.id).state == "succeeded"  # its own limits (max_text_chars) bound a single input
