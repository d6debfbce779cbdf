"""What some tasks' pipelines need that others do not: said once, here, so the runner stays task-blind.

Some pipelines cannot batch at all, some need a package only once the model has run, some fail on an input with an
unclear error (said clearly before the call here), and list calls give outputs in other shapes than single calls.
"""

import importlib.util
from typing import Any

from pipeq.config.tasks import TaskSpec
from pipeq.worker.decoding import video_frames
from pipeq.worker.errors import ModelUnavailable, PipelineError
from pipeq.worker.outputs import shape_output, to_jsonable

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


def failure_hint(pipe: Any, spec: TaskSpec, params: dict, out_of_memory: bool) -> str:
    """What to try, for the failures of an input alone whose own message does not say: speech that ran out of
    memory in one pass, and video models given other ``num_frames`` than their fixed frame embeddings."""
    if out_of_memory and spec.name == "automatic-speech-recognition" and not params.get("chunk_length_s"):
        return "; pass chunk_length_s (e.g. 30, with stride_length_s) to transcribe long audio in chunks"
    frames = getattr(getattr(getattr(pipe, "model", None), "config", None), "num_frames", None)
    if spec.name == "video-classification" and params.get("num_frames") not in (None, frames) and frames:
        return f"; this model was made for num_frames={frames}: leave num_frames out or pass {frames}"
    return ""


def fresh_input(value: Any) -> Any:
    """Pipelines pop keys from dict inputs: give each call its own copy."""
    return dict(value) if isinstance(value, dict) else value


def as_batch(spec: TaskSpec, inputs: list) -> Any:
    """What a list call takes: image-text-to-text reads a list of dicts as one chat, so its dict inputs go in as a
    generator (read item by item, still in batches; one output per input, in its single-call shape)."""
    if spec.name == "image-text-to-text" and isinstance(inputs[0], dict):
        return (value for value in inputs)
    return inputs


def single_shape(spec: TaskSpec, params: dict, value: Any, output: Any, tokens: int | None) -> Any:
    """Reshape one item of a list call's output into what a call on that item alone returns."""
    if spec.name == "text-classification" and isinstance(value, str) and "top_k" not in params:
        return [output]
    if spec.name == "feature-extraction" and tokens:
        # Batched calls pad every item to the longest in its batch; drop the padding rows.
        return [row[:tokens] for row in output]
    return output


def as_result(spec: TaskSpec, output: Any) -> Any:
    """One input's pipeline output as the JSON pipeq returns for the task."""
    return to_jsonable(shape_output(spec.name, output))
