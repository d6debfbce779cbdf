"""The tasks pipeq serves: each task's input modality and the parameters its pipeline accepts.

The parameter names mirror the keyword arguments of the pipeline classes' ``_sanitize_parameters`` in the
pinned transformers version (``tests/config/test_tasks.py`` checks that they still exist there). Only
parameters whose values travel as JSON are listed: ``return_tensors`` and the like are left out on purpose.
"""

from dataclasses import dataclass
from typing import Literal

Modality = Literal["text", "audio", "image"]


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
    )
}


def task_spec(task: str) -> TaskSpec:
    """The spec of ``task``, or UnknownTask listing the served tasks."""
    try:
        return TASKS[task]
    except KeyError:
        raise UnknownTask(f"unknown task {task!r}; pipeq serves: {', '.join(sorted(TASKS))}") from None
