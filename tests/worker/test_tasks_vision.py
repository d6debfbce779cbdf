"""The vision tasks through the real worker: each job's result equals transformers.pipeline on the same tiny model
and the same decoded picture; images in results (masks, depth maps) decode back to the pipeline's pixels."""

import base64
import importlib.util
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from devtools.media import picture, truncated
from pipeq.config.tasks import TASKS
from pipeq.core.contract import InvalidJob
from pipeq.core.records import JobRecord
from pipeq.worker.decoding import Decoded
from pipeq.worker.runner import run_group
from tests.support.compare import same
from tests.support.decoded import rgb
from tests.support.jobs import check, failed, run
from tests.support.settings import model_name
from tests.support.spy import Spy

pytestmark = pytest.mark.usefixtures("worker")

VISION_TASKS = [
    "image-feature-extraction",
    "image-segmentation",
    "depth-estimation",
    "mask-generation",
    "zero-shot-object-detection",
]
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
LABELS = {"candidate_labels": ["cat", "a red car", "dog"]}
MASKS = {"points_per_crop": 8, "stability_score_thresh": 0.0}
"""Few points (64, not 1024) and no stability filter: the tiny random SAM's masks are not stable."""


def pictures() -> list[bytes]:
    """Three pictures of different sizes and shapes, one a JPEG."""
    return [picture(64, 48, seed=1), picture(50, 70, seed=2, fmt="JPEG"), picture(40, 40, seed=3)]


def run_pictures(client, upload, task: str, images: list[bytes], parameters: dict | None = None) -> list[JobRecord]:
    """The first picture travels as an s3:// object, the others inline."""
    return run(client, task, [upload(images[0], ".png"), *images[1:]], parameters)


def png(value: dict) -> np.ndarray:
    """The pixels of a PNG in a result."""
    assert value["content_type"] == "image/png"
    return np.array(Image.open(io.BytesIO(base64.b64decode(value["data"]))))


def expected(task: str, images: list[bytes], parameters: dict | None, reference) -> list[Any]:
    pipe = reference(task)
    return [pipe(rgb(data), **(parameters or {})) for data in images]


# --- image-feature-extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize("parameters", [None, {"pool": True}, {"image_processor_kwargs": {"do_normalize": False}}])
def test_image_features_match_the_pipeline(client, reference, upload, parameters):
    images = pictures()
    records = run_pictures(client, upload, "image-feature-extraction", images, parameters)
    check(records, expected("image-feature-extraction", images, parameters, reference))
    features = np.array(records[0].result)
    config = reference("image-feature-extraction").model.config
    tokens = (config.image_size // config.patch_size) ** 2 + 1  # the patches and [CLS]
    pooled = parameters == {"pool": True}
    assert features.shape == ((1, config.hidden_size) if pooled else (1, tokens, config.hidden_size))


# --- image-segmentation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parameters",
    [
        None,  # panoptic (the first the model's image processor offers), threshold 0.9
        {"subtask": "semantic"},
        {"subtask": "instance", "threshold": 0.5},
        {"subtask": "panoptic", "threshold": 0.3, "overlap_mask_area_threshold": 0.9},
        {"threshold": 0.5, "mask_threshold": 0.8},
    ],
)
def test_segments_match_the_pipeline(client, reference, upload, parameters):
    images = pictures()
    records = run_pictures(client, upload, "image-segmentation", images, parameters)
    want = expected("image-segmentation", images, parameters, reference)
    check(records, want)
    assert any(record.result for record in records)  # the parameters leave segments to compare
    for record, segments, data in zip(records, want, images, strict=True):
        for segment, wanted in zip(record.result, segments, strict=True):
            mask = png(segment["mask"])
            assert mask.shape == rgb(data).size[::-1]
            np.testing.assert_array_equal(mask, np.array(wanted["mask"]))


def test_segmentation_parameters_change_the_segments(client, upload):
    images = pictures()
    semantic = run_pictures(client, upload, "image-segmentation", images, {"subtask": "semantic"})
    panoptic = run_pictures(client, upload, "image-segmentation", images, {"subtask": "panoptic", "threshold": 0.3})
    strict = run_pictures(client, upload, "image-segmentation", images, {"subtask": "panoptic", "threshold": 0.95})
    assert all(segment["score"] is None for record in semantic for segment in record.result)
    assert all(segment["score"] >= 0.3 for record in panoptic for segment in record.result)
    assert sum(len(record.result) for record in strict) < sum(len(record.result) for record in panoptic)


def test_an_unknown_subtask_fails_each_job_saying_so(client, upload):
    records = run_pictures(client, upload, "image-segmentation", pictures()[:2], {"subtask": "outline"})
    for record in records:
        failed(record, "PipelineError", "Subtask outline is not supported")


# --- depth-estimation ---------------------------------------------------------------------------------------


def same_depth(result: dict, expected: dict) -> bool:
    """Depth in metres equal to 1e-4, and the 8-bit depth map (normalised, then truncated) to one grey level: the
    float noise of a batched call (1e-6) can tip a pixel over a level's edge."""
    depth = png(result["depth"]).astype(int)
    return (
        np.array(result["predicted_depth"]).shape == depth.shape
        and same(result["predicted_depth"], expected["predicted_depth"])
        and int(np.abs(depth - np.array(expected["depth"], dtype=int)).max()) <= 1
    )


