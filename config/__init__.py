"""Settings, the model catalogue and the table of tasks pipeq serves."""

from pipeq.config.catalogue import Catalogue, ModelEntry, UnknownModel
from pipeq.config.settings import IngestRule, Limits, Settings, Webhooks, load_settings
from pipeq.config.tasks import TASKS, TaskSpec, UnknownTask, task_spec

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
