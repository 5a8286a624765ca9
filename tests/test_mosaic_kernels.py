"""Mosaic GPU delta-rule and SRWM kernels in Mosaic GPU's CPU interpreter, against float64
loops.

``interpret=plgpu.InterpretGPUParams()`` (jax >= 0.11) simulates GMEM/SMEM, the warpgroup,
barriers and TMA copies, so these tests exercise the kernels' staging and indexing as well as
their math. Reference: ``srwm_jax.reference.delta_rule_reference`` and ``srwm_reference`` in
float64 (values) and ``jax.grad`` of them (gradients), as ``tests/test_kernels.py`` does for
the Triton kernels, with the same tolerances (relative to the largest reference value):
float32 2e-5 forward, 1e-4 gradients; bfloat16 inputs 2e-2 for bf16 outputs and input
gradients, 1e-4 for the float32 final state, 1e-2 for the state gradient.

Cost: the interpreter runs ~0.1 s per step forward and ~0.35 s per step for a gradient on one
core, so T stays small; T = 9 with ``chunk=4`` crosses checkpoint reloads in the backward
and a padded last time block. The deviceless sm_90a compile (0 spills) is the last test.
"""
import importlib.util
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import srwm_jax
from srwm_jax.kernels.delta_rule import mosaic_ops
from srwm_jax.kernels.delta_rule.mosaic_ops import MosaicDeltaConfig, delta_rule_mosaic
from srwm_jax.kernels.srwm.mosaic_ops import MosaicSRWMConfig, srwm_mosaic
from srwm_jax.reference import delta_rule_reference, srwm_reference

_MOSAIC_OK, _MOSAIC_WHY = mosaic_ops.mosaic_available()
pytestmark = pytest.mark.skipif(not _MOSAIC_OK, reason=_MOSAIC_WHY)

SMALL_CHUNK = MosaicDeltaConfig(block_v=8, block_v_bwd=8, time_block=2, chunk=4)


@pytest.fixture(autouse=True)
def _fresh_interpreter():
    """After an exception inside the GPU interpreter its state must be reset before reuse."""
    yield
    try:
        from jax._src.pallas.mosaic_gpu.interpret import (  # noqa: PLC0415
            interpret_pallas_call as gpu_interpret)
    except ImportError:
        return
    getattr(gpu_interpret, "reset_gpu_interpret_mode_state", lambda: None)()


def _inputs(seed, batch, seq_len, heads, dk, dv, dtype=jnp.float32):
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return jnp.asarray(rng.normal(size=shape) * scale, dtype)

    q = normal(batch, seq_len, heads, dk, scale=0.4)
    k = normal(batch, seq_len, heads, dk, scale=0.4)
    v = normal(batch, seq_len, heads, dv)
    beta = jnp.asarray(rng.uniform(0.1, 1.0, size=(batch, seq_len, heads)), dtype)
    S0 = jnp.asarray(rng.normal(size=(batch, heads, dk, dv)) * 0.1, jnp.float32)
    return q, k, v, beta, S0


def _run64(fn, *args):
    with jax.enable_x64(True):
        cast = lambda a: a if a is None or a.dtype == jnp.bool_ else jnp.asarray(  # noqa: E731
            np.asarray(a.astype(jnp.float32), np.float64))
        return jax.tree.map(np.asarray, fn(*[cast(a) for a in args]))


def _close(got, want, tol, what):
    got = np.asarray(jnp.asarray(got, jnp.float32), np.float64)
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def _loss(op):
    def loss(*args, **kwargs):
        y, S = op(*args, **kwargs)
        weights = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        return jnp.sum(y.astype(weights.dtype) * weights) + jnp.sum(jnp.sin(S))
    return loss


@pytest.mark.parametrize("batch,seq_len,heads,dk,dv,dtype", [
    (1, 5, 3, 16, 32, jnp.float32),    # dk != dv, odd T (padded time block), 3 sequences
    (5, 3, 13, 8, 16, jnp.float32),    # 65 sequences: two CTAs of 64
    (2, 4, 2, 16, 16, jnp.bfloat16),
])
def test_forward_matches_float64(batch, seq_len, heads, dk, dv, dtype):
    args = _inputs(0, batch, seq_len, heads, dk, dv, dtype)
    y, S = delta_rule_mosaic(*args, interpret=True)
    y64, S64 = _run64(delta_rule_reference, *args)
    bf16 = dtype == jnp.bfloat16
    assert y.dtype == dtype and S.dtype == jnp.float32
    _close(y, y64, 2e-2 if bf16 else 2e-5, "y")
    _close(S, S64, 1e-4 if bf16 else 2e-5, "S_T")


