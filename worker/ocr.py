"""Tesseract OCR with a time limit.

document-question-answering runs Tesseract inside the pipeline (transformers' ``apply_tesseract`` calls
``pytesseract.image_to_data``) with no timeout and no hook for one, and a crafted image can keep Tesseract busy
for a long time. The worker wraps ``pytesseract.image_to_data`` once, at start, so that every call made without
a ``timeout`` gets the configured one: pytesseract then kills Tesseract and raises, which fails that job alone.
"""

import functools
import importlib.util
from collections.abc import Callable
from typing import Any


def install_ocr_timeout(seconds: float) -> bool:
    """Give every ``pytesseract.image_to_data`` call without a ``timeout`` one of ``seconds``; False when pytesseract
    is not installed. Installing again replaces the limit."""
    if importlib.util.find_spec("pytesseract") is None:
        return False
    import pytesseract

    original = getattr(pytesseract.image_to_data, "__wrapped__", pytesseract.image_to_data)
    pytesseract.image_to_data = _with_default_timeout(original, seconds)
    return True


def _with_default_timeout(function: Callable[..., Any], seconds: float) -> Callable[..., Any]:
    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("timeout"):
            kwargs["timeout"] = seconds
        return function(*args, **kwargs)

    return call
