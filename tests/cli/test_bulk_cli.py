"""``pipeq submit --from``, ``pipeq jobs`` and ``pipeq cancel --model/--queue``, without a worker (jobs stay queued)."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.config_files import write_config
from pipeq.cli.main import build_parser
from pipeq.producer import Client
from pipeq.producer.cli import run_cli
from pipeq.producer.client import SUBMIT_CHUNK
from pipeq.producer.jsonl import max_line_bytes
from tests.support.settings import make_settings, model_name
from tests.support.workers import ROOT

TEXT = "text-classification"
MODEL = model_name(TEXT)


@pytest.fixture
def settings_offline(redis_url, s3_endpoint, tiny_models, redis_db):
    return make_settings(redis_url, s3_endpoint, tiny_models, db=redis_db)


@pytest.fixture
def offline(settings_offline):
    client = Client(settings_offline)
    yield client
    client.close()


@pytest.fixture
def pipeq(offline, capsys, monkeypatch):
    """Run a producer command in this process against ``offline``; its exit code, stdout and stderr."""

    def run(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsys.readouterr()
        try:
            code = run_cli(build_parser().parse_args(argv), lambda: offline)
        except SystemExit as exc:  # argparse refusing the command line
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def jobs_file(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def request(i: int, **fields) -> str:
    return json.dumps({"task": TEXT, "input": f"review {i}", "id": f"line-job-{i}", **fields})


def queued(client: Client) -> int:
    return len(client.list(state="queued", limit=1000).records)


def test_submit_from_a_file_then_again(pipeq, offline, tmp_path):
    path = jobs_file(tmp_path / "jobs.jsonl", [request(1), "", request(2, priority="high"), request(3, model=MODEL)])
    code, out, err = pipeq("submit", "--from", path)
    assert code == 0, err
    assert out == "submitted 3 job(s): 3 new, 0 already existing\n"
    assert "submitted 3 job(s), " in err and err.endswith("/s\n")  # the progress line, then its end
    assert offline.status("line-job-2").priority == "high"
    code, out, _ = pipeq("submit", "--from", path)
    assert (code, out) == (0, "submitted 3 job(s): 0 new, 3 already existing\n")
    assert queued(offline) == 3


def test_submit_from_stdin(pipeq, offline):
    lines = "".join(request(i) + "\n" for i in range(5)).encode()
    code, out, err = pipeq("submit", "--from", "-", stdin=lines)
    assert (code, out) == (0, "submitted 5 job(s): 5 new, 0 already existing\n"), err
    assert queued(offline) == 5


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"task": "text-classification", "input": "x"', "line 3: not a JSON value (Expecting ',' delimiter"),
        ("[1, 2]", "line 3: a request is a dict (a JSON object) with task and input, not list"),
        ('{"task": "text-classification", "input": NaN}', "line 3: not a JSON value (NaN is not JSON)"),
        ("[" * 100_000 + "]" * 100_000, "line 3: JSON nested too deeply"),
        (b"\xff\xfe not utf-8", "line 3: not a JSON value"),
        (request(9, oops=1), "line 3: unknown request key(s) 'oops'"),
        (request(9, priority="asap"), "line 3: priority 'asap' is not one of low, normal, high"),
        ('{"task": "text-classification"}', "line 3: a request needs input"),
    ],
)
def test_a_bad_line_is_named_and_nothing_of_its_chunk_is_submitted(pipeq, offline, tmp_path, bad, message):
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"\n" + request(1).encode() + b"\n" + (bad if isinstance(bad, bytes) else bad.encode()) + b"\n")
    code, out, err = pipeq("submit", "--from", str(path))
    assert code == 2
    assert out == ""
    assert f"pipeq: {message}" in err
    assert "(nothing was submitted)" in err
    assert queued(offline) == 0


def test_a_line_longer_than_the_limits_allow_is_refused(pipeq, offline, tmp_path):
    longest = max_line_bytes(offline.settings.limits)
    path = tmp_path / "jobs.jsonl"
    path.write_text(request(1) + "\n" + json.dumps({"task": TEXT, "input": "x" * longest}) + "\n")
    code, _, err = pipeq("submit", "--from", str(path))
    assert code == 2
    assert f"pipeq: line 2: longer than {longest} bytes" in err
    assert queued(offline) == 0


def test_a_bad_line_in_a_later_chunk_leaves_the_earlier_chunks_submitted(pipeq, offline, tmp_path):
    lines = [request(i) for i in range(SUBMIT_CHUNK + 600)]
    lines[SUBMIT_CHUNK + 500] = request(SUBMIT_CHUNK + 500, input=None)
    path = jobs_file(tmp_path / "jobs.jsonl", ["", *lines])  # a blank first line: line numbers are not indexes
    code, _, err = pipeq("submit", "--from", path)
    assert code == 2
    assert f"pipeq: line {SUBMIT_CHUNK + 502}: an input must be text" in err
    assert f"the {SUBMIT_CHUNK} job(s) before line {SUBMIT_CHUNK + 2} were submitted, none from it on" in err
    assert len(offline.list(limit=1000).records) == SUBMIT_CHUNK
    lines[SUBMIT_CHUNK + 500] = request(SUBMIT_CHUNK + 500)  # fixed: the same file goes on where it stopped
    code, out, _ = pipeq("submit", "--from", jobs_file(tmp_path / "fixed.jsonl", lines))
    assert out == f"submitted {SUBMIT_CHUNK + 600} job(s): 600 new, {SUBMIT_CHUNK} already existing\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("submit", "--from", "FILE", TEXT, "hi"), "give TASK and INPUT, or --from FILE, not both"),
        (("submit", "--from", "FILE", "--model", MODEL, "--priority", "high"), "drop --model, --priority"),
        (("submit", "--from", "FILE", "--wait"), "drop --wait"),
        (("submit",), "pipeq submit takes a TASK and an INPUT, or --from FILE"),
        (("submit", TEXT), "pipeq submit takes a TASK and an INPUT"),
        (("submit", "--from", "/no/such/jobs.jsonl"), "No such file or directory"),
    ],
)
def test_submit_needs_a_task_and_input_or_a_file(pipeq, offline, tmp_path, argv, message):
    path = jobs_file(tmp_path / "jobs.jsonl", [request(1)])
    code, _, err = pipeq(*[path if arg == "FILE" else arg for arg in argv])
    assert code == 2
    assert message in err
    assert queued(offline) == 0


def test_jobs_pages_as_a_table_and_as_json_lines(pipeq, offline):
    ids = offline.submit_many(TEXT, ["one", "two", "three"], job_ids=["j-1", "j-2", "j-3"])
    offline.cancel("j-2")
    code, out, err = pipeq("jobs", "--limit", "2")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "STATE", "MODEL", "SUBMITTED", "PROGRESS"]
    assert [row.split()[:3] for row in rows] == [["j-3", "queued", MODEL], ["j-2", "canceled", MODEL]]
    assert all(row.split()[-1] == "-" for row in rows)
    cursor = err.removeprefix("next page: --cursor ").strip()
    code, out, err = pipeq("jobs", "--cursor", cursor, "--json")
    assert (code, err) == (0, "")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["j-1"]
    code, out, _ = pipeq("jobs", "--state", "canceled", "expired", "--json", "--model", MODEL)
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["j-2"]
    code, out, _ = pipeq("jobs", "--state", "queued", "--state", "running", "--since", "2000-01-01T00:00:00Z")
    assert [row.split()[0] for row in out.splitlines()[1:]] == ["j-3", "j-1"]
    assert set(ids) == {"j-1", "j-2", "j-3"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("jobs", "--state", "bogus"), "unknown state(s) 'bogus'"),
        (("jobs", "--limit", "5000"), "limit must be a whole number from 1 to 1000"),
        (("jobs", "--model", "gpt-unknown"), "not in the catalogue"),
        (("jobs", "--cursor", "abc.def"), "not one pipeq gave out"),
        (("jobs", "--since", "tomorrow"), "is not an ISO 8601 time"),
        (("jobs", "--since", "2026-12-02T00:00:00Z", "--until", "2026-12-01T00:00:00Z"), "is after until"),
    ],
)
def test_jobs_refuses_bad_options(pipeq, argv, message):
    code, out, err = pipeq(*argv)
    assert (code, out) == (2, "")
    assert message in err


def test_cancel_by_model_and_by_queue(pipeq, offline):
    offline.submit_many(TEXT, ["a", "b", "c"], model=MODEL)
    other = offline.submit(TEXT, "d", model="not-cached")
    assert pipeq("cancel", "--model", MODEL)[:2] == (0, "canceled 3 job(s)\n")
    assert pipeq("cancel", "--model", MODEL)[:2] == (0, "canceled 0 job(s)\n")
    assert pipeq("cancel", "--queue", "pipeq")[:2] == (0, "canceled 1 job(s)\n")
    assert offline.status(other).state == "canceled"
    assert pipeq("cancel", other)[:2] == (0, f"{other}\tcanceled\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("cancel",), "pipeq cancel takes job ids, or --model M, or --queue Q"),
        (("cancel", "some-id", "--model", MODEL), "pipeq cancel takes job ids, or --model M, or --queue Q"),
        (("cancel", "--model", "gpt-unknown"), "not in the catalogue"),
        (("cancel", "--queue", "nowhere"), "no catalogue model is served on queue 'nowhere'"),
        (("cancel", "--model", MODEL, "--queue", "pipeq"), "not allowed with argument"),
    ],
)
def test_cancel_refuses_bad_options(pipeq, offline, argv, message):
    offline.submit(TEXT, "stays queued")
    code, _, err = pipeq(*argv)
    assert code == 2
    assert message in err
    assert queued(offline) == 1


@pytest.mark.slow
def test_the_pipeq_command_reads_jobs_from_stdin(settings_offline, offline, tmp_path):
    config = write_config(settings_offline, tmp_path / "pipeq.toml")
    env = dict(os.environ, PIPEQ_CONFIG=str(config))
    lines = "".join(request(i) + "\n" for i in range(3))
    done = subprocess.run(
        [sys.executable, "-m", "pipeq.cli", "submit", "--from", "-"],
        cwd=ROOT,
        env=env,
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "submitted 3 job(s): 3 new, 0 already existing\n"
    listed = subprocess.run(
        [sys.executable, "-m", "pipeq.cli", "jobs", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [f"line-job-{i}" for i in (2, 1, 0)]
