"""Every Pallas kernel compiles for an H100 (no GPU needed) without register spills.

Deviceless AOT compilation (``benchmarks/h100.py``) runs XLA, Triton and ptxas for sm_90a on
this CPU machine; the cases are ``benchmarks.h100.kernel_cases()`` (every code path: SRWM
d x input_softmax x dtype, the delta-rule (dk, dv) pairs with distinct block configs, T in
{1, 50, 76, 4096}, each as a forward program and a jax.grad program; masked variants too when
the kernels take ``reset``, see ``benchmarks.h100.kernels_take_reset``). All are compiled once,
in one subprocess with JAX_PLATFORMS=cpu (the CUDA plugin must not try to load CUDA in the test
process), and the per-kernel table is printed. A compile error fails the case; so does any
spill that ``ptxas -v`` reports.

Skipped only when jax's CUDA plugin is not installed (``benchmarks/install_cuda_plugin.sh``).
"""
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import h100

REPO = Path(__file__).resolve().parents[1]

needs_cuda_plugin = pytest.mark.skipif(
    not h100.cuda_plugin_installed(),
    reason="jax's CUDA plugin is not installed (run benchmarks/install_cuda_plugin.sh)")

CASES = h100.kernel_cases()
# Kernel roles each program must contain, by name prefix (the masked kernels may carry a suffix,
# and XLA adds "__N" to repeated names).
EXPECTED_ROLES = {"forward": {"fwd"}, "grad": {"fwd", "bwd"}}
KERNEL_PREFIX = {"srwm": "srwm_", "delta": "delta_rule_"}


def _role(kernel_name):
    return "bwd" if "_bwd" in kernel_name else "fwd"


@pytest.fixture(scope="module")
def compiled_rows(tmp_path_factory, request):
    """Compiles every case once (one subprocess); returns {(case, program): [rows]}."""
    out = tmp_path_factory.mktemp("h100") / "rows.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "benchmarks.h100", "--json", str(out)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if not out.exists():
        pytest.fail(f"benchmarks.h100 crashed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    rows = json.loads(out.read_text())
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\nH100 (sm_90a) compile of every kernel case:")
        print(h100.format_table([r for r in rows if "error" not in r]), flush=True)
    by_program = {}
    for r in rows:
        by_program.setdefault((r["case"], r["program"]), []).append(r)
    return by_program


@needs_cuda_plugin
@pytest.mark.parametrize("program", ["forward", "grad"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kernel_compiles_for_h100_without_spills(compiled_rows, case, program):
    rows = compiled_rows.get((case.name, program))
    assert rows, f"{case.name} {program}: no result (was the case list the same in the subprocess?)"
    errors = [r["error"] for r in rows if "error" in r]
    assert not errors, f"{case.name} {program} failed to compile for H100:\n{errors[0]}"
    names = [r["kernel"] for r in rows]
    assert all(n.startswith(KERNEL_PREFIX[case.op]) for n in names), names
    assert {_role(n) for n in names} == EXPECTED_ROLES[program], names
    for r in rows:
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, (
            f"{case.name} {program}: {r['kernel']} spills ({r['spill_stores']} B stored, "
            f"{r['spill_loads']} B loaded) at {r['registers']} registers x {r['threads']} threads")
        assert 0 < r["registers"] <= h100.H100.max_registers_per_thread
        assert r["blocks_per_sm"] >= 1, f"{r['kernel']} cannot be resident on an SM: {r}"


def test_ptxas_parser_reads_spills():
    """The spill check itself can fail: parse a ptxas report that has spills."""
    text = ("ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
            "ptxas info    : Function properties for k\n"
            "    24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
            "ptxas info    : Used 255 registers, used 1 barriers\n")
    assert h100.parse_ptxas(text) == {"k": dict(registers=255, stack_bytes=24, spill_stores=8,
                                                spill_loads=12)}


def test_occupancy_matches_hand_count():
    """128 regs x 32 threads: 4096 regs per warp -> 16 warps -> 16 blocks (register bound);
    168 x 64: 5376 regs per warp -> 12 warps -> 6 blocks; 16 x 1024: 2 blocks (threads);
    100 KB shared memory: 2 blocks (228 KB per SM, 1 KB reserved per block)."""
    assert h100.occupancy(128, 32, 128) == h100.Occupancy(16, 16, "registers")
    assert h100.occupancy(168, 64, 128) == h100.Occupancy(6, 12, "registers")
    assert h100.occupancy(16, 1024, 0) == h100.Occupancy(2, 64, "threads")
    assert h100.occupancy(32, 64, 100 * 1024) == h100.Occupancy(2, 4, "shared memory")
    assert h100.occupancy(16, 32, 0) == h100.Occupancy(32, 32, "blocks")


@needs_cuda_plugin
def test_actor_policy_program_compiles_for_h100_with_the_kernel_inside():
    """A whole library program (the RL actor's single-step policy, SRWM agent) compiles for an
    H100 with the Pallas kernel inside and fits its memory (the cheapest of
    benchmarks/h100_programs.py; the others take minutes)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "benchmarks.h100_programs", "--programs",
                             "rl_actor"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    row = [line for line in result.stdout.splitlines() if line.startswith("| rl_actor")]
    assert len(row) == 1 and "srwm_fwd" in row[0] and "| yes |" in row[0], result.stdout


@needs_cuda_plugin
def test_chunked_delta_rule_compiles_for_h100():
    """impl="chunked" (plain XLA, no kernel) compiles for an H100, forward and jax.grad."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "benchmarks.deviceless_chunked", "--target",
                             "h100", "--small"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| B=2 T=300")]
    assert [row.split("|")[2].strip() for row in rows] == ["fwd", "fwd+bwd"], result.stdout
