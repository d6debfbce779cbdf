"""The model catalogue: the only models workers will load, and which queue serves each."""

import re
import warnings
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from pipeq.config.object_prefixes import normalise_prefix
from pipeq.config.tasks import canonical_task, task_spec

DType = Literal["auto", "float32", "float16", "bfloat16"]
Quantization = Literal["8bit", "4bit"]
DEFAULT_BATCH_SIZE = 16
_MEMORY_SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")


class DeprecatedSetting(FutureWarning):
    """A configuration key that was renamed: it still works, and the warning names the new key."""


RENAMED_KEYS = {
    "max_batch": "max_batch_jobs",
    "flush_interval": "max_wait_s",
    "batch_size": "pipeline_batch_size",
}
"""Old catalogue keys -> their names now (one meaning per word: a micro-batch holds jobs, a pipeline call's
``batch_size`` counts inputs)."""


def rename_deprecated(data: dict, renamed: dict[str, str], where: str) -> dict:
    """``data`` with each old key of ``renamed`` moved to its new name, warning once per key; both given is an
    error."""
    data = dict(data)
    for old, new in renamed.items():
        if old not in data:
            continue
        if new in data:
            raise ValueError(f"{where} sets both {old!r} and {new!r}: {old!r} is the old name of {new!r}, keep only it")
        warnings.warn(f"{where}: {old!r} is deprecated, use {new!r}", DeprecatedSetting, stacklevel=2)
        data[new] = data.pop(old)
    return data


class UnknownModel(ValueError):
    """A job names a model outside the catalogue, or one that does not serve its task."""


class ParameterCaps(BaseModel):
    """The most work one job's parameters may ask of a model. A job over a cap is refused at submission and failed
    by the worker on receipt, with a message naming the cap (see pipeq.config.parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: PositiveInt = Field(
        default=256,
        description="tokens generated per sequence: max_new_tokens, min_new_tokens, and max_length / min_length "
        "(which count the prompt too); a job that names no length gets at most this many (the worker lowers the "
        "model's own default to it)",
    )
    max_beams: PositiveInt = Field(default=5, description="num_beams (5: the speech pipeline's own default)")
    max_return_sequences: PositiveInt = Field(default=4, description="num_return_sequences")
    max_labels: PositiveInt = Field(default=64, description="candidate_labels (each one a forward pass), targets")
    max_top_k: PositiveInt = Field(default=100, description="top_k: results returned per input")
    max_frames: PositiveInt = Field(default=64, description="num_frames of a video")
    max_image_side_px: PositiveInt = Field(
        default=2048, description="size and crop_size in image_processor_kwargs, in pixels per side"
    )
    max_input_tokens: PositiveInt = Field(
        default=4096,
        description="tokenizer max_length (to pad or truncate to), and document-question-answering's max_seq_len, "
        "doc_stride, max_question_len, max_answer_len",
    )
    max_list_items: PositiveInt = Field(default=1024, description="items in any list inside the parameters")
    max_parameter_chars: PositiveInt = Field(default=4096, description="characters in any string inside the parameters")
    max_parameters_bytes: PositiveInt = Field(default=65536, description="all parameters, as JSON, in bytes")


class ModelEntry(BaseModel):
    """One served model: where it comes from, what it does and how its jobs are batched."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str = Field(description="what jobs call the model; defaults to `id`")
    id: str = Field(default="", description="Hub id or local directory; defaults to `name`")
    task: str
    revision: str | None = Field(default=None, description="Hub branch, tag or commit to pin")
    queue: str = "pipeq"
    dtype: DType = "auto"
    max_batch_jobs: PositiveInt = Field(default=128, description="most jobs in one micro-batch")
    max_wait_s: PositiveFloat = Field(
        default=0.01, description="seconds the first job of a micro-batch waits for company while the model is busy"
    )
    pipeline_batch_size: PositiveInt | None = Field(
        default=None,
        description="`batch_size` passed to the pipeline: inputs per forward pass; by default 16, or 1 for audio "
        "models on CPU (see batch_size_on)",
    )
    default: bool = Field(default=False, description="serve jobs of this task that name no model")
    trust_remote_code: bool = False
    expected_seconds: PositiveFloat = Field(default=60.0, description="longest one micro-batch may take")
    run_time_limit_s: PositiveFloat | None = Field(
        default=None,
        description="longest one pipeline call may run (default: expected_seconds); its jobs then fail with "
        "JobTimeout, and a call that cannot be stopped ends the worker process for its supervisor to restart",
    )
    caps: ParameterCaps = Field(
        default_factory=ParameterCaps, description="the most work one job's parameters may ask of this model"
    )
    devices: list[int] | None = Field(
        default=None, description="GPU indices within the worker's visible set; more than one shards the model"
    )
    max_memory: dict[str, str] | None = Field(
        default=None, description='memory per device for device_map="auto", e.g. {"0": "20GiB", "cpu": "30GiB"}'
    )
    quantization: Quantization | None = Field(default=None, description="8bit or 4bit (bitsandbytes, CUDA only)")
    allowed_object_prefixes: list[str] | None = Field(
        default=None,
        description="narrows the settings' allowed_object_prefixes for this model's jobs: each must lie inside one",
    )

    def run_time_limit(self) -> float:
        """Seconds one pipeline call of this model may run: ``run_time_limit_s``, else ``expected_seconds``."""
        return self.run_time_limit_s or self.expected_seconds

    def batch_size_on(self, device_type: str) -> int:
        """The ``batch_size`` of this model's pipeline calls on a ``device_type`` ("cpu", "cuda", ...) device: the
        configured one, or by default 1 for audio models on CPU and 16 otherwise. On CPU, batching speech models
        costs more than it saves, even for clips of similar length (``python -m benchmarks.speech``: wav2vec2-base
        and Whisper-base shapes, 2 cores); on GPUs and for text it pays."""
        if self.pipeline_batch_size is not None:
            return self.pipeline_batch_size
        return 1 if device_type == "cpu" and task_spec(self.task).modality == "audio" else DEFAULT_BATCH_SIZE

    @model_validator(mode="before")
    @classmethod
    def _name_and_id(cls, data: dict) -> dict:
        if isinstance(data, dict):
            data = rename_deprecated(data, RENAMED_KEYS, f"model {data.get('name') or data.get('id')!r}")
            data.setdefault("name", data.get("id"))
            if not data.get("id"):
                data["id"] = data.get("name")
        return data

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        task_spec(task)
        return canonical_task(task)

    @field_validator("devices")
    @classmethod
    def _gpu_indices(cls, devices: list[int] | None) -> list[int] | None:
        if devices is not None and (not devices or min(devices) < 0 or len(set(devices)) != len(devices)):
            raise ValueError(f"devices must list distinct GPU indices (0, 1, ...), not {devices}")
        return devices

    @field_validator("max_memory")
    @classmethod
    def _memory_per_device(cls, max_memory: dict[str, str] | None) -> dict[str, str] | None:
        for device, size in (max_memory or {}).items():
            if not (device.isdigit() or device == "cpu"):
                raise ValueError(f"max_memory keys are GPU indices or 'cpu', not {device!r}")
            if not _MEMORY_SIZE.match(size):
                raise ValueError(f"max_memory[{device!r}] must be a size such as '20GiB' or '500MB', not {size!r}")
        return max_memory

    @field_validator("allowed_object_prefixes")
    @classmethod
    def _object_prefixes(cls, prefixes: list[str] | None) -> list[str] | None:
        return None if prefixes is None else [normalise_prefix(prefix) for prefix in prefixes]

    def sharded(self) -> bool:
        """Whether the model is placed by accelerate (``device_map="auto"``) rather than on one device."""
        return self.max_memory is not None or (self.devices is not None and len(self.devices) > 1)


