"""Deviceless H100 (sm_90a) compile of every Mosaic GPU kernel case, with ptxas resources.

    MOSAIC_GPU_DUMP_PTXAS=1 python -m tests.mosaic_h100_gate [--json OUT] [--quick]

Same technique as ``tests/h100_gate.py`` (a described H100 as a one-device topology, the
abstract mesh in context so Pallas targets sm_90a), but the Mosaic GPU pipeline runs ptxas
itself: with ``MOSAIC_GPU_DUMP_PTXAS=1`` and ``MOSAIC_GPU_DUMP_TO=<existing dir>`` (this script
sets both before jax starts) it writes each kernel's ``<name>_<n>.ptxas`` (registers, spills)
and ``<name>_<n>.resources.txt`` (SMEM scratch bytes) there. Every Mosaic kernel is one
warpgroup (128 threads) per CTA; delta rule: grid = (N / 64) x (dv / BV) with N = B*H padded
to 64; SRWM: grid = N (one sequence per CTA).

Needs jax >= 0.11 with the CUDA plugin of the same version (jax-cuda12-plugin or
jax-cuda13-plugin) and ``JAX_PLATFORMS=cpu``. Blocks/SM and waves: ``tests.h100_gate.occupancy``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {  # name: (batch, heads, seq_len), as benchmarks/occupancy.py
    "few-shot": (128, 16, 6),
    "RL B=32": (32, 8, 50),
    "RL B=64": (64, 8, 50),
    "long": (16, 16, 4096),
}


@dataclasses.dataclass(frozen=True)
class MosaicCase:
    dk: int            # SRWM: the head dim d (dv = d)
    dv: int
    dtype: str = "float32"
    reset: bool = False
    op: str = "delta"  # "delta" or "srwm"

    @property
    def name(self) -> str:
        short = {"float32": "f32", "bfloat16": "bf16"}[self.dtype]
        head = f"srwm d{self.dk}" if self.op == "srwm" else f"delta dk{self.dk}-dv{self.dv}"
        parts = [head, short]
        return " ".join(parts + (["reset"] if self.reset else []))


def mosaic_cases(quick: bool = False) -> list[MosaicCase]:
    # The kernels depend on dk, BV (min(dv, 256/dk) forward, min(dv, 128/dk) backward, or with
    # dL/dS in SMEM at dk=32 BV=8) and the dtype; these dims cover every (dk, BV) pair the
    # supported configurations use.
    dims = [(16, 16)] if quick else [(16, 16), (16, 8), (32, 32), (8, 8), (8, 16), (8, 128)]
    cases = [MosaicCase(dk, dv) for dk, dv in dims]
    # No masked case: the masked forward's sm_90a compile did not finish Mosaic's layout
    # inference (>10 min, jax 0.12.1), so reset masks run on Triton (kernels/README.md).
    cases += [] if quick else [MosaicCase(16, 16, "bfloat16")]
    # SRWM: the kernels depend on d (G in registers at 16, in SMEM in the backward from 32) and
    # the input dtype.
    cases += [MosaicCase(16, 16, op="srwm")]
    cases += [] if quick else [MosaicCase(d, d, op="srwm") for d in (32, 64)] + [
        MosaicCase(16, 16, "bfloat16", op="srwm")] + [
        MosaicCase(d, d, reset=True, op="srwm") for d in (16, 32)]  # masked: d <= 32
    return cases


def setup_dump(dump_dir: str | None = None) -> Path:
    """Points Mosaic GPU's ptxas dump at a directory; call before jax compiles anything."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["MOSAIC_GPU_DUMP_PTXAS"] = "1"
    path = Path(dump_dir or os.environ.get("MOSAIC_GPU_DUMP_TO") or
                tempfile.mkdtemp(prefix="mosaic_h100_"))
    path.mkdir(parents=True, exist_ok=True)
    os.environ["MOSAIC_GPU_DUMP_TO"] = str(path)
    return path


_REGS = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"smem_scratch_bytes=(\d+)")


def read_kernel(dump: Path, stem: str) -> dict:
    """Registers, spills and SMEM of one dumped kernel (``stem`` = file name without suffix)."""
    ptxas = (dump / f"{stem}.ptxas").read_text()
    resources = dump / f"{stem}.resources.txt"
    smem = _SMEM.search(resources.read_text()) if resources.exists() else None
    spill = _SPILL.search(ptxas)
    return {"kernel": re.sub(r"_\d+$", "", stem), "registers": int(_REGS.search(ptxas).group(1)),
            "spill_stores": int(spill.group(1)), "spill_loads": int(spill.group(2)),
            "shared_bytes": int(smem.group(1)) if smem else 0, "threads": 128}


def _srwm_programs(case: MosaicCase, seq_len: int):
    """(args, forward, loss) of the SRWM case at B=128, H=16 (input softmax on)."""
    import jax.numpy as jnp

    import srwm_jax
    from tests.h100_gate import on_h100
    from srwm_jax.kernels.srwm.mosaic_ops import srwm_mosaic
    batch, heads, d = 128, 16, case.dk
    x = on_h100((batch, seq_len, heads, d), jnp.dtype(case.dtype))
    W = srwm_jax.SRWMWeights(*(on_h100((batch, heads, d, m), jnp.float32) for m in (d, d, d, 4)))

    args = (x, W, on_h100((batch, seq_len), jnp.bool_)) if case.reset else (x, W)

    def forward(x, W, reset=None):
        return srwm_mosaic(x, W, input_softmax=True, reset=reset)

    def loss(x, W, reset=None):
        y, W_T = forward(x, W, reset)
        return jnp.sum(y.astype(jnp.float32)) + sum(jnp.sum(w) for w in W_T)

    return args, forward, loss


