"""A job's result equals what transformers.pipeline returns for the same model and input, for every task."""

import pytest

from devtools.media import SAMPLING_RATE, encode_audio, picture, speech
from pipeq.worker.decoding import decode_audio
from tests.support.decoded import rgb, samples_of
from tests.support.jobs import check, run

pytestmark = pytest.mark.usefixtures("worker")

TEXTS = ["I loved this film.", "Terrible service, never again!", "ok"]
ASR = "automatic-speech-recognition"


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
    check(records, [pipe(text, **(parameters or {})) for text in TEXTS])


def test_text_pairs_match_the_pipeline(client, reference):
    pair = {"text": "The cat sat.", "text_pair": "A cat was sitting."}
    records = run(client, "text-classification", [pair])
    check(records, [reference("text-classification")(dict(pair))])


def test_text_stored_in_object_storage_matches_the_pipeline(client, reference, upload):
    records = run(client, "text-classification", [upload(b"Stored text.", ".txt")])
    check(records, [reference("text-classification")("Stored text.")])


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_speech_recognition_matches_the_pipeline(client, reference, upload, fmt):
    data = encode_audio(speech("hello world, this is a test of speech recognition"), fmt)
    records = run(client, ASR, [upload(data, f".{fmt.lower()}")])
    check(records, [reference(ASR)({"raw": samples_of(data), "sampling_rate": SAMPLING_RATE})])


@pytest.mark.parametrize("fmt", ["OGG", "MP3"])
def test_lossy_audio_is_transcribed_as_the_pipeline_transcribes_its_decoded_samples(client, reference, upload, fmt):
    data = encode_audio(speech("one two three"), fmt)
    records = run(client, ASR, [upload(data, f".{fmt.lower()}")])
    check(records, [reference(ASR)({"raw": decode_audio(data, SAMPLING_RATE), "sampling_rate": SAMPLING_RATE})])


def test_speech_timestamps_match_the_pipeline(client, reference, upload):
    data = encode_audio(speech("timestamps for every word"), "WAV")
    params = {"return_timestamps": "word"}
    records = run(client, ASR, [upload(data, ".wav")], params)
    expected = reference(ASR)({"raw": samples_of(data), "sampling_rate": SAMPLING_RATE}, **params)
    assert expected["chunks"], "the reference has no timestamped words to compare"
    check(records, [expected])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_classification_matches_the_pipeline(client, reference, upload, fmt):
    data = picture(80, 60, seed=3, fmt=fmt)
    records = run(client, "image-classification", [upload(data, f".{fmt.lower()}"), data])  # stored, inline
    expected = reference("image-classification")(rgb(data))
    check(records, [expected, expected])
