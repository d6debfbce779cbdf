"""The pipeq command line against a running worker."""

import json
import os
import subprocess
import sys

import pytest

from devtools.config_files import write_config
from devtools.media import picture
from tests.support.compare import same
from tests.support.decoded import rgb
from tests.support.settings import model_name
from tests.support.workers import ROOT

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def pipeq(settings, tmp_path_factory):
    config = write_config(settings, tmp_path_factory.mktemp("cli") / "pipeq.toml")

    def run(*args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, PIPEQ_CONFIG=str(config))
        command = [sys.executable, "-m", "pipeq.cli", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    return run


@pytest.mark.slow
def test_submit_wait_and_status(pipeq, reference):
    done = pipeq(
        "submit",
        "zero-shot-classification",
        "the match ended in a draw",
        "--param",
        'candidate_labels=["sports","cooking"]',
        "--param",
        "multi_label=true",
        "--wait",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["state"] == "succeeded"
    labels = {"candidate_labels": ["sports", "cooking"], "multi_label": True}  # the --param values, parsed as JSON
    assert same(record["result"], reference("zero-shot-classification")("the match ended in a draw", **labels))

    job_id = pipeq("submit", "text-classification", "fine", "--id", "cli-job-1").stdout.strip()
    assert job_id == "cli-job-1"
    waited = json.loads(pipeq("wait", job_id, "--timeout", "60").stdout)
    assert waited["state"] == "succeeded"
    assert json.loads(pipeq("status", job_id).stdout)["result"] == waited["result"]


@pytest.mark.slow
def test_inline_files_and_refusals(pipeq, reference, tmp_path):
    image = tmp_path / "picture.png"
    image.write_bytes(picture())
    done = pipeq("submit", "image-classification", f"@{image}", "--model", model_name("image-classification"), "--wait")
    record = json.loads(done.stdout)
    assert record["state"] == "succeeded", done.stderr
    assert same(record["result"], reference("image-classification")(rgb(picture())))  # the file's bytes were sent

    refused = pipeq("submit", "text-classification", "hi", "--param", "nope=1")
    assert refused.returncode == 2
    assert "unknown parameter(s) nope" in refused.stderr
    missing = pipeq("status", "no-such-job")
    assert missing.returncode == 2
    assert "no job 'no-such-job'" in missing.stderr
