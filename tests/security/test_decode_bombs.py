"""Decoded sizes are bounded before memory or disk is spent (issue 10): small files whose headers declare a tiny
sampling rate, hours of audio, huge frames or pictures fail their jobs with MediaTooLarge naming the limit, before
anything is decoded; a dict input carries few media references, and all its strings count against
max_text_chars."""

import pytest

from devtools.media import picture
from pipeq.core.contract import Job, make_input
from pipeq.producer import InvalidJob
from pipeq.worker.errors import UnreadableMedia
from pipeq.worker.samples import SampleSink
from tests.security.raw_jobs import final_record, publish_raw
from tests.support.bombs import flac_declaring, flat_video, png_declaring, wav
from tests.support.jobs import failed, run
from tests.support.settings import model_name

pytestmark = pytest.mark.usefixtures("worker")

ASR, VIDEO, VISION, TABLE = (
    "automatic-speech-recognition",
    "video-classification",
    "image-text-to-text",
    "table-question-answering",
)


@pytest.fixture
def kept_samples(monkeypatch) -> list[int]:
    """Pieces of samples decoders try to keep: each fails its job at once, so that a decode that starts keeping
    samples (spooling gigabytes, before the limits) is seen without spending the time or the disk."""
    pieces: list[int] = []

    def refuse(self, piece):
        pieces.append(piece.size)
        raise UnreadableMedia("the test's sink keeps no samples: the audio was being decoded")

    monkeypatch.setattr(SampleSink, "add", refuse)
    return pieces


def test_audio_headers_declaring_a_tiny_rate_or_hours_fail_with_media_too_large_without_spooling(client, kept_samples):
    bombs = {
        "the 444-byte WAV at 1 Hz (3.2 M samples at 16 kHz)": wav(rate=1, samples=200),
        "five hours at 1 Hz (288 M samples at 16 kHz)": wav(rate=1, samples=5 * 3600),
        "a FLAC header declaring five hours": flac_declaring(seconds=5 * 3600),
    }
    assert len(bombs["the 444-byte WAV at 1 Hz (3.2 M samples at 16 kHz)"]) == 444
    records = dict(zip(bombs, run(client, ASR, list(bombs.values())), strict=True))
    failed(records["the 444-byte WAV at 1 Hz (3.2 M samples at 16 kHz)"], "MediaTooLarge", "limits.min_sample_rate")
    failed(records["five hours at 1 Hz (288 M samples at 16 kHz)"], "MediaTooLarge", "sampled at 1 Hz")
    failed(records["a FLAC header declaring five hours"], "MediaTooLarge", "18000 s (as its header declares)")
    failed(records["a FLAC header declaring five hours"], "MediaTooLarge", "limits.max_audio_seconds")
    assert kept_samples == []


def test_a_video_with_oversized_frames_is_refused(client):
    huge = flat_video(frames=2, width=4096, height=4096)  # 190 KB
    [record] = run(client, VIDEO, [huge])
    failed(record, "MediaTooLarge", "video frames of 4096x4096 = 16777216 pixels exceed the limit of 8847360")
    failed(record, "MediaTooLarge", "limits.max_frame_pixels")


def test_a_picture_over_the_pixel_limit_inside_a_dict_input_is_refused(client):
    value = {"images": [picture(), png_declaring(8000, 8000)], "text": "<image> <image> Which is larger?"}
    [record] = run(client, VISION, [value], {"max_new_tokens": 2})
    failed(record, "MediaTooLarge", "8000x8000 = 64000000 pixels exceeds the limit of 50000000")


def too_many_references(count: int) -> dict:
    images = [f"s3://media/no-such-picture-{index}.png" for index in range(count)]
    return {"images": images, "text": "<image> " * count + "What changed?"}


def test_too_many_media_references_are_refused_before_any_is_fetched(client):
    with pytest.raises(InvalidJob, match=r"holds 500 media references, more than the limit of 16 \(limits\.max_media"):
        client.submit(VISION, too_many_references(500), model=model_name(VISION))
    job = Job(task=VISION, model=model_name(VISION), input=make_input(too_many_references(500)))
    failed(final_record(client, publish_raw(client, job)), "InvalidJob", "limits.max_media_references")  # not fetched


def test_every_string_of_a_dict_input_counts_against_max_text_chars(client):
    table = {f"column {index}": ["x" * 1000] for index in range(201)}  # no string over 1000 characters
    value = {"table": table, "query": "Which column?"}
    size = sum(len(name) + 1000 for name in table) + len("Which column?")
    with pytest.raises(InvalidJob, match=rf"text in the dict input of {size} characters exceeds the limit of 200000"):
        client.submit(TABLE, value, model=model_name(TABLE))
    job = Job(task=TABLE, model=model_name(TABLE), input=make_input(value))
    failed(final_record(client, publish_raw(client, job)), "InvalidJob", "limits.max_text_chars")
