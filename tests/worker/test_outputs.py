"""Pipeline outputs as JSON: numbers and lists, images as lossless PNG."""

import base64
import io
import json

import numpy as np
import torch
from PIL import Image

from pipeq.worker.outputs import to_jsonable


def test_numpy_torch_and_tuples_become_json_types():
    value = {"chunks": [{"timestamp": (np.float32(0.5), 1.0)}], "score": np.float64(0.25), "v": np.arange(2)}
    assert to_jsonable(value) == {"chunks": [{"timestamp": [0.5, 1.0]}], "score": 0.25, "v": [0, 1]}
    assert to_jsonable({"t": torch.tensor([[1.5, 2.0]])}) == {"t": [[1.5, 2.0]]}


def test_images_become_png_that_decodes_to_the_same_pixels():
    mask = Image.fromarray((np.arange(48 * 64).reshape(48, 64) % 256).astype(np.uint8), mode="L")
    encoded = json.loads(json.dumps(to_jsonable({"label": "cat", "mask": mask})))
    assert encoded["label"] == "cat"
    assert encoded["mask"]["content_type"] == "image/png"
    back = Image.open(io.BytesIO(base64.b64decode(encoded["mask"]["data"])))
    assert back.mode == "L" and np.array_equal(np.asarray(back), np.asarray(mask))
