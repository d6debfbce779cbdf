"""The wheel installs one top-level package, ``pipeq``, and its entry points work from it."""

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*command: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_holds_pipeq_alone_and_runs(tmp_path: Path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", dist, REPO, cwd=tmp_path)
    [wheel] = dist.glob("pipeq-*.whl")

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    before = set(p.name for p in site.iterdir())
    # Dependencies (torch, celery, ...) come from this environment's site-packages as a plain path: its .pth
    # files, the editable install of the checkout among them, are not read.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet", wheel, cwd=tmp_path)

    ours = {p.name for p in site.iterdir()} - before - {"deps.pth"}
    assert ours == {"pipeq", "pipeq-0.1.0.dist-info"}
    shipped = {p.relative_to(site / "pipeq").parts[0] for p in (site / "pipeq").rglob("*.py")}
    assert shipped == {"__init__.py", "config", "core", "ops", "producer", "worker", "webhooks", "ingest", "cli", "api"}
    assert (site / "pipeq" / "config" / "pipeq.example.toml").is_file()
    assert {p.name for p in (site / "pipeq" / "api" / "console").iterdir()} >= {
        "index.html",
        "console.js",
        "console.css",
    }

    assert "submit" in run(env / "bin" / "pipeq", "--help", cwd=tmp_path)
    where = run(python, "-c", "import pipeq; from pipeq import Client; print(pipeq.__file__, Client)", cwd=tmp_path)
    assert where.startswith(str(site / "pipeq" / "__init__.py")) and "pipeq.producer.client.Client" in where
    assert "worker" in run(python, "-m", "celery", "-A", "pipeq.worker.app", "--help", cwd=tmp_path)