@pytest.mark.parametrize("seq_len,dk,dv,dtype,config", [
    (9, 8, 16, jnp.float32, SMALL_CHUNK),  # 3 checkpoint chunks + a padded time block, 2 BV blocks
    (3, 32, 8, jnp.bfloat16, None),          # default config: dL/dS in SMEM (dk = 32), dk != dv
])
def test_gradients_match_float64(seq_len, dk, dv, dtype, config):
    args = _inputs(1, 1, seq_len, 2, dk, dv, dtype)
    grads = jax.grad(_loss(lambda *a: delta_rule_mosaic(*a, interpret=True, config=config)),
                     argnums=range(5))(*args)
    want = _run64(jax.grad(_loss(delta_rule_reference), argnums=range(5)), *args)
    bf16 = dtype == jnp.bfloat16
    for name, g, w in zip(("q", "k", "v", "beta", "S0"), grads, want):
        assert g.dtype == (jnp.float32 if name == "S0" else dtype)
        tol = (1e-2 if name == "S0" else 2e-2) if bf16 else 1e-4
        _close(g, w, tol, f"d{name}")


def test_resets_forward_and_gradients():
    """Reset mask and reset state: the forward kernel applies them; the gradient (the scan
    reference's VJP on this path) matches float64 for every input and the reset state."""
    q, k, v, beta, S0 = _inputs(2, 2, 5, 1, 8, 8)
    fresh = jnp.asarray(np.random.default_rng(3).normal(size=S0.shape) * 0.1, jnp.float32)
    reset = jnp.array([[False, False, True, False, True], [True, False, False, True, True]])

    def kernel(q, k, v, beta, S0, fresh):
        return delta_rule_mosaic(q, k, v, beta, S0, reset=reset, reset_state=fresh,
                                 interpret=True, config=SMALL_CHUNK)

    def reference(q, k, v, beta, S0, fresh):
        return delta_rule_reference(q, k, v, beta, S0, reset=reset, reset_state=fresh)

    args = (q, k, v, beta, S0, fresh)
    y, S = kernel(*args)
    y64, S64 = _run64(reference, *args)
    _close(y, y64, 2e-5, "y")
    _close(S, S64, 2e-5, "S_T")
    grads = jax.grad(_loss(kernel), argnums=range(6))(*args)
    want = _run64(jax.grad(_loss(reference), argnums=range(6)), *args)
    for name, g, w in zip(("q", "k", "v", "beta", "S0", "fresh"), grads, want):
        _close(g, w, 1e-4, f"d{name}")


def test_second_order_through_the_reference_vjp():
    args = _inputs(4, 1, 2, 1, 8, 8)

    def grad_norm(op):
        def f(q, *rest):
            dq = jax.grad(_loss(op))(q, *rest)
            return jnp.sum(dq ** 2)
        return f

    got = jax.grad(grad_norm(lambda *a: delta_rule_mosaic(*a, interpret=True)))(*args)
    want = _run64(jax.grad(grad_norm(delta_rule_reference)), *args)
    _close(got, want, 1e-4, "d/dq |dL/dq|^2")


def test_impl_mosaic_interpret_through_srwm_jax():
    args = _inputs(5, 1, 3, 2, 8, 16)
    y, S = srwm_jax.delta_rule(*args, impl="mosaic_interpret")
    y_ref, S_ref = srwm_jax.delta_rule(*args, impl="scan")
    _close(y, np.asarray(y_ref, np.float64), 1e-5, "y vs scan")
    _close(S, np.asarray(S_ref, np.float64), 1e-5, "S_T vs scan")


def test_unsupported_configurations_raise_one_error():
    args = _inputs(6, 1, 2, 1, 64, 64)
    with pytest.raises(ValueError, match=r"delta_rule_mosaic: unsupported configuration: dk=64"):
        delta_rule_mosaic(*args, interpret=True)
    with pytest.raises(ValueError, match=r"impl='mosaic_interpret' does not support .*dv=4"):
        srwm_jax.delta_rule(*_inputs(6, 1, 2, 1, 8, 4), impl="mosaic_interpret")


# --- SRWM -----------------------------------------------------------------------------------

SRWM_SMALL_CHUNK = MosaicSRWMConfig(time_block=4, chunk=4)  # T = 9: 3 chunks, padded last block


def _srwm_inputs(seed, batch, seq_len, heads, d, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, seq_len, heads, d)), dtype)
    # W_0 ~ N(0, 1/d): reads O(1), as an initialised layer sees them.
    W = srwm_jax.SRWMWeights(*(jnp.asarray(rng.normal(size=(batch, heads, d, m)) / np.sqrt(d),
                                           jnp.float32) for m in (d, d, d, 4)))
    return x, W


