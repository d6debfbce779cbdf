"""Out-of-memory failures: recognised, memory given back, and a micro-batch split until its inputs fit."""

import gc
import weakref

import pytest
import torch

from pipeq.config.tasks import TASKS
from pipeq.worker.decoding import Decoded
from pipeq.worker.errors import PipelineError
from pipeq.worker.memory import (
    free_accelerator_memory,
    is_out_of_memory,
    out_of_memory_message,
    pipeline_bytes,
    pipeline_device_type,
)
from pipeq.worker.runner import run_group

SPEC = TASKS["zero-shot-classification"]


class TightPipeline:
    """Upper-cases its inputs, but runs out of memory on more than ``fits`` items or on any item 'huge'."""

    tokenizer = None
    device = torch.device("cuda:0")

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.calls: list[int] = []

    def __call__(self, inputs: list[str] | str, batch_size: int = 1, **params) -> list[dict] | dict:
        if isinstance(inputs, str):
            return self([inputs])[0]
        self.calls.append(len(inputs))
        if len(inputs) > self.fits or "huge" in inputs:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [{"text": text.upper()} for text in inputs]


def items(*texts: str) -> list[Decoded]:
    return [Decoded(text, 1.0) for text in texts]


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 129600000000 bytes."),
        MemoryError(),
    ],
)
def test_out_of_memory_is_recognised(exc):
    assert is_out_of_memory(exc)


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), ValueError("out of memory"), KeyError("x")])
def test_other_failures_are_not_out_of_memory(exc):
    assert not is_out_of_memory(exc)


class Node:
    """Something that can sit in a reference cycle."""

    itself: "Node"


def test_freeing_memory_collects_garbage_and_leaves_cuda_alone_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: pytest.fail("empty_cache called without a GPU"))
    cycle = Node()
    cycle.itself = cycle  # only the garbage collector frees it
    collected = weakref.finalize(cycle, lambda: None)
    del cycle
    gc.disable()  # no automatic collection meanwhile
    try:
        free_accelerator_memory()
    finally:
        gc.enable()
    assert not collected.alive


def test_the_message_names_the_device_and_the_original_error():
    message = out_of_memory_message(TightPipeline(1), torch.OutOfMemoryError("CUDA out of memory"))
    assert message == (
        "out of memory: this input is too large for cuda:0 even alone (OutOfMemoryError: CUDA out of memory)"
    )


def test_a_pipelines_device_type():
    assert pipeline_device_type(TightPipeline(1)) == "cuda"
    assert pipeline_device_type(LongAudioPipeline(1)) == "cpu"
    assert pipeline_device_type(object()) == "cpu"


def test_a_pipeline_weighs_its_parameters_and_buffers():
    class Pipe:
        model = torch.nn.BatchNorm1d(4)  # 2 x 4 float32 parameters; 2 x 4 float32 + 1 int64 buffers

    assert pipeline_bytes(Pipe()) == 4 * 4 * 4 + 8
    assert pipeline_bytes(object()) == 0


def test_a_batch_too_large_for_memory_is_split_until_every_item_succeeds():
    pipe = TightPipeline(fits=2)
    texts = ["a", "b", "c", "d", "e", "f", "g"]
    results = run_group(pipe, SPEC, {}, 8, items(*texts))
    assert results == [{"text": text.upper()} for text in texts]
    assert max(size for size in pipe.calls if size <= 2) == 2 and pipe.calls[0] == 7


def test_an_input_too_large_even_alone_fails_alone_saying_so():
    pipe = TightPipeline(fits=4)
    results = run_group(pipe, SPEC, {}, 8, items("a", "huge", "b", "c"))
    assert [r["text"] for i, r in enumerate(results) if i != 1] == ["A", "B", "C"]
    assert isinstance(results[1], PipelineError)
    assert str(results[1]).startswith("out of memory: this input is too large for cuda:0 even alone (")
    assert "CUDA out of memory" in str(results[1])


def test_memory_is_freed_before_the_halves_are_retried(monkeypatch):
    freed: list[int] = []
    pipe = TightPipeline(fits=2)
    monkeypatch.setattr("pipeq.worker.runner.free_accelerator_memory", lambda: freed.append(len(pipe.calls)))
    run_group(pipe, SPEC, {}, 8, items("a", "b", "c", "d"))
    assert freed and freed[0] == 1  # right after the first, failed call


class LongAudioPipeline:
    """Speech recognition that runs out of host memory on a clip over ``fits`` samples unless it is chunked."""

    feature_extractor = tokenizer = None
    device = torch.device("cpu")

    def __init__(self, fits: int) -> None:
        self.fits = fits

    def __call__(self, inputs: dict, chunk_length_s: float = 0, **params) -> dict:
        if len(inputs["raw"]) > self.fits and not chunk_length_s:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 43200000000 bytes.")
        return {"text": f"{len(inputs['raw'])} samples"}


def test_speech_too_long_for_one_pass_fails_alone_saying_to_chunk_it():
    asr = TASKS["automatic-speech-recognition"]
    clips = [Decoded({"raw": torch.zeros(n).numpy(), "sampling_rate": 16_000}, n / 16_000) for n in (100, 10_000)]
    short, long = run_group(LongAudioPipeline(fits=1_000), asr, {}, 1, clips)
    assert short == {"text": "100 samples"}
    assert isinstance(long, PipelineError)
    assert str(long).startswith("out of memory: this input is too large for cpu even alone (RuntimeError: ")
    assert str(long).endswith("pass chunk_length_s (e.g. 30, with stride_length_s) to transcribe long audio in chunks")
    chunked = run_group(LongAudioPipeline(fits=1_000), asr, {"chunk_length_s": 30}, 1, clips[1:])
    assert chunked == [{"text": "10000 samples"}]
