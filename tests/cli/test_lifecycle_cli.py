"""``pipeq submit`` with lifecycle options, ``pipeq cancel`` and ``pipeq status --follow``, on Redis no worker reads
(jobs stay queued until canceled or expired)."""

import json
import os
import subprocess
import sys

import pytest

from devtools.config_files import write_config
from pipeq.core.records import JobRecord, Progress, now
from pipeq.producer.cli import progress_line
from tests.support.settings import make_settings, model_name
from tests.support.workers import ROOT

TEXT = "text-classification"


@pytest.fixture
def pipeq(redis_url, s3_endpoint, tiny_models, redis_db, tmp_path):
    settings = make_settings(redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db)
    config = write_config(settings, tmp_path / "pipeq.toml")

    def run(*args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, PIPEQ_CONFIG=str(config))
        command = [sys.executable, "-m", "pipeq.cli", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    return run


def test_submit_with_lifecycle_options_then_cancel_and_follow(pipeq):
    submitted = pipeq(
        "submit",
        TEXT,
        "steer me",
        "--model",
        model_name(TEXT),
        "--priority",
        "high",
        "--ttl",
        "600",
        "--result-ttl",
        "3600",
        "--webhook",
        "https://hooks.example.com/x",
        "--webhook-event",
        "started",
        "--webhook-event",
        "completed",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    record = json.loads(pipeq("status", job_id).stdout)
    assert (record["state"], record["priority"]) == ("queued", "high")
    assert record["webhook_events"] == ["started", "completed"]

    canceled = pipeq("cancel", job_id)
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout.split() == [job_id, "canceled"]
    followed = pipeq("status", job_id, "--follow", "--timeout", "30")
    assert followed.returncode == 1  # a job that did not succeed
    assert json.loads(followed.stdout)["state"] == "canceled"
    assert "canceled" in followed.stderr and "[" in followed.stderr  # the bar, drawn on stderr


def test_bad_lifecycle_options_and_unknown_jobs_exit_2_saying_why(pipeq):
    refused = pipeq("submit", TEXT, "x", "--model", model_name(TEXT), "--priority", "asap")
    assert refused.returncode == 2 and "low, normal, high" in refused.stderr
    refused = pipeq("submit", TEXT, "x", "--model", model_name(TEXT), "--ttl", "-1")
    assert refused.returncode == 2 and "above 0" in refused.stderr
    refused = pipeq("submit", TEXT, "x", "--model", model_name(TEXT), "--deadline", "2001-01-01T00:00:00Z")
    assert refused.returncode == 2 and "in the past" in refused.stderr
    unknown = pipeq("cancel", "no-such-job")
    assert unknown.returncode == 2 and "no-such-job" in unknown.stderr


def test_the_progress_line_draws_a_bar_its_percentage_and_detail():
    record = JobRecord(state="running", id="j", task=TEXT, model="m", submitted_at=now())
    assert progress_line(record).startswith("[" + "." * 30 + "]   0% running")
    halfway = record.model_copy(update={"progress": Progress(fraction=0.5, detail="chunk 3 of 6", updated_at=now())})
    assert progress_line(halfway).startswith("[" + "#" * 15 + "." * 15 + "]  50% running chunk 3 of 6")
    done = halfway.model_copy(update={"state": "succeeded"})
    assert progress_line(done).startswith("[" + "#" * 30 + "] 100% succeeded")
