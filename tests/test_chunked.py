"""impl="chunked" (the chunkwise-parallel delta rule) against the float64 per-step reference.

Tolerances as in test_cells.py: relative L2 error 1e-5 for short sequences (float32 vs
float64), the issue's bound 1e-3 at T=4096, and 1e-4 for second order.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_helpers import rel_err, to64
from test_ops import make_delta_inputs, saved_residual_bytes

import srwm_jax
from srwm_jax.reference import delta_rule_reference


def _chunked(chunk_size, **kw):
    return lambda *a: srwm_jax.delta_rule(*a, impl="chunked", chunk_size=chunk_size, **kw)


def _loss(fn):
    return lambda *a: jnp.sum(jnp.cos(fn(*a)[0])) + jnp.sum(fn(*a)[1] ** 2)


def _compare(B, T, H, dk, dv, chunk_size, with_reset, tol, seed=0):
    inputs = make_delta_inputs(B, T, H, dk, dv, seed=seed)
    S_reset = 0.5 * jax.random.normal(jax.random.key(seed + 1), inputs[4].shape)
    reset = jax.random.bernoulli(jax.random.key(seed + 2), 0.1, (B, T)).at[:, 0].set(True)
    args = (*inputs, S_reset) if with_reset else inputs
    kw = (lambda a: dict(reset=reset, reset_state=a[5])) if with_reset else (lambda a: {})
    ours = lambda *a: _chunked(chunk_size, **kw(a))(*a[:5])  # noqa: E731
    ref = lambda *a: delta_rule_reference(*a[:5], **kw(a))  # noqa: E731
    argnums = tuple(range(len(args)))
    y, S_T = ours(*args)
    grads = jax.jit(jax.grad(_loss(ours), argnums=argnums))(*args)
    with jax.enable_x64(True):
        args64 = to64(args)
        y_ref, S_ref = ref(*args64)
        g_ref = jax.jit(jax.grad(_loss(ref), argnums=argnums))(*args64)
        y_ref, S_ref, g_ref = np.asarray(y_ref), np.asarray(S_ref), [np.asarray(g) for g in g_ref]
    assert rel_err(y, y_ref) < tol and rel_err(S_T, S_ref) < tol
    names = ["q", "k", "v", "beta", "S0", "S_reset"]
    for name, g, g64 in zip(names, grads, g_ref):
        assert rel_err(g, g64) < tol, name


@pytest.mark.parametrize("with_reset", [False, True])
@pytest.mark.parametrize("B,T,H,dk,dv,chunk_size", [
    (2, 1, 2, 8, 8, 64),      # one step, chunk larger than T
    (2, 37, 2, 8, 4, 8),      # T not a multiple of the chunk (padded last chunk)
    (1, 50, 3, 32, 16, 16),
    (2, 20, 1, 4, 4, 1),      # chunk of one step = the recurrence itself
])
def test_chunked_matches_float64_loop(B, T, H, dk, dv, chunk_size, with_reset):
    _compare(B, T, H, dk, dv, chunk_size, with_reset, 1e-5)


def test_chunked_gradients_exact_at_T4096():
    _compare(1, 4096, 2, 16, 16, 64, with_reset=True, tol=1e-3, seed=3)


def test_chunked_equals_scan_at_several_chunk_sizes():
    inputs = make_delta_inputs(2, 70, 2, 16, 16, seed=5)
    y_scan, S_scan = srwm_jax.delta_rule(*inputs, impl="scan")
    for L in (3, 16, 64, 128):
        y, S = _chunked(L)(*inputs)
        np.testing.assert_allclose(y, y_scan, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(S, S_scan, rtol=2e-5, atol=2e-5)


def test_chunked_second_order_matches_float64():
    """grad-of-grad (reverse over reverse) through the reset mask vs float64 plain autodiff."""
    B, T, H, dk, dv = 2, 9, 1, 8, 4
    inputs = make_delta_inputs(B, T, H, dk, dv, seed=8)
    S_reset = jax.random.normal(jax.random.key(9), inputs[4].shape)
    reset = jnp.zeros((B, T), bool).at[0, 3].set(True).at[1, 0].set(True).at[1, 7].set(True)
    args = (*inputs, S_reset)
    rng = np.random.default_rng(11)
    dirs = [jnp.asarray(rng.standard_normal(a.shape), jnp.float32) for a in args]
    argnums = tuple(range(len(args)))

    def grad_of_grad(fn, dirs):
        def inner(*a):
            g = jax.grad(_loss(fn), argnums=argnums)(*a)
            return sum(jnp.sum(u * w) for u, w in zip(g, dirs))
        return jax.grad(inner, argnums=argnums)

    ours = lambda *a: _chunked(4, reset=reset, reset_state=a[5])(*a[:5])  # noqa: E731
    got = jax.jit(grad_of_grad(ours, dirs))(*args)
    with jax.enable_x64(True):
        ref = lambda *a: delta_rule_reference(*a[:5], reset=reset, reset_state=a[5])  # noqa: E731
        want = jax.jit(grad_of_grad(ref, to64(dirs)))(*to64(args))
        want = [np.asarray(w) for w in want]
    for g, w in zip(got, want):
        assert np.abs(np.asarray(g, np.float64) - w).max() / max(np.abs(w).max(), 1e-6) < 1e-4


def test_chunked_bf16_inputs_accumulate_in_float32():
    q, k, v, beta, S0 = make_delta_inputs(2, 40, 2, 16, 16, seed=4)
    bf = lambda a: a.astype(jnp.bfloat16)  # noqa: E731
    y, S = _chunked(16)(bf(q), bf(k), bf(v), bf(beta), S0)
    assert y.dtype == jnp.bfloat16 and S.dtype == jnp.float32
    # The same float32 computation on the bf16-rounded values (only the output is rounded).
    y32, S32 = srwm_jax.delta_rule(*(bf(a).astype(jnp.float32) for a in (q, k, v, beta)), S0,
                                   impl="scan")
    np.testing.assert_allclose(S, S32, rtol=2e-5, atol=2e-5)
    assert rel_err(y.astype(jnp.float32), y32) < 1e-2
    g = jax.grad(lambda v: jnp.sum(_chunked(16)(q, k, v, beta, S0)[0].astype(jnp.float32)))(bf(v))
    assert g.dtype == jnp.bfloat16


def test_chunked_saved_residuals_scale_as_T_times_d():
    def per_step_per_dim(T, d):
        inputs = make_delta_inputs(1, T, 1, d, d)
        return saved_residual_bytes(_chunked(d), *inputs) / (T * d * 4)

    sizes = {(T, d): per_step_per_dim(T, d) for T in (128, 512) for d in (16, 32)}
    assert max(sizes.values()) < 8, sizes
    assert sizes[(512, 32)] < 1.2 * sizes[(128, 16)], sizes


def test_chunked_bad_arguments_raise_clear_errors():
    inputs = make_delta_inputs(1, 4, 1, 4, 4)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size=.*pass a positive int"):
            srwm_jax.delta_rule(*inputs, impl="chunked", chunk_size=bad)
    x = jnp.zeros((1, 2, 1, 8))
    W = srwm_jax.SRWMWeights(*(jnp.zeros((1, 1, 8, n)) for n in (8, 8, 8, 4)))
    with pytest.raises(ValueError, match="impl='chunked' exists for the delta rule only"):
        srwm_jax.srwm(x, W, impl="chunked")


def test_auto_follows_the_measured_crossover(monkeypatch):
    from srwm_jax.ops import delta_rule as module

    calls = []
    monkeypatch.setattr(module, "delta_rule_chunked", lambda *a, **k: calls.append(k) or "chunked")
    inputs = make_delta_inputs(1, 8, 2, 4, 4)
    monkeypatch.setattr(module, "CHUNKED_CROSSOVER", None)        # measured on CPU: never
    assert srwm_jax.delta_rule(*inputs)[0].shape == (1, 8, 2, 4) and not calls
    monkeypatch.setattr(module, "CHUNKED_CROSSOVER", (8, 4, 2))
    if jax.default_backend() != "gpu":
        assert srwm_jax.delta_rule(*inputs, chunk_size=5) == "chunked"
        assert calls[-1]["chunk_size"] == 5
    monkeypatch.setattr(module, "CHUNKED_CROSSOVER", (9, 4, 2))    # T=8 below the crossover
    assert srwm_jax.delta_rule(*inputs)[0].shape == (1, 8, 2, 4) and len(calls) <= 1
