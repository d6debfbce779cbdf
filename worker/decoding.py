"""Per modality: how fetched values become pipeline inputs, and how big each one is.

Sizes (characters, audio seconds, pixels) order the items of a micro-batch so that padding stays small.
Fetched values are bytes, or for large objects a temporary file (see worker.media); audio is decoded from
either frame by frame, so only the decoded samples are held whole.
"""

import io
import os
import warnings
from dataclasses import dataclass
from typing import IO, Any

import av
import numpy as np
from PIL import Image

from config.settings import Limits
from config.tasks import TaskSpec
from pipeq.contract import InvalidJob, chat_messages, chat_size
from worker.errors import UnreadableMedia, WrongInputKind


@dataclass
class Decoded:
    """A pipeline input and its size in the modality's unit."""

    value: Any
    size: float


Media = bytes | IO[bytes]
"""Encoded media: bytes, or a readable binary file (a spooled object)."""


def decode(spec: TaskSpec, raw: str | Media | dict, limits: Limits, sampling_rate: int | None = None) -> Decoded:
    """The pipeline input for ``raw`` under task ``spec``; raises a JobFailure saying what is wrong."""
    if isinstance(raw, dict):
        if not spec.dict_input_keys:
            raise WrongInputKind(f"{spec.name} takes no dict input")
        if "messages" in spec.dict_input_keys:
            return decode_chat(raw, limits)
        return Decoded(raw, float(sum(len(str(v)) for v in raw.values())))
    if spec.modality == "text":
        text = _text(raw, limits)
        return Decoded(text, float(len(text)))
    if isinstance(raw, str):
        raise WrongInputKind(f"{spec.name} takes {spec.modality}, not text: pass an s3:// reference or inline bytes")
    if spec.modality == "audio":
        rate = sampling_rate or 16_000
        samples = decode_audio(raw, rate)
        return Decoded({"raw": samples, "sampling_rate": rate}, len(samples) / rate)
    image = decode_image(raw)
    return Decoded(image, float(image.width * image.height))


def decode_chat(raw: dict, limits: Limits) -> Decoded:
    """A chat ``{"messages": [{"role": ..., "content": ...}, ...]}`` as the list of messages pipelines take."""
    try:
        messages = chat_messages(raw)
    except InvalidJob as exc:
        raise WrongInputKind(str(exc)) from None
    size = chat_size(messages)
    if size > limits.max_text_chars:
        raise UnreadableMedia(f"chat of {size} characters exceeds the limit of {limits.max_text_chars}")
    return Decoded([dict(message) for message in messages], float(size))


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


def decode_audio(data: Media | str | os.PathLike, sampling_rate: int) -> np.ndarray:
    """Mono float32 samples at ``sampling_rate`` from any container PyAV reads (wav, flac, mp3, ogg, ...).

    ``data`` is bytes, a binary file or a path. PyAV reads files in small pieces and the samples are
    collected per frame, so the peak memory is about twice the decoded samples, whatever the file's size.
    """
    chunks: list[np.ndarray] = []
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        with av.open(source, mode="r") as container:
            if not container.streams.audio:
                raise UnreadableMedia("unreadable audio: the file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise UnreadableMedia(f"unreadable audio: {exc}") from None
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise UnreadableMedia("unreadable audio: no samples could be decoded")
    return np.concatenate(chunks).astype(np.float32, copy=False)


def decode_image(data: Media) -> Image.Image:
    """An RGB image from bytes or a binary file Pillow reads; fully loaded so corrupt files fail here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UnreadableMedia(f"unreadable image: {exc}") from None
    return image.convert("RGB")
