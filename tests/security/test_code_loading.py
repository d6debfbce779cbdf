"""A job never runs code: keys that load code, models or files are refused at submission, and a raw broker message
carrying one (skipping the producer) is failed by the worker with InvalidJob before the code can run.

transformers 5's ``generate()`` loads and runs ``custom_generate/generate.py`` from the directory or repository named
by ``custom_generate`` when ``trust_remote_code`` is set; both would reach it through ``generate_kwargs``. The
"attacker's code" here writes a marker file when it is imported or called: the marker must stay absent. Likewise
tesseract's free-form options (``-c debug_file=<path>`` writes a file) never reach tesseract.
"""

import io
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from devtools.media import encode_audio, picture, speech
from pipeq.core.contract import Job, make_input
from pipeq.producer import InvalidJob
from tests.security.raw_jobs import final_record, publish_raw
from tests.support.settings import model_name

pytestmark = pytest.mark.usefixtures("worker")

ASR, VISION = "automatic-speech-recognition", "image-text-to-text"


@pytest.fixture
def attacker_code(tmp_path: Path) -> tuple[str, Path]:
    """A directory with ``custom_generate/generate.py`` that writes a marker when imported or run; (it, marker)."""
    marker = tmp_path / "the-attackers-code-ran"
    code = tmp_path / "repo" / "custom_generate"
    code.mkdir(parents=True)
    code.joinpath("generate.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n\n\n"
        "def generate(model, **kwargs):\n"
        f"    Path({str(marker)!r}).write_text('called')\n"
        "    raise RuntimeError('the attacker code ran')\n"
    )
    return str(code.parent), marker


def whisper_job(parameters: dict) -> Job:
    return Job(
        task=ASR, model="tiny-whisper", input=make_input(encode_audio(speech("hello"), "WAV")), parameters=parameters
    )


def vision_job(parameters: dict) -> Job:
    value = {"images": picture(seed=3), "text": "<image> What is this?"}
    return Job(task=VISION, model=model_name(VISION), input=make_input(value), parameters=parameters)


def loading(repo: str) -> dict:
    return {"custom_generate": repo, "trust_remote_code": True}


CASES = [
    pytest.param(
        whisper_job, lambda repo: {"generate_kwargs": loading(repo)}, "generate_kwargs.custom_generate", id="whisper"
    ),
    pytest.param(
        vision_job,
        lambda repo: {"max_new_tokens": 2, "generate_kwargs": loading(repo)},
        "generate_kwargs.custom_generate",
        id="image-text-to-text",
    ),
    pytest.param(
        whisper_job,
        lambda repo: {"generate_kwargs": {"language": "en", "assistant": {"options": [loading(repo)]}}},
        "generate_kwargs.assistant.options[0].custom_generate",
        id="whisper-nested-deeper",
    ),
    pytest.param(
        vision_job,
        lambda repo: {"generate_kwargs": {"trust_remote_code": True}, "processor_kwargs": {"custom_generate": repo}},
        "generate_kwargs.trust_remote_code",
        id="image-text-to-text-split",
    ),
]


@pytest.mark.parametrize(("make", "parameters", "path"), CASES)
def test_code_loading_keys_are_refused_at_submission(client, attacker_code, make, parameters, path):
    repo, marker = attacker_code
    job = make(parameters(repo))
    with pytest.raises(InvalidJob, match=re.escape(f"parameter {path} is refused")):
        client.submit(job.task, job.input, model=job.model, parameters=job.parameters)
    assert not marker.exists()


@pytest.mark.parametrize(("make", "parameters", "path"), CASES)
def test_a_raw_message_carrying_code_loading_keys_fails_on_receipt_and_the_code_never_runs(
    client, attacker_code, make, parameters, path
):
    repo, marker = attacker_code
    record = final_record(client, publish_raw(client, make(parameters(repo))))
    assert not marker.exists(), f"the attacker's code ran ({marker.read_text()}); the job: {record}"
    assert record.state == "failed", record.result
    assert record.error.type == "InvalidJob", record.error
    assert f"parameter {path} is refused" in record.error.message, record.error.message
    assert record.attempts == 1


def test_refused_keys_say_why_and_what_is_refused_everywhere(client, attacker_code):
    repo, _ = attacker_code
    with pytest.raises(InvalidJob) as refused:
        client.submit(
            "text-generation", "Once upon a time", model=model_name("text-generation"), parameters=loading(repo)
        )
    message = str(refused.value)
    assert "text-generation parameter custom_generate is refused: it makes generate() load and run code" in message
    assert "'custom_generate' is refused wherever it appears" in message


def document_page() -> bytes:
    """A white page with a line of text: tesseract reads it (and logs to its debug file while it does)."""
    page = Image.new("RGB", (400, 100), "white")
    ImageDraw.Draw(page).text((10, 40), "Invoice 4711 total 99 dollars", fill="black")
    buffer = io.BytesIO()
    page.save(buffer, "PNG")
    return buffer.getvalue()


def test_tesseract_options_that_write_files_never_reach_tesseract(client, tmp_path):
    written = tmp_path / "overwritten-by-tesseract"
    parameters = {"question": "What is the total?", "tesseract_config": f"-c debug_file={written}"}
    task = "document-question-answering"
    job = Job(task=task, model=model_name(task), input=make_input(document_page()), parameters=parameters)
    record = final_record(client, publish_raw(client, job))
    assert not written.exists(), f"tesseract wrote the file the job named; the job: {record}"
    assert (record.state, record.error and record.error.type) == ("failed", "InvalidJob"), record
    assert "tesseract_config is refused" in record.error.message
    with pytest.raises(InvalidJob, match="parameter tesseract_config is refused: it passes options to tesseract"):
        client.submit(task, document_page(), model=model_name(task), parameters=parameters)
