"""Tiny random models for the audio_table tasks, written to disk in Hub layout (see devtools.tiny_models).

text-to-audio (VITS), zero-shot-audio-classification (CLAP), video-classification (VideoMAE),
table-question-answering (TAPAS) and decision (GPT-2 with a ``DecisionConfig``).
"""

import json
from collections.abc import Callable
from pathlib import Path

import torch

from devtools.tiny_common import (
    CHAT_TEMPLATE,
    TINY,
    labels,
    minilm_tokenizer,
    minilm_tokenizer_dir,
    save,
    tiny_gpt2,
)

VIDEO_LABELS: list[str] = ["walking", "running", "jumping"]
VIDEO_FRAMES = 4
"""Frames the tiny VideoMAE sees (its ``num_frames``: the pipeline samples that many by default)."""
CLAP_SECONDS = 3
"""Longest clip the tiny CLAP's feature extractor takes whole (longer ones are cropped at random, as in CLAP)."""


def build_text_to_audio(path: Path) -> Path:
    """Tiny two-speaker VitsModel (16 kHz) with a character VitsTokenizer (no phonemizer). Its noise scales are 0,
    so the same text always gives the same waveform: the stochastic duration predictor and the prior draw no noise."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    path.mkdir(parents=True, exist_ok=True)
    characters = ["<pad>", "<unk>", " ", "'", *"abcdefghijklmnopqrstuvwxyz"]
    (path / "vocab.json").write_text(json.dumps({character: i for i, character in enumerate(characters)}))
    tokenizer = VitsTokenizer(str(path / "vocab.json"), phonemize=False)
    config = VitsConfig(
        vocab_size=len(characters),
        hidden_size=16,
        num_hidden_layers=1,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=17,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1]],
        duration_predictor_filter_channels=16,
        duration_predictor_num_flows=1,
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        depth_separable_num_layers=1,
        noise_scale=0.0,
        noise_scale_duration=0.0,
        num_speakers=2,
        speaker_embedding_size=8,
        sampling_rate=16_000,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return save(path, VitsModel(config).eval(), tokenizer)


def build_zero_shot_audio_classification(path: Path) -> Path:
    """Tiny ClapModel: a 48 kHz feature extractor (16 mel bins, a frame per 20 ms, clips up to CLAP_SECONDS) and
    the MiniLM tokenizer for the text tower (without token type ids, which CLAP does not take)."""
    from transformers import BertTokenizerFast, ClapConfig, ClapFeatureExtractor, ClapModel

    tokenizer = BertTokenizerFast.from_pretrained(
        minilm_tokenizer_dir(), model_input_names=["input_ids", "attention_mask"]
    )
    text = {
        "vocab_size": tokenizer.vocab_size,
        "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "projection_dim": 16,
        **TINY,
    }
    audio = {
        "spec_size": 64,
        "num_mel_bins": 16,
        "window_size": 4,
        "depths": [1, 1],
        "num_attention_heads": [2, 2],
        "hidden_size": 32,
        "patch_embeds_hidden_size": 16,
        "projection_dim": 16,
    }
    # A wide logit scale spreads the random model's scores, so that parity checks tell clips apart.
    config = ClapConfig(text_config=text, audio_config=audio, projection_dim=16, logit_scale_init_value=100.0)
    # "rand_trunc" without fusion: one mel crop, the input the audio tower takes when enable_fusion is off.
    extractor = ClapFeatureExtractor(
        feature_size=16, sampling_rate=48_000, hop_length=960, max_length_s=CLAP_SECONDS, truncation="rand_trunc"
    )
    torch.manual_seed(0)
    return save(path, ClapModel(config).eval(), tokenizer, extractor)


def build_video_classification(path: Path) -> Path:
    """Tiny VideoMAEForVideoClassification (VIDEO_FRAMES frames of 32x32, tubelets of 2) with the PIL image
    processor: without a video processor the pipeline reads frames itself with PyAV."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEImageProcessorPil

    config = VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=VIDEO_FRAMES, tubelet_size=2, **labels(VIDEO_LABELS), **TINY
    )
    processor = VideoMAEImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    return save(path, VideoMAEForVideoClassification(config).eval(), processor)


def build_table_question_answering(path: Path) -> Path:
    """Tiny TapasForQuestionAnswering with aggregation (NONE/SUM/AVERAGE/COUNT), a TapasTokenizer on the MiniLM
    word pieces; segment sums use torch's scatter_reduce (no torch-scatter)."""
    from transformers import TapasConfig, TapasForQuestionAnswering, TapasTokenizer

    tokenizer = TapasTokenizer(str(minilm_tokenizer_dir() / "vocab.txt"), model_max_length=512)
    config = TapasConfig(
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=512,
        num_aggregation_labels=4,
        aggregation_labels={0: "NONE", 1: "SUM", 2: "AVERAGE", 3: "COUNT"},
        no_aggregation_label_index=0,
        use_answer_as_supervision=True,
        init_cell_selection_weights_to_zero=False,
        **TINY,
    )
    torch.manual_seed(0)
    return save(path, TapasForQuestionAnswering(config).eval(), tokenizer)


def build_decision(path: Path) -> Path:
    """Tiny GPT2LMHeadModel on the MiniLM word pieces with a chat template and a default DecisionConfig
    (``decision.json``): it scores the options by the logits of their labels (yes/no, a, b, c, ...)."""
    from transformers.decision import DecisionConfig

    tokenizer = minilm_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    save(path, tiny_gpt2(tokenizer, n_positions=512), tokenizer)
    DecisionConfig().save_pretrained(path)
    return path


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "text-to-audio": build_text_to_audio,
    "zero-shot-audio-classification": build_zero_shot_audio_classification,
    "video-classification": build_video_classification,
    "table-question-answering": build_table_question_answering,
    "decision": build_decision,
}
