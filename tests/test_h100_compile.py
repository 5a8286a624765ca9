"""Every Pallas kernel compiles for an H100 (no GPU needed) without register spills.

Deviceless AOT compilation (``tests/h100_gate.py``) runs XLA, Triton and ptxas for sm_90a on
this CPU machine; the cases are ``tests.h100_gate.kernel_cases()`` (every code path: SRWM
d x input_softmax x dtype, the delta-rule (dk, dv) pairs with distinct block configs, T in
{1, 50, 76, 4096}, each as a forward program and a jax.grad program; masked variants too when
the kernels take ``reset``, see ``tests.h100_gate.kernels_take_reset``). All are compiled once,
in one subprocess with JAX_PLATFORMS=cpu (the CUDA plugin must not try to load CUDA in the test
process), and the per-kernel table is printed. A compile error fails the case; so does any
spill: XLA discards a spilling program (``xla_gpu_fail_ptx_compilation_on_register_spilling``)
and ``ptxas -v`` on the PTX XLA assembled must report none. ``test_gate_fails_on_a_spilling_kernel``
proves the gate can fail, on the installed jax.

Skipped when jax's CUDA plugin (cuda12 or cuda13; ``benchmarks/install_cuda_plugin.sh``) or
ptxas is missing, except under ``CI=true``, where a gate that cannot run is a failure.
"""
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import h100_gate as h100

REPO = Path(__file__).resolve().parents[1]



def _gate_missing() -> str | None:
    if not h100.cuda_plugin_installed():
        return "jax's CUDA plugin is not installed (run benchmarks/install_cuda_plugin.sh)"
    if h100.find_ptxas() is None:
        return "no ptxas (run benchmarks/install_cuda_plugin.sh)"
    return None


@pytest.fixture(scope="module")
def gate():
    """Skips when the gate cannot run; under CI=true fails instead (the gate must not go blind)."""
    if reason := _gate_missing():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and the H100 gate cannot run: {reason}")
        pytest.skip(reason)


def _compile_env():
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))

CASES = h100.kernel_cases()
# Kernel roles each program must contain, by name prefix (the masked kernels may carry a suffix,
# and XLA adds "__N" to repeated names).
EXPECTED_ROLES = {"forward": {"fwd"}, "grad": {"fwd", "bwd"}}
KERNEL_PREFIX = {"srwm": "srwm_", "delta": "delta_rule_"}


def _role(kernel_name):
    return "bwd" if "_bwd" in kernel_name else "fwd"


@pytest.fixture(scope="module")
def compiled_rows(gate, tmp_path_factory, request):
    """Compiles every case once (two subprocesses, one per core, each half of the cases);
    returns {(case, program): [rows]}."""
    shards, folder = 2, tmp_path_factory.mktemp("h100")
    outs = [folder / f"rows{k}.json" for k in range(shards)]
    logs = [folder / f"log{k}.txt" for k in range(shards)]
    runs = []
    for k in range(shards):
        with open(logs[k], "w") as log:
            runs.append(subprocess.Popen(
                [sys.executable, "-m", "tests.h100_gate", "--json", str(outs[k]),
                 "--shard", f"{k}/{shards}"], cwd=REPO, env=_compile_env(),
                stdout=subprocess.DEVNULL, stderr=log))
    rows = []
    for run, out, log in zip(runs, outs, logs):
        run.wait(timeout=1800)
        if not out.exists():
            pytest.fail(f"tests.h100_gate crashed (exit {run.returncode}):\n"
                        f"{log.read_text()[-4000:]}")
        rows += json.loads(out.read_text())
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\nH100 (sm_90a) compile of every kernel case:")
        print(h100.format_table([r for r in rows if "error" not in r]), flush=True)
    by_program = {}
    for r in rows:
        by_program.setdefault((r["case"], r["program"]), []).append(r)
    return by_program


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


