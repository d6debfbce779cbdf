"""Tiny random models for the vision tasks, written to disk in Hub layout (see tests.support.tiny_models)."""

from collections.abc import Callable
from pathlib import Path

BUILDERS: dict[str, Callable[[Path], Path]] = {}
