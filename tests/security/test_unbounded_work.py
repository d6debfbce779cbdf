"""A job asks for bounded work only, and a bad one fails alone and once.

Parameters over the model's caps (tokens to generate, beams, returned sequences, labels, frames, processor sizes,
tokenizer lengths, strings) are refused at submission naming the cap, and failed on receipt when published raw. A
parameter of the wrong type fails its job once, on receipt, instead of raising in the middle of a micro-batch (which
requeued the whole batch, again and again). A generation job that names no length gets at most the cap.
"""

import pytest

from devtools.config_files import write_config
from devtools.media import picture, video
from pipeq.config.catalogue import ModelEntry
from pipeq.core.contract import Job, make_input
from pipeq.producer import Client, InvalidJob
from tests.security.raw_jobs import final_record, publish_raw, wait_for_empty_broker
from tests.support.settings import make_settings, model_name
from tests.support.workers import kill, start_worker_process

GENERATION = "text-generation"


def job_for(task: str, parameters: dict, value: object = "Once upon a time") -> Job:
    return Job(task=task, model=model_name(task), input=make_input(value), parameters=parameters)


OVER_CAPS = [
    pytest.param(
        GENERATION,
        {"max_new_tokens": 100_000},
        "max_new_tokens=100000 exceeds this model's cap of 256 (caps.max_new_tokens in the catalogue)",
        id="max_new_tokens",
    ),
    pytest.param(GENERATION, {"max_length": 1_000_000}, "caps.max_new_tokens", id="max_length"),
    pytest.param(
        GENERATION, {"num_beams": 64}, "num_beams=64 exceeds this model's cap of 5 (caps.max_beams", id="beams"
    ),
    pytest.param(
        GENERATION, {"num_return_sequences": 100, "do_sample": True}, "caps.max_return_sequences", id="returned"
    ),
    pytest.param(
        GENERATION,
        {"prefix": "x" * 100_000},
        "prefix is a string of 100000 characters, more than this model's cap of 4096 (caps.max_parameter_chars",
        id="prefix-chars",
    ),
    pytest.param(
        "zero-shot-classification",
        {"candidate_labels": [f"label {i}" for i in range(500)]},
        "candidate_labels has 500 labels, more than this model's cap of 64 (caps.max_labels",
        id="labels",
    ),
    pytest.param(
        "feature-extraction",
        {"tokenize_kwargs": {"padding": "max_length", "max_length": 10**8}},
        "tokenize_kwargs.max_length=100000000 exceeds this model's cap of 4096 (caps.max_input_tokens",
        id="padding-length",
    ),
]


@pytest.mark.parametrize(("task", "parameters", "message"), OVER_CAPS)
def test_over_cap_values_are_refused_at_submission_naming_the_cap(client, task, parameters, message):
    with pytest.raises(InvalidJob, match=None) as refused:
        client.submit(task, "Once upon a time", model=model_name(task), parameters=parameters)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("task", "parameters", "value", "message"),
    [
        (
            "video-classification",
            {"num_frames": 100_000},
            video(frames=8),
            "num_frames=100000 exceeds this model's cap of 64 (caps.max_frames in the catalogue)",
        ),
        (
            "image-feature-extraction",
            {"image_processor_kwargs": {"size": {"height": 60_000, "width": 60_000}}},
            picture(),
            "image_processor_kwargs.size.height=60000 exceeds this model's cap of 2048 (caps.max_image_side_px",
        ),
    ],
    ids=["frames", "processor-size"],
)
def test_media_jobs_over_a_cap_are_refused_at_submission(client, task, parameters, value, message):
    with pytest.raises(InvalidJob) as refused:
        client.submit(task, value, model=model_name(task), parameters=parameters)
    assert message in str(refused.value)


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    ("task", "parameters", "message"),
    [
        (GENERATION, {"max_new_tokens": 100_000, "do_sample": False}, "caps.max_new_tokens in the catalogue"),
        ("zero-shot-classification", {"candidate_labels": ",".join(f"l{i}" for i in range(200))}, "caps.max_labels"),
    ],
    ids=["max_new_tokens", "labels"],
)
def test_a_raw_message_over_a_cap_is_failed_on_receipt_naming_the_cap(client, task, parameters, message):
    record = final_record(client, publish_raw(client, job_for(task, parameters)))
    assert (record.state, record.error and record.error.type) == ("failed", "InvalidJob"), record
    assert message in record.error.message, record.error.message
    assert record.attempts == 1


@pytest.mark.usefixtures("worker")
def test_a_wrong_type_parameter_sent_raw_fails_its_job_once_and_leaves_the_broker_empty(client, settings):
    task = "feature-extraction"
    bad = publish_raw(client, job_for(task, {"tokenize_kwargs": "x"}, "a text"))
    good = client.submit(task, "another text", model=model_name(task))
    record = final_record(client, bad, timeout=30)
    assert (record.state, record.error and record.error.type) == ("failed", "InvalidJob"), record
    assert (
        "feature-extraction parameter tokenize_kwargs must be an object with keys max_length, padding, truncation"
        in (record.error.message)
    )
    assert record.attempts == 1
    assert client.wait(good, timeout=60).state == "succeeded"
    wait_for_empty_broker(settings)
    assert client.store.get(bad).attempts == 1  # never taken up again


@pytest.fixture
def capped_worker(redis_url, s3_endpoint, tiny_models, tmp_path, redis_db):
    """A worker process serving the tiny text-generation model (its own default: 8 new tokens) with a cap of 3, on
    Redis databases of its own; a client for it."""
    settings = make_settings(redis_url, s3_endpoint, {GENERATION: tiny_models[GENERATION]}, db=redis_db)
    entry = settings.models[0].model_dump() | {"queue": "capped", "caps": {"max_new_tokens": 3}}
    settings = settings.model_copy(update={"models": [ModelEntry(**entry)]})
    client = Client(settings)
    process = start_worker_process(write_config(settings, tmp_path / "pipeq.toml"), "capped", tmp_path / "worker.log")
    yield client, tmp_path / "worker.log"
    kill(process)
    client.close()


@pytest.mark.slow
@pytest.mark.slow
def test_a_generation_job_that_names_no_length_gets_at_most_the_cap(capped_worker, reference):
    client, log = capped_worker
    prompt, greedy = "Once upon a time", {"do_sample": False, "return_full_text": False}
    job = client.submit(GENERATION, prompt, model=model_name(GENERATION), parameters=greedy)
    try:
        record = client.wait(job, timeout=180)
    except TimeoutError:
        raise AssertionError(f"the capped worker did not finish the job; its log:\n{log.read_text()[-3000:]}") from None
    assert record.state == "succeeded", (record.error, log.read_text()[-3000:])
    pipe = reference(GENERATION)
    capped, uncapped = pipe(prompt, max_new_tokens=3, **greedy), pipe(prompt, **greedy)
    assert record.result == capped
    assert capped != uncapped  # the model's own default (8 new tokens) was lowered to the cap
    with pytest.raises(InvalidJob, match="max_new_tokens=4 exceeds this model's cap of 3"):
        client.submit(GENERATION, prompt, model=model_name(GENERATION), parameters={"max_new_tokens": 4})
