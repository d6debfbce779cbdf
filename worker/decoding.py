"""Per modality: how fetched values become pipeline inputs, and how big each one is.

Sizes (characters, audio seconds, pixels) order the items of a micro-batch so that padding stays small.
"""

import io
import warnings
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from PIL import Image

from config.settings import Limits
from config.tasks import TaskSpec
from worker.errors import UnreadableMedia, WrongInputKind


@dataclass
class Decoded:
    """A pipeline input and its size in the modality's unit."""

    value: Any
    size: float


def decode(spec: TaskSpec, raw: str | bytes | dict, limits: Limits, sampling_rate: int | None = None) -> Decoded:
    """The pipeline input for ``raw`` under task ``spec``; raises a JobFailure saying what is wrong."""
    if isinstance(raw, dict):
        if not spec.dict_input_keys:
            raise WrongInputKind(f"{spec.name} takes no dict input")
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


def _text(raw: str | bytes, limits: Limits) -> str:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableMedia(f"the input is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if len(raw) > limits.max_text_chars:
        raise UnreadableMedia(f"text of {len(raw)} characters exceeds the limit of {limits.max_text_chars}")
    return raw


def decode_audio(data: bytes, sampling_rate: int) -> np.ndarray:
    """Mono float32 samples at ``sampling_rate`` from any container PyAV reads (wav, flac, mp3, ogg, ...)."""
    chunks: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
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


def decode_image(data: bytes) -> Image.Image:
    """An RGB image from bytes Pillow reads; fully loaded so corrupt files fail here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UnreadableMedia(f"unreadable image: {exc}") from None
    return image.convert("RGB")
