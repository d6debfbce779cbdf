"""Settings written as a pipeq TOML config file (the format of ``config/pipeq.example.toml``), for the worker
processes that tests and benchmarks start."""

from pathlib import Path
from typing import Any

import tomli_w
from pydantic import SecretStr

from pipeq.config.settings import Settings


def write_config(settings: Settings, path: Path) -> Path:
    """Write ``settings`` to ``path`` so that ``load_settings(path)`` reads the same settings back: secrets
    revealed, None values left out (TOML has no null), paths as strings. ``config`` (the file settings were read
    from) is not written."""
    path.write_text(tomli_w.dumps(_toml_ready(settings.model_dump(exclude={"config"}))))
    return path


def _toml_ready(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {key: _toml_ready(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_toml_ready(item) for item in value]
    return value