def test_depth_matches_the_pipeline(client, reference, upload):
    images = [*pictures(), picture(64, 48, seed=4)]  # two of one size: they can share a call
    records = run_pictures(client, upload, "depth-estimation", images)
    for record, depth, data in zip(records, expected("depth-estimation", images, None, reference), images, strict=True):
        assert record.state == "succeeded", record.error
        assert same_depth(record.result, depth)
        assert np.array(record.result["predicted_depth"]).shape == rgb(data).size[::-1]


def test_images_share_a_call_only_when_the_processor_gives_them_one_shape(reference):
    """GLPN (like Depth Anything) keeps each image's aspect ratio: the pipeline cannot stack differently shaped
    pixel tensors, so only pictures of the same size share a call; a fixed-size processor (ViT) batches all."""
    sizes = [(64, 48), (48, 64), (64, 48), (40, 96), (48, 64)]
    images = [rgb(picture(width, height, seed=i)) for i, (width, height) in enumerate(sizes)]
    items = [Decoded(image, float(image.width * image.height)) for image in images]
    for task, mixed, matches in (("depth-estimation", False, same_depth), ("image-feature-extraction", True, same)):
        pipe = Spy(reference(task))
        results = run_group(pipe, TASKS[task], {}, 8, items)
        assert all(matches(result, reference(task)(image)) for result, image in zip(results, images, strict=True))
        shared = [{image.size for image in call} for call in pipe.calls if len(call) > 1]
        assert {len(sizes) > 1 for sizes in shared} == {mixed}  # some calls shared; mixed sizes only when allowed


# --- zero-shot-object-detection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parameters",
    [
        LABELS,
        {**LABELS, "threshold": 0.3},
        {**LABELS, "top_k": 2},
        {"candidate_labels": ["bicycle"], "threshold": 0.0, "top_k": 5},
        {"candidate_labels": "cat,dog"},  # a comma-separated string, as the pipeline takes it
    ],
)
def test_detections_match_the_pipeline(client, reference, upload, parameters):
    images = pictures()
    records = run_pictures(client, upload, "zero-shot-object-detection", images, parameters)
    check(records, expected("zero-shot-object-detection", images, parameters, reference))
    labels = parameters["candidate_labels"]
    labels = labels.split(",") if isinstance(labels, str) else labels
    for record in records:
        assert {box["label"] for box in record.result} <= set(labels)
        assert all(box["score"] >= parameters.get("threshold", 0.1) for box in record.result)
        if "top_k" in parameters:
            assert len(record.result) <= parameters["top_k"]


def test_zero_shot_object_detection_needs_candidate_labels(client):
    with pytest.raises(InvalidJob, match="candidate_labels"):
        client.submit("zero-shot-object-detection", picture(), model=model_name("zero-shot-object-detection"))


# --- mask-generation ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_TORCHVISION, reason="SAM's post-processing needs torchvision")
@pytest.mark.parametrize(
    "parameters",
    [
        MASKS,
        {**MASKS, "points_per_batch": 16, "pred_iou_thresh": 0.915},
        {**MASKS, "crops_nms_thresh": 0.3, "output_bboxes_mask": True, "output_rle_mask": True},
    ],
)
def test_masks_match_the_pipeline(client, reference, upload, parameters):
    images = pictures()
    records = run_pictures(client, upload, "mask-generation", images, parameters)
    want = expected("mask-generation", images, parameters, reference)
    assert any(output["masks"] for output in want)  # the parameters leave masks to compare
    for record, output, data in zip(records, want, images, strict=True):
        assert record.state == "succeeded", record.error
        masks = [png(mask) for mask in record.result["masks"]]
        assert len(masks) == len(output["masks"])
        for mask, wanted in zip(masks, output["masks"], strict=True):
            assert mask.dtype == bool and mask.shape == rgb(data).size[::-1]
            np.testing.assert_array_equal(mask, wanted)
        rest = {key: value for key, value in output.items() if key != "masks"}
        assert same({key: value for key, value in record.result.items() if key != "masks"}, rest)


@pytest.mark.skipif(HAS_TORCHVISION, reason="torchvision is installed: mask-generation runs")
def test_mask_generation_without_torchvision_fails_each_job_saying_what_to_install(client, upload):
    records = run_pictures(client, upload, "mask-generation", pictures()[:2], MASKS)
    for record in records:
        failed(record, "ModelUnavailable", "pip install torchvision")


# --- bad inputs ---------------------------------------------------------------------------------------------

PARAMETERS = {"zero-shot-object-detection": LABELS, "mask-generation": MASKS}


@pytest.mark.parametrize("task", VISION_TASKS)
def test_a_corrupt_image_fails_only_its_own_job(client, upload, task):
    good = picture(48, 40, seed=7)
    inputs = [good, truncated(good), upload(b"not an image at all", ".png"), upload(good, ".png")]
    records = run(client, task, inputs, PARAMETERS.get(task))
    for record in (records[1], records[2]):
        failed(record, "UnreadableMedia", "unreadable image")
    if task != "mask-generation" or HAS_TORCHVISION:
        assert [records[0].state, records[3].state] == ["succeeded", "succeeded"]
        assert same(records[0].result, records[3].result)  # the same picture, inline and from s3


@pytest.mark.parametrize("task", VISION_TASKS)
def test_text_is_refused_for_an_image_task(client, task):
    with pytest.raises(InvalidJob, match=f"{task} takes image, not text"):
        client.submit(task, "a photo of a cat", model=model_name(task), parameters=PARAMETERS.get(task))
