"""Decoding fetched media per modality, with real speech and pictures, and corrupt files."""

import io
from pathlib import Path

import av
import numpy as np
import pytest

from devtools.media import encode_audio, picture, speech, truncated, video
from pipeq.config.settings import Limits
from pipeq.config.tasks import TASKS
from pipeq.worker.decoding import decode, decode_audio, decode_media_in
from pipeq.worker.errors import UnreadableMedia, WrongInputKind

ASR = TASKS["automatic-speech-recognition"]
IMAGE = TASKS["image-classification"]
TEXT = TASKS["text-classification"]


@pytest.fixture(scope="module")
def samples():
    return speech("the quick brown fox jumps over the lazy dog")


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_every_audio_format_decodes_to_mono_16k(samples, fmt):
    decoded = decode(ASR, encode_audio(samples, fmt), Limits(), 16_000)
    assert decoded.value["sampling_rate"] == 16_000
    assert decoded.value["raw"].dtype.name == "float32" and decoded.value["raw"].ndim == 1
    assert decoded.size == pytest.approx(len(samples) / 16_000, abs=0.1)  # codecs pad a few frames


def test_lossless_audio_decodes_to_the_same_samples(samples):
    raw = decode_audio(encode_audio(samples, "WAV"), 16_000)
    assert np.allclose(raw, samples, atol=1 / 32768 + 1e-6)


def test_stereo_audio_decodes_to_one_channel_of_the_same_length(samples):
    stereo = np.stack([samples, samples * 0.5], axis=1)
    assert decode_audio(encode_audio(stereo, "WAV"), 16_000).shape == (len(samples),)  # not interleaved, not 2-D


def test_audio_is_resampled_to_the_models_rate(samples):
    raw = decode_audio(encode_audio(samples, "WAV"), 8_000)
    assert len(raw) == pytest.approx(len(samples) / 2, abs=64)


@pytest.mark.parametrize("data", [b"not audio at all" * 10, truncated(b"RIFF\x00\x00WAVEfmt ")])
def test_corrupt_audio_is_unreadable(data):
    with pytest.raises(UnreadableMedia, match="unreadable audio"):
        decode(ASR, data, Limits(), 16_000)


def test_truncated_images_are_unreadable():
    with pytest.raises(UnreadableMedia, match="unreadable image"):
        decode(IMAGE, truncated(picture(), 60), Limits())


def test_images_decode_to_rgb_and_measure_pixels():
    decoded = decode(IMAGE, picture(64, 48, fmt="JPEG"), Limits())
    assert decoded.value.mode == "RGB"
    assert decoded.size == 64 * 48


def test_text_for_a_media_task_is_the_wrong_kind():
    with pytest.raises(WrongInputKind, match="takes audio, not text"):
        decode(ASR, "hello", Limits())


def test_text_objects_must_be_utf8_and_within_limits():
    assert decode(TEXT, "héllo".encode(), Limits()).value == "héllo"
    with pytest.raises(UnreadableMedia, match="not UTF-8"):
        decode(TEXT, b"\xff\xfe\x00bad", Limits())
    with pytest.raises(UnreadableMedia, match="exceeds the limit"):
        decode(TEXT, "x" * 11, Limits(max_text_chars=10))


def test_media_inside_a_dict_decodes_by_the_key_it_sits_under(samples):
    wav = encode_audio(samples, "WAV")
    raw = {"images": [picture(40, 30), io.BytesIO(picture(20, 10))], "audio": wav, "text": "describe"}
    decoded = decode_media_in(raw)
    assert [image.size for image in decoded.value["images"]] == [(40, 30), (20, 10)]
    assert decoded.value["audio"]["sampling_rate"] == 16_000
    assert decoded.value["text"] == "describe"
    assert decoded.size == pytest.approx(40 * 30 + 20 * 10 + len(samples) / 16_000 + len("describe"), rel=1e-3)


def test_chat_parts_decode_by_their_type():
    chat = {
        "messages": [{"role": "user", "content": [{"type": "image", "url": picture()}, {"type": "text", "text": "hi"}]}]
    }
    decoded = decode(TASKS["image-text-to-text"], chat, Limits())
    part = decoded.value[0]["content"][0]
    assert part["type"] == "image" and part["url"].size == (64, 48)
    assert decoded.size == 64 * 48 + len("hi")


def test_media_where_none_is_expected_is_the_wrong_kind():
    with pytest.raises(WrongInputKind, match="media where none is expected"):
        decode(TASKS["table-question-answering"], {"table": picture(), "query": "q"}, Limits())
    with pytest.raises(UnreadableMedia, match="unreadable image"):
        decode(TASKS["keypoint-matching"], {"images": [picture(), truncated(picture())]}, Limits())


def test_a_dict_only_task_refuses_plain_media():
    with pytest.raises(WrongInputKind, match="takes a dict input"):
        decode(TASKS["keypoint-matching"], picture(), Limits())


def test_videos_become_temporary_files_that_go_with_their_input():
    decoded = decode(TASKS["video-classification"], video(), Limits())
    path = Path(decoded.value)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 8
    decoded.release()
    assert not path.exists()


@pytest.mark.parametrize("data", [picture(), truncated(video()), b"not a video"])
def test_what_is_not_a_video_is_unreadable(data):
    with pytest.raises(UnreadableMedia, match="unreadable video"):
        decode(TASKS["video-classification"], data, Limits())


@pytest.mark.parametrize(
    ("task", "raw"),
    [
        ("decision", {"state": "Is <img> broken?", "questions": {}, "assets": {"<img>": "/etc/passwd"}}),
        ("decision", {"state": "Is <img> broken?", "questions": {}, "assets": {"<img>": "http://10.0.0.1/x.png"}}),
        ("text-generation", {"messages": [{"role": "user", "content": [{"type": "image", "url": "http://x/y"}]}]}),
        ("image-text-to-text", {"images": "/etc/passwd", "text": "<image> what is it?"}),
    ],
)
def test_urls_and_paths_are_never_opened_by_the_worker(task, raw):
    with pytest.raises(WrongInputKind, match="URLs and paths are not fetched"):
        decode(TASKS[task], raw, Limits())
