"""The Pallas kernels compiled and run on a real GPU (not interpreted) against the scan reference.

Skipped without a GPU (jax's default backend is not "gpu"); ``benchmarks/gpu_check.py`` runs it
on a GPU machine. The scan reference (``srwm_jax`` impl="scan") is itself checked against
float64 loops by tests/test_ops.py; tests/test_kernels.py checks these kernels against float64
in interpret mode on CPU. This file checks what interpret mode cannot: the Triton-compiled code.

Cases (19; sized for gpu_check's 8-minute budget), at small, awkward sizes (B*H = 15, not a
multiple of any block): SRWM d in {16, 32, 64} with (input softmax, float32) and (no softmax,
bf16) at T=76 (two checkpoint chunks at d=16), T=1 and T=4096 at d=16; the delta-rule (dk, dv)
pairs with distinct block configs (``tests.h100_gate.delta_code_paths``, 9 pairs), bf16 at
(128, 32), T=4096 at (16, 16); on Hopper (sm_90+, jax >= 0.11) also the Mosaic GPU delta rule
(5 cases: dk 8/16/32, bf16, T=4096; no resets, which run on Triton), the Mosaic GPU SRWM
(3 cases: d 16 at T=4096, d 32 bf16 with resets, d 64) and the dispatch check
(impl="pallas"/"auto" pick Mosaic there, Triton for reset masks; the public op matches the scan
both ways), skipped with the reason elsewhere.

Tolerances, relative to the largest reference value of each quantity (as tests/test_kernels.py
uses against scan): float32 1e-5 forward, 1e-4 gradients; bf16 inputs 2e-2 for bf16 outputs
and gradients (bf16 rounding 4e-3 plus accumulated float32 differences), 1e-3 for float32
state and its gradient; T=4096: 1e-3 (float32 drift over thousands of steps, both sides).
"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srwm_jax import kernels
import srwm_jax
from tests.h100_gate import delta_code_paths

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu",
                                reason="needs a GPU (run benchmarks/gpu_check.py on one)")

B, H = 3, 5


def _loss(outputs):
    y, state = outputs
    total = jnp.sum(jnp.sin(3.0 * y.astype(jnp.float32)))
    for s in jax.tree.leaves(state):
        total = total + 0.5 * jnp.sum(jnp.cos(s.astype(jnp.float32)))
    return total


def _outputs_and_grads(fn, args):
    def loss_with_outputs(*a):
        outputs = fn(*a)
        return _loss(outputs), outputs
    grads, outputs = jax.jit(jax.grad(loss_with_outputs, argnums=tuple(range(len(args))),
                                      has_aux=True))(*args)
    return outputs, grads


def _assert_trees_close(what, got, want, tol_for):
    for i, (g, w) in enumerate(zip(jax.tree.leaves(got), jax.tree.leaves(want))):
        assert g.shape == w.shape and g.dtype == w.dtype, (what, i, g.shape, w.shape, g.dtype)
        g64, w64 = (np.asarray(jnp.asarray(a, jnp.float32), np.float64) for a in (g, w))
        err = np.abs(g64 - w64).max() / max(np.abs(w64).max(), 1e-6)
        tol = tol_for(g.dtype)
        assert err <= tol, (f"{what}[{i}] ({g.dtype}, {g.shape}): relative error "
                            f"{err:.2e} > {tol:.0e}")


def _tolerances(dtype, seq_len):
    if seq_len >= 4096:
        return (lambda _: 1e-3), (lambda _: 1e-3)
    if dtype == jnp.bfloat16:
        return ((lambda dt: 2e-2 if dt == jnp.bfloat16 else 1e-3),
                (lambda dt: 2e-2 if dt == jnp.bfloat16 else 1e-3))
    return (lambda _: 1e-5), (lambda _: 1e-4)


def _check_against_scan(kernel, scan, args, dtype, seq_len):
    """kernel vs the scan reference on the same args: the forward program, then the outputs and
    every gradient of the grad program, each within the dtype's tolerances."""
    tol_out, tol_grad = _tolerances(dtype, seq_len)
    _assert_trees_close("forward", jax.jit(kernel)(*args), jax.jit(scan)(*args), tol_out)
    out, grads = _outputs_and_grads(kernel, args)
    out_ref, grads_ref = _outputs_and_grads(scan, args)
    _assert_trees_close("outputs (grad program)", out, out_ref, tol_out)
    _assert_trees_close("gradients", grads, grads_ref, tol_grad)


