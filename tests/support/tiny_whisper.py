"""A tiny random Whisper, served as a second speech-recognition model (see tests.support.tiny_models)."""

from collections.abc import Callable
from pathlib import Path

EXTRA_MODELS: dict[str, tuple[str, Callable[[Path], Path]]] = {}
