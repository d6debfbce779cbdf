"""Running one group of same-model, same-parameter inputs through a transformers pipeline.

Items are sorted by size, largest first, and go through in the calls :mod:`pipeq.worker.grouping` allows, each
one ``pipeline(list, batch_size=len(run))`` call. Each output is given back in the shape ``pipeline(single_input)``
returns. If the batched call raises, the group is split in halves until the inputs that fail are alone: they fail,
the others succeed (after running out of memory, the accelerator's free memory is given back before the halves).
"""

from collections.abc import Sequence
from typing import Any

from pipeq.config.tasks import TaskSpec
from pipeq.worker.decoding import Decoded
from pipeq.worker.errors import PipelineError
from pipeq.worker.grouping import shared_calls, token_counts
from pipeq.worker.memory import free_accelerator_memory, is_out_of_memory, out_of_memory_message
from pipeq.worker.task_quirks import (
    as_batch,
    as_result,
    failure_hint,
    fresh_input,
    input_problem,
    missing_package,
    single_shape,
)


def run_group(pipe: Any, spec: TaskSpec, params: dict, batch_size: int, items: Sequence[Decoded]) -> list[Any]:
    """One JSON-ready result or PipelineError per item, in the items' order."""
    if (missing := missing_package(spec)) is not None:
        return [missing] * len(items)
    tokens = token_counts(pipe, spec, params, items)
    sizes = tokens if tokens is not None else [item.size for item in items]
    results: list[Any] = [input_problem(pipe, spec, params, item.value) for item in items]
    order = sorted((i for i in range(len(items)) if results[i] is None), key=lambda i: -sizes[i])

    def run(indices: list[int]) -> None:
        inputs = [fresh_input(items[i].value) for i in indices]
        try:
            if len(inputs) == 1:  # a call on the item alone: already in its own shape, no collation
                results[indices[0]] = as_result(spec, pipe(inputs[0], **params))
                return
            outputs = list(pipe(as_batch(spec, inputs), batch_size=min(batch_size, len(inputs)), **params))
        except Exception as exc:
            oom = is_out_of_memory(exc)
            if len(indices) == 1:
                message = out_of_memory_message(pipe, exc) if oom else f"{type(exc).__name__}: {exc}"
                results[indices[0]] = PipelineError(message + failure_hint(pipe, spec, params, oom))
                return
            outputs = None  # split below, once the failed call's frames (and the tensors they hold) are released
        if outputs is None:
            if oom:
                free_accelerator_memory()
            middle = len(indices) // 2
            run(indices[:middle])
            run(indices[middle:])
            return
        for i, output in zip(indices, outputs, strict=True):
            results[i] = as_result(spec, single_shape(spec, params, items[i].value, output, tokens and tokens[i]))

    for call in shared_calls(pipe, spec, params, batch_size, items, order, sizes):
        run(call)
    return results