def test_gate_fails_on_a_spilling_kernel(gate, tmp_path):
    """A kernel made to spill (tests.h100_gate.spilling_program) fails the gate's compile, and
    ptxas on the PTX XLA assembled reports its spills: the gate can fail on this jax."""
    out = tmp_path / "probe.json"
    result = subprocess.run([sys.executable, "-m", "tests.h100_gate", "--spill-probe", "--json",
                             str(out)], cwd=REPO, env=_compile_env(), capture_output=True,
                            text=True, timeout=600)
    assert out.exists(), f"spill probe crashed (exit {result.returncode}):\n{result.stderr[-4000:]}"
    probe = json.loads(out.read_text())
    assert probe["gate_error"] and h100.SPILL_ERROR in probe["gate_error"], probe
    kernel = probe["kernel"]
    assert kernel["name"] == "spill_probe" and kernel["threads"] == 32, kernel
    assert kernel["spill_stores"] > 0 and kernel["spill_loads"] > 0, kernel
    assert result.returncode == 0, result.stdout[-2000:]


def test_case_list_covers_every_code_changing_combination():
    """dtype x reset mask x head sizes (x input_softmax for SRWM) all appear at T=76; each case
    is compiled as a forward and a gradient program."""
    import itertools
    have = {(c.op, c.d, c.dv, c.dtype, c.input_softmax, c.reset)
            for c in h100.kernel_cases(masked=True) if c.seq_len == 76}
    dtypes, resets = ("float32", "bfloat16"), (False, True)
    for d, softmax, dtype, reset in itertools.product((16, 32, 64), (True, False), dtypes, resets):
        assert ("srwm", d, 0, dtype, softmax, reset) in have, (d, softmax, dtype, reset)
    for (dk, dv), dtype, reset in itertools.product(h100.delta_code_paths(), dtypes, resets):
        assert ("delta", dk, dv, dtype, True, reset) in have, (dk, dv, dtype, reset)


def test_ptxas_parser_reads_spills():
    """The spill check itself can fail: parse a ptxas report that has spills."""
    text = ("ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
            "ptxas info    : Function properties for k\n"
            "    24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
            "ptxas info    : Used 255 registers, used 1 barriers\n")
    assert h100.parse_ptxas(text) == {"k": dict(registers=255, stack_bytes=24, spill_stores=8,
                                                spill_loads=12)}


def test_thunk_parser_reads_both_dump_formats():
    """XLA's thunk sequence dump as jax 0.10/0.11 and as jax 0.12 write it (lines from real
    dumps of the delta-rule forward)."""
    old = ("005: kCustomKernel [source       | next=006 (1)] delta_rule_fwd grid: [512, 1, 1] "
           "threads: [64, 1, 1]  shared_memory: 256 bytes\n")
    new = ("005: kCustomKernel [prev=004 (1) | next=006 (1)] kernel=delta_rule_fwd, "
           "profile_annotation=pallas_call.3, launch dimensions=blocks: {512, 1, 1}, "
           "threads/block: {64, 1, 1}, cluster_dim=nullopt, shmem_bytes=256, use_pdl=true\n")
    expected = {"delta_rule_fwd": ((512, 1, 1), 64, 256)}
    assert h100.parse_thunks(old) == expected
    assert h100.parse_thunks(new) == expected
    assert h100.parse_thunks(new.replace("{64, 1, 1}", "{32, 2, 1}"))["delta_rule_fwd"][1] == 64


def test_ptx_threads_parser():
    """Threads per block from each entry's .maxntid (Triton) or .reqntid, per entry."""
    ptx = (".version 8.7\n.target sm_90a\n.visible .entry srwm_fwd(\n .param .u64 a\n)\n"
           ".reqntid 32, 1, 1\n{\n ret;\n}\n.visible .entry srwm_bwd(\n .param .u64 a\n)\n"
           ".maxntid 128, 1, 1\n{\n ret;\n}\n.visible .entry other(\n)\n{\n ret;\n}\n")
    assert h100.parse_ptx_threads(ptx) == {"srwm_fwd": 32, "srwm_bwd": 128}


