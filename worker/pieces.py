"""Calls that work in pieces: their progress, and stopping them at the next piece once their jobs are canceled.

Some pipelines do a call's work in pieces: speech recognition with ``chunk_length_s`` runs the model once per batch
of chunks (``Pipeline.forward``), generation runs one step per token. :func:`watch_pieces` makes each piece of a
watched call count itself in the call's :class:`CallProgress` and, before it starts, stop the call
(:class:`CallCanceled`) once every job in it is canceled; a generation stops at its next token the same way.

The fraction done is chunks forwarded over the chunks expected (:func:`expected_chunks`), or else tokens generated
over ``max_new_tokens``; calls of other pipelines report none. A call shared by several jobs reports the call's
progress for each, and stops only once all of them are canceled (the others' results are kept; the canceled job's
is discarded).
"""

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeq.config.tasks import TaskSpec


class CallCanceled(Exception):
    """Every job of the running call was canceled: the call stops at its next piece."""


@dataclass
class CallProgress:
    """What a running call has done so far, written by the model thread and read by the engine's watcher."""

    abort: threading.Event = field(default_factory=threading.Event)
    """Set once every job of the call is canceled: the next piece raises CallCanceled."""
    chunks_total: int | None = None
    chunks_done: int = 0
    tokens_done: int = 0
    tokens_total: int | None = None

    def check(self) -> None:
        """Raise CallCanceled if the call is to stop."""
        if self.abort.is_set():
            raise CallCanceled("every job of the call was canceled")

    def fraction(self) -> tuple[float, str] | None:
        """The fraction of the call done and what it counts (``"chunk 3 of 40"``), or None where it is unknown."""
        if self.chunks_total:
            done = min(self.chunks_done, self.chunks_total)
            return done / self.chunks_total, f"chunk {done} of {self.chunks_total}"
        if self.tokens_total and self.tokens_done:
            done = min(self.tokens_done, self.tokens_total)
            return done / self.tokens_total, f"token {done} of {self.tokens_total}"
        return None


def expected_chunks(spec: TaskSpec, params: dict, values: Sequence[Any]) -> int | None:
    """How many chunks speech recognition with ``chunk_length_s`` cuts these inputs into (as transformers'
    ``chunk_iter`` does, to within its rounding); None for other calls."""
    chunk_s = params.get("chunk_length_s")
    if spec.name != "automatic-speech-recognition" or not isinstance(chunk_s, int | float) or chunk_s <= 0:
        return None
    stride = params.get("stride_length_s", chunk_s / 6)
    left, right = (stride, stride) if isinstance(stride, int | float) else (stride[0], stride[-1])
    total = 0
    for value in values:
        if not isinstance(value, dict) or "raw" not in value:
            return None
        rate = value.get("sampling_rate") or 16_000
        samples, chunk = len(value["raw"]), round(chunk_s * rate)
        step = chunk - round(left * rate) - round(right * rate)
        if step <= 0:
            return None
        total += 1 if samples <= chunk else math.ceil((samples - chunk) / step) + 1
    return total


def watch_pieces(pipe: Any, current: Any) -> None:
    """Make each ``forward`` of ``pipe`` (one batch of chunks, for chunking pipelines) stop the call
    ``current()`` returns once it is to stop, and count the chunks it forwarded. Idempotent."""
    forward = getattr(pipe, "forward", None)
    if forward is None or getattr(forward, "pipeq_pieces", False):
        return

    @functools.wraps(forward)
    def forward_in_pieces(model_inputs: Any, **params: Any) -> Any:
        call = current()
        progress = call.progress if call is not None else None
        if progress is not None:
            progress.check()
        outputs = forward(model_inputs, **params)
        if progress is not None:
            last = model_inputs.get("is_last") if isinstance(model_inputs, dict) else None
            progress.chunks_done += len(last) if isinstance(last, list | tuple) else 1
        return outputs

    forward_in_pieces.pipeq_pieces = True  # type: ignore[attr-defined]
    pipe.forward = forward_in_pieces


def steering_criterion(progress: CallProgress, max_new_tokens: int | None) -> Any:
    """A transformers StoppingCriteria that counts the tokens generated into ``progress`` and stops the generation
    at its next token once the call is to stop (its output is then discarded)."""
    import torch
    from transformers import StoppingCriteria

    class Steer(StoppingCriteria):
        def __init__(self) -> None:
            self.prompt: int | None = None

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            length = input_ids.shape[-1]
            if self.prompt is None:
                self.prompt = length - 1  # called once per new token, the first time after the first
            progress.tokens_done = length - self.prompt
            progress.tokens_total = max_new_tokens
            stop = progress.abort.is_set()
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return Steer()
