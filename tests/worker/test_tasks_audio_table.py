"""text-to-audio, zero-shot-audio-classification, video-classification, table-question-answering and decision
through the real worker: each job's result equals transformers.pipeline's on the same tiny model and the same
decoded media; several jobs share a micro-batch; a bad input fails its own job only, with a clear error."""

import base64
import copy
import importlib.util
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from devtools.media import encode_audio, picture, speech, truncated, video
from devtools.tiny_audio_table import CLAP_SECONDS, VIDEO_FRAMES
from pipeq.config.tasks import task_spec
from pipeq.core.contract import InvalidJob
from pipeq.worker.decoding import Decoded, decode_audio
from pipeq.worker.grouping import padding_changes_results
from pipeq.worker.outputs import encode_audio as encode_wav
from pipeq.worker.runner import run_group
from tests.support.compare import same
from tests.support.decoded import samples_of
from tests.support.jobs import check, failed, run
from tests.support.settings import model_name
from tests.support.spy import Spy

pytestmark = pytest.mark.usefixtures("worker")

CLAP_RATE = 48_000
TEXTS = ["Hello there, friend.", "Good morning to you!", "See you all soon."]  # similar lengths: one run
TABLES = [
    {"city": ["Paris", "Berlin", "Rome"], "people": ["2100000", "3600000", "2800000"]},
    {"name": ["Ann", "Bob"], "age": ["31", "45"], "town": ["Lyon", "Nice"]},
    {"repository": ["transformers", "datasets", "tokenizers"], "stars": ["36542", "4512", "3934"]},
]
TABLE_QUESTIONS = [
    {"table": TABLES[0], "query": "Which city has the most people?"},
    {"table": TABLES[1], "query": ["How old is Bob?", "Where does he live?"]},
    {"table": TABLES[2], "query": "How many stars does datasets have?"},
]
REQUESTS = [
    {
        "state": "I was charged twice for my order and want a refund.",
        "questions": {
            "refund": {"type": "noul", "instructions": "Is a refund requested?"},
            "tone": {"type": "choice", "instructions": "Tone?", "criteria": {"calm": "Polite", "angry": None}},
        },
    },
    {
        "state": {"message": "WIN a FREE phone, click here!", "sender": "unknown"},
        "questions": {"urgency": {"type": "score", "instructions": "How urgent?", "criteria": ["Later", "Today"]}},
    },
    {
        "state": "The parcel arrived broken.",
        "questions": {
            "spam": {"type": "noul", "criteria": {"true": "Unsolicited ads", "false": "A real customer"}},
            "topic": {"type": "choice", "criteria": {"delivery": None, "billing": None, "other": "Anything else"}},
        },
    },
]


def wav_samples(result: dict) -> tuple[np.ndarray, int]:
    """The samples and rate of a ``{"content_type": "audio/wav", "data": <base64>}`` result."""
    assert result["content_type"] == "audio/wav"
    return soundfile.read(io.BytesIO(base64.b64decode(result["data"])), dtype="float32", always_2d=False)


# --- text-to-audio ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parameters", [None, {"forward_params": {"speaker_id": 1}}])
def test_text_to_audio_returns_the_pipelines_samples_as_a_wav(client, reference, upload, parameters):
    inputs = [TEXTS[0], upload(TEXTS[1].encode(), ".txt"), TEXTS[2]]
    records = run(client, "text-to-speech", inputs, parameters, model=model_name("text-to-audio"))  # an alias
    pipe = reference("text-to-audio")
    for record, text in zip(records, TEXTS, strict=True):
        assert record.state == "succeeded", record.error
        expected = pipe(text, **(parameters or {}))
        assert set(record.result) == {"audio", "sampling_rate"}
        samples, rate = wav_samples(record.result["audio"])
        assert rate == record.result["sampling_rate"] == expected["sampling_rate"] == 16_000
        np.testing.assert_allclose(samples, expected["audio"], atol=1e-6)


