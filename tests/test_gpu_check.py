"""benchmarks/gpu_check.py documents itself and, without an NVIDIA GPU, refuses in one line.
Run as a script, as users run it (tests import nothing from benchmarks/)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The steps its --help must document (benchmarks/gpu_check.py STEP_NAMES).
STEP_NAMES = ("kernels_gpu", "kernels", "cells", "fewshot", "rl")


def _nvidia_gpus() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    return listed.returncode == 0 and "GPU" in listed.stdout

REPO = Path(__file__).resolve().parents[1]


def _run(*args, path=None):
    env = None
    if path is not None:
        import os
        env = dict(os.environ, PATH=path)
    return subprocess.run([sys.executable, "benchmarks/gpu_check.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_help_documents_steps_and_budget():
    proc = _run("--help")
    assert proc.returncode == 0
    for word in ("OUT_DIR", "--original-cuda", "8 minutes", *STEP_NAMES):
        assert word in proc.stdout, word


@pytest.mark.skipif(_nvidia_gpus(), reason="this machine has an NVIDIA GPU")
def test_refuses_in_one_line_without_gpu(tmp_path):
    proc = _run(str(tmp_path / "report"))
    assert proc.returncode == 2
    output = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(output) == 1 and "no NVIDIA GPU" in output[0], output
    assert not (tmp_path / "report").exists()


def test_refuses_without_nvidia_smi_on_path(tmp_path):
    """Also when no driver tools are installed at all (nvidia-smi not on the PATH)."""
    proc = _run(str(tmp_path / "report"), path=str(tmp_path))
    assert proc.returncode == 2
    assert len((proc.stdout + proc.stderr).strip().splitlines()) == 1


def test_unknown_step_is_rejected():
    proc = _run("out", "--skip", "bogus")
    assert proc.returncode == 2 and "bogus" in proc.stderr