def compile_case(case: MosaicCase, dump: Path, seq_len: int = 76) -> list[dict]:
    """Compiles the forward and the gradient program of ``case`` for an H100; one row per
    Mosaic kernel (forward, forward + residuals, backward)."""
    import jax
    import jax.numpy as jnp

    if case.op == "srwm":
        args, forward, loss = _srwm_programs(case, seq_len)
        rows = []
        for program, fn in (("forward", forward), ("grad", jax.grad(loss, argnums=(0, 1)))):
            rows += _compile_program(fn, args, {}, dump, program, case, lambda backward: None)
        return rows

    from tests.h100_gate import on_h100
    from srwm_jax.kernels.delta_rule.mosaic_ops import (default_mosaic_delta_config,
                                                        delta_rule_mosaic)
    batch, heads = 128, 16
    dt = jnp.dtype(case.dtype)
    args = [on_h100((batch, seq_len, heads, case.dk), dt),
            on_h100((batch, seq_len, heads, case.dk), dt),
            on_h100((batch, seq_len, heads, case.dv), dt), on_h100((batch, seq_len, heads), dt),
            on_h100((batch, heads, case.dk, case.dv), jnp.float32)]
    kwargs = {}
    if case.reset:
        kwargs["reset"] = on_h100((batch, seq_len), jnp.bool_)

    def forward(*a, **kw):
        return delta_rule_mosaic(*a, **kw)

    def loss(*a, **kw):
        y, s = delta_rule_mosaic(*a, **kw)
        return jnp.sum(y.astype(jnp.float32)) + jnp.sum(s)

    config = default_mosaic_delta_config(case.dk, case.dv, dt.itemsize)
    rows = []
    for program, fn in (("forward", forward), ("grad", jax.grad(loss, argnums=range(5)))):
        rows += _compile_program(
            fn, args, kwargs, dump, program, case,
            lambda backward: config.block_v_bwd if backward else config.block_v)
    return rows


def _compile_program(fn, args, kwargs, dump, program, case, block_v):
    """Compiles ``fn`` for a described H100; one row per Mosaic kernel it dumped."""
    import jax

    from tests.h100_gate import _mesh_context
    before = set(dump.glob("*.ptxas"))
    start = time.perf_counter()
    with _mesh_context():
        jax.jit(fn).trace(*args, **kwargs).lower().compile()
    seconds = time.perf_counter() - start
    rows = []
    for path in sorted(set(dump.glob("*.ptxas")) - before):
        row = read_kernel(dump, path.stem)
        backward = "bwd" in row["kernel"]
        launch = ("backward" if backward else
                  "forward + residuals" if program == "grad" else "forward")
        rows.append(dict(row, case=case.name, launch=launch, block_v=block_v(backward),
                         seconds=round(seconds, 1)))
    return rows


def occupancy_rows(rows: list[dict]) -> list[dict]:
    from tests.h100_gate import occupancy
    out = []
    for shape, (batch, heads, _) in SHAPES.items():
        n_pad = -(-batch * heads // 64) * 64
        for row in rows:
            if row["case"] not in ("delta dk16-dv16 f32", "delta dk32-dv32 f32", "srwm d16 f32",
                                   "srwm d32 f32", "srwm d64 f32"):
                continue
            if row["case"].startswith("srwm"):
                grid = batch * heads  # one sequence per CTA
            else:
                dv = int(re.search(r"dv(\d+)", row["case"]).group(1))
                grid = (n_pad // 64) * (dv // row["block_v"])
            occ = occupancy(row["registers"], row["threads"], row["shared_bytes"])
            out.append(dict(row, shape=shape, grid=grid, blocks_per_sm=occ.blocks_per_sm,
                            warps_per_sm=occ.warps_per_sm, limited_by=occ.limited_by,
                            waves=round(occ.waves(grid), 2)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help="only delta dk=dv=16 f32 and SRWM d=16 f32")
    parser.add_argument("--dump", help="existing or new directory for Mosaic GPU's dumps")
    args = parser.parse_args(argv)
    dump = setup_dump(args.dump)
    import jax
    print(f"jax {jax.__version__}, described H100 SXM (sm_90a), dump {dump}")
    rows, failures = [], []
    for case in mosaic_cases(args.quick):
        try:
            rows += compile_case(case, dump)
        except Exception as e:  # noqa: BLE001 - one line per failing case, then go on
            failures.append(f"{case.name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            print(f"error: {failures[-1]}", file=sys.stderr)
    print("| case | launch | BV | threads | regs/thread | spill st/ld (B) | SMEM (B) | compile s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        bv = r["block_v"] or "-"
        print(f"| {r['case']} | {r['launch']} | {bv} | {r['threads']} | {r['registers']} "
              f"| {r['spill_stores']}/{r['spill_loads']} | {r['shared_bytes']} | {r['seconds']} |")
    occ = occupancy_rows(rows)
    print("\n| shape | kernel | launch | grid | threads | regs/thread | shared (B) | blocks/SM "
          "| warps/SM | limited by | waves |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in occ:
        print(f"| {r['shape']} | {r['case']} | {r['launch']} | {r['grid']} | {r['threads']} "
              f"| {r['registers']} | {r['shared_bytes']} | {r['blocks_per_sm']} "
              f"| {r['warps_per_sm']} "
              f"| {r['limited_by']} | {r['waves']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "occupancy": occ,
                                               "failures": failures}, indent=1))
    spills = [r for r in rows if r["spill_stores"] or r["spill_loads"]]
    for r in spills:
        print(f"error: {r['case']} {r['launch']} spills {r['spill_stores']}/{r['spill_loads']} B",
              file=sys.stderr)
    return 1 if failures or spills else 0


if __name__ == "__main__":
    sys.exit(main())
