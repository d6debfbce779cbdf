"""Which inputs of a micro-batch may share one pipeline call.

Inputs, sorted by size (tokens, audio seconds, pixels), are cut into runs of similar size (at most ``batch_size``
items, none smaller than ``SIMILAR`` times the run's largest), so that padding stays small. Inputs that a shared
call would give other results, or that a pipeline cannot stack, are kept apart: chats from other inputs, images
of different sizes where the image processor keeps sizes, audio of different lengths where padding is heard, and
the jobs that need a call of their own.
"""

import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from PIL import Image

from pipeq.config.tasks import TaskSpec
from pipeq.worker.decoding import Decoded
from pipeq.worker.task_quirks import UNBATCHED_TASKS

SIMILAR = 0.75
"""Smallest item size in a run, relative to the run's largest: at most a quarter of a run is padding."""


def shared_calls(
    pipe: Any,
    spec: TaskSpec,
    params: dict,
    batch_size: int,
    items: Sequence[Decoded],
    order: list[int],
    sizes: Sequence[float],
) -> Iterator[list[int]]:
    """The indices ``order`` (sorted by decreasing size) cut into the lists that may each share one call, in order."""
    padding_matters = padding_changes_results(pipe, spec)
    similar = 1.0 if padding_matters else SIMILAR  # then only inputs of the very same length share a call
    max_items = 1 if needs_call_of_its_own(pipe, spec, params, padding_matters) else batch_size
    chats = {i for i, item in enumerate(items) if is_chat(item.value)}
    # Chats and other inputs never share a call: a pipeline reads a whole list as chats, or as none.
    for form in ([i for i in order if i not in chats], [i for i in order if i in chats]):
        for group in same_shape_groups(pipe, spec, form, items):
            yield from similar_size_runs(group, sizes, max_items, similar)


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


def padding_changes_results(pipe: Any, spec: TaskSpec) -> bool:
    """Audio models fed zero padding without an attention mask (wav2vec2-base and the like) give a padded input
    other results than the input alone; feature extractors that pad every input to one length (Whisper's 30 s,
    ``n_samples``; CLAP's ``nb_max_samples``, repeating the clip) do not."""
    extractor = getattr(pipe, "feature_extractor", None)
    if spec.modality != "audio" or extractor is None or getattr(extractor, "return_attention_mask", True):
        return False
    return getattr(extractor, "n_samples", None) is None and getattr(extractor, "nb_max_samples", None) is None


def needs_call_of_its_own(pipe: Any, spec: TaskSpec, params: dict, padding_matters: bool) -> bool:
    """Each job gets a call of its own for UNBATCHED_TASKS; for long audio cut in chunks where padding changes
    results (the pipeline batches chunks across inputs, padding the short last ones; a job's chunks still share
    batches); and for Whisper's word timestamps, which a batched call places differently (past 30 s)."""
    if spec.name in UNBATCHED_TASKS:
        return True
    if spec.name != "automatic-speech-recognition":
        return False
    if params.get("return_timestamps") == "word" and getattr(pipe, "type", None) == "seq2seq_whisper":
        return True
    return bool(params.get("chunk_length_s")) and padding_matters


def is_chat(value: Any) -> bool:
    """A decoded chat: the list of its messages."""
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def same_shape_groups(pipe: Any, spec: TaskSpec, indices: list[int], items: Sequence[Decoded]) -> list[list[int]]:
    """``indices`` split by image size where the image processor keeps each image's size or aspect ratio (GLPN,
    Depth Anything, DETR, Mask2Former's default): pipelines stack pixel tensors unpadded, so only images of one size
    can share a call. Order within each group is kept."""
    if not _shape_follows_size(pipe, spec):
        return [indices]
    groups: dict[Any, list[int]] = {}
    for i in indices:
        value = items[i].value
        groups.setdefault(value.size if isinstance(value, Image.Image) else None, []).append(i)
    return list(groups.values())


_PROBES = ((64, 48), (40, 96))
"""Two image sizes of different aspect ratios: a processor that gives both one pixel shape resizes to a fixed size."""

_SHAPE_FOLLOWS_SIZE: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()
"""Per loaded pipeline, what :func:`_shape_follows_size` found: probed once, not on every micro-batch."""


def _shape_follows_size(pipe: Any, spec: TaskSpec) -> bool:
    """Whether the image processor gives pictures of different sizes pixel tensors of different shapes."""
    processor = getattr(pipe, "image_processor", None)
    if spec.modality != "image" or processor is None:
        return False
    if pipe not in _SHAPE_FOLLOWS_SIZE:
        try:
            shapes = {
                tuple(processor(images=Image.new("RGB", size), return_tensors="pt")["pixel_values"].shape)
                for size in _PROBES
            }
        except Exception:  # not a plain image processor: batch as before (a failing batch is split anyway)
            shapes = set()
        _SHAPE_FOLLOWS_SIZE[pipe] = len(shapes) > 1
    return _SHAPE_FOLLOWS_SIZE[pipe]
