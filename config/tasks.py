"""The tasks pipeq serves: each task's input modality, its dict inputs, and (from pipeq.config.parameters) the
parameters its pipeline accepts.

Inputs per task:

* text tasks take text (inline or an ``s3://`` UTF-8 object); text-classification also takes
  ``{"text": ..., "text_pair": ...}``.
* text-generation takes a prompt as text, or a chat as the dict input ``{"messages": [{"role": "system" |
  "user" | "assistant", "content": "..."}, ...]}``; the model's chat template formats it and the result's
  ``generated_text`` is the chat with the assistant's reply appended (``return_full_text=false``: the reply
  alone).
* audio, image and video tasks take the media (an ``s3://`` object or inline bytes); what else a call needs
  travels as parameters: ``candidate_labels`` for the zero-shot tasks, ``question`` (and optionally
  ``word_boxes``, ``[[word, [x0, y0, x1, y1]], ...]`` with boxes scaled to 0-1000, instead of Tesseract OCR)
  for document-question-answering.
* "dict" tasks take dict inputs only, media inside by reference (see pipeq.core.contract): image-text-to-text
  ``{"images": ..., "text": "<image> ..."}`` or a chat whose content parts hold images; any-to-any likewise with
  ``audio`` and ``videos``; keypoint-matching ``{"images": [first, second]}``; table-question-answering
  ``{"table": {column: [cells]}, "query": ...}``; decision ``{"state": ..., "questions": {...}}``. Their
  generation options go inside ``generate_kwargs`` (these pipelines drop a top-level ``do_sample``).
"""

from dataclasses import dataclass
from typing import Literal

from pipeq.config.parameters import GENERATION, TASK_PARAMETERS

Modality = Literal["text", "audio", "image", "video", "dict"]
"""How a task's plain input is read; "dict": the task takes dict inputs only (media inside them by reference)."""
MediaKind = Literal["audio", "image", "video"]

TASK_ALIASES: dict[str, str] = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
TASK_ALIASES["text-to-speech"] = "text-to-audio"


class UnknownTask(ValueError):
    """A job names a task pipeq does not serve."""


@dataclass(frozen=True)
class TaskSpec:
    """What pipeq knows of one transformers pipeline task."""

    name: str
    modality: Modality
    dict_input_keys: frozenset[str] = frozenset()
    """Keys a dict input may carry (empty: the task takes no dict input)."""
    required_input_keys: frozenset[str] = frozenset()
    """Keys every dict input must carry (with ``{"messages": ...}`` chats as the alternative, where accepted)."""

    @property
    def parameters(self) -> frozenset[str]:
        """The names of the parameters a job of this task may pass (their schemas: pipeq.config.parameters)."""
        return frozenset(TASK_PARAMETERS[self.name].fields)

    @property
    def required(self) -> frozenset[str]:
        """The parameters every job of this task must pass."""
        return TASK_PARAMETERS[self.name].required


GENERATE_KWARGS = frozenset(GENERATION.fields)
"""Generation options text-generation passes on to ``model.generate`` through its ``**kwargs``."""

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("text-classification", "text", dict_input_keys=frozenset({"text", "text_pair"})),
        TaskSpec("zero-shot-classification", "text"),
        TaskSpec("feature-extraction", "text"),
        TaskSpec("automatic-speech-recognition", "audio"),
        TaskSpec("image-classification", "image"),
        TaskSpec("token-classification", "text"),
        TaskSpec("fill-mask", "text"),
        TaskSpec("text-generation", "text", dict_input_keys=frozenset({"messages"})),
        TaskSpec("audio-classification", "audio"),
        TaskSpec("zero-shot-image-classification", "image"),
        TaskSpec("object-detection", "image"),
        TaskSpec("document-question-answering", "image"),
        TaskSpec("text-to-audio", "text"),
        TaskSpec(
            "table-question-answering",
            "dict",
            dict_input_keys=frozenset({"table", "query"}),
            required_input_keys=frozenset({"table", "query"}),
        ),
        TaskSpec("zero-shot-audio-classification", "audio"),
        TaskSpec("image-feature-extraction", "image"),
        TaskSpec("image-segmentation", "image"),
        TaskSpec(
            "image-text-to-text",
            "dict",
            dict_input_keys=frozenset({"images", "text", "messages"}),
            # {"images": ..., "text": "<image> prompt"}, or a chat; the pipeline reads no dict without both.
            required_input_keys=frozenset({"images", "text"}),
        ),
        TaskSpec("zero-shot-object-detection", "image"),
        TaskSpec(
            "decision",
            "dict",
            dict_input_keys=frozenset({"state", "questions", "assets"}),
            required_input_keys=frozenset({"state", "questions"}),
        ),
        TaskSpec("depth-estimation", "image"),
        TaskSpec("video-classification", "video"),
        TaskSpec("mask-generation", "image"),
        TaskSpec(
            "keypoint-matching",
            "dict",
            dict_input_keys=frozenset({"images"}),
            required_input_keys=frozenset({"images"}),
        ),
        TaskSpec(
            "any-to-any",
            "dict",
            dict_input_keys=frozenset({"text", "images", "videos", "audio", "messages"}),
            required_input_keys=frozenset({"text"}),  # the prompt that places the media; or a chat
        ),
    )
}


def canonical_task(task: str) -> str:
    """The task's own name for an alias transformers accepts (``ner`` is token-classification)."""
    return TASK_ALIASES.get(task, task)


def task_spec(task: str) -> TaskSpec:
    """The spec of ``task`` (or of the task an alias names), or UnknownTask listing the served tasks."""
    try:
        return TASKS[canonical_task(task)]
    except KeyError:
        raise UnknownTask(f"unknown task {task!r}; pipeq serves: {', '.join(sorted(TASKS))}") from None
