"""Deviceless ahead-of-time compilation for an NVIDIA H100 on a machine without a GPU.

    python -m tests.h100_gate [--json OUT] [--only NAME,...] [--shard K/N]  # every kernel case
    python -m tests.h100_gate --spill-probe    # a kernel made to spill must fail the gate

jax compiles for a *described* GPU: ``jax.experimental.topologies.get_topology_desc`` with
``platform="cuda"`` and an XLA ``GpuTargetConfigProto`` (text below) gives a one-device mesh;
inputs are ``jax.ShapeDtypeStruct``s on it, and ``jax.jit(f).trace(*args).lower().compile()``
runs the whole GPU pipeline (XLA, Triton for the Pallas kernels, ptxas for sm_90a). Public
threads on the technique: jax-ml/jax #23971 and #28376, openxla/xla #16913 and #25919.

Needs the ``jax-cuda12-plugin`` / ``jax-cuda12-pjrt`` (or ``jax-cuda13-*``) wheels of the
installed jax version (``benchmarks/install_cuda_plugin.sh``), ``JAX_PLATFORMS=cpu`` (else the
plugin tries to load CUDA at start-up and the topology call fails; :func:`use_cpu_platform` sets
it) and a ``ptxas`` (on the PATH, or from the ``nvidia-cuda-nvcc-cu12`` wheel).

Spills fail the compile: ``xla_gpu_fail_ptx_compilation_on_register_spilling`` (an XLA option
on every supported jax) makes XLA discard a program whose ptxas run reports a spill ("Compilation
result discarded due to register spilling"). Resources per kernel do not depend on XLA's dump
format: a ``ptxas`` wrapper put first on the PATH for the compile (:func:`capture_ptx`) keeps a
copy of every PTX file XLA assembles, and ``ptxas -v`` on that copy gives registers, spills and
stack; ``.maxntid`` in the PTX gives threads per block. The grid and dynamic shared memory come
from XLA's thunk sequence dump, whose two formats (jax <= 0.11, jax 0.12) are both parsed and
tested, and threads are cross-checked between dump and PTX.

Version differences (abstract mesh for Pallas from jax 0.11; the cuda12 or cuda13 plugin) are in
``srwm_jax/jax_compat.py``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# H100 SXM5 80 GB, as an XLA GpuTargetConfigProto (fields of
# xla/stream_executor/device_description.proto;
# values from NVIDIA's H100 datasheet and the CUDA programming guide's compute capability 9.0 table:
# 132 SMs, 228 KiB shared memory per SM of which 227 KiB per block opt-in, 64 Ki registers per SM
# and per block, 2048 threads per SM, 50 MiB L2, 3.35 TB/s, 1.98 GHz boost).
H100_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_block_optin: 232448
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 85520809984
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
  cuda_compute_capability { major: 9 minor: 0 }
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 8 }
runtime_version { major: 12 minor: 8 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""


@dataclasses.dataclass(frozen=True)
class GpuLimits:
    """Per-SM limits used for occupancy (CUDA programming guide, compute capability 9.0)."""
    name: str = "H100 SXM"
    num_sms: int = 132
    registers_per_sm: int = 65536
    max_registers_per_thread: int = 255
    register_alloc_unit: int = 256          # registers are allocated per warp in units of 256
    threads_per_sm: int = 2048
    warps_per_sm: int = 64
    blocks_per_sm: int = 32
    shared_per_sm: int = 233472             # 228 KiB
    shared_per_block_optin: int = 232448    # 227 KiB
    shared_reserved_per_block: int = 1024   # the driver reserves 1 KiB per resident block
    shared_alloc_unit: int = 128
    memory_bytes: int = 80 * 10**9          # the "80 GB" of the product name


H100 = GpuLimits()


def use_cpu_platform() -> None:
    """Sets JAX_PLATFORMS=cpu unless set; must run before jax is imported (jax reads it then)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def cuda_plugin_installed() -> bool:
    """Whether a jax CUDA PJRT plugin (jax-cuda12-plugin or jax-cuda13-plugin) is importable."""
    from srwm_jax import jax_compat
    return bool(jax_compat.installed_cuda_plugins())


