"""Settings, the model catalogue and the table of tasks pipeq serves."""

from config.catalogue import Catalogue, ModelEntry, UnknownModel
from config.settings import IngestRule, Limits, Settings, Webhooks, load_settings
from config.tasks import TASKS, TaskSpec, UnknownTask, task_spec

__all__ = [
    "TASKS",
    "Catalogue",
    "IngestRule",
    "Limits",
    "ModelEntry",
    "Settings",
    "TaskSpec",
    "UnknownModel",
    "UnknownTask",
    "Webhooks",
    "load_settings",
    "task_spec",
]
