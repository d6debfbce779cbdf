"""Tesseract runs with a time limit the job cannot lift (transformers' OCR call passes none)."""

import io

import pytest
from PIL import Image, ImageDraw

from pipeq.config.settings import Limits
from pipeq.worker.ocr import install_ocr_timeout

pytesseract = pytest.importorskip("pytesseract")


def page() -> Image.Image:
    image = Image.new("RGB", (400, 120), "white")
    ImageDraw.Draw(image).text((10, 40), "invoice number 42", fill="black")
    return Image.open(io.BytesIO(_png(image)))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def restore_default():
    yield
    install_ocr_timeout(Limits().ocr_timeout_s)


def test_an_ocr_run_past_the_limit_is_killed(restore_default):
    install_ocr_timeout(0.001)
    with pytest.raises(RuntimeError, match="Tesseract process timeout"):
        pytesseract.image_to_data(page(), output_type="dict")


def test_within_the_limit_ocr_reads_the_page(restore_default):
    install_ocr_timeout(30)
    words = [word for word in pytesseract.image_to_data(page(), output_type="dict")["text"] if word.strip()]
    assert words  # Tesseract found the printed words
    install_ocr_timeout(0.001)  # installing again replaces the limit instead of wrapping the wrapper
    assert pytesseract.image_to_data.__wrapped__.__module__ == "pytesseract.pytesseract"


def test_the_worker_app_installs_the_configured_limit(settings, restore_default):
    from pipeq.worker.app import create_app

    create_app(settings.model_copy(update={"limits": Limits(ocr_timeout_s=0.001)}))
    with pytest.raises(RuntimeError, match="Tesseract process timeout"):
        pytesseract.image_to_data(page(), output_type="dict")