def test_text_to_audio_is_deterministic_and_speakers_differ(reference):
    pipe = reference("text-to-audio")
    first, again = pipe(TEXTS[0]), pipe(TEXTS[0])
    assert np.array_equal(first["audio"], again["audio"])  # noise scales 0: parity above is exact, not by chance
    other = pipe(TEXTS[0], forward_params={"speaker_id": 1})["audio"]
    assert first["audio"].shape != other.shape or not np.allclose(first["audio"], other)


def test_text_to_audio_bad_inputs_fail_alone(client):
    records = run(client, "text-to-audio", [TEXTS[0], b"\xff\xfe\x00 not text", TEXTS[2], "日本語です"])
    assert [record.state for record in records] == ["succeeded", "failed", "succeeded", "failed"]
    failed(records[1], "UnreadableMedia", "not UTF-8 text")
    failed(records[3], "PipelineError", "the text has no character this model can speak: its tokenizer knows")
    [speaker] = run(client, "text-to-audio", [TEXTS[0]], {"forward_params": {"speaker_id": 7}})
    failed(speaker, "PipelineError", "speaker_id` in the range 0-1")
    [generate] = run(client, "text-to-audio", [TEXTS[0]], {"generate_kwargs": {"max_new_tokens": 4}})
    failed(generate, "PipelineError", "use `forward_params` instead")


@pytest.mark.parametrize(
    ("task", "values"),
    [("text-to-audio", TEXTS), ("table-question-answering", TABLE_QUESTIONS), ("decision", REQUESTS)],
)
def test_unbatchable_tasks_get_a_call_per_input(reference, task, values):
    """Batched text-to-audio pads every waveform to the longest (VITS: other sounds too); the other two raise on
    batches: each input goes alone, with no failed batch tried first."""
    spy = Spy(reference(task))
    items = [Decoded(copy.deepcopy(value), 20.0) for value in values]  # one size: one run, if batching were allowed
    results = run_group(spy, task_spec(task), {}, 8, items)
    assert [len(call) for call in spy.calls] == [1] * len(values)
    for result, value in zip(results, values, strict=True):
        single = spy.pipe(copy.deepcopy(value))
        if task == "text-to-audio":
            np.testing.assert_allclose(wav_samples(result["audio"])[0], single["audio"], atol=1e-6)
        else:
            assert same(result, single), (result, single)


def test_audio_is_encoded_as_float32_wav_channels_last():
    stereo = np.stack([np.linspace(-1, 1, 50), np.linspace(1, -1, 50)]).astype(np.float32)
    samples, rate = wav_samples(encode_wav(stereo, 8_000))
    assert rate == 8_000 and samples.shape == (50, 2)
    assert np.array_equal(samples, stereo.T)


# --- zero-shot-audio-classification -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parameters",
    [
        {"candidate_labels": ["dog", "speech", "music"]},
        {"candidate_labels": ["yes", "no"], "hypothesis_template": "Someone says {}."},
    ],
)
def test_zero_shot_audio_classification_matches_the_pipeline(client, reference, upload, parameters):
    clips = [speech("yes", CLAP_RATE), speech("no thank you", CLAP_RATE)]
    data = [encode_audio(clip, "WAV", CLAP_RATE) for clip in clips]
    data.append(encode_audio(speech("a dog barks"), "WAV"))  # 16 kHz: the worker resamples to the model's 48 kHz
    inputs = [upload(data[0], ".wav"), data[1], upload(data[2], ".wav")]
    records = run(client, "zero-shot-audio-classification", inputs, parameters)
    pipe = reference("zero-shot-audio-classification")
    heard = [samples_of(wav) for wav in data[:2]]
    heard.append(decode_audio(data[2], CLAP_RATE))
    assert all(len(samples) < CLAP_SECONDS * CLAP_RATE for samples in heard)  # longer clips are cropped at random
    check(records, [pipe(samples, **parameters) for samples in heard])
    assert {entry["label"] for entry in records[0].result} == set(parameters["candidate_labels"])


