"""A job's result equals what transformers.pipeline returns for the same model and input, for every task."""

import io

import pytest
import soundfile
from PIL import Image

from devtools.media import encode_audio, picture, speech
from tests.support.compare import same
from tests.support.settings import model_name

pytestmark = pytest.mark.usefixtures("worker")

TEXTS = ["I loved this film.", "Terrible service, never again!", "ok"]


def run(client, task, inputs, parameters=None):
    ids = client.submit_many(task, inputs, model=model_name(task), parameters=parameters)
    records = client.wait_many(ids, timeout=120)
    return [records[job_id] for job_id in ids]


@pytest.mark.parametrize(
    ("task", "parameters"),
    [
        ("text-classification", None),
        ("text-classification", {"top_k": 2}),
        ("zero-shot-classification", {"candidate_labels": ["sports", "politics", "music"]}),
        ("zero-shot-classification", {"candidate_labels": ["good", "bad"], "multi_label": True}),
        ("feature-extraction", None),
    ],
)
def test_text_tasks_match_the_pipeline(client, reference, task, parameters):
    records = run(client, task, TEXTS, parameters)
    pipe = reference(task)
    for text, record in zip(TEXTS, records, strict=True):
        assert record.state == "succeeded", record.error
        assert same(record.result, pipe(text, **(parameters or {})))


def test_text_pairs_match_the_pipeline(client, reference):
    pair = {"text": "The cat sat.", "text_pair": "A cat was sitting."}
    [record] = run(client, "text-classification", [pair])
    assert record.state == "succeeded", record.error
    assert same(record.result, reference("text-classification")(dict(pair)))


def test_text_stored_in_object_storage_matches_the_pipeline(client, reference, upload):
    [record] = run(client, "text-classification", [upload(b"Stored text.", ".txt")])
    assert same(record.result, reference("text-classification")("Stored text."))


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_speech_recognition_matches_the_pipeline(client, reference, upload, fmt):
    data = encode_audio(speech("hello world, this is a test of speech recognition"), fmt)
    [record] = run(client, "automatic-speech-recognition", [upload(data, f".{fmt.lower()}")])
    assert record.state == "succeeded", record.error
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    expected = reference("automatic-speech-recognition")({"raw": samples, "sampling_rate": rate})
    assert same(record.result, expected)


@pytest.mark.parametrize("fmt", ["OGG", "MP3"])
def test_lossy_audio_is_transcribed(client, upload, fmt):
    data = encode_audio(speech("one two three"), fmt)
    [record] = run(client, "automatic-speech-recognition", [upload(data, f".{fmt.lower()}")])
    assert record.state == "succeeded", record.error
    assert isinstance(record.result["text"], str)


def test_speech_timestamps_match_the_pipeline(client, reference, upload):
    data = encode_audio(speech("timestamps for every word"), "WAV")
    params = {"return_timestamps": "word"}
    [record] = run(client, "automatic-speech-recognition", [upload(data, ".wav")], params)
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    expected = reference("automatic-speech-recognition")({"raw": samples, "sampling_rate": rate}, **params)
    assert record.state == "succeeded", record.error
    assert same(record.result, expected)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_classification_matches_the_pipeline(client, reference, upload, fmt):
    data = picture(80, 60, seed=3, fmt=fmt)
    [stored, inline] = run(client, "image-classification", [upload(data, f".{fmt.lower()}"), data])
    expected = reference("image-classification")(Image.open(io.BytesIO(data)).convert("RGB"))
    for record in (stored, inline):
        assert record.state == "succeeded", record.error
        assert same(record.result, expected)
