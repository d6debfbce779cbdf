"""Calls in pieces on real tiny pipelines: the chunks speech recognition forwards are the chunks expected, generation
counts its tokens, and a call whose jobs are all canceled stops at its next piece, failing them with Canceled."""

import threading

import numpy as np
import transformers

from pipeq.config.tasks import task_spec
from pipeq.worker.deadlines import CallDeadlines, CallWatch, limit_generation
from pipeq.worker.decoding import Decoded
from pipeq.worker.errors import Canceled
from pipeq.worker.pieces import CallProgress, expected_chunks, watch_pieces
from pipeq.worker.runner import run_group

ASR = "automatic-speech-recognition"
GENERATION = "text-generation"
RATE = 16_000


def audio(seconds: float, seed: int = 0) -> Decoded:
    samples = np.random.default_rng(seed).uniform(-0.1, 0.1, int(seconds * RATE)).astype(np.float32)
    return Decoded({"raw": samples, "sampling_rate": RATE}, seconds)


def test_speech_forwards_the_chunks_expected_and_counts_them(tiny_models):
    pipe = transformers.pipeline(ASR, model=str(tiny_models[ASR]), device="cpu")
    watch = CallWatch()
    watch_pieces(pipe, lambda: watch.current)
    params = {"chunk_length_s": 4, "stride_length_s": 1}
    items = [audio(61), audio(3, seed=1)]
    expected = expected_chunks(task_spec(ASR), params, [item.value for item in items])
    with watch.running(60, ["a", "b"]) as call:
        call.progress.chunks_total = expected
        pipe([item.value for item in items], batch_size=4, **params)
    assert expected == 30 + 1  # 61 s in 4 s chunks starting 2 s apart; 3 s in one
    assert call.progress.chunks_done == expected
    assert call.progress.fraction() == (1.0, f"chunk {expected} of {expected}")
    assert expected_chunks(task_spec(ASR), {}, [items[0].value]) is None  # no chunking: no pieces to count


def test_a_canceled_speech_call_stops_at_its_next_chunk(tiny_models):
    pipe = transformers.pipeline(ASR, model=str(tiny_models[ASR]), device="cpu")
    watch = CallWatch()
    watch_pieces(pipe, lambda: watch.current)
    forward = pipe.forward

    def cancel_after_five(model_inputs, **params):
        outputs = forward(model_inputs, **params)
        if watch.current.progress.chunks_done >= 5:
            watch.current.progress.abort.set()  # what the engine's steering does once every job is canceled
        return outputs

    pipe.forward = cancel_after_five
    deadlines = CallDeadlines(watch, 600, ["job"])
    calls: list[CallProgress] = []
    original = watch.running

    def remembered(limit_s, jobs):
        context = original(limit_s, jobs)
        return _Remember(context, calls)

    watch.running = remembered
    [result] = run_group(pipe, task_spec(ASR), {"chunk_length_s": 2}, 1, [audio(120)], deadlines)
    assert isinstance(result, Canceled), result
    [progress] = calls
    assert progress.chunks_done == 5 < progress.chunks_total  # stopped at the next chunk, far from the end


class _Remember:
    """A call's context that remembers the call's progress."""

    def __init__(self, context, calls: list[CallProgress]) -> None:
        self.context, self.calls = context, calls

    def __enter__(self):
        call = self.context.__enter__()
        self.calls.append(call.progress)
        return call

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)


def test_generation_counts_its_tokens_and_stops_at_the_next_token_once_canceled(tiny_models):
    pipe = transformers.pipeline(GENERATION, model=str(tiny_models[GENERATION]), device="cpu")
    watch = CallWatch()
    limit_generation(pipe, watch)
    parameters = {"max_new_tokens": 200, "min_new_tokens": 200, "do_sample": False}
    seen: list[tuple[int, int | None]] = []

    def cancel_when_under_way() -> None:
        while watch.current is None or watch.current.progress.tokens_done < 10:
            threading.Event().wait(0.001)
        progress = watch.current.progress
        seen.append((progress.tokens_done, progress.tokens_total))
        progress.abort.set()

    canceler = threading.Thread(target=cancel_when_under_way, daemon=True)
    canceler.start()
    deadlines = CallDeadlines(watch, 600, ["job"])
    [result] = run_group(pipe, task_spec(GENERATION), parameters, 1, [Decoded("Once upon a time", 4.0)], deadlines)
    canceler.join(10)
    assert isinstance(result, Canceled), result
    [(done, total)] = seen
    assert total == 200 and 10 <= done < 200
    finished = pipe("Once upon a time", max_new_tokens=3)  # outside a watched call: generation unchanged
    assert isinstance(finished, list) and finished[0]["generated_text"]
