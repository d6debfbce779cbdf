"""Per modality: how fetched values become pipeline inputs, and how big each one is.

Sizes (characters, audio seconds, pixels) order the items of a micro-batch so that padding stays small.
Fetched values are bytes, or for large objects a temporary file (see worker.media); audio is decoded from
either frame by frame, and long audio's samples are kept in a temporary file (see worker.samples).

What media decodes to is bounded by ``Limits`` before memory or disk is spent: audio's source rate and duration,
a video's frame size and count, an image's pixels, all read from headers; audio is held to its duration while it
is decoded too (a header may lie). Nothing but fetched media reaches a media position: a string there (a URL, a
path) is refused, never handed to a pipeline, which would download or open it.
"""

import io
import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import av
import numpy as np
from PIL import Image

from pipeq.config.settings import Limits
from pipeq.config.tasks import MediaKind, TaskSpec
from pipeq.core.contract import InvalidJob, chat_messages, check_media_positions, check_text_chars
from pipeq.worker.errors import MediaTooLarge, UnreadableMedia, WrongInputKind
from pipeq.worker.samples import SPOOL_SAMPLE_BYTES, SampleSink, SpooledSamples, TooManySamples


@dataclass
class Decoded:
    """A pipeline input and its size in the modality's unit."""

    value: Any
    size: float
    resources: list[IO[bytes]] = field(default_factory=list)
    """Temporary files the input needs until its pipeline call is done (videos); see :meth:`release`."""

    def release(self) -> None:
        """Close (hence delete) the temporary files the input holds."""
        for resource in self.resources:
            resource.close()
        self.resources.clear()