def test_kernel_resources_picks_the_autotuned_candidate_that_runs(tmp_path, monkeypatch):
    """XLA's autotuner assembles several candidates of one fusion under one name (seen on jax
    0.12.1: a gemm fusion at 64 and at 128 threads); the candidate read is the one whose threads
    match the launch, and no candidate matching is an error, never a silent pick."""
    dump, ptx_dir = tmp_path / "dump", tmp_path / "ptx"
    dump.mkdir()
    ptx_dir.mkdir()
    (dump / "m.thunk_sequence.txt").write_text(
        "005: kCustomKernel [prev=004 (1) | next=006 (1)] kernel=gemm_fusion_dot_29, "
        "profile_annotation=x, launch dimensions=blocks: {8, 1, 1}, "
        "threads/block: {128, 1, 1}, cluster_dim=nullopt, shmem_bytes=0, use_pdl=false\n")

    def ptx(threads):
        return (".version 8.7\n.target sm_90a\n.visible .entry gemm_fusion_dot_29(\n"
                f" .param .u64 a\n)\n.reqntid {threads}, 1, 1\n{{\n ret;\n}}\n")
    registers = {64: 40, 128: 90}
    monkeypatch.setattr(h100, "run_ptxas", lambda path, _: {"gemm_fusion_dot_29": dict(
        registers=registers[int(path.read_text().split(".reqntid ")[1].split(",")[0])],
        stack_bytes=0, spill_stores=0, spill_loads=0)})
    (ptx_dir / "ptx.0").write_text(ptx(64))
    (ptx_dir / "ptx.1").write_text(ptx(128))
    [kernel] = h100.kernel_resources(dump, ptx_dir, "ptxas")
    assert (kernel.threads, kernel.registers) == (128, 90)
    (ptx_dir / "ptx.1").unlink()
    with pytest.raises(RuntimeError, match="launches 128 threads per block, the PTX declares 64"):
        h100.kernel_resources(dump, ptx_dir, "ptxas")


def test_gate_skip_is_a_failure_under_ci(tmp_path):
    """With CI=true and no CUDA plugin importable, the gate fails instead of skipping."""
    test = tmp_path / "test_probe.py"
    test.write_text("from tests.test_h100_compile import gate  # noqa: F401\n"
                    "from tests import h100_gate as h100\n"
                    "h100.cuda_plugin_installed = lambda: False\n"
                    "def test_needs_gate(gate):\n    pass\n")
    for ci, outcome, code in (("true", "1 error", 1), ("", "1 skipped", 0)):
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 str(test)], cwd=REPO, env=dict(_compile_env(), CI=ci),
                                capture_output=True, text=True, timeout=300)
        assert outcome in result.stdout and result.returncode == code, result.stdout[-2000:]
        if ci:
            assert "CI=true and the H100 gate cannot run" in result.stdout, result.stdout[-2000:]


def test_occupancy_matches_hand_count():
    """128 regs x 32 threads: 4096 regs per warp -> 16 warps -> 16 blocks (register bound);
    168 x 64: 5376 regs per warp -> 12 warps -> 6 blocks; 16 x 1024: 2 blocks (threads);
    100 KB shared memory: 2 blocks (228 KB per SM, 1 KB reserved per block)."""
    assert h100.occupancy(128, 32, 128) == h100.Occupancy(16, 16, "registers")
    assert h100.occupancy(168, 64, 128) == h100.Occupancy(6, 12, "registers")
    assert h100.occupancy(16, 1024, 0) == h100.Occupancy(2, 64, "threads")
    assert h100.occupancy(32, 64, 100 * 1024) == h100.Occupancy(2, 4, "shared memory")
    assert h100.occupancy(16, 32, 0) == h100.Occupancy(32, 32, "blocks")


def test_actor_policy_program_compiles_for_h100_with_the_kernel_inside(gate):
    """A whole library program (the RL actor's single-step policy, SRWM agent) compiles for an
    H100 with the Pallas kernel inside and fits its memory (the cheapest of
    benchmarks/h100_programs.py; the others take minutes)."""
    env = _compile_env()
    result = subprocess.run([sys.executable, "-m", "benchmarks.h100_programs", "--programs",
                             "rl_actor"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    row = [line for line in result.stdout.splitlines() if line.startswith("| rl_actor")]
    assert len(row) == 1 and "srwm_fwd" in row[0] and "| yes |" in row[0], result.stdout


def test_chunked_delta_rule_compiles_for_h100(gate):
    """impl="chunked" (plain XLA, no kernel) compiles for an H100, forward and jax.grad."""
    result = subprocess.run([sys.executable, "-m", "tests.deviceless_chunked", "--target",
                             "h100", "--small"], cwd=REPO, env=_compile_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| B=2 T=300")]
    assert [row.split("|")[2].strip() for row in rows] == ["fwd", "fwd+bwd"], result.stdout
