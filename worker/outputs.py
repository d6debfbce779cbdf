"""Pipeline outputs as JSON: numpy and torch values as numbers and lists, images as PNG (base64).

Media in results takes the shape ``{"content_type": "image/png", "data": "<base64>"}``; results too large to
travel inline go to the results bucket whole (see pipeq.results).
"""

import base64
import io
from typing import Any

import numpy as np
from PIL import Image


def encoded(content_type: str, data: bytes) -> dict[str, str]:
    """Media bytes as a JSON value."""
    return {"content_type": content_type, "data": base64.b64encode(data).decode("ascii")}


def encode_image(image: Image.Image) -> dict[str, str]:
    """An image (a mask, a depth map) as lossless PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return encoded("image/png", buffer.getvalue())


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
