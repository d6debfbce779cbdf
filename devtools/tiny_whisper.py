"""A tiny random Whisper, served as a second speech-recognition model (see devtools.tiny_models).

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

from devtools.tiny_common import save

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


WHISPER_SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 32, "layers": 2, "heads": 2, "ffn": 64, "mel_bins": 80, "vocab": 0},
    "whisper-tiny": {"d_model": 384, "layers": 4, "heads": 6, "ffn": 1536, "mel_bins": 80, "vocab": 51865},
    "whisper-base": {"d_model": 512, "layers": 6, "heads": 8, "ffn": 2048, "mel_bins": 80, "vocab": 51865},
    "whisper-small": {"d_model": 768, "layers": 12, "heads": 12, "ffn": 3072, "mel_bins": 80, "vocab": 51865},
    "whisper-medium": {"d_model": 1024, "layers": 24, "heads": 16, "ffn": 4096, "mel_bins": 80, "vocab": 51865},
    "whisper-large-v3": {"d_model": 1280, "layers": 32, "heads": 20, "ffn": 5120, "mel_bins": 128, "vocab": 51866},
}
"""The test model, and the shapes of OpenAI's checkpoints (encoder and decoder alike) for benchmarks; a vocab of 0 is
the tokenizer's own size."""


def build_whisper(path: Path, *, size: str = "tiny", max_new_tokens: int = _MAX_NEW_TOKENS) -> Path:
    """WhisperForConditionalGeneration with the byte-level tokenizer above and a feature extractor of the size's
    mel bins. "tiny" (d_model 32, 2 + 2 layers; random weights at a large scale so clips get different transcripts)
    is the test model. The whisper-* sizes have the real checkpoints' shapes and Whisper's own initialisation, with
    every token but the 256 text tokens suppressed, so that each clip decodes exactly ``max_new_tokens`` tokens in
    one segment: a fixed, reproducible amount of work for benchmarks (the pipeline's default 5 beams included, as
    with OpenAI's checkpoints). Their output layer has the real 52 k tokens; the ids past this tokenizer's 1.9 k are
    never generated."""
    if size not in WHISPER_SHAPES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(WHISPER_SHAPES)}")
    shape, test_model = WHISPER_SHAPES[size], size == "tiny"
    tokenizer = _whisper_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    eos = ids("<|endoftext|>")
    extractor = WhisperFeatureExtractor(feature_size=shape["mel_bins"], sampling_rate=16000)
    config = WhisperConfig(
        vocab_size=max(shape["vocab"], len(tokenizer)),
        num_mel_bins=shape["mel_bins"],
        d_model=shape["d_model"],
        encoder_layers=shape["layers"],
        decoder_layers=shape["layers"],
        encoder_attention_heads=shape["heads"],
        decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"],
        decoder_ffn_dim=shape["ffn"],
        max_source_positions=1500,
        max_target_positions=_MAX_TARGET_POSITIONS if test_model else 448,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        begin_suppress_tokens=None,
        suppress_tokens=None,
        init_std=_INIT_STD if test_model else 0.02,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    generation = _generation_config(tokenizer)
    generation.max_new_tokens = max_new_tokens
    if not test_model:  # text tokens only: no end of text, and no special or timestamp token to start a new segment
        generation.suppress_tokens = list(range(eos, config.vocab_size))
    model.generation_config = generation
    return save(path, model, WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer))


EXTRA_MODELS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "tiny-whisper": ("automatic-speech-recognition", build_whisper),
}
