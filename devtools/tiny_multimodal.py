"""Tiny random models for the multimodal tasks, written to disk in Hub layout (see devtools.tiny_models).

* image-text-to-text: a Llava (CLIP vision tower on 32 px images, Llama text model) whose processor turns each
  ``<image>`` into 16 image tokens and whose chat template renders image parts as ``<image>``.
* any-to-any: a Qwen2-Audio (Whisper-style encoder on 2 s windows, Qwen2 text model). Every any-to-any model
  that sees images or videos needs torchvision, which is not installed; audio and text need nothing more.
* keypoint-matching: a SuperGlue on a SuperPoint detector, on 64 px images.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import BertTokenizerFast

from devtools.tiny_common import TINY, minilm_tokenizer_dir, save

IMAGE_TOKEN = "<image>"
AUDIO_TOKENS = ("<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>")
AUDIO_PROMPT = "".join(AUDIO_TOKENS)
"""Where a Qwen2-Audio prompt takes its audio: the processor widens ``<|AUDIO|>`` to one token per audio frame."""


def _chat_template(media: str, placeholder: str) -> str:
    """A plain chat template: ``role: text`` lines, ``placeholder`` for each part of type ``media``."""
    return (
        "{% for message in messages %}{{ message['role'] }}:"
        "{% if message['content'] is string %} {{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        f"{{% if part['type'] == '{media}' %}} {placeholder}"
        "{% elif part['type'] == 'text' %} {{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}{% if not loop.last or add_generation_prompt %}{{ '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )


def _tokenizer(*special: str) -> BertTokenizerFast:
    """The MiniLM word pieces with ``special`` tokens added, padded on the left for generation; without the fixed
    128-token padding and truncation its tokenizer.json carries (processors pass them on to the audio features) and
    without token type ids (which ``generate`` refuses)."""
    tokenizer = BertTokenizerFast.from_pretrained(
        minilm_tokenizer_dir(), model_input_names=["input_ids", "attention_mask"], padding_side="left"
    )
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.no_truncation()
    tokenizer.init_kwargs.pop("max_length", None)
    tokenizer.add_special_tokens({"additional_special_tokens": list(special)})
    return tokenizer


def _text_config(tokenizer: BertTokenizerFast, model_type: str) -> dict:
    """A tiny decoder-only text model's config on ``tokenizer``'s vocabulary."""
    return {
        "model_type": model_type,
        "vocab_size": len(tokenizer),
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **TINY,
    }


def _save_generator(path: Path, model: torch.nn.Module, processor: object, pad_token_id: int) -> Path:
    """Save a generating ``model`` (8 new tokens by default) and its processor into ``path``."""
    model.generation_config.max_new_tokens = 8
    model.generation_config.pad_token_id = pad_token_id
    return save(path, model, processor)


def build_image_text_to_text(path: Path) -> Path:
    """Tiny LlavaForConditionalGeneration: 32 px images in 8 px patches, 16 image tokens per ``<image>``."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = _tokenizer(IMAGE_TOKEN)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, which the "default" strategy drops
        chat_template=_chat_template("image", IMAGE_TOKEN),
    )
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "image_size": 32, "patch_size": 8, **TINY},
        text_config=_text_config(tokenizer, "llama"),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=16,
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    return _save_generator(path, LlavaForConditionalGeneration(config).eval(), processor, tokenizer.pad_token_id)


def build_any_to_any(path: Path) -> Path:
    """Tiny Qwen2AudioForConditionalGeneration: 16 mel bins over 2 s windows, 50 audio tokens per clip."""
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = _tokenizer(*AUDIO_TOKENS)
    extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=2, sampling_rate=16_000, padding_side="left")
    processor = Qwen2AudioProcessor(extractor, tokenizer, chat_template=_chat_template("audio", AUDIO_PROMPT))
    config = Qwen2AudioConfig(
        audio_config={
            "num_mel_bins": 16,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "d_model": 32,
            "max_source_positions": 100,  # 200 mel frames (2 s), halved by the encoder's strided convolution
        },
        text_config=_text_config(tokenizer, "qwen2"),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(0)
    return _save_generator(path, Qwen2AudioForConditionalGeneration(config).eval(), processor, tokenizer.pad_token_id)


def build_keypoint_matching(path: Path) -> Path:
    """Tiny SuperGlueForKeypointMatching on a tiny SuperPoint (at most 32 keypoints an image, 64 px images)."""
    from transformers import SuperGlueConfig, SuperGlueForKeypointMatching, SuperPointConfig
    from transformers.models.superglue.image_processing_pil_superglue import SuperGlueImageProcessorPil

    detector = SuperPointConfig(
        encoder_hidden_sizes=[8, 8, 16, 16],
        decoder_hidden_size=16,
        descriptor_decoder_dim=16,
        max_keypoints=32,
        keypoint_threshold=0.0,
        nms_radius=1,
        border_removal_distance=2,
    )
    config = SuperGlueConfig(
        keypoint_detector_config=detector.to_dict(),
        hidden_size=16,
        keypoint_encoder_sizes=[8, 16],
        gnn_layers_types=["self", "cross"],
        num_attention_heads=2,
        sinkhorn_iterations=10,
        initializer_range=0.3,  # matching scores spread enough for a threshold to keep some matches and drop others
    )
    torch.manual_seed(0)
    processor = SuperGlueImageProcessorPil(size={"height": 64, "width": 64})
    return save(path, SuperGlueForKeypointMatching(config), processor)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "image-text-to-text": build_image_text_to_text,
    "any-to-any": build_any_to_any,
    "keypoint-matching": build_keypoint_matching,
}
