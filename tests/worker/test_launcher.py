"""Device pinning: what a worker process sees of the GPUs, fixed before torch loads."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from devtools.config_files import write_config
from pipeq.cli.main import build_parser, main
from pipeq.worker.launcher import child_command, gpu_indices, parse_devices, pin_device
from pipeq.worker.supervisor import supervise
from tests.support.settings import make_settings
from tests.support.waiting import wait_until
from tests.support.workers import ROOT


def test_cpu_hides_every_gpu():
    env: dict[str, str] = {}
    assert pin_device("cpu", env) == "cpu"
    assert env == {"CUDA_VISIBLE_DEVICES": ""}


def test_a_gpu_index_exposes_only_that_gpu_as_cuda0():
    env: dict[str, str] = {}
    assert pin_device("cuda:3", env) == "cuda:0"
    assert env == {"CUDA_VISIBLE_DEVICES": "3"}


@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:x", "mps:0"])
def test_other_devices_are_refused(device):
    with pytest.raises(ValueError, match="must be cpu or cuda:N"):
        pin_device(device, {})


@pytest.mark.slow
def test_the_worker_process_sees_the_pinned_environment_before_torch_loads():
    code = (
        "import sys, pipeq.worker.launcher as l; l.pin_device('cuda:1');"
        "assert 'torch' not in sys.modules; import os, torch;"
        "print(os.environ['CUDA_VISIBLE_DEVICES'], torch.cuda.device_count() <= 1)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=True)
    assert out.stdout.split() == ["1", "True"]


# -- pipeq worker --devices --------------------------------------------------------------------------------


def test_several_gpus_can_be_exposed_to_one_worker():
    env: dict[str, str] = {}
    assert pin_device("cuda:0,1", env) == "cuda:0"
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1"}


@pytest.mark.parametrize(
    ("text", "gpus", "devices"),
    [
        ("cpu", [0, 1], ["cpu"]),
        ("all", [0, 1, 2], ["cuda:0", "cuda:1", "cuda:2"]),
        ("0,1", [], ["cuda:0", "cuda:1"]),
        (" 1 ", None, ["cuda:1"]),
        ("cuda:0,cuda:2", None, ["cuda:0", "cuda:2"]),
    ],
)
def test_devices_name_cpu_every_gpu_or_gpu_indices(text, gpus, devices):
    assert parse_devices(text, gpus) == devices


def test_all_without_a_gpu_falls_back_to_cpu_and_says_so(capsys):
    assert parse_devices("all", []) == ["cpu"]
    assert "found no GPU" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "gpu", "0,x", "-1", "0,,1", "cpu,0", "all,0", "1.5"])
def test_bad_devices_are_refused(text):
    with pytest.raises(ValueError, match="--devices takes all, cpu or GPU indices"):
        parse_devices(text, [0, 1])


def test_a_gpu_named_twice_is_refused():
    with pytest.raises(ValueError, match="names a GPU twice"):
        parse_devices("0,1,0", [0, 1])


@pytest.mark.parametrize(
    ("environ", "gpus"), [({"CUDA_VISIBLE_DEVICES": ""}, []), ({"CUDA_VISIBLE_DEVICES": "2,3"}, [2, 3])]
)
def test_the_gpus_offered_follow_cuda_visible_devices(environ, gpus):
    assert gpu_indices(environ) == gpus


def test_each_child_is_a_pipeq_worker_pinned_to_its_device():
    command, env = child_command("cuda:1", ["gpu", "fast"], "DEBUG", "big@host", {"PATH": "/bin"})
    assert command == [
        sys.executable, "-m", "pipeq.cli", "worker", "--device", "cuda:1", "--loglevel", "DEBUG",
        "--queues", "gpu,fast", "--name", "big-cuda1@host",
    ]  # fmt: skip
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1"}
    command, env = child_command("cpu", None, "INFO", None, {})
    assert "--queues" not in command and "--name" not in command
    assert env == {"CUDA_VISIBLE_DEVICES": ""}


def test_each_child_serves_its_metrics_on_a_port_of_its_own_and_passes_task_events_on():
    ports = [child_command(device, None, "INFO", None, {}, 9500 + i)[1]["PIPEQ_METRICS__PORT"] for i, device in
             enumerate(["cuda:0", "cuda:1", "cuda:2"])]  # fmt: skip
    assert ports == ["9500", "9501", "9502"]
    command, env = child_command("cuda:0", None, "INFO", None, {}, None, task_events=True)
    assert "PIPEQ_METRICS__PORT" not in env and command[-1] == "--task-events"


def test_conflicting_device_options_are_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--device", "cuda:0", "--devices", "all"])
    assert main(["worker", "--devices", "0,zero"]) == 2
    assert "--devices takes" in capsys.readouterr().err


def _sleeper(seconds: float, code: int = 0) -> tuple[list[str], dict[str, str]]:
    script = f"import time, sys; time.sleep({seconds}); sys.exit({code})"
    return [sys.executable, "-c", script], dict(os.environ)


def test_a_child_that_dies_stops_the_others_and_the_exit_status_says_so():
    started = time.monotonic()
    assert supervise([_sleeper(60), _sleeper(0.5, 3)], ["a", "b"]) == 3
    assert time.monotonic() - started < 20  # the sleeper was stopped, not waited for


def test_a_child_that_exits_cleanly_on_its_own_is_still_a_failure():
    assert supervise([_sleeper(60), _sleeper(0.2, 0)], ["a", "b"]) == 1


@pytest.mark.slow
def test_sigterm_stops_a_real_cpu_worker_and_its_parent(tmp_path, redis_url, s3_endpoint, redis_db):
    config = write_config(make_settings(redis_url, s3_endpoint, {}, db=redis_db), tmp_path / "pipeq.toml")
    log = tmp_path / "worker.log"
    with open(log, "wb") as output:
        parent = subprocess.Popen(
            [sys.executable, "-m", "pipeq.cli", "worker", "--devices", "cpu", "--queues", "launcher-test"],
            cwd=ROOT,
            env=dict(os.environ, PIPEQ_CONFIG=str(config)),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: b" ready." in log.read_bytes(), 90, 0.2, f"the worker was not ready in 90 s; its log: {log}")
        child = int(re.search(rb"worker pid (\d+) on cpu", log.read_bytes()).group(1))
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(60) == 0
    finally:
        if parent.poll() is None:
            parent.kill()
    with pytest.raises(ProcessLookupError):  # stopped and reaped by the parent
        os.kill(child, 0)
    assert b"Warm shutdown" in log.read_bytes()
