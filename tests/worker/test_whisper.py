"""Whisper (an encoder-decoder that generates its transcript) through the real worker: timestamps, language and task
in ``generate_kwargs``, long audio in 30 s chunks, and micro-batches of several jobs, each the same as the plain
pipeline's output on the same samples."""

from pathlib import Path

import numpy as np
import pytest

from devtools.media import SAMPLING_RATE, encode_audio, repeated, speech
from pipeq.core.records import JobRecord
from pipeq.worker.decoding import decode_audio
from pipeq.worker.grouping import SIMILAR
from tests.support.compare import same
from tests.support.jobs import check, run

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.slow]

ASR = "automatic-speech-recognition"
MODEL = "tiny-whisper"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Whisper pads every clip to thirty seconds.",
    "Pipeq batches speech from many jobs.",
    "One two three four five six seven.",
]
"""Clips of different lengths, all within SIMILAR of the longest: the worker runs them in one pipeline call."""


@pytest.fixture(scope="module")
def whisper(extra_models: dict[str, Path]):
    import transformers

    return transformers.pipeline(ASR, model=str(extra_models[MODEL]), device="cpu")


@pytest.fixture(scope="module")
def clips() -> list[bytes]:
    return [encode_audio(speech(text), "WAV") for text in SENTENCES]


def expected(pipe, data: bytes, **parameters):
    """The plain pipeline's output on the samples the worker decodes from ``data``."""
    return pipe({"raw": decode_audio(data, SAMPLING_RATE), "sampling_rate": SAMPLING_RATE}, **parameters)


def run_jobs(client, upload, data: list[bytes], parameters: dict) -> list[JobRecord]:
    """The WAV clips ``data``, uploaded, as jobs for the tiny Whisper; their records, in order."""
    return run(client, ASR, [upload(item, ".wav") for item in data], parameters, model=MODEL)


def test_the_tiny_whisper_tells_clips_apart(whisper, clips):
    """Parity below means something only if the random model's transcript depends on the audio."""
    transcripts = {expected(whisper, clip)["text"] for clip in clips}
    assert len(transcripts) > 1, transcripts


def test_a_whisper_job_gives_the_pipelines_transcript(client, upload, whisper, clips):
    records = run_jobs(client, upload, clips[:1], {})
    check(records, [expected(whisper, clips[0])])
    assert set(records[0].result) == {"text"}


@pytest.mark.parametrize("timestamps", [True, "word"])
def test_timestamps(timestamps, client, upload, whisper, clips):
    parameters = {"return_timestamps": timestamps}
    records = run_jobs(client, upload, clips[:1], parameters)
    reference = expected(whisper, clips[0], **parameters)
    assert reference["chunks"], "the reference has no timestamped chunks to compare"
    check(records, [reference])


@pytest.mark.parametrize(
    "generate_kwargs",
    [{"language": "en", "task": "transcribe"}, {"language": "en", "task": "translate"}, {"language": "fr"}],
    ids=["en-transcribe", "en-translate", "fr"],
)
def test_language_and_task_in_generate_kwargs(generate_kwargs, client, upload, whisper, clips):
    parameters = {"generate_kwargs": generate_kwargs}
    records = run_jobs(client, upload, clips[:1], parameters)
    reference = expected(whisper, clips[0], **parameters)
    # The forced prompt changes what the model writes: a worker that dropped generate_kwargs would not match.
    assert reference != expected(whisper, clips[0])
    check(records, [reference])


