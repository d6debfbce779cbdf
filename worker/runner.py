"""Running one group of same-model, same-parameter inputs through a transformers pipeline.

Items are sorted by size, largest first, and go through in the calls :mod:`pipeq.worker.grouping` allows, each
one ``pipeline(list, batch_size=len(run))`` call. Each output is given back in the shape ``pipeline(single_input)``
returns. A call whose jobs were all canceled stops at its next piece (:mod:`pipeq.worker.pieces`): its items
fail with Canceled, and are not split. If the batched call raises, or returns past its run time limit, the group is
split in halves until the inputs that fail are alone: they fail, the others succeed (after running out of memory,
the accelerator's free memory is given back before the halves). Items named ``alone`` (jobs that were in a call
that never returned) go first, each in a call of its own. Nothing one item brings (a bad parameter, an odd output)
fails more than the items it concerns.
"""

import logging
from collections.abc import Collection, Sequence
from contextlib import nullcontext
from typing import Any

from pipeq.config.tasks import TaskSpec
from pipeq.worker.deadlines import CallDeadlines, timeout_failure
from pipeq.worker.decoding import Decoded
from pipeq.worker.errors import Canceled, PipelineError
from pipeq.worker.grouping import shared_calls, token_counts
from pipeq.worker.memory import free_accelerator_memory, is_out_of_memory, out_of_memory_message
from pipeq.worker.pieces import CallCanceled, expected_chunks
from pipeq.worker.task_quirks import (
    as_batch,
    as_result,
    failure_hint,
    fresh_input,
    input_problem,
    missing_package,
    single_shape,
)

log = logging.getLogger(__name__)


def run_group(
    pipe: Any,
    spec: TaskSpec,
    params: dict,
    batch_size: int,
    items: Sequence[Decoded],
    deadlines: CallDeadlines | None = None,
    alone: Collection[int] = (),
) -> list[Any]:
    """One JSON-ready result or JobFailure per item, in the items' order. ``deadlines`` watches each call (none:
    calls are not limited); ``alone`` are the indices of items to run first, each in a call of its own."""
    if (missing := missing_package(spec)) is not None:
        return [missing] * len(items)
    tokens = _token_counts(pipe, spec, params, items)
    sizes = tokens if tokens is not None else [item.size for item in items]
    results: list[Any] = [_input_problem(pipe, spec, params, item.value) for item in items]
    order = sorted((i for i in range(len(items)) if results[i] is None), key=lambda i: -sizes[i])
    watched = deadlines.running if deadlines is not None else lambda indices: nullcontext()
    alone = set(alone)

    def run(indices: list[int]) -> None:
        inputs = [fresh_input(items[i].value) for i in indices]
        message, oom = "", False  # why the call failed (for an item alone); whether it ran out of memory
        with watched(indices) as call:
            if call is not None:
                call.progress.chunks_total = expected_chunks(spec, params, [items[i].value for i in indices])
            try:
                if len(inputs) == 1:  # a call on the item alone: already in its own shape, no collation
                    outputs = [pipe(inputs[0], **params)]
                else:
                    outputs = list(pipe(as_batch(spec, inputs), batch_size=min(batch_size, len(inputs)), **params))
                    if len(outputs) != len(inputs):
                        raise ValueError(f"the pipeline gave {len(outputs)} outputs for {len(inputs)} inputs")
            except CallCanceled:
                outputs = None  # stopped at a piece: settled below, as a generation stopped at a token
            except Exception as exc:
                oom = is_out_of_memory(exc)
                if len(indices) == 1:
                    message = out_of_memory_message(pipe, exc) if oom else f"{type(exc).__name__}: {exc}"
                    message += _failure_hint(pipe, spec, params, oom)
                outputs = None  # split below, once the failed call's frames (and the tensors they hold) are released
        if call is not None and call.progress.abort.is_set():  # its jobs were canceled: not late, not failed
            for i in indices:
                results[i] = Canceled("every job of the call was canceled")
            return
        late = call is not None and call.overran()  # stopped by generate's max_time, or merely slow
        if outputs is None or late:
            if len(indices) == 1:
                results[indices[0]] = timeout_failure(call.limit_s) if late else PipelineError(message)
                return
            if oom:
                free_accelerator_memory()
            middle = len(indices) // 2
            run(indices[:middle])
            run(indices[middle:])
            return
        for i, output in zip(indices, outputs, strict=True):
            results[i] = _shaped(spec, params, items[i].value, output, len(inputs) == 1, tokens and tokens[i])

    for i in (i for i in order if i in alone):
        run([i])
    for call in _shared_calls(pipe, spec, params, batch_size, items, [i for i in order if i not in alone], sizes):
        run(call)
    return results


def _token_counts(pipe: Any, spec: TaskSpec, params: dict, items: Sequence[Decoded]) -> list[int] | None:
    """Token counts to sort by; None (sort by the items' own sizes) when counting fails, e.g. on a parameter of the
    wrong type: the pipeline calls then fail each job on its own, saying why."""
    try:
        return token_counts(pipe, spec, params, items)
    except Exception as exc:
        log.info("could not count tokens (%s: %s); sorting by input size", type(exc).__name__, exc)
        return None


def _input_problem(pipe: Any, spec: TaskSpec, params: dict, value: Any) -> PipelineError | None:
    try:
        return input_problem(pipe, spec, params, value)
    except Exception as exc:
        return PipelineError(f"checking the input raised {type(exc).__name__}: {exc}")


def _failure_hint(pipe: Any, spec: TaskSpec, params: dict, oom: bool) -> str:
    try:
        return failure_hint(pipe, spec, params, oom)
    except Exception:
        return ""


def _shared_calls(
    pipe: Any,
    spec: TaskSpec,
    params: dict,
    batch_size: int,
    items: Sequence[Decoded],
    order: list[int],
    sizes: Sequence[float],
) -> list[list[int]]:
    """The calls ``order`` goes through; one call per item when grouping fails (e.g. on a parameter of the wrong
    type), so each job fails or succeeds on its own."""
    try:
        return list(shared_calls(pipe, spec, params, batch_size, items, order, sizes))
    except Exception as exc:
        log.info("could not group inputs (%s: %s); one call per input", type(exc).__name__, exc)
        return [[i] for i in order]


def _shaped(spec: TaskSpec, params: dict, value: Any, output: Any, single: bool, tokens: int | None) -> Any:
    """One item's output as its job's result, or the PipelineError saying why it could not be shaped."""
    try:
        return as_result(spec, output if single else single_shape(spec, params, value, output, tokens))
    except Exception as exc:
        return PipelineError(f"the pipeline's output could not be read: {type(exc).__name__}: {exc}")
