"""Per-task specifics: output shapes of list calls, inputs copied per call, hints for failures alone."""

from types import SimpleNamespace

from pipeq.config.tasks import TASKS
from pipeq.worker.task_quirks import as_batch, failure_hint, fresh_input, single_shape


def test_a_list_calls_output_takes_the_shape_of_a_single_call():
    classification, features = TASKS["text-classification"], TASKS["feature-extraction"]
    label = {"label": "A", "score": 0.9}
    assert single_shape(classification, {}, "text", label, None) == [label]
    assert single_shape(classification, {"top_k": 2}, "text", [label], None) == [label]
    padded = [[[1.0], [2.0], [0.0], [0.0]]]  # one input, four token rows, the last two padding
    assert single_shape(features, {}, "text", padded, 2) == [[[1.0], [2.0]]]


def test_dict_inputs_are_copied_for_each_call():
    value = {"question": "q", "context": "c"}
    copy = fresh_input(value)
    copy.pop("question")
    assert value == {"question": "q", "context": "c"}


def test_image_text_to_text_dicts_go_in_one_by_one_not_as_one_chat():
    prompts = [{"images": "a", "text": "x"}, {"images": "b", "text": "y"}]
    batch = as_batch(TASKS["image-text-to-text"], prompts)
    assert not isinstance(batch, list) and list(batch) == prompts
    assert as_batch(TASKS["text-classification"], ["a", "b"]) == ["a", "b"]


def test_failures_alone_say_what_to_try():
    asr, video = TASKS["automatic-speech-recognition"], TASKS["video-classification"]
    assert "pass chunk_length_s" in failure_hint(None, asr, {}, out_of_memory=True)
    assert failure_hint(None, asr, {"chunk_length_s": 30}, out_of_memory=True) == ""
    pipe = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(num_frames=8)))
    assert "made for num_frames=8" in failure_hint(pipe, video, {"num_frames": 4}, out_of_memory=False)
    assert failure_hint(pipe, video, {}, out_of_memory=False) == ""