class Catalogue:
    """Looks up catalogue entries by the name jobs use; refuses everything else."""

    def __init__(self, models: list[ModelEntry]) -> None:
        self.models = {entry.name: entry for entry in models}
        if len(self.models) != len(models):
            raise ValueError("the model catalogue names a model twice")

    def resolve(self, task: str, model: str | None) -> ModelEntry:
        """The entry serving ``task`` under ``model`` (or the task's default when ``model`` is None)."""
        task = task_spec(task).name
        if model is None:
            return self.default_for(task)
        entry = self.models.get(model)
        if entry is None:
            raise UnknownModel(
                f"model {model!r} is not in the catalogue; models for {task}: {self._names_for(task)}. "
                "Add it to the catalogue (config file, [[models]]) to serve it."
            )
        if entry.task != task:
            raise UnknownModel(f"model {model!r} serves {entry.task}, not {task}")
        return entry

    def default_for(self, task: str) -> ModelEntry:
        """The entry flagged default for ``task``, else the first one serving it."""
        candidates = [entry for entry in self.models.values() if entry.task == task]
        if not candidates:
            raise UnknownModel(f"no model in the catalogue serves {task}; add one to the config file")
        return next((entry for entry in candidates if entry.default), candidates[0])

    def queues(self) -> list[str]:
        """Every queue some catalogue model is served on."""
        return sorted({entry.queue for entry in self.models.values()})

    def for_queues(self, queues: list[str]) -> list[ModelEntry]:
        """The entries served on any of ``queues``."""
        return [entry for entry in self.models.values() if entry.queue in queues]

    def _names_for(self, task: str) -> str:
        return ", ".join(name for name, entry in self.models.items() if entry.task == task) or "none"
