"""Device pinning: what a worker process sees of the GPUs, fixed before torch loads."""

import os
import subprocess
import sys

import pytest

from worker.launcher import pin_device


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


def test_the_worker_process_sees_the_pinned_environment_before_torch_loads():
    code = (
        "import sys, worker.launcher as l; l.pin_device('cuda:1');"
        "assert 'torch' not in sys.modules; import os, torch;"
        "print(os.environ['CUDA_VISIBLE_DEVICES'], torch.cuda.device_count() <= 1)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=True)
    assert out.stdout.split() == ["1", "True"]