def test_clap_clips_of_any_length_share_a_batch(reference):
    """CLAP's feature extractor repeats every clip to one length: clips of other lengths may share a call."""
    pipe = reference("zero-shot-audio-classification")
    assert not padding_changes_results(pipe, task_spec("zero-shot-audio-classification"))
    clips = [speech("yes", CLAP_RATE), speech("no thank you very much", CLAP_RATE)]
    labels = {"candidate_labels": ["dog", "speech"]}
    batched = pipe(clips, batch_size=2, **labels)
    assert all(same(out, pipe(clip, **labels)) for out, clip in zip(batched, clips, strict=True))


def test_zero_shot_audio_classification_bad_inputs_fail_alone(client, upload):
    good = encode_audio(speech("yes", CLAP_RATE), "WAV", CLAP_RATE)
    inputs = [good, upload(picture(), ".png"), truncated(good), upload(good, ".wav")]
    records = run(client, "zero-shot-audio-classification", inputs, {"candidate_labels": ["a", "b"]})
    assert [record.state for record in records] == ["succeeded", "failed", "failed", "succeeded"]
    for record in records[1:3]:
        failed(record, "UnreadableMedia", "unreadable audio")
    with pytest.raises(InvalidJob, match="needs the parameter"):
        client.submit("zero-shot-audio-classification", good, model=model_name("zero-shot-audio-classification"))


# --- video-classification ---------------------------------------------------------------------------------------


@pytest.fixture
def as_file() -> Iterator:
    """Write bytes to a temporary file and return its path: the reference pipeline reads videos by path."""
    with tempfile.TemporaryDirectory() as workdir:
        count = iter(range(1000))

        def write(data: bytes) -> str:
            path = Path(workdir) / f"{next(count)}.mp4"
            path.write_bytes(data)
            return str(path)

        yield write


@pytest.mark.parametrize(
    "parameters",
    [None, {"top_k": 2, "function_to_apply": "sigmoid"}, {"num_frames": VIDEO_FRAMES, "frame_sampling_rate": 2}],
)
def test_video_classification_matches_the_pipeline(client, reference, upload, as_file, parameters):
    videos = [video(frames=8, seed=1), video(frames=12, seed=2), video(frames=9, width=48, height=32, seed=3)]
    records = run(client, "video-classification", [upload(videos[0], ".mp4"), videos[1], videos[2]], parameters)
    pipe = reference("video-classification")
    check(records, [pipe(as_file(data), **(parameters or {})) for data in videos])


def test_video_classification_bad_inputs_fail_alone(client, reference, as_file):
    short = video(frames=6, seed=4)  # frame_sampling_rate=2 reads 8 frames
    inputs = [video(frames=10, seed=5), picture(), truncated(video()), short]
    records = run(client, "video-classification", inputs, {"frame_sampling_rate": 2})
    assert [record.state for record in records] == ["succeeded", "failed", "failed", "failed"]
    failed(records[1], "UnreadableMedia", "unreadable video")
    failed(records[2], "UnreadableMedia", "unreadable video")
    failed(records[3], "PipelineError", "the video has 6 frame(s)")
    assert "send a longer video or pass a smaller frame_sampling_rate" in records[3].error.message
    with pytest.raises(RuntimeError):  # what the check spares: the model's shape error on too few frames
        reference("video-classification")(as_file(short), frame_sampling_rate=2)


def test_other_num_frames_than_the_models_fail_saying_which_it_takes(client):
    records = run(client, "video-classification", [video(frames=12, seed=6)], {"num_frames": VIDEO_FRAMES + 2})
    failed(records[0], "PipelineError", f"made for num_frames={VIDEO_FRAMES}: leave num_frames out")


# --- table-question-answering -------------------------------------------------------------------------------------


