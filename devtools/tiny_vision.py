"""Tiny random models for the vision tasks, written to disk in Hub layout (see devtools.tiny_models).

Image processors are the ``...ImageProcessorPil`` classes (no torchvision needed to load them); each model takes
32-64 px images, so a build takes well under a second. Some random heads are sharpened after initialisation so that
the pipelines' thresholds keep some outputs and drop others.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    GLPNConfig,
    GLPNForDepthEstimation,
    GLPNImageProcessorPil,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessorPil,
    OwlViTConfig,
    OwlViTForObjectDetection,
    OwlViTImageProcessorPil,
    SamConfig,
    SamImageProcessorPil,
    SamModel,
    SwinConfig,
    ViTConfig,
    ViTImageProcessorPil,
    ViTModel,
)

from devtools.tiny_common import TINY, labels, minilm_text_tower, minilm_tokenizer, save

_SEGMENT_LABELS: list[str] = ["sky", "tree", "road", "car"]


def build_image_feature_extraction(path: Path) -> Path:
    """Tiny ViTModel (32x32, patch 8) with its pooler, so ``pool=True`` has a pooled output."""
    config = ViTConfig(image_size=32, patch_size=8, **TINY)
    torch.manual_seed(0)
    return save(path, ViTModel(config), ViTImageProcessorPil(size={"height": 32, "width": 32}))


def build_image_segmentation(path: Path) -> Path:
    """Tiny Mask2FormerForUniversalSegmentation (tiny Swin backbone, no timm): its image processor post-processes
    all three subtasks, panoptic, instance and semantic."""
    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        feature_size=32,  # multiples of 32: the pixel decoder uses GroupNorm(32)
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        dim_feedforward=32,
        num_queries=6,
        **labels(_SEGMENT_LABELS),
    )
    processor = Mask2FormerImageProcessorPil(size={"height": 64, "width": 64}, ignore_index=255)
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(config)
    with torch.no_grad():  # sharper random heads: confident classes ("no object" unlikely) and crisp masks
        model.class_predictor.weight.mul_(30)
        model.class_predictor.bias[-1] = -10
        model.get_submodule("model.transformer_module.decoder.mask_predictor.mask_embedder.2.0").weight.mul_(40)
    return save(path, model, processor)


def build_depth_estimation(path: Path) -> Path:
    """Tiny GLPNForDepthEstimation (depth = sigmoid * 10 m). Its image processor keeps each image's size, rounded
    down to a multiple of 32 px, like Depth Anything's: images of different sizes give pixel tensors of different
    shapes."""
    config = GLPNConfig(
        hidden_sizes=[8, 16, 16, 32],
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 1, 2],
        sr_ratios=[4, 2, 1, 1],
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=16,
    )
    torch.manual_seed(0)
    return save(path, GLPNForDepthEstimation(config), GLPNImageProcessorPil(size_divisor=32))


def build_mask_generation(path: Path) -> Path:
    """Tiny SamModel (64x64 input, patch 16) with a SAM image processor resizing to 64 px. The pipeline's
    post-processing (``post_process_for_mask_generation``) needs torchvision: without it the worker refuses the jobs."""
    config = SamConfig(
        vision_config={
            "hidden_size": 32,
            "output_channels": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
            "window_size": 2,
            "global_attn_indexes": [1],
            "num_pos_feats": 8,
            "mlp_dim": 64,
        },
        prompt_encoder_config={"hidden_size": 16, "image_size": 64, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={
            "hidden_size": 16,
            "mlp_dim": 32,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 16,
        },
    )
    processor = SamImageProcessorPil(
        size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}, mask_size={"longest_edge": 16}
    )
    torch.manual_seed(0)
    model = SamModel(config)
    with torch.no_grad():  # predicted IoUs spread around 0.9 (not all near 0), so pred_iou_thresh cuts somewhere
        model.mask_decoder.iou_prediction_head.proj_out.weight.mul_(20)
        model.mask_decoder.iou_prediction_head.proj_out.bias.fill_(0.9)
    return save(path, model, processor)


def build_zero_shot_object_detection(path: Path) -> Path:
    """Tiny OwlViTForObjectDetection (32x32 images, patch 8) with the MiniLM tokenizer for the text tower."""
    tokenizer = minilm_tokenizer()
    config = OwlViTConfig(
        text_config=minilm_text_tower(tokenizer),
        vision_config={"image_size": 32, "patch_size": 8, **TINY},
        projection_dim=32,  # the class head compares image embeddings (hidden size) with the text projections
    )
    processor = OwlViTImageProcessorPil(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    return save(path, OwlViTForObjectDetection(config), tokenizer, processor)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "image-feature-extraction": build_image_feature_extraction,
    "image-segmentation": build_image_segmentation,
    "depth-estimation": build_depth_estimation,
    "mask-generation": build_mask_generation,
    "zero-shot-object-detection": build_zero_shot_object_detection,
}
