"""Running one group of same-model, same-parameter inputs through a transformers pipeline.

Items are sorted by size (tokens, audio seconds, pixels) and cut into runs of similar size (at most
``batch_size`` items, none smaller than ``SIMILAR`` times the run's largest), so that padding stays small;
each run is one ``pipeline(list, batch_size=len(run))`` call. Each output is given back in the shape
``pipeline(single_input)`` returns. If the batched call raises, the group
is split in halves until the inputs that fail are alone: they fail, the others succeed.
"""

from collections.abc import Sequence
from typing import Any

from config.tasks import TaskSpec
from worker.decoding import Decoded
from worker.errors import PipelineError
from worker.memory import free_accelerator_memory, is_out_of_memory, out_of_memory_message
from worker.outputs import to_jsonable

SIMILAR = 0.75
"""Smallest item size in a run, relative to the run's largest: at most a quarter of a run is padding."""


def run_group(pipe: Any, spec: TaskSpec, params: dict, batch_size: int, items: Sequence[Decoded]) -> list[Any]:
    """One JSON-ready result or PipelineError per item, in the items' order."""
    tokens = token_counts(pipe, spec, params, items)
    sizes = tokens if tokens is not None else [item.size for item in items]
    order = sorted(range(len(items)), key=lambda i: -sizes[i])
    results: list[Any] = [None] * len(items)

    def run(indices: list[int]) -> None:
        inputs = [_fresh(items[i].value) for i in indices]
        try:
            if len(inputs) == 1:  # a call on the item alone: already in its own shape, no collation
                results[indices[0]] = to_jsonable(pipe(inputs[0], **params))
                return
            outputs = pipe(inputs, batch_size=min(batch_size, len(inputs)), **params)
        except Exception as exc:
            oom = is_out_of_memory(exc)
            if len(indices) == 1:
                message = out_of_memory_message(pipe, exc) if oom else f"{type(exc).__name__}: {exc}"
                results[indices[0]] = PipelineError(message)
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
            results[i] = to_jsonable(_single_shape(spec, params, items[i].value, output, tokens and tokens[i]))

    padding_matters = padding_changes_results(pipe, spec)
    similar = 1.0 if padding_matters else SIMILAR  # then only inputs of the very same length share a call
    for chunk in similar_size_runs(order, sizes, 1 if _alone(spec, params, padding_matters) else batch_size, similar):
        run(chunk)
    return results


def padding_changes_results(pipe: Any, spec: TaskSpec) -> bool:
    """Audio models fed zero padding without an attention mask (wav2vec2-base and the like) give a padded input
    other results than the input alone; feature extractors that pad every input to one length (Whisper's 30 s,
    ``n_samples``) do not."""
    extractor = getattr(pipe, "feature_extractor", None)
    if spec.modality != "audio" or extractor is None or getattr(extractor, "return_attention_mask", True):
        return False
    return getattr(extractor, "n_samples", None) is None


def _alone(spec: TaskSpec, params: dict, padding_matters: bool) -> bool:
    """Long audio is cut in chunks that the pipeline batches across inputs; where padding changes results, the
    padded short last chunks would, so then each job gets a call of its own (its chunks still share batches)."""
    return spec.name == "automatic-speech-recognition" and bool(params.get("chunk_length_s")) and padding_matters


def similar_size_runs(
    order: list[int], sizes: Sequence[float], max_items: int, similar: float = SIMILAR
) -> list[list[int]]:
    """Cut indices sorted by decreasing size into runs of at most ``max_items``, none smaller than ``similar``
    times the run's largest."""
    runs: list[list[int]] = []
    for i in order:
        if not runs or len(runs[-1]) >= max_items or sizes[i] < similar * sizes[runs[-1][0]]:
            runs.append([])
        runs[-1].append(i)
    return runs


def token_counts(pipe: Any, spec: TaskSpec, params: dict, items: Sequence[Decoded]) -> list[int] | None:
    """Tokens per text input, counted as the pipeline's preprocessing counts them (None for other inputs)."""
    tokenizer = getattr(pipe, "tokenizer", None)
    if spec.name not in ("text-classification", "feature-extraction") or tokenizer is None:
        return None
    if not all(isinstance(item.value, str) for item in items) or not items:
        return None
    kwargs = dict(params.get("tokenize_kwargs") or {})
    for name in ("truncation", "padding", "max_length"):
        if name in params:
            kwargs[name] = params[name]
    kwargs.pop("padding", None)
    try:
        encoded = tokenizer([item.value for item in items], **kwargs)
    except Exception:
        return None
    return [len(ids) for ids in encoded["input_ids"]]


def _fresh(value: Any) -> Any:
    """Pipelines pop keys from dict inputs: give each call its own copy."""
    return dict(value) if isinstance(value, dict) else value


def _single_shape(spec: TaskSpec, params: dict, value: Any, output: Any, tokens: int | None) -> Any:
    """Reshape one item of a list call's output into what a call on that item alone returns."""
    if spec.name == "text-classification" and isinstance(value, str) and "top_k" not in params:
        return [output]
    if spec.name == "feature-extraction" and tokens:
        # Batched calls pad every item to the longest in its batch; drop the padding rows.
        return [row[:tokens] for row in output]
    return output
