"""``GET /v1/models``: the catalogue as a producer needs it — each model a caller may use, with what its input may
be and the JSON Schema of its parameters (the model's caps included)."""

from typing import Any

from pipeq.api.tokens import Principal
from pipeq.config.catalogue import ModelEntry
from pipeq.config.parameters import parameters_schema
from pipeq.config.settings import Settings
from pipeq.config.tasks import task_spec

UPLOAD_TYPES = {"audio": ["audio/*", "video/*"], "image": ["image/*", "application/pdf"], "video": ["video/*"]}
"""Content types worth uploading for a task's media, by modality (what the worker decodes)."""


def model_views(principal: Principal, settings: Settings) -> list[dict[str, Any]]:
    """Every catalogue model ``principal`` may submit to, described for a producer."""
    return [_view(entry, settings) for entry in settings.catalogue.models.values() if principal.refusal(entry) is None]


def _view(entry: ModelEntry, settings: Settings) -> dict[str, Any]:
    spec = task_spec(entry.task)
    limits = settings.limits
    kinds = {"text": ["text", "s3"], "dict": ["dict"]}.get(spec.modality, ["s3"])
    if spec.dict_input_keys and "dict" not in kinds:
        kinds.append("dict")
    entry_input: dict[str, Any] = {
        "modality": spec.modality,
        "kinds": kinds,
        "dict_keys": sorted(spec.dict_input_keys),
        "required_dict_keys": sorted(spec.required_input_keys),
        "max_text_chars": limits.max_text_chars,
        "max_media_bytes": limits.max_media_bytes,
        "upload_types": UPLOAD_TYPES.get(spec.modality, ["text/plain"] if spec.modality == "text" else []),
    }
    if spec.modality == "audio":
        entry_input["max_audio_seconds"] = limits.max_audio_seconds
    if spec.modality in ("image", "video"):
        entry_input["max_image_pixels"] = limits.max_image_pixels
    return {
        "name": entry.name,
        "task": entry.task,
        "default": settings.catalogue.default_for(entry.task).name == entry.name,
        "input": entry_input,
        "parameters": parameters_schema(entry.task, entry.caps),
    }
