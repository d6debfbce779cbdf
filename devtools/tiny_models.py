"""Tiny random-weight Hugging Face models written to disk in Hub layout.

Each builder writes ``config.json``, ``model.safetensors`` and a real tokenizer / feature
extractor / image processor, so ``transformers.pipeline(task, model=str(path))`` loads it
offline (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

from devtools import tiny_audio_table, tiny_multimodal, tiny_vision, tiny_whisper
from devtools.tiny_common import CHAT_TEMPLATE, TINY, labels, minilm_text_tower, minilm_tokenizer, save, tiny_gpt2

_MINILM: dict[str, int] = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
}
_CTC_VOCAB: list[str] = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz", "'"]


def _bert(path: Path, label_names: list[str] | None, shape: dict[str, int]) -> Path:
    """Random BERT (classifier when ``label_names`` is given) with the real MiniLM tokenizer."""
    tokenizer = minilm_tokenizer()
    config = BertConfig(vocab_size=tokenizer.vocab_size, **(labels(label_names) if label_names else {}), **shape)
    torch.manual_seed(0)
    model = BertModel(config) if label_names is None else BertForSequenceClassification(config)
    return save(path, model, tokenizer)


def build_text_classification(path: Path, *, size: str = "tiny") -> Path:
    """BertForSequenceClassification (NEGATIVE/POSITIVE); ``size`` is "tiny" or "minilm"."""
    shapes = {"tiny": TINY, "minilm": _MINILM}
    if size not in shapes:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(shapes)}")
    return _bert(path, ["NEGATIVE", "POSITIVE"], shapes[size])


def build_zero_shot(path: Path) -> Path:
    """Tiny NLI-style classifier (contradiction/neutral/entailment) for zero-shot-classification."""
    return _bert(path, ["contradiction", "neutral", "entailment"], TINY)


def build_feature_extraction(path: Path) -> Path:
    """Tiny BertModel with the MiniLM tokenizer."""
    return _bert(path, None, TINY)


def build_ctc_asr(path: Path, *, size: str = "tiny") -> Path:
    """Wav2Vec2ForCTC with a character-level CTC tokenizer and a 16 kHz feature extractor; ``size`` "tiny" (no
    attention mask, like wav2vec2-base), or "base" (wav2vec2-base's shape, 95 M parameters, with layer norm and an
    attention mask like wav2vec2-large-lv60, so padded batches match single calls: for benchmarks)."""
    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(_CTC_VOCAB)}))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=size != "tiny"
    )
    # A frame per 20 ms (stride 320) as in the real wav2vec2: attention over a 10 s chunk stays cheap.
    tiny = {"conv_dim": (16,) * 4, "conv_kernel": (10, 4, 4, 4), "conv_stride": (5, 4, 4, 4), **TINY}
    shape = {
        "tiny": {**tiny, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2},
        "base": {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
    }
    if size not in shape:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(shape)}")
    config = Wav2Vec2Config(vocab_size=len(_CTC_VOCAB), pad_token_id=0, **shape[size])
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(config).eval()
    return save(path, model, Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer))


def build_image_classification(path: Path) -> Path:
    """Tiny ViTForImageClassification (32x32, patch 8) with labels cat/dog/bird."""
    config = ViTConfig(image_size=32, patch_size=8, **labels(["cat", "dog", "bird"]), **TINY)
    # The PIL backend needs no torchvision; it is saved as "ViTImageProcessor", and
    # AutoImageProcessor picks whichever backend is installed when loading.
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    torch.manual_seed(0)
    return save(path, ViTForImageClassification(config).eval(), processor)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "text-classification": build_text_classification,
    "zero-shot-classification": build_zero_shot,
    "feature-extraction": build_feature_extraction,
    "automatic-speech-recognition": build_ctc_asr,
    "image-classification": build_image_classification,
}


# --- further tasks -------------------------------------------------------------------------------------------

_ENTITY_LABELS: list[str] = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def build_token_classification(path: Path) -> Path:
    """Tiny BertForTokenClassification (O, B-/I-PER, B-/I-LOC) with the MiniLM tokenizer."""
    from transformers import BertForTokenClassification

    tokenizer = minilm_tokenizer()
    config = BertConfig(vocab_size=tokenizer.vocab_size, **labels(_ENTITY_LABELS), **TINY)
    torch.manual_seed(0)
    return save(path, BertForTokenClassification(config).eval(), tokenizer)


def build_fill_mask(path: Path) -> Path:
    """Tiny BertForMaskedLM with the MiniLM tokenizer (mask token ``[MASK]``)."""
    from transformers import BertForMaskedLM

    tokenizer = minilm_tokenizer()
    config = BertConfig(vocab_size=tokenizer.vocab_size, **TINY)
    torch.manual_seed(0)
    return save(path, BertForMaskedLM(config).eval(), tokenizer)


def build_text_generation(path: Path) -> Path:
    """Tiny GPT2LMHeadModel on the MiniLM word pieces, left padding and a plain chat template."""
    tokenizer = minilm_tokenizer()
    tokenizer.padding_side = "left"
    tokenizer.chat_template = CHAT_TEMPLATE
    model = tiny_gpt2(tokenizer, n_positions=256)
    model.generation_config.max_new_tokens = 8
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return save(path, model, tokenizer)


def build_audio_classification(path: Path) -> Path:
    """Tiny Wav2Vec2ForSequenceClassification (yes/no/silence) with a 16 kHz feature extractor."""
    from transformers import Wav2Vec2ForSequenceClassification

    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )
    config = Wav2Vec2Config(
        conv_dim=(16, 16),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        # Layer norm in the feature encoder honours the attention mask: padded batches match single calls.
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        **labels(["yes", "no", "silence"]),
        **TINY,
    )
    torch.manual_seed(0)
    return save(path, Wav2Vec2ForSequenceClassification(config).eval(), extractor)


def build_zero_shot_image_classification(path: Path) -> Path:
    """Tiny CLIPModel (32x32 images, patch 8) with the MiniLM tokenizer for the text tower."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    tokenizer = minilm_tokenizer()
    config = CLIPConfig(
        text_config=minilm_text_tower(tokenizer),
        vision_config={"image_size": 32, "patch_size": 8, **TINY},
        projection_dim=16,
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    return save(path, CLIPModel(config).eval(), tokenizer, processor)


def build_object_detection(path: Path) -> Path:
    """Tiny YolosForObjectDetection (no timm backbone) with labels cat/dog/bird."""
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessorPil

    config = YolosConfig(
        image_size=[64, 64], patch_size=16, num_detection_tokens=5, **labels(["cat", "dog", "bird"]), **TINY
    )
    processor = YolosImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64})
    torch.manual_seed(0)
    return save(path, YolosForObjectDetection(config).eval(), processor)


def build_document_question_answering(path: Path) -> Path:
    """Tiny LayoutLMForQuestionAnswering with the MiniLM tokenizer; the pipeline runs Tesseract OCR itself."""
    from transformers import LayoutLMConfig, LayoutLMForQuestionAnswering

    tokenizer = minilm_tokenizer()
    config = LayoutLMConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **TINY)
    torch.manual_seed(0)
    return save(path, LayoutLMForQuestionAnswering(config).eval(), tokenizer)


BUILDERS.update(
    {
        "token-classification": build_token_classification,
        "fill-mask": build_fill_mask,
        "text-generation": build_text_generation,
        "audio-classification": build_audio_classification,
        "zero-shot-image-classification": build_zero_shot_image_classification,
        "object-detection": build_object_detection,
        "document-question-answering": build_document_question_answering,
    }
)


# The other tasks' builders live in one module per group of tasks.
for _group in (tiny_vision, tiny_multimodal, tiny_audio_table):
    BUILDERS.update(_group.BUILDERS)

EXTRA_MODELS: dict[str, tuple[str, Callable[[Path], Path]]] = dict(tiny_whisper.EXTRA_MODELS)
"""Further models served in the tests' catalogue, by name: (task, builder)."""