def _srwm_loss(op):
    def loss(x, W, *rest):
        y, W_T = op(x, W, *rest)
        weights = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        return jnp.sum(y.astype(jnp.float32) * weights) + sum(jnp.sum(jnp.sin(w)) for w in W_T)
    return loss


def _srwm64(fn, x, W, *rest):
    """fn on float64 copies of x, W (and any further weights); numpy results."""
    with jax.enable_x64(True):
        c = lambda a: jnp.asarray(np.asarray(jnp.asarray(a, jnp.float32), np.float64))  # noqa: E731
        return jax.tree.map(np.asarray, fn(c(x), jax.tree.map(c, W),
                                           *(jax.tree.map(c, r) for r in rest)))


@pytest.mark.parametrize("batch,seq_len,heads,d,dtype,input_softmax", [
    (1, 5, 2, 16, jnp.float32, True),    # padded time block (TB = 8)
    (2, 3, 1, 16, jnp.bfloat16, False),
    (1, 3, 1, 32, jnp.float32, False),
    (1, 2, 1, 64, jnp.float32, True),
])
def test_srwm_forward_matches_float64(batch, seq_len, heads, d, dtype, input_softmax):
    x, W = _srwm_inputs(0, batch, seq_len, heads, d, dtype)
    y, W_T = srwm_mosaic(x, W, input_softmax=input_softmax, interpret=True)
    y64, W64 = _srwm64(lambda x, W: srwm_reference(x, W, input_softmax=input_softmax), x, W)
    bf16 = dtype == jnp.bfloat16
    assert y.dtype == dtype and y.shape == x.shape and type(W_T) is type(W)
    _close(y, y64, 2e-2 if bf16 else 2e-5, "y")
    for name, got, want in zip(("y", "q", "k", "b"), W_T, W64):
        assert got.dtype == jnp.float32 and got.shape == getattr(W, name).shape
        _close(got, want, 1e-4 if bf16 else 2e-5, f"W_T.{name}")


@pytest.mark.parametrize("seq_len,d,dtype,input_softmax,config", [
    (9, 16, jnp.float32, True, SRWM_SMALL_CHUNK),  # 3 checkpoint chunks, G in registers
    (9, 32, jnp.float32, False, MosaicSRWMConfig(time_block=4, chunk=4, in_smem=True)),
    (3, 32, jnp.bfloat16, True, None),               # default config: G, dG in SMEM (d = 32)
    (2, 64, jnp.float32, False, None),
])
def test_srwm_gradients_match_float64(seq_len, d, dtype, input_softmax, config):
    x, W = _srwm_inputs(1, 1, seq_len, 2, d, dtype)
    op = lambda x, W: srwm_mosaic(x, W, input_softmax=input_softmax,  # noqa: E731
                                  interpret=True, config=config)
    gx, gW = jax.grad(_srwm_loss(op), argnums=(0, 1))(x, W)
    want = _srwm64(jax.grad(_srwm_loss(
        lambda x, W: srwm_reference(x, W, input_softmax=input_softmax)), argnums=(0, 1)), x, W)
    bf16 = dtype == jnp.bfloat16
    assert gx.dtype == dtype
    _close(gx, want[0], 2e-2 if bf16 else 1e-4, "dx")
    for name, got, w in zip(("y", "q", "k", "b"), gW, want[1]):
        _close(got, w, 1e-2 if bf16 else 1e-4, f"dW0.{name}")


