"""Decoding within limits: sizes read from headers before anything is decoded (audio rate and duration, video
frame size and count, image pixels), audio held to its duration while decoding, dict inputs' text counted, and
nothing but fetched media at a media position."""

import io
import re

import numpy as np
import pytest

from devtools.media import encode_audio, picture, speech, video
from pipeq.config.settings import Limits
from pipeq.config.tasks import TASKS
from pipeq.core.contract import Job, make_input
from pipeq.worker import decoding
from pipeq.worker.decoding import decode, decode_audio, decode_image, decode_media_in, decode_video
from pipeq.worker.errors import MediaTooLarge, UnreadableMedia, WrongInputKind
from pipeq.worker.samples import SampleSink, TooManySamples
from tests.support.bombs import flac_declaring, flat_video, png_declaring, wav

ASR = TASKS["automatic-speech-recognition"]
VISION = TASKS["image-text-to-text"]
TABLE = TASKS["table-question-answering"]


@pytest.fixture
def sink_calls(monkeypatch) -> list[int]:
    """The sizes of the pieces SampleSinks keep: none means nothing was decoded, let alone spooled."""
    calls: list[int] = []
    add = SampleSink.add

    def counting(self, piece):
        add(self, piece)
        calls.append(piece.size)

    monkeypatch.setattr(SampleSink, "add", counting)
    return calls


# -- audio ---------------------------------------------------------------------------------------------------------


def test_a_tiny_sampling_rate_is_refused_before_decoding(sink_calls):
    with pytest.raises(MediaTooLarge, match=r"sampled at 1 Hz, outside the 4000 to 192000 Hz .*limits.min_sample"):
        decode(ASR, wav(rate=1, samples=200), Limits(), 16_000)  # 444 bytes: 3.2 M samples once resampled
    assert sink_calls == []


def test_a_huge_sampling_rate_is_refused():
    with pytest.raises(MediaTooLarge, match="sampled at 384000 Hz"):
        decode_audio(wav(rate=384_000, samples=100), 16_000)
    allowed = decode_audio(wav(rate=384_000, samples=38_400), 16_000, limits=Limits(max_sample_rate=384_000))
    assert len(allowed) == pytest.approx(1600, abs=32)


def test_a_header_declaring_hours_is_refused_before_decoding(sink_calls):
    flac = flac_declaring(seconds=5 * 3600, holding=1.0)
    with pytest.raises(MediaTooLarge, match=r"audio of 18000 s \(as its header declares\).*limits.max_audio_seconds"):
        decode_audio(flac, 16_000)
    assert sink_calls == []
    assert len(decode_audio(flac, 16_000, limits=Limits(max_audio_seconds=6 * 3600))) == 16_000  # it holds 1 s


def test_hours_at_a_tiny_rate_are_refused_by_duration_too(sink_calls):
    bomb = wav(rate=1, samples=5 * 3600)  # 36 KB, five hours: 288 M samples at 16 kHz
    with pytest.raises(MediaTooLarge, match=r"audio of 18000 s .*limits.max_audio_seconds"):
        decode_audio(bomb, 16_000, limits=Limits(min_sample_rate=1))
    assert sink_calls == []


def test_audio_longer_than_its_header_declares_stops_at_the_limit(monkeypatch, sink_calls):
    monkeypatch.setattr(decoding, "declared_seconds", lambda stream, container: None)  # a header that says nothing
    clip = encode_audio(np.zeros(16_000 * 4, np.float32), "WAV")
    with pytest.raises(MediaTooLarge, match=r"more than 2 s, the limit .*more than its header declares"):
        decode_audio(clip, 16_000, spool_bytes=1024, limits=Limits(max_audio_seconds=2))
    assert 2 * 16_000 <= sum(sink_calls) <= 3 * 16_000  # up to the limit and its second of padding, not the clip


def test_audio_within_the_limits_decodes_as_before():
    samples = speech("within the limits")
    seconds = len(samples) / 16_000
    raw = decode_audio(encode_audio(samples, "FLAC"), 16_000, limits=Limits(max_audio_seconds=seconds))
    assert len(raw) == len(samples)


def test_a_sink_refuses_a_piece_past_its_maximum_and_keeps_what_it_had():
    sink = SampleSink(spool_bytes=16, max_samples=10)
    sink.add(np.ones(6))
    with pytest.raises(TooManySamples):
        sink.add(np.ones(5))
    sink.add(np.ones(4))
    assert sink.count == 10 and np.array_equal(sink.samples(), np.ones(10, np.float32))


# -- video ---------------------------------------------------------------------------------------------------------


def test_oversized_frames_are_refused_from_the_header():
    data = video(frames=2, width=64, height=48)
    with pytest.raises(MediaTooLarge, match=r"frames of 64x48 = 3072 pixels exceed the limit of 3071 .*max_frame"):
        decode_video(data, Limits(max_frame_pixels=3071))
    decode_video(data, Limits(max_frame_pixels=3072)).release()


