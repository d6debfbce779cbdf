"""Jobs files for ``pipeq submit --from``: one JSON object per line, a request of ``Client.submit_requests``."""

import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from pipeq.config.settings import Limits
from pipeq.core.contract import InvalidJob

LINE_SLACK = 64 * 1024
"""Bytes a line may hold besides its input: the task, model, parameters, webhook and lifecycle options."""


def max_line_bytes(limits: Limits) -> int:
    """The longest line a jobs file may hold: the largest text input written with JSON escapes (up to 6 bytes a
    character), the largest inline media in base64, and LINE_SLACK."""
    return 6 * limits.max_text_chars + 2 * limits.max_inline_bytes + LINE_SLACK


def read_requests(stream: BinaryIO, lines: list[int], max_line: int) -> Iterator[Any]:
    """The JSON value of each non-blank line of ``stream``, read as it is consumed; the line number of each value
    (the one being read included) is appended to ``lines``. InvalidJob for a line that is too long or not JSON."""
    number = 0
    while True:
        line = stream.readline(max_line + 1)
        if not line:
            return
        number += 1
        if not line.strip():
            continue
        lines.append(number)
        if len(line) > max_line:
            raise InvalidJob(f"longer than {max_line} bytes (limits.max_text_chars and max_inline_bytes bound it)")
        try:
            value = json.loads(line, parse_constant=refuse_constant)
        except ValueError as exc:  # UnicodeDecodeError included
            raise InvalidJob(f"not a JSON value ({str(exc)[:120]}): give one JSON object per line") from None
        except RecursionError:
            raise InvalidJob("JSON nested too deeply") from None
        yield value


def refuse_constant(name: str) -> Any:
    """``json.loads``'s ``parse_constant``: NaN, Infinity and -Infinity are not JSON (Python accepts them)."""
    raise ValueError(f"{name} is not JSON")
