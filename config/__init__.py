"""Settings, the model catalogue and the table of tasks pipeq serves."""

from config.catalogue import Catalogue, ModelEntry, UnknownModel
from config.settings import Limits, Settings, load_settings
from config.tasks import TASKS, TaskSpec, UnknownTask, task_spec

__all__ = [
    "TASKS",
    "Catalogue",
    "Limits",
    "ModelEntry",
    "Settings",
    "TaskSpec",
    "UnknownModel",
    "UnknownTask",
    "load_settings",
    "task_spec",
]
