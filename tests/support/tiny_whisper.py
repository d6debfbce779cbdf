"""A tiny random Whisper, served as a second speech-recognition model (see tests.support.tiny_models).

The tokenizer is built here, offline: byte-level BPE over the 256 byte tokens (no merges), ``<|endoftext|>``, then
Whisper's special tokens in the real layout (``<|startoftranscript|>``, every language, the tasks, ...,
``<|notimestamps|>``) and the 1501 timestamp tokens right after ``<|notimestamps|>``, where Whisper's decoding
expects them.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import AddedToken, pre_tokenizers
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

_MAX_TARGET_POSITIONS = 64
_MAX_NEW_TOKENS = 20
_INIT_STD = 1.0
"""Far above Whisper's 0.02: at 0.02 random weights give every clip the same transcript, and forcing a language or
task gives an empty one, so parity checks could not tell clips (or options) apart."""


def _whisper_tokenizer() -> WhisperTokenizer:
    """Byte-level BPE (the 256 byte tokens, no merges) with Whisper's special and timestamp tokens added."""
    vocab = {token: i for i, token in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>")
    specials = [
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(token, special=True, normalized=False) for token in specials]}
    )
    timestamps = [AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(1501)]
    tokenizer.add_tokens(timestamps)
    return tokenizer


def _generation_config(tokenizer: WhisperTokenizer) -> GenerationConfig:
    ids = tokenizer.convert_tokens_to_ids
    eos = ids("<|endoftext|>")
    no_timestamps = ids("<|notimestamps|>")
    return GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        lang_to_id={f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        no_timestamps_token_id=no_timestamps,
        prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=True,
        alignment_heads=[[1, 0], [1, 1]],
        max_initial_timestamp_index=50,
        begin_suppress_tokens=[eos],
        suppress_tokens=[],
        max_new_tokens=_MAX_NEW_TOKENS,
        return_timestamps=False,
    )


def build_whisper(path: Path) -> Path:
    """WhisperForConditionalGeneration (d_model 32, 2 encoder and 2 decoder layers) with an 80-bin feature
    extractor and the byte-level tokenizer above; generation is capped at a few tokens so random decoding is fast."""
    tokenizer = _whisper_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    eos = ids("<|endoftext|>")
    extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=_MAX_TARGET_POSITIONS,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        begin_suppress_tokens=None,
        suppress_tokens=None,
        init_std=_INIT_STD,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = _generation_config(tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(path)
    return path


EXTRA_MODELS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "tiny-whisper": ("automatic-speech-recognition", build_whisper),
}