SRWM_CASES = ([(d, True, jnp.float32, 76) for d in (16, 32, 64)]
              + [(d, False, jnp.bfloat16, 76) for d in (16, 32, 64)]
              + [(16, True, jnp.float32, t) for t in (1, 4096)])


@pytest.mark.parametrize("d, input_softmax, dtype, seq_len", SRWM_CASES)
def test_srwm_kernel_matches_scan_on_gpu(d, input_softmax, dtype, seq_len):
    rng = np.random.default_rng(d + seq_len)
    x = jnp.asarray(rng.standard_normal((B, seq_len, H, d)), jnp.float32).astype(dtype)
    W = srwm_jax.SRWMWeights(*(jnp.asarray(rng.standard_normal((B, H, d, n)) / np.sqrt(d),
                                           jnp.float32) for n in (d, d, d, 4)))
    kernel = functools.partial(kernels.srwm_pallas, input_softmax=input_softmax)
    scan = functools.partial(srwm_jax.srwm, input_softmax=input_softmax, impl="scan")
    _check_against_scan(kernel, scan, (x, W), dtype, seq_len)


DELTA_CASES = ([(dk, dv, jnp.float32, 76) for dk, dv in delta_code_paths()]
               + [(128, 32, jnp.bfloat16, 76), (16, 16, jnp.float32, 4096)])


@pytest.mark.parametrize("dk, dv, dtype, seq_len", DELTA_CASES)
def test_delta_rule_kernel_matches_scan_on_gpu(dk, dv, dtype, seq_len):
    rng = np.random.default_rng(dk * dv + seq_len)

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    q, k = (softmax(rng.standard_normal((B, seq_len, H, dk))) for _ in range(2))
    v = rng.standard_normal((B, seq_len, H, dv))
    beta = 1.0 / (1.0 + np.exp(-rng.standard_normal((B, seq_len, H))))
    args = (*(jnp.asarray(a, jnp.float32).astype(dtype) for a in (q, k, v, beta)),
            jnp.asarray(rng.standard_normal((B, H, dk, dv)) / np.sqrt(dk), jnp.float32))
    kernel = kernels.delta_rule_pallas
    scan = functools.partial(srwm_jax.delta_rule, impl="scan")
    _check_against_scan(kernel, scan, args, dtype, seq_len)


def _mosaic_runs_here():
    from srwm_jax.kernels.delta_rule.mosaic_ops import mosaic_available
    ok, why = mosaic_available()
    if ok and jax.default_backend() == "gpu":
        capability = float(getattr(jax.devices()[0], "compute_capability", "0"))
        ok, why = capability >= 9.0, f"compute capability {capability} < 9.0 (Mosaic GPU: Hopper+)"
    return ok, why


# Mosaic GPU delta rule (Hopper): the distinct (dk, BV) kernels, bf16, T=4096. (The masked
# kernel does not compile for sm_90a: resets run on Triton, kernels/README.md.)
MOSAIC_CASES = [(16, 16, jnp.float32, 76, False), (16, 64, jnp.bfloat16, 76, False),
                (8, 128, jnp.float32, 76, False), (16, 16, jnp.float32, 4096, False),
                (32, 32, jnp.float32, 76, False)]


@pytest.mark.parametrize("dk, dv, dtype, seq_len, with_reset", MOSAIC_CASES)
def test_delta_rule_mosaic_kernel_matches_scan_on_gpu(dk, dv, dtype, seq_len, with_reset):
    ok, why = _mosaic_runs_here()
    if not ok:
        pytest.skip(why)
    rng = np.random.default_rng(dk * dv + seq_len + 7)
    q, k = (jnp.asarray(rng.standard_normal((B, seq_len, H, dk)) / dk, jnp.float32)
            for _ in range(2))
    v = jnp.asarray(rng.standard_normal((B, seq_len, H, dv)), jnp.float32)
    beta = jnp.asarray(1.0 / (1.0 + np.exp(-rng.standard_normal((B, seq_len, H)))), jnp.float32)
    args = (*(a.astype(dtype) for a in (q, k, v, beta)),
            jnp.asarray(rng.standard_normal((B, H, dk, dv)) / np.sqrt(dk), jnp.float32))
    reset = jnp.asarray(rng.random((B, seq_len)) < 0.05) if with_reset else None
    kernel = functools.partial(kernels.delta_rule_mosaic, reset=reset)
    scan = functools.partial(srwm_jax.delta_rule, reset=reset, impl="scan")
    _check_against_scan(kernel, scan, args, dtype, seq_len)


