"""benchmarks/gpu_check.py documents itself, plans its steps within 8 minutes and, without an
NVIDIA GPU, refuses in one line; benchmarks/kernels.py's backend comparison (the gpu_check step
that times Mosaic GPU vs Triton vs scan) covers the issue's shapes and computes its ratio
columns right from injected timings. Run as scripts, as users run them (tests import nothing
from benchmarks/)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The steps its --help must document (benchmarks/gpu_check.py STEP_NAMES).
STEP_NAMES = ("kernels_gpu", "kernels", "backends", "cells", "fewshot", "rl")


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


def test_dry_run_plans_every_step_within_the_8_minute_budget(tmp_path):
    proc = _run(str(tmp_path / "report"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    steps = {name: (int(limit), command) for name, limit, command in rows[:-1]}
    assert tuple(steps) == STEP_NAMES
    assert rows[-1][0] == "total" and int(rows[-1][1]) == sum(v[0] for v in steps.values()) <= 480
    backends = steps["backends"][1]
    assert "--backends scan,triton,mosaic" in backends and "--ops delta_rule" in backends
    assert "tests/test_kernels_gpu.py" in steps["kernels_gpu"][1]
    assert not (tmp_path / "report").exists()
    skipped = _run(str(tmp_path / "report"), "--dry-run", "--skip", "rl,backends")
    assert [line.split("\t")[0] for line in skipped.stdout.splitlines()] == [
        "kernels_gpu", "kernels", "cells", "fewshot", "total"]


def _kernels_script(*args):
    return subprocess.run([sys.executable, "benchmarks/kernels.py", *args], cwd=REPO,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                          text=True, timeout=300)


def test_backend_comparison_covers_few_shot_rl_and_long_t():
    proc = _kernels_script("--list", "--backends", "scan,triton,mosaic")
    assert proc.returncode == 0, proc.stderr
    shapes = [tuple(line.split()) for line in proc.stdout.strip().splitlines()]
    assert shapes == [("few-shot", "128", "16", "16", "26"), ("rl", "32", "8", "16", "50"),
                      ("rl", "32", "8", "16", "1"), ("long", "8", "16", "16", "4096")]
    assert _kernels_script("--backends", "scan,cuda").returncode == 2


def test_backend_table_ratios_from_injected_timings(tmp_path):
    """Ratio column a/b = a's ms / b's ms, hand-computed; '-' where a backend failed, with
    its reason (and fla's time) in the notes."""
    rows = [dict(op="delta_rule", shape="few-shot B=128 H=16 d=16 T=26", mode="fwd",
                 ms=dict(scan=6.0, triton=2.0, mosaic=0.5), notes={}),
            dict(op="delta_rule", shape="long B=8 H=16 d=16 T=4096", mode="fwd+bwd",
                 ms=dict(scan=90.0, triton=3.0, mosaic=None),
                 notes=dict(mosaic="failed: ValueError: dk", fla="1.250ms"))]
    saved = tmp_path / "backends.json"
    saved.write_text(json.dumps(dict(header="device: injected", rows=rows,
                                     backends=["scan", "triton", "mosaic"])))
    proc = _kernels_script("--from-json", str(saved))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "device: injected"
    assert lines[1].split("|")[2].split() == ["scan/triton", "scan/mosaic", "triton/mosaic"]
    fwd = next(line for line in lines if " fwd " in line).split("|")
    assert fwd[1].split() == ["6.000", "2.000", "0.500"] and fwd[2].split() == ["3", "12", "4"]
    bwd = next(line for line in lines if "fwd+bwd" in line).split("|")
    assert bwd[1].split() == ["90.000", "3.000", "-"] and bwd[2].split() == ["30", "-", "-"]
    assert bwd[3].strip() == "mosaic failed: ValueError: dk; fla 1.250ms"