@pytest.mark.parametrize("d,config", [
    (16, MosaicSRWMConfig(time_block=4, chunk=8)),                 # G in registers
    (32, MosaicSRWMConfig(time_block=4, chunk=8, in_smem=True)),   # G, dG in SMEM
])
def test_srwm_resets_forward_and_gradients(d, config):
    """Reset mask and reset weights, forward and backward kernels: T = 9 over two chunks of two
    time blocks, so the backward rebuilds the weights before a reset from W_0 (steps 2, 6),
    from a checkpoint (step 8) and across a time block (step 6); resets at consecutive steps
    (0 and 1, 7 and 8) and at the first step. Values and the gradients of x, W_0 and the reset
    weights against float64."""
    x, W = _srwm_inputs(2, 2, 9, 1, d)
    _, fresh = _srwm_inputs(3, 2, 9, 1, d)
    reset = jnp.array([[False, False, True, False, False, False, True, False, True],
                       [True, True, False, False, False, False, False, True, True]])

    def kernel(x, W, fresh):
        return srwm_mosaic(x, W, input_softmax=True, reset=reset, reset_weights=fresh,
                           interpret=True, config=config)

    def reference(x, W, fresh):
        return srwm_reference(x, W, input_softmax=True, reset=reset, reset_weights=fresh)

    y, W_T = kernel(x, W, fresh)
    y64, W64 = _srwm64(reference, x, W, fresh)
    _close(y, y64, 2e-5, "y")
    for name, got, want in zip(("y", "q", "k", "b"), W_T, W64):
        _close(got, want, 2e-5, f"W_T.{name}")
    grads = jax.grad(_srwm_loss(kernel), argnums=(0, 1, 2))(x, W, fresh)
    want = _srwm64(jax.grad(_srwm_loss(reference), argnums=(0, 1, 2)), x, W, fresh)
    _close(grads[0], want[0], 1e-4, "dx")
    for which, got_w, want_w in (("W0", grads[1], want[1]), ("fresh", grads[2], want[2])):
        for name, got, w in zip(("y", "q", "k", "b"), got_w, want_w):
            _close(got, w, 1e-4, f"d{which}.{name}")


def test_srwm_second_order_through_the_reference_vjp():
    x, W = _srwm_inputs(4, 1, 2, 1, 16)

    def grad_norm(op):
        def f(x, W):
            dx = jax.grad(_srwm_loss(op))(x, W)
            return jnp.sum(dx ** 2)
        return f

    got = jax.grad(grad_norm(lambda x, W: srwm_mosaic(x, W, input_softmax=True,
                                                      interpret=True)))(x, W)
    want = _srwm64(jax.grad(grad_norm(
        lambda x, W: srwm_reference(x, W, input_softmax=True))), x, W)
    _close(got, want, 1e-4, "d/dx |dL/dx|^2")


def test_srwm_impl_mosaic_interpret_through_srwm_jax():
    x, W = _srwm_inputs(5, 1, 3, 2, 16)
    y, W_T = srwm_jax.srwm(x, W, input_softmax=True, impl="mosaic_interpret")
    y_ref, W_ref = srwm_jax.srwm(x, W, input_softmax=True, impl="scan")
    _close(y, np.asarray(y_ref, np.float64), 1e-5, "y vs scan")
    for name, got, want in zip(("y", "q", "k", "b"), W_T, W_ref):
        _close(got, np.asarray(want, np.float64), 1e-5, f"W_T.{name} vs scan")


def test_srwm_unsupported_configurations_raise_one_error():
    x, W = _srwm_inputs(6, 1, 2, 1, 8)
    with pytest.raises(ValueError, match=r"srwm_mosaic: unsupported configuration: head dim d=8"):
        srwm_mosaic(x, W, input_softmax=False, interpret=True)
    x, W = _srwm_inputs(6, 1, 2, 1, 64)
    with pytest.raises(ValueError, match=r"impl='mosaic_interpret' does not support .*reset "
                                         r"masks at d=64"):
        srwm_jax.srwm(x, W, reset=jnp.zeros((1, 2), bool), impl="mosaic_interpret")


def _cuda_plugin() -> bool:
    try:
        return any(importlib.util.find_spec(f"jax_plugins.xla_cuda{v}") is not None
                   for v in (12, 13))
    except ModuleNotFoundError:  # no jax_plugins namespace at all
        return False


@pytest.mark.skipif(not _cuda_plugin(), reason="needs jax's CUDA plugin (deviceless compile)")
@pytest.mark.skipif(shutil.which("ptxas") is None and not os.environ.get("CI"),
                    reason="needs ptxas")
def test_h100_compile_every_mosaic_case_without_spills(tmp_path):
    """The delta rule's dk = dv = 16 and SRWM's d = 16 kernels (forward, forward + residuals,
    backward) compile for sm_90a with 0 spill bytes; every case:
    ``python -m tests.mosaic_h100_gate``."""
    from tests import mosaic_h100_gate as mosaic_h100  # noqa: PLC0415
    dump = mosaic_h100.setup_dump(str(tmp_path))
    rows = []
    for case in mosaic_h100.mosaic_cases(quick=True):
        rows += mosaic_h100.compile_case(case, dump, seq_len=8)
    for op in ("delta", "srwm"):
        launches = {r["launch"] for r in rows if r["case"].startswith(op)}
        assert launches == {"forward", "forward + residuals", "backward"}, (op, launches)
    for r in rows:
        assert r["spill_stores"] == r["spill_loads"] == 0, r
        assert r["registers"] <= 255 and r["shared_bytes"] <= 227 * 1024, r
