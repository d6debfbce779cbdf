"""The job contract: JSON round trips, inputs, limits."""

import json

import pytest

from config.settings import Limits
from config.tasks import task_spec
from pipeq.contract import DictInput, InlineInput, InvalidJob, Job, ObjectInput, TextInput, make_input


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