@pytest.mark.parametrize("parameters", [None, {"sequential": True}, {"padding": "max_length", "truncation": True}])
def test_table_question_answering_matches_the_pipeline(client, reference, parameters):
    records = run(client, "table-question-answering", TABLE_QUESTIONS, parameters)
    pipe = reference("table-question-answering")
    check(records, [pipe(copy.deepcopy(question), **(parameters or {})) for question in TABLE_QUESTIONS])
    assert isinstance(records[1].result, list) and len(records[1].result) == 2  # two queries, two answers
    for answer in records[0].result["cells"]:
        assert answer in TABLES[0]["city"] + TABLES[0]["people"]


@pytest.mark.parametrize(
    ("question", "match"),
    [
        ({"table": {"a": ["1", "2"], "b": ["3"]}, "query": "?"}, "same number of cells"),
        ({"table": {"age": [31, 45]}, "query": "How old?"}, "column 'age' of the table must be a list of strings"),
        ({"table": {}, "query": "Anything?"}, "the table is a dict of columns"),
        ({"table": ["Paris", "Rome"], "query": "Anything?"}, "the table is a dict of columns"),
        ({"table": {"a": []}, "query": "Anything?"}, "at least one"),
        ({"table": TABLES[0], "query": " "}, "the query is a non-empty string"),
        ({"table": TABLES[0], "query": []}, "the query is a non-empty string"),
    ],
)
def test_malformed_tables_fail_alone(client, question, match):
    records = run(client, "table-question-answering", [TABLE_QUESTIONS[0], question, TABLE_QUESTIONS[2]])
    assert [record.state for record in records] == ["succeeded", "failed", "succeeded"]
    failed(records[1], "WrongInputKind", match)


def test_without_pandas_table_questions_fail_saying_so(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pandas" else find_spec(name, *a))
    items = [Decoded(copy.deepcopy(question), 10.0) for question in TABLE_QUESTIONS[:2]]
    failures = run_group(None, task_spec("table-question-answering"), {}, 8, items)
    assert [failure.type for failure in failures] == ["ModelUnavailable"] * 2
    assert "needs the pandas package" in str(failures[0]) and "pip install pandas" in str(failures[0])


def test_a_table_question_needs_table_and_query(client):
    with pytest.raises(InvalidJob, match="needs the dict input key"):
        client.submit("table-question-answering", {"table": TABLES[0]}, model=model_name("table-question-answering"))


# --- decision ------------------------------------------------------------------------------------------------------


def test_decision_matches_the_pipeline(client, reference):
    records = run(client, "decision", REQUESTS)
    pipe = reference("decision")
    check(records, [pipe(copy.deepcopy(request)) for request in REQUESTS])
    assert set(records[0].result) == {"refund", "tone"}
    assert records[0].result["tone"]["choice"] in ("calm", "angry")
    assert 0.0 <= records[1].result["urgency"]["score"] <= 1.0


@pytest.mark.parametrize(
    ("questions", "match"),
    [
        ({"q": {"type": "yes"}}, "`type` must be one of noul, choice, score"),
        ({"q": {"type": "choice", "instructions": "Which?"}}, "a choice question looks like"),
        ({"q": {"type": "score", "criteria": []}}, "needs `criteria`"),
        ({}, "with at least one question"),
    ],
)
def test_malformed_questions_fail_alone(client, questions, match):
    bad = {"state": "Hello", "questions": questions}
    records = run(client, "decision", [REQUESTS[0], bad, REQUESTS[1]])
    assert [record.state for record in records] == ["succeeded", "failed", "succeeded"]
    failed(records[1], "PipelineError", match)


def test_decision_assets_need_a_model_that_sees_images(client):
    with_image = {**REQUESTS[2], "state": "Is <img-1> broken?", "assets": {"<img-1>": picture()}}
    records = run(client, "decision", [with_image, REQUESTS[0]])
    failed(records[0], "PipelineError", "Images need a model whose processor handles them")
    assert records[1].state == "succeeded", records[1].error
