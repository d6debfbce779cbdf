"""Media as the worker decodes it, computed here with Pillow and soundfile: what the reference pipeline is given."""

import io

import numpy as np
import soundfile
from PIL import Image


def rgb(data: bytes) -> Image.Image:
    """The picture in ``data`` as an RGB image."""
    return Image.open(io.BytesIO(data)).convert("RGB")


def samples_of(data: bytes) -> np.ndarray:
    """The float32 samples of a lossless clip (WAV, FLAC) at its own rate."""
    return soundfile.read(io.BytesIO(data), dtype="float32")[0]