@functools.lru_cache(maxsize=None)
def find_ptxas() -> str | None:
    """ptxas on the PATH, else the one in the nvidia-cuda-nvcc-cu12 wheel; None when absent.

    Looked up once per process, before :func:`capture_ptx` puts its wrapper on the PATH."""
    found = shutil.which("ptxas")
    if found:
        return found
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "cuda_nvcc" / "bin" / "ptxas"
        if candidate.exists():
            return str(candidate)
    return None


@functools.lru_cache(maxsize=None)
def h100_mesh():
    """A one-device ``jax.sharding.Mesh`` of a described (absent) H100, axis "x"."""
    from jax.experimental import topologies
    topology = topologies.get_topology_desc(platform="cuda", target_config=H100_TARGET_CONFIG,
                                            topology="1x1x1")
    return topologies.make_mesh(topology, (1,), ("x",))


def on_h100(shape, dtype):
    """A ``jax.ShapeDtypeStruct`` replicated on the described H100."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec
    return jax.ShapeDtypeStruct(tuple(shape), dtype,
                                sharding=NamedSharding(h100_mesh(), PartitionSpec()))


def abstract_like(tree):
    """Maps every array (or ShapeDtypeStruct) leaf of ``tree`` to :func:`on_h100`."""
    import jax
    return jax.tree.map(lambda a: on_h100(a.shape, a.dtype), tree)


def _mesh_context():
    """jax >= 0.11: Pallas reads the GPU model from the abstract mesh in context."""
    from srwm_jax import jax_compat
    if not jax_compat.needs_abstract_gpu_mesh():
        return contextlib.nullcontext()
    return jax_compat.gpu_lowering_context(h100_mesh().abstract_mesh)


@dataclasses.dataclass
class KernelResources:
    """One GPU kernel of a compiled program: launch shape (XLA thunk) and ptxas resources."""
    name: str
    grid: tuple[int, int, int]
    threads: int             # per block
    shared_bytes: int        # dynamic shared memory requested at launch, per block
    registers: int           # per thread
    spill_stores: int        # bytes
    spill_loads: int         # bytes
    stack_bytes: int
    pallas: bool             # a Pallas kernel (``pl.pallas_call(name=...)``), not XLA's own

    @property
    def blocks(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


@dataclasses.dataclass
class CompiledProgram:
    compiled: object         # jax.stages.Compiled
    seconds: float           # trace + lower + compile (XLA, Triton, ptxas)
    kernels: list[KernelResources]

    def pallas_kernels(self) -> list[KernelResources]:
        return [k for k in self.kernels if k.pallas]


# XLA's thunk sequence dump, jax <= 0.11:
#   "001: kCustomKernel [...] NAME grid: [X, Y, Z] threads: [X, Y, Z]  shared_memory: N bytes"
_THUNK = re.compile(r"\]\s+(\S+)\s+grid:\s*\[(\d+),\s*(\d+),\s*(\d+)\]"
                    r"\s+threads:\s*\[(\d+),\s*(\d+),\s*(\d+)\]\s+shared_memory:\s*(\d+)")
# jax 0.12: "kernel=NAME, ... launch dimensions=blocks: {X, Y, Z}, threads/block: {X, Y, Z}, ...
#   shmem_bytes=N" (fields in this order on one line; other fields between them are skipped).
_THUNK_012 = re.compile(r"kernel=([^\s,]+),.*?launch dimensions="
                        r"blocks:\s*\{(\d+),\s*(\d+),\s*(\d+)\}"
                        r",\s*threads/block:\s*\{(\d+),\s*(\d+),\s*(\d+)\}.*?shmem_bytes=(\d+)")
_PTXAS_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PTXAS_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                          r"(\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")
# A Pallas GPU (Triton) call lowers to this custom call; its backend config holds the kernel's name.
_PALLAS_NAME = re.compile(r'xla\.gpu\.triton.*?[{ ,]name = "([^"]+)"')
_PTX_ENTRY = re.compile(r"\.entry\s+(\S+?)\s*\(")
_PTX_MAXNTID = re.compile(r"\.(?:maxntid|reqntid)\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?")
# XLA's message when xla_gpu_fail_ptx_compilation_on_register_spilling discards a program.
SPILL_ERROR = "register spilling"


def parse_thunks(text: str) -> dict[str, tuple]:
    """XLA thunk-sequence dump (either format) -> {kernel: (grid, threads/block, shared bytes)}."""
    launches = {}
    for pattern in (_THUNK, _THUNK_012):
        for m in pattern.finditer(text):
            name, *nums = m.groups()
            nums = [int(n) for n in nums]
            launches[name] = (tuple(nums[:3]), nums[3] * nums[4] * nums[5], nums[6])
    return launches


def parse_ptxas(text: str) -> dict[str, dict]:
    """``ptxas -v`` output -> {entry: {registers, stack_bytes, spill_stores, spill_loads}}."""
    info, current = {}, None
    for line in text.splitlines():
        if m := _PTXAS_ENTRY.search(line):
            current = info.setdefault(m.group(1), dict(registers=0, stack_bytes=0,
                                                       spill_stores=0, spill_loads=0))
        elif current is not None and (m := _PTXAS_STACK.search(line)):
            current.update(stack_bytes=int(m.group(1)), spill_stores=int(m.group(2)),
                           spill_loads=int(m.group(3)))
        elif current is not None and (m := _PTXAS_REGS.search(line)):
            current["registers"] = int(m.group(1))
    return info


def parse_ptx_threads(ptx_text: str) -> dict[str, int]:
    """PTX -> {entry: threads per block} from each entry's ``.maxntid`` / ``.reqntid``."""
    out = {}
    entries = list(_PTX_ENTRY.finditer(ptx_text))
    for i, m in enumerate(entries):
        body = ptx_text[m.end(): entries[i + 1].start() if i + 1 < len(entries) else len(ptx_text)]
        body = body[: body.find("{")] if "{" in body else body
        if t := _PTX_MAXNTID.search(body):
            out[m.group(1)] = functools.reduce(lambda a, b: a * int(b or 1), t.groups(), 1)
    return out


