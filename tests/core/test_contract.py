"""The job contract: JSON round trips, inputs, limits."""

import json

import pytest

from pipeq.config.settings import Limits
from pipeq.config.tasks import task_spec
from pipeq.core.contract import (
    DictInput,
    InlineInput,
    InvalidJob,
    Job,
    ObjectInput,
    TextInput,
    make_input,
    media_references,
    replace_media,
)


def test_a_job_round_trips_through_json_with_its_version():
    job = Job(task="text-classification", model="m", input=make_input(b"\x00\xffbytes"), parameters={"top_k": 2})
    wire = json.loads(job.model_dump_json())
    assert wire["v"] == 1
    assert wire["input"] == {"kind": "inline", "data": "AP9ieXRlcw=="}
    assert Job.model_validate(wire) == job


def test_inputs_from_python_values():
    assert make_input("hello") == TextInput(text="hello")
    ref = make_input("s3://my-bucket/a/b c.wav")
    assert isinstance(ref, ObjectInput)
    assert (ref.bucket, ref.key) == ("my-bucket", "a/b c.wav")
    assert make_input(b"x") == InlineInput(data=b"x")
    assert make_input({"text": "a"}) == DictInput(value={"text": "a"})


def test_other_versions_and_unknown_fields_are_refused():
    wire = json.loads(Job(task="text-classification", model="m", input=TextInput(text="x")).model_dump_json())
    with pytest.raises(ValueError, match="v"):
        Job.model_validate({**wire, "v": 2})
    with pytest.raises(ValueError, match="surprise"):
        Job.model_validate({**wire, "surprise": 1})


def test_limits_are_checked():
    limits = Limits(max_text_chars=5, max_inline_bytes=4)
    with pytest.raises(InvalidJob, match="text of 6 characters exceeds the limit of 5"):
        Job(task="text-classification", model="m", input=TextInput(text="sixsix")).check(limits)
    with pytest.raises(InvalidJob, match="upload it to object storage"):
        Job(task="image-classification", model="m", input=InlineInput(data=b"12345")).check(limits)


def test_a_chat_is_a_dict_of_messages_for_text_generation():
    limits = Limits(max_text_chars=20)
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    Job(task="text-generation", model="m", input=make_input(chat), parameters={"max_new_tokens": 4}).check(limits)
    Job(task="text-generation", model="m", input=make_input("Once upon a time")).check(limits)
    with pytest.raises(InvalidJob, match="at least one message"):
        Job(task="text-generation", model="m", input=make_input({"messages": []})).check(limits)
    with pytest.raises(InvalidJob, match="needs a role"):
        Job(task="text-generation", model="m", input=make_input({"messages": [{"content": "x"}]})).check(limits)
    with pytest.raises(InvalidJob, match="not accepted by text-generation; accepted: messages"):
        Job(task="text-generation", model="m", input=make_input({"prompt": "x"})).check(limits)
    with pytest.raises(InvalidJob, match="chat of 21 characters exceeds the limit of 20"):
        Job(
            task="text-generation", model="m", input=make_input({"messages": [{"role": "user", "content": "x" * 21}]})
        ).check(limits)
    with pytest.raises(InvalidJob, match="unknown parameter"):
        Job(task="text-generation", model="m", input=make_input("x"), parameters={"beam": 2}).check(limits)


@pytest.mark.parametrize(
    ("task", "parameters"),
    [
        ("zero-shot-image-classification", {}),
        ("document-question-answering", {"word_boxes": [["total", [0, 0, 10, 10]]]}),
    ],
)
def test_media_tasks_need_their_parameters(task, parameters):
    job = Job(task=task, model="m", input=make_input(b"\x89PNG"), parameters=parameters)
    with pytest.raises(InvalidJob, match=f"task {task} needs the parameter"):
        job.check(Limits())


@pytest.mark.parametrize(
    "task",
    ["audio-classification", "zero-shot-image-classification", "object-detection", "document-question-answering"],
)
def test_media_tasks_refuse_text(task):
    with pytest.raises(InvalidJob, match="not text"):
        parameters = {"candidate_labels": ["a"], "question": "q?"}
        parameters = {k: v for k, v in parameters.items() if k in task_spec(task).parameters}
        Job(task=task, model="m", input=make_input("hello"), parameters=parameters).check(Limits())