def resident_bytes(value: Any) -> int:
    """About how many bytes of memory a decoded input holds: arrays (not those spooled to disk), images, text."""
    if isinstance(value, SpooledSamples):
        return 0
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, Image.Image):
        return value.width * value.height * len(value.getbands())
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(resident_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(resident_bytes(item) for item in value)
    return 0


Media = bytes | IO[bytes]
"""Encoded media: bytes, or a readable binary file (a spooled object)."""
DEFAULT_LIMITS = Limits()


def decode(spec: TaskSpec, raw: str | Media | dict, limits: Limits, sampling_rate: int | None = None) -> Decoded:
    """The pipeline input for ``raw`` under task ``spec``; raises a JobFailure saying what is wrong."""
    if isinstance(raw, dict):
        if not spec.dict_input_keys:
            raise WrongInputKind(f"{spec.name} takes no dict input")
        check_dict_input(raw, limits)
        if spec.name in MULTIMODAL_TASKS:
            return decode_multimodal(spec, raw, limits, sampling_rate)
        if "messages" in spec.dict_input_keys and ("messages" in raw or spec.modality == "text"):
            return decode_chat(raw, limits, sampling_rate)
        decoded = decode_media_in(raw, sampling_rate, limits=limits)
        if (check := DICT_INPUT_CHECKS.get(spec.name)) is not None:
            try:
                check(decoded.value)
            except WrongInputKind:
                decoded.release()
                raise
        return decoded
    if spec.modality == "dict":
        raise WrongInputKind(f"{spec.name} takes a dict input, e.g. {{{', '.join(sorted(spec.dict_input_keys))}}}")
    if spec.modality == "text":
        text = _text(raw, limits)
        return Decoded(text, float(len(text)))
    if isinstance(raw, str):
        raise WrongInputKind(f"{spec.name} takes {spec.modality}, not text: pass an s3:// reference or inline bytes")
    decoded = decode_media(spec.modality, raw, sampling_rate, limits)
    if spec.name in BARE_AUDIO_TASKS:
        decoded.value = decoded.value["raw"]
    return decoded


BARE_AUDIO_TASKS = frozenset({"zero-shot-audio-classification"})
"""Tasks whose pipeline takes audio as bare samples at its feature extractor's rate, not ``{"raw": ...}``."""
_TABLE_EXAMPLE = '{"table": {"city": ["Paris", "Rome"], "people": ["2.1 M", "2.8 M"]}, "query": "Which is larger?"}'


def check_table_question(raw: dict) -> None:
    """A table question is ``{"table": {column: [cell, ...], ...}, "query": ...}``: columns of equal length, at
    least one row, cells as strings; the query a non-empty string, or a list of them (asked in turn)."""
    table, query = raw.get("table"), raw.get("query")
    if not isinstance(table, dict) or not table:
        raise WrongInputKind(f"the table is a dict of columns (name: list of cells), e.g. {_TABLE_EXAMPLE}")
    for column, cells in table.items():
        if not isinstance(cells, list) or not all(isinstance(cell, str) for cell in cells):
            raise WrongInputKind(f'column {column!r} of the table must be a list of strings (numbers too: "42")')
    lengths = {column: len(cells) for column, cells in table.items()}
    if len(set(lengths.values())) != 1 or not min(lengths.values()):
        raise WrongInputKind(f"the table's columns must have the same number of cells, at least one: {lengths}")
    queries = query if isinstance(query, list) else [query]
    if not queries or not all(isinstance(text, str) and text.strip() for text in queries):
        raise WrongInputKind("the query is a non-empty string, or a list of them asked in turn about the table")


DICT_INPUT_CHECKS: dict[str, Callable[[dict], None]] = {"table-question-answering": check_table_question}
"""Per task, a check of a dict input's shape that fails a malformed one with a clear WrongInputKind."""


def is_fetched_media(value: Any) -> bool:
    """Whether ``value`` is a fetched object: bytes, or a spooled file (see worker.media)."""
    return isinstance(value, bytes) or hasattr(value, "read")


def decode_media(
    kind: MediaKind | str, raw: Media, sampling_rate: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> Decoded:
    """Audio as ``{"raw": samples, "sampling_rate": rate}`` (seconds), an RGB image (pixels), a video as the
    path of a temporary file (bytes); each within ``limits``."""
    if kind == "audio":
        rate = sampling_rate or 16_000
        samples = decode_audio(raw, rate, limits=limits)
        return Decoded({"raw": samples, "sampling_rate": rate}, len(samples) / rate)
    if kind == "video":
        return decode_video(raw, limits)
    image = decode_image(raw, limits)
    return Decoded(image, float(image.width * image.height))


MEDIA_KIND_OF_KEY: dict[str, MediaKind] = {
    "image": "image",
    "images": "image",
    "assets": "image",
    "audio": "audio",
    "audios": "audio",
    "video": "video",
    "videos": "video",
    "image_url": "image",
}
"""Which media a fetched object stands for, by the key it sits under (chat parts: by their ``type``)."""
_LABELS = frozenset({"role", "type"})
"""Keys of chat messages and parts that label content rather than carry it (not counted in the size)."""


def decode_media_in(
    value: Any, sampling_rate: int | None = None, kind: MediaKind | None = None, limits: Limits = DEFAULT_LIMITS
) -> Decoded:
    """``value`` (a dict input or a chat) with each fetched object in it decoded as the media its key names, within
    ``limits``; the size is the sum of the media's and the text's sizes."""
    resources: list[IO[bytes]] = []
    size = 0.0

    def walk(node: Any, kind: MediaKind | None) -> Any:
        nonlocal size
        if is_fetched_media(node):
            if kind is None:
                raise WrongInputKind("media where none is expected: put it under image(s), audio(s) or video(s)")
            decoded = decode_media(kind, node, sampling_rate, limits)
            resources.extend(decoded.resources)
            size += decoded.size
            return decoded.value
        if isinstance(node, dict):
            part_kind = node.get("type") if node.get("type") in ("image", "audio", "video") else None
            return {
                key: item if key in _LABELS else walk(item, MEDIA_KIND_OF_KEY.get(key, part_kind or kind))
                for key, item in node.items()
            }
        if isinstance(node, list):
            return [walk(item, kind) for item in node]
        if isinstance(node, str):
            size += len(node)
        return node

    try:
        return Decoded(walk(value, kind), size, resources)
    except BaseException:
        Decoded(None, 0.0, resources).release()
        raise


def decode_chat(raw: dict, limits: Limits, sampling_rate: int | None = None) -> Decoded:
    """A chat ``{"messages": [{"role": ..., "content": ...}, ...]}`` as the list of messages pipelines take;
    media in content parts (``{"type": "image", "image": <reference>}``) decoded. Its text is held to ``limits``
    by :func:`decode`, with every dict input's."""
    try:
        messages = chat_messages(raw, is_fetched_media)
    except InvalidJob as exc:
        raise WrongInputKind(str(exc)) from None
    return decode_media_in(messages, sampling_rate, limits=limits)


MULTIMODAL_TASKS = frozenset({"image-text-to-text", "any-to-any", "keypoint-matching"})
"""Tasks whose dict inputs (and chats) carry media, decoded into the shape their pipelines take."""


def decode_multimodal(spec: TaskSpec, raw: dict, limits: Limits, sampling_rate: int | None = None) -> Decoded:
    """A multimodal dict input or chat for its pipeline: audio as bare samples (at the rate the model's processor
    expects), a keypoint pair as the list of its two images."""
    if spec.name == "keypoint-matching":
        return decode_image_pair(raw, limits)
    if "messages" in raw:
        decoded = decode_chat(raw, limits, sampling_rate)
    else:
        decoded = decode_media_in(raw, sampling_rate, limits=limits)
    decoded.value = bare_audio(decoded.value)
    return decoded


def check_dict_input(raw: dict, limits: Limits) -> None:
    """Raise unless only fetched media sits where pipelines read media, and none elsewhere (WrongInputKind: a URL or
    path is never handed on), and the text is within ``limits`` (UnreadableMedia). The job was checked on receipt
    (see pipeq.core.contract); this holds whatever reaches decoding to the same rules."""
    try:
        check_media_positions(raw, is_fetched_media)
    except InvalidJob as exc:
        raise WrongInputKind(str(exc)) from None
    try:
        check_text_chars(raw, limits)
    except InvalidJob as exc:
        raise UnreadableMedia(str(exc)) from None


def decode_image_pair(raw: dict, limits: Limits = DEFAULT_LIMITS) -> Decoded:
    """``{"images": [first, second]}`` as the pair of RGB images keypoint matching takes."""
    images = raw.get("images")
    if not isinstance(images, list) or len(images) != 2:
        count = len(images) if isinstance(images, list) else int(images is not None)
        raise WrongInputKind(
            f'keypoint-matching matches a pair of images, {{"images": [first, second]}}, not {count} image(s)'
        )
    return decode_media_in(images, kind="image", limits=limits)


def bare_audio(value: Any) -> Any:
    """``value`` with each decoded audio, ``{"raw": samples, "sampling_rate": rate}``, replaced by its samples:
    multimodal processors take bare samples at their feature extractor's rate, the rate they were decoded at."""
    if isinstance(value, dict):
        if set(value) == {"raw", "sampling_rate"} and isinstance(value["raw"], np.ndarray):
            return value["raw"]
        return {key: bare_audio(item) for key, item in value.items()}
    if isinstance(value, list):
        return [bare_audio(item) for item in value]
    return value


def _text(raw: str | Media, limits: Limits) -> str:
    if not isinstance(raw, str | bytes):
        raw = raw.read(4 * limits.max_text_chars + 1)  # UTF-8: at most 4 bytes a character
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableMedia(f"the input is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if len(raw) > limits.max_text_chars:
        raise UnreadableMedia(f"text of {len(raw)} characters exceeds the limit of {limits.max_text_chars}")
    return raw


def decode_audio(
    data: Media | str | os.PathLike,
    sampling_rate: int,
    spool_bytes: int = SPOOL_SAMPLE_BYTES,
    limits: Limits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Mono float32 samples at ``sampling_rate`` from any container PyAV reads (wav, flac, mp3, ogg, ...).

    ``data`` is bytes, a binary file or a path. PyAV reads files in small pieces and the samples are collected
    frame by frame; past ``spool_bytes`` they go to a temporary file, mapped back as the returned array (see
    worker.samples), so long audio never sits in memory whole. The source rate and the duration its header
    declares are held to ``limits`` before anything is decoded, and the samples to that duration while decoding.
    """
    max_samples = int((limits.max_audio_seconds + 1) * sampling_rate)  # a second for codecs' padding
    sink = SampleSink(spool_bytes, max_samples)
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        with av.open(source, mode="r") as container:
            if not container.streams.audio:
                raise UnreadableMedia("unreadable audio: the file has no audio stream")
            stream = container.streams.audio[0]
            check_audio_header(stream, container, limits)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    sink.add(out.to_ndarray())
            for out in resampler.resample(None):
                sink.add(out.to_ndarray())
    except TooManySamples:
        sink.discard()
        raise MediaTooLarge(
            f"audio decodes to more than {limits.max_audio_seconds:g} s, the limit (limits.max_audio_seconds), "
            "more than its header declares: split it into shorter pieces"
        ) from None
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        sink.discard()
        raise UnreadableMedia(f"unreadable audio: {exc}") from None
    except BaseException:
        sink.discard()
        raise
    if sink.count == 0:
        sink.discard()
        raise UnreadableMedia("unreadable audio: no samples could be decoded")
    return sink.samples()


def check_audio_header(stream: Any, container: Any, limits: Limits) -> None:
    """Raise MediaTooLarge if the audio's header declares a sampling rate outside ``limits`` (resampling from a
    tiny rate multiplies the samples) or a duration over ``limits.max_audio_seconds``."""
    rate = stream.sample_rate
    if not rate:
        raise UnreadableMedia("unreadable audio: its header declares no sampling rate")
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise MediaTooLarge(
            f"audio sampled at {rate} Hz, outside the {limits.min_sample_rate} to {limits.max_sample_rate} Hz pipeq "
            "decodes (limits.min_sample_rate, limits.max_sample_rate): resample it, e.g. to 16000 Hz"
        )
    seconds = declared_seconds(stream, container)
    if seconds is not None and seconds > limits.max_audio_seconds:
        raise MediaTooLarge(
            f"audio of {seconds:.0f} s (as its header declares) exceeds the limit of {limits.max_audio_seconds:g} s "
            "(limits.max_audio_seconds): split it into shorter pieces"
        )


def declared_seconds(stream: Any, container: Any) -> float | None:
    """The duration of ``stream`` as its container's header declares it, in seconds (None if it does not say)."""
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def decode_video(data: Media, limits: Limits = DEFAULT_LIMITS) -> Decoded:
    """A video as the path of a temporary copy (pipelines open videos by path), checked to hold a video stream of
    frames and a frame count within ``limits`` (as declared, and for the first frames as decoded); the size is its
    length in bytes. The file lives until the Decoded input is released."""
    copy = tempfile.NamedTemporaryFile(prefix="pipeq-video-", suffix=".video")  # noqa: SIM115 (released later)
    try:
        if isinstance(data, bytes | bytearray):
            copy.write(data)
        else:
            shutil.copyfileobj(data, copy)
        copy.flush()
        try:
            with av.open(copy.name, mode="r") as container:
                if not container.streams.video:
                    raise UnreadableMedia("unreadable video: the file has no video stream")
                stream = container.streams.video[0]
                check_video_header(stream, container, limits)
                first = list(itertools.islice(container.decode(stream), 2))
                if len(first) < 2:
                    raise UnreadableMedia("unreadable video: it has fewer than two frames (a still image?)")
                for frame in first:
                    _check_frame_pixels(frame.width, frame.height, limits)
        except (av.error.FFmpegError, ValueError, IndexError) as exc:
            raise UnreadableMedia(f"unreadable video: {exc}") from None
    except BaseException:
        copy.close()
        raise
    return Decoded(copy.name, float(copy.tell()), [copy])


def check_video_header(stream: Any, container: Any, limits: Limits) -> None:
    """Raise MediaTooLarge if the video's header declares frames larger than ``limits.max_frame_pixels`` or more
    of them than ``limits.max_video_frames`` (counted, or its duration times its frame rate)."""
    _check_frame_pixels(stream.width, stream.height, limits)
    frames = stream.frames
    if not frames and (rate := stream.average_rate or stream.guessed_rate):
        seconds = declared_seconds(stream, container)
        frames = round(seconds * rate) if seconds is not None else 0
    if frames > limits.max_video_frames:
        raise MediaTooLarge(
            f"a video of {frames} frames exceeds the limit of {limits.max_video_frames} (limits.max_video_frames):"
            " cut it into shorter clips or lower its frame rate"
        )


def _check_frame_pixels(width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_frame_pixels:
        raise MediaTooLarge(
            f"video frames of {width}x{height} = {width * height} pixels exceed the limit of "
            f"{limits.max_frame_pixels} (limits.max_frame_pixels): scale the video down"
        )


def video_frames(path: str, at_most: int) -> int | None:
    """How many frames the video at ``path`` has, counted up to ``at_most`` (None if it cannot be read)."""
    try:
        with av.open(path, mode="r") as container:
            return sum(1 for _ in itertools.islice(container.decode(video=0), at_most))
    except (av.error.FFmpegError, ValueError, IndexError):
        return None


def decode_image(data: Media, limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """An RGB image from bytes or a binary file Pillow reads; refused past ``limits.max_image_pixels`` as its
    header declares them, before it is decoded; fully loaded so corrupt files fail here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # held to max_image_pixels instead
            image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
            if image.width * image.height > limits.max_image_pixels:
                raise MediaTooLarge(
                    f"an image of {image.width}x{image.height} = {image.width * image.height} pixels exceeds the "
                    f"limit of {limits.max_image_pixels} (limits.max_image_pixels): scale it down"
                )
            image.load()
    except Image.DecompressionBombError as exc:
        raise MediaTooLarge(f"image too large to decode: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableMedia(f"unreadable image: {exc}") from None
    return image.convert("RGB")