def run_ptxas(ptx_path: Path, ptxas: str) -> dict[str, dict]:
    """Assembles one PTX file for its own ``.target`` with ``ptxas -v``; see :func:`parse_ptxas`."""
    arch = "sm_90a"
    for line in ptx_path.read_text().splitlines()[:40]:
        if line.startswith(".target"):
            arch = line.split()[1].rstrip(",")
            break
    result = subprocess.run([ptxas, "-v", f"-arch={arch}", str(ptx_path), "-o", os.devnull],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ptxas failed on {ptx_path.name}: {result.stderr.strip()[-2000:]}")
    return parse_ptxas(result.stderr + result.stdout)


def pallas_kernel_names(lowered_text: str) -> set[str]:
    """Names of the Pallas kernels in a lowered program (``jax.stages.Lowered.as_text()``)."""
    return set(_PALLAS_NAME.findall(lowered_text))


_PTXAS_WRAPPER = """#!/bin/sh
# Written by tests/h100_gate.py: keeps a copy of each PTX file XLA assembles, then runs ptxas.
for a in "$@"; do
  case "$a" in -*) ;; *) if [ -f "$a" ] && grep -q '^\\.target' "$a" 2>/dev/null; then
    cp "$a" "$(mktemp "{capture}/ptx.XXXXXXXX")"; fi ;; esac
done
exec "{ptxas}" "$@"
"""


@functools.lru_cache(maxsize=None)
def _ptxas_wrapper(ptxas: str) -> tuple[Path, Path]:
    """(wrapper bin folder, capture folder), made once per process: XLA remembers the ptxas
    path it first found, so the wrapper must outlive every compile."""
    import atexit
    root = tempfile.mkdtemp(prefix="ptxas_capture_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    bin_dir, capture = Path(root, "bin"), Path(root, "ptx")
    bin_dir.mkdir()
    capture.mkdir()
    wrapper = bin_dir / "ptxas"
    wrapper.write_text(_PTXAS_WRAPPER.replace("{capture}", str(capture))
                       .replace("{ptxas}", str(Path(ptxas).resolve())))
    wrapper.chmod(0o755)
    return bin_dir, capture


@contextlib.contextmanager
def capture_ptx(ptxas: str):
    """Yields a folder that receives a copy of each PTX file XLA assembles inside the block.

    A ``ptxas`` wrapper goes first on the PATH (for the rest of the process: XLA keeps the path
    it found): XLA runs the ``ptxas`` it finds there (with ``--warn-on-spills`` when spills fail
    the compile) on jax 0.10-0.12, and the PTX it passes is exactly what runs on the GPU.
    Not thread-safe (one compile at a time per process).
    """
    bin_dir, capture = _ptxas_wrapper(ptxas)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != str(bin_dir):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{path}"
    for f in capture.iterdir():
        f.unlink()
    yield capture


def kernel_resources(dump_dir: Path, ptx_dir: Path, ptxas: str,
                     pallas_names=None) -> list[KernelResources]:
    """Launch shapes from XLA's thunk dump in ``dump_dir``; resources from ptxas on the PTX
    files in ``ptx_dir`` (:func:`capture_ptx`).

    pallas_names: the Pallas kernel names (XLA may suffix them, ``srwm_fwd__1``); when given,
    only those kernels are read (ptxas on every XLA fusion of a big program takes a while), and
    a Pallas kernel that has no launch or no PTX is an error, never a silent omission.
    """
    thunk_files = sorted(dump_dir.glob("*.thunk_sequence.txt"))
    if not thunk_files:
        raise RuntimeError(f"no thunk sequence in {dump_dir}: did XLA dump this compile?")
    launches = {}
    for f in thunk_files:
        launches.update(parse_thunks(f.read_text()))
    out, seen, mismatched = [], set(), {}
    for ptx in sorted(ptx_dir.glob("ptx.*")):
        text = ptx.read_text()
        entries = [e for e in _PTX_ENTRY.findall(text) if e in launches and e not in seen]
        if pallas_names is not None:
            entries = [e for e in entries if e.split("__")[0] in pallas_names]
        if not entries:
            continue
        resources = run_ptxas(ptx, ptxas)
        ptx_threads = parse_ptx_threads(text)
        for name in entries:
            grid, threads, shared = launches[name]
            if name in ptx_threads and ptx_threads[name] != threads:
                # XLA's autotuner assembles several candidates of one fusion under one name (on
                # jax 0.12, a gemm fusion at 64 and at 128 threads); the one that runs is the
                # one whose threads match the launch. Checked below: none matching is an error.
                mismatched[name] = ptx_threads[name]
                continue
            seen.add(name)
            out.append(KernelResources(name=name, grid=grid, threads=threads, shared_bytes=shared,
                                       pallas=pallas_names is not None, **resources[name]))
    if unmatched := sorted(set(mismatched) - seen):
        raise RuntimeError("; ".join(
            f"{name}: the thunk dump launches {launches[name][1]} threads per block, the PTX "
            f"declares {mismatched[name]}" for name in unmatched))
    if pallas_names is not None:
        launched = {n for n in launches if n.split("__")[0] in pallas_names}
        if not launched:
            raise RuntimeError(f"no launch of the Pallas kernels {sorted(pallas_names)} found in "
                               f"{[f.name for f in thunk_files]}: has XLA's dump format changed?")
        if missing := sorted(launched - seen):
            raise RuntimeError(f"no PTX captured for {missing}: did XLA run ptxas from the PATH?")
    return out


def compile_for(fn, *args, pallas_only: bool = True, ptxas: str | None = None,
                keep_dump: str | None = None, fail_on_spills: bool = True) -> CompiledProgram:
    """Compiles ``jax.jit(fn)`` for the described H100; args are :func:`on_h100` structs.

    Raises whatever the compiler raises (e.g. RESOURCE_EXHAUSTED on a shared-memory overflow;
    with ``fail_on_spills``, an error naming :data:`SPILL_ERROR` on any register spill) and
    RuntimeError when ptxas is missing or fails, or a Pallas kernel's launch or PTX is not found.
    ``pallas_only``: read only the Pallas kernels' resources (XLA's own fusions are not ours to
    tune). ``keep_dump`` keeps XLA's dump.
    """
    import jax
    ptxas = ptxas or find_ptxas()
    if ptxas is None:
        raise RuntimeError("no ptxas found: put a CUDA toolkit's bin on PATH or "
                           "pip install nvidia-cuda-nvcc-cu12")
    options = {"xla_gpu_fail_ptx_compilation_on_register_spilling": fail_on_spills}
    with contextlib.ExitStack() as stack:
        dump = keep_dump or stack.enter_context(tempfile.TemporaryDirectory(prefix="xla_h100_"))
        ptx_dir = stack.enter_context(capture_ptx(ptxas))
        start = time.perf_counter()
        with _mesh_context():
            lowered = jax.jit(fn).trace(*args).lower()
        names = pallas_kernel_names(lowered.as_text()) if pallas_only else None
        compiled = lowered.compile(compiler_options={"xla_dump_to": dump, **options})
        seconds = time.perf_counter() - start
        # No Triton kernel in the program (e.g. only Mosaic GPU kernels, which run their own
        # ptxas; tests/mosaic_h100_gate.py reads those): nothing of ours among XLA's PTX.
        kernels = ([] if names is not None and not names else
                   kernel_resources(Path(dump), ptx_dir, ptxas, pallas_names=names))
    return CompiledProgram(compiled=compiled, seconds=seconds, kernels=kernels)


# --- occupancy -------------------------------------------------------------------------------

def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


@dataclasses.dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    limited_by: str          # "registers", "threads", "blocks", "shared memory"

    def waves(self, blocks: int, limits: GpuLimits = H100) -> float:
        """Grid blocks / blocks resident at once on the whole GPU."""
        return blocks / (self.blocks_per_sm * limits.num_sms)


def occupancy(registers: int, threads: int, shared_bytes: int,
              limits: GpuLimits = H100) -> Occupancy:
    """Resident blocks and warps per SM of a kernel (the CUDA occupancy calculator's rules).

    registers: per thread (ptxas); threads: per block; shared_bytes: per block (static+dynamic).
    """
    warps = -(-threads // 32)
    regs_per_warp = _round_up(max(registers, 1) * 32, limits.register_alloc_unit)
    by_regs = (limits.registers_per_sm // regs_per_warp) // warps
    by_threads = limits.warps_per_sm // warps
    smem = _round_up(shared_bytes, limits.shared_alloc_unit) + limits.shared_reserved_per_block
    by_smem = limits.shared_per_sm // smem
    candidates = {"registers": by_regs, "threads": by_threads, "blocks": limits.blocks_per_sm,
                  "shared memory": by_smem}
    limited_by = min(candidates, key=candidates.get)
    blocks = candidates[limited_by]
    return Occupancy(blocks_per_sm=blocks, warps_per_sm=blocks * warps, limited_by=limited_by)


# --- the kernel cases ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class KernelCase:
    """One kernel configuration compiled forward (no residuals) and under jax.grad.

    op: "srwm" (d = head dim; dv unused) or "delta" (d = dk, dv = value dim).
    reset: compile with a per-step reset mask (needs kernels with a ``reset`` argument).
    """
    op: str
    d: int
    dv: int = 0
    seq_len: int = 76
    dtype: str = "float32"
    input_softmax: bool = True
    reset: bool = False
    batch: int = 128
    heads: int = 16

    @property
    def name(self) -> str:
        dims = f"d{self.d}" if self.op == "srwm" else f"dk{self.d}-dv{self.dv}"
        dtype = {"float32": "f32", "bfloat16": "bf16"}[self.dtype]
        parts = [self.op, dims, f"T{self.seq_len}", dtype]
        if self.op == "srwm":
            parts.append("softmax" if self.input_softmax else "nosoftmax")
        if self.reset:
            parts.append("reset")
        if (self.batch, self.heads) != (128, 16):
            parts.append(f"B{self.batch}H{self.heads}")
        return "-".join(parts)


def kernels_take_reset() -> bool:
    """Whether the kernels take per-step reset masks (``reset``; SRWM also ``reset_weights``)."""
    import inspect

    from srwm_jax import kernels
    srwm = inspect.signature(kernels.srwm_pallas).parameters
    delta = inspect.signature(kernels.delta_rule_pallas).parameters
    return "reset" in srwm and "reset_weights" in srwm and "reset" in delta


def delta_code_paths():
    """(dk, dv) pairs of {16..128}^2 that give a new forward or backward kernel code path.

    A delta-rule kernel's code depends on dk and the block config (BB, BV, warps), not on dv
    itself (dv only sets strides and the grid), so pairs with an already-seen config add nothing.
    """
    from srwm_jax.kernels.delta_rule import default_delta_rule_config
    dims = (16, 32, 64, 128)
    seen_fwd, seen_bwd, pairs = set(), set(), []
    for dk in dims:
        for dv in dims:
            c = default_delta_rule_config(dk, dv, 128 * 16)
            fwd = (dk, c.block_seqs, c.block_v, c.num_warps)
            bwd = (dk, c.block_seqs, c.block_v_bwd, c.num_warps_bwd)
            if fwd not in seen_fwd or bwd not in seen_bwd:
                pairs.append((dk, dv))
            seen_fwd.add(fwd)
            seen_bwd.add(bwd)
    return pairs


def kernel_cases(masked: bool | None = None) -> list[KernelCase]:
    """Every kernel code path worth compiling (see the README's occupancy section).

    Each of forward and gradient programs (see :func:`case_programs`), at T=76, over every
    combination that changes the generated code:
      SRWM        d in {16, 32, 64} x input_softmax x dtype (float32, bfloat16) x reset mask;
      delta rule  the (dk, dv) pairs of :func:`delta_code_paths` x dtype x reset mask.
    T changes only loop bounds and the checkpoint chunking, so its variants are compiled in
    float32: SRWM d=16 at T in {1, 50, 4096} (one step; one partial chunk; many chunks), d=64 at
    T=4096, the delta rule (16, 16) at T in {1, 4096}, and masked SRWM d=16 at T in {50, 4096} (RL)
    and delta (16, 16) at T=4096.
    masked (default: :func:`kernels_take_reset`): include the reset-mask cases.
    """
    if masked is None:
        masked = kernels_take_reset()
    resets = (False, True) if masked else (False,)
    cases = []
    for reset in resets:
        for d in (16, 32, 64):
            for softmax in (True, False):
                for dtype in ("float32", "bfloat16"):
                    cases.append(KernelCase("srwm", d, dtype=dtype, input_softmax=softmax,
                                            reset=reset))
        for dk, dv in delta_code_paths():
            for dtype in ("float32", "bfloat16"):
                cases.append(KernelCase("delta", dk, dv, dtype=dtype, reset=reset))
    cases += [KernelCase("srwm", 16, seq_len=t) for t in (1, 50, 4096)]
    cases.append(KernelCase("srwm", 64, seq_len=4096))
    cases += [KernelCase("delta", 16, 16, seq_len=t) for t in (1, 4096)]
    if masked:
        cases += [KernelCase("srwm", 16, seq_len=t, reset=True) for t in (50, 4096)]
        cases.append(KernelCase("delta", 16, 16, seq_len=4096, reset=True))
    return cases


def case_programs(case: KernelCase) -> dict:
    """{"forward": (fn, args), "grad": (fn, args)} for one case.

    "forward" runs the kernel without residuals (the non-differentiated call); "grad" takes
    the gradient of a scalar loss w.r.t. every differentiable input, so it holds the
    residual-saving forward kernel and the backward kernel. Compiled separately so that each
    kernel's resources are attributed without ambiguity.
    """
    import jax
    import jax.numpy as jnp

    from srwm_jax import kernels
    from srwm_jax import SRWMWeights

    dtype = jnp.dtype(case.dtype)
    b, t, h, d = case.batch, case.seq_len, case.heads, case.d

    def total(tree):
        return sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in jax.tree.leaves(tree))

    if case.op == "srwm":
        mat = on_h100((b, h, d, d), jnp.float32)
        weights = SRWMWeights(y=mat, q=mat, k=mat, b=on_h100((b, h, d, 4), jnp.float32))
        # Masked: the layers restart from the slow weights (reset_weights), a differentiable input.
        args = (on_h100((b, t, h, d), dtype), weights) + ((weights,) if case.reset else ())

        def run(x, W, *reset_weights, **kw):
            if reset_weights:
                kw["reset_weights"] = reset_weights[0]
            return kernels.srwm_pallas(x, W, input_softmax=case.input_softmax, **kw)
    elif case.op == "delta":
        dv = case.dv
        args = (on_h100((b, t, h, d), dtype), on_h100((b, t, h, d), dtype),
                on_h100((b, t, h, dv), dtype), on_h100((b, t, h), dtype),
                on_h100((b, h, d, dv), jnp.float32))

        def run(*a, **kw):
            return kernels.delta_rule_pallas(*a, **kw)
    else:
        raise ValueError(f"KernelCase.op={case.op!r}: choose 'srwm' or 'delta'")

    # A reset mask [B, T] (True: the state restarts before step t) is a non-differentiable extra
    # input, passed by keyword (the delta rule restarts from zeros, as the DeltaNet layer does).
    masks = (on_h100((b, t), jnp.bool_),) if case.reset else ()
    n = len(args)

    def kw(extra):
        return {"reset": extra[0]} if extra else {}

    def forward(*a):
        return run(*a[:n], **kw(a[n:]))

    def grad(*a):
        loss = lambda *x: total(run(*x, **kw(a[n:])))  # noqa: E731
        return jax.grad(loss, argnums=tuple(range(n)))(*a[:n])

    return {"forward": (forward, args + masks), "grad": (grad, args + masks)}


def spilling_program(rows: int = 256, cols: int = 64):
    """(fn, args): a Pallas (Triton) kernel made to spill registers, to prove the gate fails.

    One warp holds a [rows, cols] float32 block live across a column sum (rows*cols/32 = 512
    values per thread at the default, twice the 255 registers a thread may have), then scales
    the block by it, so ptxas must spill.
    """
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl

    from srwm_jax.kernels import _common

    def kernel(x_ref, o_ref):
        x = x_ref[...]
        o_ref[...] = x * jnp.sum(x, axis=0, keepdims=True) + jnp.sum(x * x, axis=1, keepdims=True)

    def fn(x):
        return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                              name="spill_probe",
                              compiler_params=_common.triton_params(num_warps=1))(x)

    return fn, (on_h100((rows, cols), jnp.float32),)


def format_table(rows: list[dict]) -> str:
    """Markdown table of per-kernel resources (rows from :func:`compile_cases`)."""
    head = ("| case | program | kernel | grid | threads | registers | spill st/ld (B) | shared (B) "
            "| blocks/SM | warps/SM | limited by | compile (s) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['case']} | {r['program']} | {r['kernel']} | {r['grid']} "
                     f"| {r['threads']} | {r['registers']} "
                     f"| {r['spill_stores']}/{r['spill_loads']} | {r['shared_bytes']} "
                     f"| {r['blocks_per_sm']} | {r['warps_per_sm']} | {r['limited_by']} "
                     f"| {r['seconds']:.1f} |")
    return "\n".join(lines)


def compile_cases(cases, ptxas: str | None = None, log=None) -> list[dict]:
    """Compiles each case's programs; one row per Pallas kernel, one row with ``error`` per
    program that failed to compile."""
    rows = []
    for case in cases:
        for program_name, (fn, args) in case_programs(case).items():
            label = f"{case.name} {program_name}"
            try:
                program = compile_for(fn, *args, ptxas=ptxas)
            except Exception as e:  # reported per program; the caller decides what fails
                rows.append(dict(case=case.name, program=program_name, kernel="-",
                                 error=f"{type(e).__name__}: {e}"[:3000]))
                if log:
                    log(f"{label}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                continue
            for k in program.pallas_kernels():
                occ = occupancy(k.registers, k.threads, k.shared_bytes)
                rows.append(dict(case=case.name, program=program_name, kernel=k.name,
                                 grid=k.blocks, threads=k.threads, registers=k.registers,
                                 spill_stores=k.spill_stores, spill_loads=k.spill_loads,
                                 stack_bytes=k.stack_bytes, shared_bytes=k.shared_bytes,
                                 blocks_per_sm=occ.blocks_per_sm, warps_per_sm=occ.warps_per_sm,
                                 limited_by=occ.limited_by, seconds=program.seconds))
            if log:
                log(f"{label}: {program.seconds:.1f} s, "
                    + ", ".join(f"{k.name} {k.registers} regs x {k.threads} threads"
                                for k in program.pallas_kernels()))
    return rows


def spill_probe(json_out: str | None = None) -> int:
    """Compiles :func:`spilling_program` with the gate (must fail) and without (must spill)."""
    import json
    fn, fn_args = spilling_program()
    result = {"gate_error": None}
    try:
        compile_for(fn, *fn_args)
    except Exception as e:  # the expected outcome: XLA discards the spilling program
        result["gate_error"] = f"{type(e).__name__}: {e}"[:2000]
    kernel = compile_for(fn, *fn_args, fail_on_spills=False).pallas_kernels()[0]
    result["kernel"] = dataclasses.asdict(kernel)
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    caught = SPILL_ERROR in (result["gate_error"] or "") and kernel.spills
    return 0 if caught else 1


def main(argv=None):
    import argparse
    import json
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the rows as JSON to this file")
    parser.add_argument("--only", default="", help="comma-separated substrings of case names")
    parser.add_argument("--shard", default="0/1",
                        help="K/N: compile only every N-th case from the K-th (parallel runs)")
    parser.add_argument("--spill-probe", action="store_true",
                        help="compile only spilling_program(), with and without the spill gate; "
                             "exit 0 when the gate rejects it and ptxas reports its spills")
    args = parser.parse_args(argv)
    use_cpu_platform()
    if not cuda_plugin_installed():
        sys.exit("tests.h100_gate: jax's CUDA plugin is not installed; run "
                 "benchmarks/install_cuda_plugin.sh")
    if args.spill_probe:
        return spill_probe(args.json)
    cases = kernel_cases()
    if args.only:
        keys = args.only.split(",")
        cases = [c for c in cases if any(k in c.name for k in keys)]
    shard, shards = (int(n) for n in args.shard.split("/"))
    cases = cases[shard::shards]
    rows = compile_cases(cases, log=lambda s: print(s, file=sys.stderr, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    ok = [r for r in rows if "error" not in r]
    print(format_table(ok))
    for r in rows:
        if "error" in r:
            print(f"COMPILE ERROR {r['case']}: {r['error'].splitlines()[0]}")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