# Mosaic GPU SRWM (Hopper): d = 16 (G in registers; T=4096), 32 (backward with G and dL/dG in
# SMEM; bf16 x; reset mask, rebuilt weights), 64. (Masked d = 64 runs on Triton.)
SRWM_MOSAIC_CASES = [(16, True, jnp.float32, 4096, False), (32, False, jnp.bfloat16, 76, True),
                     (64, True, jnp.float32, 76, False)]


@pytest.mark.parametrize("d, input_softmax, dtype, seq_len, with_reset", SRWM_MOSAIC_CASES)
def test_srwm_mosaic_kernel_matches_scan_on_gpu(d, input_softmax, dtype, seq_len, with_reset):
    ok, why = _mosaic_runs_here()
    if not ok:
        pytest.skip(why)
    rng = np.random.default_rng(d + seq_len + 11)
    x = jnp.asarray(rng.standard_normal((B, seq_len, H, d)), jnp.float32).astype(dtype)
    W = srwm_jax.SRWMWeights(*(jnp.asarray(rng.standard_normal((B, H, d, n)) / np.sqrt(d),
                                           jnp.float32) for n in (d, d, d, 4)))
    reset = jnp.asarray(rng.random((B, seq_len)) < 0.05) if with_reset else None
    kernel = functools.partial(kernels.srwm_mosaic, input_softmax=input_softmax, reset=reset)
    scan = functools.partial(srwm_jax.srwm, input_softmax=input_softmax, reset=reset,
                             impl="scan")
    _check_against_scan(kernel, scan, (x, W), dtype, seq_len)


def test_pallas_picks_mosaic_on_hopper_and_matches_scan():
    """On Hopper, impl="pallas" (and "auto") run the delta rule on Mosaic GPU, reset masks on
    Triton; the public op then matches the scan (forward and every gradient), resets too."""
    ok, why = _mosaic_runs_here()
    if not ok:
        pytest.skip(why)
    if os.environ.get("SRWM_JAX_MOSAIC", "1") == "0":
        pytest.skip("SRWM_JAX_MOSAIC=0 keeps pallas/auto on Triton")
    from srwm_jax.dispatch import resolve_impl
    rng = np.random.default_rng(11)
    seq_len, dk, dv = 37, 16, 32
    q, k = (jnp.asarray(rng.standard_normal((B, seq_len, H, dk)) / dk, jnp.float32)
            for _ in range(2))
    v = jnp.asarray(rng.standard_normal((B, seq_len, H, dv)), jnp.float32)
    beta = jnp.asarray(1.0 / (1.0 + np.exp(-rng.standard_normal((B, seq_len, H)))), jnp.float32)
    args = (q, k, v, beta, jnp.asarray(rng.standard_normal((B, H, dk, dv)) / 4, jnp.float32))
    reset = jnp.asarray(rng.random((B, seq_len)) < 0.1)
    for impl in ("pallas", "auto"):
        assert resolve_impl("delta_rule", impl, "delta_rule_supported", *args, None) == "mosaic"
        assert resolve_impl("delta_rule", impl, "delta_rule_supported", *args, reset) == "triton"
    tol_out, tol_grad = _tolerances(jnp.float32, seq_len)
    for mask in (None, reset):
        kernel = functools.partial(srwm_jax.delta_rule, reset=mask, impl="pallas")
        scan = functools.partial(srwm_jax.delta_rule, reset=mask, impl="scan")
        out, grads = _outputs_and_grads(kernel, args)
        out_ref, grads_ref = _outputs_and_grads(scan, args)
        _assert_trees_close("outputs", out, out_ref, tol_out)
        _assert_trees_close("gradients", grads, grads_ref, tol_grad)