@pytest.mark.parametrize("fmt", ["mp4", "matroska"])  # matroska declares no frame count: duration x frame rate
def test_too_many_frames_are_refused_from_the_header(fmt):
    data = flat_video(frames=40, width=16, height=16, fmt=fmt)
    with pytest.raises(MediaTooLarge, match=r"a video of 40 frames exceeds the limit of 39 \(limits.max_video_frames"):
        decode(TASKS["video-classification"], data, Limits(max_video_frames=39))
    decode_video(data, Limits(max_video_frames=40)).release()


def test_videos_inside_dict_inputs_are_held_to_the_limits_too():
    raw = {"text": "<video> What happens?", "videos": video(frames=2)}
    with pytest.raises(MediaTooLarge, match="max_frame_pixels"):
        decode(TASKS["any-to-any"], raw, Limits(max_frame_pixels=100))


# -- images --------------------------------------------------------------------------------------------------------


def test_an_image_over_the_pixel_limit_is_refused_from_its_header():
    with pytest.raises(MediaTooLarge, match=r"10000x10000 = 100000000 pixels exceeds .*limits.max_image_pixels"):
        decode_image(png_declaring(10_000, 10_000))  # were it decoded, it would be found truncated
    with pytest.raises(MediaTooLarge, match=r"64x48 = 3072 pixels exceeds the limit of 3000"):
        decode_image(picture(64, 48), Limits(max_image_pixels=3000))


def test_pillows_own_bomb_check_still_holds_past_a_raised_limit():
    with pytest.raises(MediaTooLarge, match="decompression bomb"):
        decode_image(png_declaring(20_000, 10_000), Limits(max_image_pixels=10**9))


@pytest.mark.parametrize(
    "raw",
    [
        {"images": [picture(), png_declaring(10_000, 10_000)], "text": "<image> <image> Same?"},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": png_declaring(10_000, 10_000)}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": picture(80, 80)}}]}]},
    ],
    ids=["images", "chat part", "image_url part"],
)
def test_images_inside_dict_inputs_are_held_to_the_pixel_limit(raw):
    with pytest.raises(MediaTooLarge, match=r"limits\.max_image_pixels"):
        decode(VISION, raw, Limits(max_image_pixels=6400 - 1))


def test_an_image_url_part_with_fetched_media_decodes_to_an_image():
    chat = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": picture(40, 30)}}]}]
    part = decode_media_in(chat).value[0]["content"][0]
    assert part["image_url"]["url"].size == (40, 30)


# -- dict inputs: only fetched media where media goes, text counted -------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"images": "http://127.0.0.1:1/latest/meta-data/", "text": "<image>"}, "(a URL), not media: upload it"),
        ({"images": ["/etc/passwd"], "text": "<image>"}, "'images' holds str '/etc/passwd' (a path)"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "file:///etc/passwd"}]}]},
            "'image_url' holds str 'file:///etc/passwd' (a URL)",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "video", "url": "https://example.com/a.mp4"}]}]},
            "'url' holds str",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "base64": "iVBORw0KGgo="}]}]},
            "a part of type 'image' has one key besides its type, one of image, url, path; not base64",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
            "a part is",
        ),
        ({"messages": [{"role": "root", "content": "hi"}]}, "the role 'root'"),
    ],
)
def test_urls_and_paths_never_reach_a_pipeline(raw, message):
    with pytest.raises(WrongInputKind, match=re.escape(message)):
        decode(VISION, raw, Limits())


def test_a_url_in_text_is_text():
    """Prose and table cells may mention URLs and paths: only where media goes is a string refused."""
    value = {"table": {"url": ["http://127.0.0.1/latest/", "/etc/passwd"]}, "query": "Who owns http://127.0.0.1/?"}
    Job(task=TABLE.name, model="m", input=make_input(value)).check(Limits())
    assert decode(TABLE, value, Limits()).value == value


def test_every_string_of_a_dict_input_counts_against_max_text_chars():
    raw = {"table": {"city": ["Paris", "Rome"], "people": ["2.1 M", "2.8 M"]}, "query": "Which is larger?"}
    size = len("city" + "Paris" + "Rome" + "people" + "2.1 M" + "2.8 M" + "Which is larger?")
    decode(TABLE, raw, Limits(max_text_chars=size))
    with pytest.raises(UnreadableMedia, match=f"text in the dict input of {size} characters exceeds the limit"):
        decode(TABLE, raw, Limits(max_text_chars=size - 1))


def test_media_is_decoded_only_where_media_goes():
    with pytest.raises(WrongInputKind, match="media where none is expected \\(under 'table'\\)"):
        decode(TABLE, {"table": {"image": [io.BytesIO(picture())]}, "query": "q"}, Limits())
