"""Running one group of same-model, same-parameter inputs through a transformers pipeline.

Items are sorted by size (tokens, audio seconds, pixels) and cut into runs of similar size (at most
``batch_size`` items, none smaller than ``SIMILAR`` times the run's largest), so that padding stays small;
each run is one ``pipeline(list, batch_size=len(run))`` call. Each output is given back in the shape
``pipeline(single_input)`` returns. If the batched call raises, the group
is split in halves until the inputs that fail are alone: they fail, the others succeed.
"""

import importlib.util
import weakref
from collections.abc import Sequence
from typing import Any

from PIL import Image
from pipeq.config.tasks import TaskSpec
from pipeq.worker.decoding import Decoded, video_frames
from pipeq.worker.errors import ModelUnavailable, PipelineError
from pipeq.worker.memory import free_accelerator_memory, is_out_of_memory, out_of_memory_message
from pipeq.worker.outputs import shape_output, to_jsonable

SIMILAR = 0.75
"""Smallest item size in a run, relative to the run's largest: at most a quarter of a run is padding."""


def run_group(pipe: Any, spec: TaskSpec, params: dict, batch_size: int, items: Sequence[Decoded]) -> list[Any]:
    """One JSON-ready result or PipelineError per item, in the items' order."""
    if (missing := missing_package(spec)) is not None:
        return [missing] * len(items)
    tokens = token_counts(pipe, spec, params, items)
    sizes = tokens if tokens is not None else [item.size for item in items]
    results: list[Any] = [input_problem(pipe, spec, params, item.value) for item in items]
    order = sorted((i for i in range(len(items)) if results[i] is None), key=lambda i: -sizes[i])

    def run(indices: list[int]) -> None:
        inputs = [_fresh(items[i].value) for i in indices]
        try:
            if len(inputs) == 1:  # a call on the item alone: already in its own shape, no collation
                results[indices[0]] = _result(spec, pipe(inputs[0], **params))
                return
            outputs = list(pipe(_as_batch(spec, inputs), batch_size=min(batch_size, len(inputs)), **params))
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
            results[i] = _result(spec, _single_shape(spec, params, items[i].value, output, tokens and tokens[i]))

    padding_matters = padding_changes_results(pipe, spec)
    similar = 1.0 if padding_matters else SIMILAR  # then only inputs of the very same length share a call
    max_items = 1 if _alone(pipe, spec, params, padding_matters) else batch_size
    chats = {i for i, item in enumerate(items) if _is_chat(item.value)}
    # Chats and other inputs never share a call: a pipeline reads a whole list as chats, or as none.
    for form in ([i for i in order if i not in chats], [i for i in order if i in chats]):
        for group in same_shape_groups(pipe, spec, form, items):
            for chunk in similar_size_runs(group, sizes, max_items, similar):
                run(chunk)
    return results


def failure_hint(pipe: Any, spec: TaskSpec, params: dict, out_of_memory: bool) -> str:
    """What to try, for the failures of an input alone whose own message does not say: speech that ran out of
    memory in one pass, and video models given other ``num_frames`` than their fixed frame embeddings."""
    if out_of_memory and spec.name == "automatic-speech-recognition" and not params.get("chunk_length_s"):
        return "; pass chunk_length_s (e.g. 30, with stride_length_s) to transcribe long audio in chunks"
    frames = getattr(getattr(getattr(pipe, "model", None), "config", None), "num_frames", None)
    if spec.name == "video-classification" and params.get("num_frames") not in (None, frames) and frames:
        return f"; this model was made for num_frames={frames}: leave num_frames out or pass {frames}"
    return ""


def padding_changes_results(pipe: Any, spec: TaskSpec) -> bool:
    """Audio models fed zero padding without an attention mask (wav2vec2-base and the like) give a padded input
    other results than the input alone; feature extractors that pad every input to one length (Whisper's 30 s,
    ``n_samples``; CLAP's ``nb_max_samples``, repeating the clip) do not."""
    extractor = getattr(pipe, "feature_extractor", None)
    if spec.modality != "audio" or extractor is None or getattr(extractor, "return_attention_mask", True):
        return False
    return getattr(extractor, "n_samples", None) is None and getattr(extractor, "nb_max_samples", None) is None


