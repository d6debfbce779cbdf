"""Pipeline outputs as JSON: numpy and torch values as numbers and lists, images as PNG (base64).

Media in results takes the shape ``{"content_type": "image/png", "data": "<base64>"}`` (audio: float32 WAV,
``"audio/wav"``); results too large to travel inline go to the results bucket whole (see pipeq.core.results).
"""

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import soundfile
from PIL import Image


def encoded(content_type: str, data: bytes) -> dict[str, str]:
    """Media bytes as a JSON value."""
    return {"content_type": content_type, "data": base64.b64encode(data).decode("ascii")}


def encode_image(image: Image.Image) -> dict[str, str]:
    """An image (a mask, a depth map) as lossless PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return encoded("image/png", buffer.getvalue())


def encode_audio(samples: Any, sampling_rate: int) -> dict[str, str]:
    """Samples, ``(samples,)`` or ``(channels, samples)``, as a float32 WAV: playable, and lossless."""
    frames = np.atleast_1d(np.asarray(samples, dtype=np.float32)).T  # soundfile takes (samples, channels)
    buffer = io.BytesIO()
    soundfile.write(buffer, frames, sampling_rate, format="WAV", subtype="FLOAT")
    return encoded("audio/wav", buffer.getvalue())


def _playable_audio(output: dict) -> dict:
    """text-to-audio's ``{"audio": samples, "sampling_rate": rate}`` with the samples as a WAV file."""
    return {**output, "audio": encode_audio(output["audio"], output["sampling_rate"])}


def encode_mask(mask: Any) -> dict[str, str]:
    """A boolean (height, width) mask as a 1-bit PNG: decoded, ``np.array(image)`` gives the boolean array back."""
    return encode_image(Image.fromarray(np.asarray(mask, dtype=bool)))


def _mask_images(output: dict) -> dict:
    """mask-generation's boolean masks as 1-bit PNG images (as nested JSON lists they would be 10-100x larger)."""
    return {**output, "masks": [encode_mask(mask) for mask in output["masks"]]}


OUTPUT_SHAPES: dict[str, Callable[[Any], Any]] = {"text-to-audio": _playable_audio, "mask-generation": _mask_images}
"""Per task, how a pipeline output (one input's) becomes what pipeq returns, before ``to_jsonable``."""


def shape_output(task: str, output: Any) -> Any:
    """One input's pipeline output in the form pipeq returns for ``task`` (most tasks: as it is)."""
    shape = OUTPUT_SHAPES.get(task)
    return output if shape is None else shape(output)


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for pipeline outputs (numpy and torch values, tuples, PIL images)."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Image.Image):
        return encode_image(value)
    if hasattr(value, "detach") and hasattr(value, "tolist"):
        return value.detach().cpu().tolist()
    return value