@pytest.mark.parametrize("timestamps", [False, True])
def test_seventy_seconds_in_thirty_second_chunks(timestamps, client, upload, whisper):
    ogg = repeated(speech(" ".join(SENTENCES)), "OGG", "VORBIS", 70 / 60)
    assert 70 <= len(decode_audio(ogg, SAMPLING_RATE)) / SAMPLING_RATE < 90
    parameters = {"chunk_length_s": 30, "return_timestamps": timestamps}
    records = run(client, ASR, [upload(ogg, ".ogg")], parameters, model=MODEL, timeout=300)
    reference = expected(whisper, ogg, **parameters)
    check(records, [reference])
    # Three 30 s windows, stitched: more text than the first window's alone.
    first = {"raw": decode_audio(ogg, SAMPLING_RATE)[: 30 * SAMPLING_RATE], "sampling_rate": SAMPLING_RATE}
    assert len(reference["text"]) > len(whisper(first, return_timestamps=timestamps)["text"])


@pytest.mark.parametrize(
    "parameters",
    [{}, {"return_timestamps": True}, {"generate_kwargs": {"language": "en", "task": "translate"}}],
    ids=["text", "timestamps", "translate"],
)
def test_jobs_in_one_micro_batch_give_their_single_call_results(parameters, client, upload, whisper, clips):
    """Whisper pads every clip to 30 s, so the worker runs clips of different lengths in one batched call."""
    lengths = [len(decode_audio(clip, SAMPLING_RATE)) for clip in clips]
    assert len(set(lengths)) == len(lengths) and min(lengths) >= SIMILAR * max(lengths)
    records = run_jobs(client, upload, clips, parameters)
    assert max(record.micro_batch_jobs for record in records) > 1, [record.micro_batch_jobs for record in records]
    references = [expected(whisper, clip, **parameters) for clip in clips]
    assert len({str(reference) for reference in references}) > 1  # the clips' outputs differ: no mix-up goes unseen
    check(records, references)


def test_word_timestamps_in_one_micro_batch_give_their_single_call_results(client, upload, whisper, clips):
    parameters = {"return_timestamps": "word"}
    records = run_jobs(client, upload, clips, parameters)
    assert max(record.micro_batch_jobs for record in records) > 1
    check(records, [expected(whisper, clip, **parameters) for clip in clips])


def test_the_batched_word_timestamps_gap_is_in_the_pipeline_itself(whisper, clips):
    """Why the worker gives Whisper's word-timestamp jobs a call each (the test above): the plain pipeline's own
    batched call differs from its single calls."""
    samples = [{"raw": decode_audio(clip, SAMPLING_RATE), "sampling_rate": SAMPLING_RATE} for clip in clips]
    singles = [whisper(dict(sample), return_timestamps="word") for sample in samples]
    batched = list(whisper([dict(sample) for sample in samples], batch_size=len(samples), return_timestamps="word"))
    assert [item["text"] for item in batched] == [item["text"] for item in singles]
    assert not all(same(b, s) for b, s in zip(batched, singles, strict=True))
    assert np.isfinite([t for item in batched for c in item["chunks"] for t in c["timestamp"] if t is not None]).all()


def test_a_benchmark_sized_whisper_decodes_exactly_its_token_budget(tmp_path, clips):
    """benchmarks.speech's Whisper sizes: OpenAI's shapes (whisper-tiny: 37.8 M parameters with its 52 k-token
    output layer) and ``max_new_tokens`` text tokens per clip, whatever its length, so each run does the same work."""
    import torch
    import transformers

    from devtools.tiny_whisper import build_whisper

    pipe = transformers.pipeline(ASR, model=str(build_whisper(tmp_path / "w", size="whisper-tiny", max_new_tokens=5)))
    assert 37e6 < sum(parameter.numel() for parameter in pipe.model.parameters()) < 39e6
    assert pipe.model.config.vocab_size == 51865
    for clip in (clips[0], encode_audio(np.tile(speech(SENTENCES[1]), 4), "WAV")):
        features = pipe.feature_extractor(decode_audio(clip, SAMPLING_RATE), sampling_rate=SAMPLING_RATE)
        with torch.inference_mode():
            text = pipe.model.generate(torch.tensor(np.array(features.input_features)))[0].tolist()  # prompt left out
        assert len(text) == 5 and all(token < 256 for token in text), text