UNBATCHED_TASKS = frozenset(
    {"text-to-audio", "table-question-answering", "decision", "keypoint-matching", "mask-generation"}
)
"""Tasks whose pipelines cannot batch inputs: text-to-audio pads a batch's waveforms to the longest without saying
how long each is (and VITS gives padded inputs other sounds); table-question-answering and decision raise on
batches of more than one; keypoint-matching raises too (its preprocessed image pairs do not collate), and so does
mask-generation (SAM's batches of points; each image's points still go through in ``points_per_batch``)."""

NEEDED_PACKAGES: dict[str, tuple[str, str]] = {
    "mask-generation": (
        "torchvision",
        "SAM's post-processing drops overlapping masks with torchvision's batched_nms; install the torchvision build "
        "made for the worker's torch",
    ),
    "table-question-answering": ("pandas", "the pipeline and TAPAS's tokenizer read tables as pandas DataFrames"),
}
"""Packages a task's pipeline imports only once the model has run, and what for."""


def missing_package(spec: TaskSpec) -> ModelUnavailable | None:
    """The failure of every job of a task whose pipeline needs a package this worker lacks, known before the model
    runs (the pipeline would raise only after running the model on each input); None when nothing is missing."""
    if (needed := NEEDED_PACKAGES.get(spec.name)) is None or importlib.util.find_spec(needed[0]) is not None:
        return None
    package, use = needed
    return ModelUnavailable(
        f"{spec.name} needs the {package} package, which this worker lacks ({use}): pip install {package}, "
        f"or serve {spec.name} from a worker that has it"
    )


_PROBES = ((64, 48), (40, 96))
"""Two image sizes of different aspect ratios: a processor that gives both one pixel shape resizes to a fixed size."""


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


def _alone(pipe: Any, spec: TaskSpec, params: dict, padding_matters: bool) -> bool:
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


def _is_chat(value: Any) -> bool:
    """A decoded chat: the list of its messages."""
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def _as_batch(spec: TaskSpec, inputs: list) -> Any:
    """What a list call takes: image-text-to-text reads a list of dicts as one chat, so its dict inputs go in as a
    generator (read item by item, still in batches; one output per input, in its single-call shape)."""
    if spec.name == "image-text-to-text" and isinstance(inputs[0], dict):
        return (value for value in inputs)
    return inputs


def input_problem(pipe: Any, spec: TaskSpec, params: dict, value: Any) -> PipelineError | None:
    """Why the pipeline would fail on ``value`` with an unclear error, said clearly before the call; or None."""
    check = _INPUT_CHECKS.get(spec.name)
    return None if check is None else check(pipe, params, value)


def _video_too_short(pipe: Any, params: dict, value: Any) -> PipelineError | None:
    """Video classification without a video processor reads the first ``num_frames * frame_sampling_rate``
    frames: a shorter video gives the model too few frames, and a shape error."""
    if getattr(pipe, "video_processor", None) is not None:
        return None
    num_frames = params.get("num_frames") or pipe.model.config.num_frames
    rate = params.get("frame_sampling_rate") or 1
    frames = video_frames(value, num_frames * rate)
    if frames is None or frames >= num_frames * rate:
        return None
    return PipelineError(
        f"the video has {frames} frame(s); num_frames={num_frames} taken every frame_sampling_rate={rate} frame(s) "
        f"needs {num_frames * rate}: send a longer video or pass a smaller frame_sampling_rate"
    )


def _nothing_to_say(pipe: Any, params: dict, value: Any) -> PipelineError | None:
    """Speech models (VITS) drop the characters their tokenizer lacks: a text of none of the ones it knows
    leaves no tokens, and a tensor error."""
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None or not isinstance(value, str):
        return None
    try:
        if len(tokenizer(value)["input_ids"]) > 0:
            return None
    except Exception:  # a tokenizer of another kind: the pipeline says what is wrong, if anything
        return None
    return PipelineError(
        f"the text has no character this model can speak: its tokenizer knows {_known_characters(tokenizer)}"
    )


def _known_characters(tokenizer: Any, shown: int = 40) -> str:
    """Some of the single characters in a tokenizer's vocabulary, for an error message."""
    characters = sorted(token for token in tokenizer.get_vocab() if len(token) == 1 and token.isprintable())
    listed = "".join(characters[:shown]) + ("..." if len(characters) > shown else "")
    return f"{len(characters)} characters ({listed!r})" if characters else "no single characters"


_INPUT_CHECKS = {"video-classification": _video_too_short, "text-to-audio": _nothing_to_say}


def _result(spec: TaskSpec, output: Any) -> Any:
    """One input's pipeline output as the JSON pipeq returns for the task."""
    return to_jsonable(shape_output(spec.name, output))


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
