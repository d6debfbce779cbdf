"""The tasks pipeq serves: each task's input modality and the parameters its pipeline accepts.

The parameter names mirror the keyword arguments of the pipeline classes' ``_sanitize_parameters`` in the
pinned transformers version (``tests/config/test_tasks.py`` checks that they still exist there). Only
parameters whose values travel as JSON are listed: ``return_tensors`` and the like are left out on purpose.
A few are arguments of the pipeline's ``__call__`` (``candidate_labels``; ``question`` and ``word_boxes`` of
document-question-answering) or go through its ``**kwargs`` to ``generate`` (``max_new_tokens``, ``do_sample``,
``top_p``, ``temperature``, ... of text-generation).

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
    parameters: frozenset[str]
    required: frozenset[str] = frozenset()
    dict_input_keys: frozenset[str] = frozenset()
    """Keys a dict input may carry (empty: the task takes no dict input)."""
    required_input_keys: frozenset[str] = frozenset()
    """Keys every dict input must carry (with ``{"messages": ...}`` chats as the alternative, where accepted)."""

    def check_parameters(self, parameters: dict) -> None:
        """Raise ValueError naming the unknown or missing parameters and listing the known ones."""
        unknown = sorted(set(parameters) - self.parameters)
        known = ", ".join(sorted(self.parameters)) or "none"
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(unknown)} for task {self.name}; known parameters: {known}"
            )
        missing = sorted(self.required - set(parameters))
        if missing:
            raise ValueError(f"task {self.name} needs the parameter(s) {', '.join(missing)}")


_TOKENIZER = frozenset({"truncation", "padding", "max_length"})
GENERATE_KWARGS = frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "do_sample",
        "top_p",
        "top_k",
        "temperature",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "num_beams",
        "num_return_sequences",
    }
)
"""Generation options text-generation passes on to ``model.generate`` through its ``**kwargs``."""
_MULTIMODAL_GENERATION = frozenset(
    {
        "max_new_tokens",
        "generate_kwargs",
        "return_full_text",
        "clean_up_tokenization_spaces",
        "stop_sequence",
        "continue_final_message",
        "skip_special_tokens",
        "processor_kwargs",
    }
)
"""Parameters of the image-text-to-text and any-to-any pipelines."""

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "text-classification",
            "text",
            frozenset({"top_k", "function_to_apply"}) | _TOKENIZER,
            dict_input_keys=frozenset({"text", "text_pair"}),
        ),
        TaskSpec(
            "zero-shot-classification",
            "text",
            frozenset({"candidate_labels", "hypothesis_template", "multi_label"}),
            required=frozenset({"candidate_labels"}),
        ),
        TaskSpec("feature-extraction", "text", frozenset({"truncation", "tokenize_kwargs"})),
        TaskSpec(
            "automatic-speech-recognition",
            "audio",
            frozenset(
                {
                    "chunk_length_s",
                    "stride_length_s",
                    "return_timestamps",
                    "return_language",
                    "generate_kwargs",
                    "max_new_tokens",
                }
            ),
        ),
        TaskSpec("image-classification", "image", frozenset({"top_k", "function_to_apply"})),
        TaskSpec("token-classification", "text", frozenset({"ignore_labels", "aggregation_strategy", "stride"})),
        TaskSpec("fill-mask", "text", frozenset({"top_k", "targets", "tokenizer_kwargs"})),
        TaskSpec(
            "text-generation",
            "text",
            frozenset(
                {
                    "return_full_text",
                    "clean_up_tokenization_spaces",
                    "prefix",
                    "handle_long_generation",
                    "stop_sequence",
                    "truncation",
                    "max_length",
                    "continue_final_message",
                    "skip_special_tokens",
                    "tokenizer_encode_kwargs",
                    "tools",
                    "documents",
                }
            )
            | GENERATE_KWARGS,
            dict_input_keys=frozenset({"messages"}),
        ),
        TaskSpec("audio-classification", "audio", frozenset({"top_k", "function_to_apply"})),
        TaskSpec(
            "zero-shot-image-classification",
            "image",
            frozenset({"candidate_labels", "hypothesis_template", "tokenizer_kwargs"}),
            required=frozenset({"candidate_labels"}),
        ),
        TaskSpec("object-detection", "image", frozenset({"threshold"})),
        TaskSpec(
            "document-question-answering",
            "image",
            frozenset(
                {
                    "question",
                    "word_boxes",
                    "padding",
                    "doc_stride",
                    "max_question_len",
                    "lang",
                    "tesseract_config",
                    "max_answer_len",
                    "max_seq_len",
                    "top_k",
                    "handle_impossible_answer",
                }
            ),
            required=frozenset({"question"}),
        ),
        TaskSpec("text-to-audio", "text", frozenset({"forward_params", "generate_kwargs", "processor_kwargs"})),
        TaskSpec(
            "table-question-answering",
            "dict",
            frozenset({"sequential", "padding", "truncation"}),
            dict_input_keys=frozenset({"table", "query"}),
            required_input_keys=frozenset({"table", "query"}),
        ),
        TaskSpec(
            "zero-shot-audio-classification",
            "audio",
            frozenset({"candidate_labels", "hypothesis_template"}),
            required=frozenset({"candidate_labels"}),
        ),
        TaskSpec("image-feature-extraction", "image", frozenset({"pool", "image_processor_kwargs"})),
        TaskSpec(
            "image-segmentation",
            "image",
            frozenset({"subtask", "threshold", "mask_threshold", "overlap_mask_area_threshold"}),
        ),
        TaskSpec(
            "image-text-to-text",
            "dict",
            _MULTIMODAL_GENERATION,
            dict_input_keys=frozenset({"images", "text", "messages"}),
            # {"images": ..., "text": "<image> prompt"}, or a chat; the pipeline reads no dict without both.
            required_input_keys=frozenset({"images", "text"}),
        ),
        TaskSpec(
            "zero-shot-object-detection",
            "image",
            frozenset({"candidate_labels", "threshold", "top_k"}),
            required=frozenset({"candidate_labels"}),
        ),
        TaskSpec(
            "decision",
            "dict",
            frozenset(),
            dict_input_keys=frozenset({"state", "questions", "assets"}),
            required_input_keys=frozenset({"state", "questions"}),
        ),
        TaskSpec("depth-estimation", "image", frozenset()),
        TaskSpec(
            "video-classification",
            "video",
            frozenset({"top_k", "num_frames", "frame_sampling_rate", "function_to_apply"}),
        ),
        TaskSpec(
            "mask-generation",
            "image",
            frozenset(
                {
                    "points_per_batch",
                    "points_per_crop",
                    "crops_n_layers",
                    "crop_overlap_ratio",
                    "crop_n_points_downscale_factor",
                    "pred_iou_thresh",
                    "stability_score_offset",
                    "mask_threshold",
                    "stability_score_thresh",
                    "max_hole_area",
                    "max_sprinkle_area",
                    "crops_nms_thresh",
                    "output_rle_mask",
                    "output_bboxes_mask",
                }
            ),
        ),
        TaskSpec(
            "keypoint-matching",
            "dict",
            frozenset({"threshold"}),
            dict_input_keys=frozenset({"images"}),
            required_input_keys=frozenset({"images"}),
        ),
        TaskSpec(
            "any-to-any",
            "dict",
            _MULTIMODAL_GENERATION | {"generation_mode"},
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
