"""Comparing job results with in-process pipeline outputs: same structure, floats equal to 1e-4."""

import math
from typing import Any

from pipeq.worker.outputs import to_jsonable


def same(result: Any, expected: Any, tolerance: float = 1e-4) -> bool:
    """True when ``result`` (JSON) matches ``expected`` (a pipeline output) exactly but for float noise."""
    return _same(result, to_jsonable(expected), tolerance)


def _same(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, abs_tol=tol)
    return a == b