def test_media_inside_dict_inputs_travels_by_reference():
    value = {"images": [b"\x89PNG", "s3://media/cat.png"], "text": "s3://not/a/reference"}
    job = Job(task="image-text-to-text", model="m", input=make_input(value))
    wire = json.loads(job.model_dump_json())["input"]["value"]
    assert wire["images"] == [{"kind": "inline", "data": "iVBORw=="}, {"kind": "s3", "uri": "s3://media/cat.png"}]
    assert wire["text"] == "s3://not/a/reference"  # text, not a media key
    assert Job.model_validate_json(job.model_dump_json()) == job
    assert media_references(job.input.value) == [InlineInput(data=b"\x89PNG"), ObjectInput(uri="s3://media/cat.png")]


def test_replace_media_swaps_each_reference_and_keeps_the_rest():
    value = make_input({"messages": [{"role": "user", "content": [{"type": "image", "url": "s3://b1/k"}]}]}).value
    replaced = replace_media(value, lambda ref: ref.key.upper())
    assert replaced == {"messages": [{"role": "user", "content": [{"type": "image", "url": "K"}]}]}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"images": {"kind": "inline", "data": "not base64!"}}, "not valid base64"),
        ({"images": {"kind": "s3", "uri": "http://x/y"}}, "s3://bucket/key"),
        ({"images": {"kind": "inline", "data": "AA==", "extra": 1}}, "inline media reference"),
    ],
)
def test_malformed_references_are_refused(value, match):
    with pytest.raises(ValueError, match=match):
        make_input(value)


def test_dict_only_tasks_need_their_keys_and_inline_media_within_limits():
    limits = Limits(max_inline_bytes=4)
    with pytest.raises(InvalidJob, match="needs the dict input key"):
        Job(task="table-question-answering", model="m", input=make_input({"query": "q"})).check(limits)
    with pytest.raises(InvalidJob, match="takes a dict input"):
        Job(task="keypoint-matching", model="m", input=make_input("s3://media/a.png")).check(limits)
    with pytest.raises(InvalidJob, match="inline media of 5 bytes exceeds the limit of 4"):
        Job(task="keypoint-matching", model="m", input=make_input({"images": [b"abc", b"de"]})).check(limits)
    Job(task="keypoint-matching", model="m", input=make_input({"images": [b"ab", b"cd"]})).check(limits)


def test_chat_text_is_measured_without_its_media():
    def chat(text: str) -> dict:
        parts = [{"type": "image", "image": b"x" * 50}, {"type": "text", "text": text}]
        return {"messages": [{"role": "user", "content": parts}]}

    limits = Limits(max_text_chars=2)
    Job(task="image-text-to-text", model="m", input=make_input(chat("hi"))).check(limits)  # 50 bytes of image
    with pytest.raises(InvalidJob, match="chat of 3 characters exceeds the limit of 2"):
        Job(task="image-text-to-text", model="m", input=make_input(chat("hi!"))).check(limits)


def test_task_aliases_name_the_task_itself():
    assert Job(task="ner", model="m", input=TextInput(text="x")).task == "token-classification"
    assert Job(task="sentiment-analysis", model="m", input=TextInput(text="x")).task == "text-classification"


@pytest.mark.parametrize("job_id", ["job-1\n", "", "-starts-with-a-dash", "a" * 129, "has space", "new\nline"])
def test_job_ids_are_refused_unless_wholly_made_of_the_allowed_characters(job_id):
    with pytest.raises(ValueError, match="must be 1-128 characters"):
        Job(id=job_id, task="text-classification", model="m", input=make_input("x"))


def test_an_object_reference_ending_in_a_newline_is_refused():
    with pytest.raises(ValueError, match="s3://bucket/key"):
        ObjectInput(uri="s3://media/key.wav\n")


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("priority", "urgent", "low, normal, high"),
        ("webhook_events", ["completed", "finished"], "started, progress, completed"),
        ("webhook_events", [], "non-empty list"),
        ("result_ttl", 0, "greater than 0"),
    ],
)
def test_the_lifecycle_fields_of_a_message_are_held_to_their_sets(field, value, says):
    """A worker validates every message: a forged one with an unknown priority or event fails, saying why."""
    with pytest.raises(ValueError, match=says):
        Job(task="text-classification", model="m", input=make_input("x"), **{field: value})
