"""Feature maps and the softmax/sigmoid the layers use, on extreme finite inputs.

References are the mathematical definitions evaluated in 80-digit decimal arithmetic
(Python's `decimal`), independent of float rounding and of the code under test:
    phi(x) = elu(x) + 1 = exp(x) (x <= 0), x + 1 (x > 0);  sum_norm_i = phi_i / (sum phi + eps)
Normalised quantities are evaluated as 1 / sum_j exp(log phi_j - log phi_i) (+ eps / phi_i),
the same number rewritten so that exp(-1e4) underflowing even in decimal cannot give 0/0.

Tolerances: the float32 results are computed with a handful of correctly rounded operations,
so within 3 float32 ulps (3 * 2^-23 relative); bfloat16 results are the float32 result rounded
once, so within half a bfloat16 ulp (2^-8 relative) plus that. Results below the smallest
normal float32 (1.2e-38) may be flushed to zero by XLA, hence an absolute tolerance of that.
softmax(x)_i = exp(x_i - max x) rounds x_i - max x, so its tolerance grows with |x_i - max x|.
"""
import decimal
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srwm_jax.feature_maps import elu_p1, elu_p1_sum_norm
from srwm_jax.layers import DeltaNetLayer

_CTX = decimal.Context(prec=80, Emin=-10**9, Emax=10**9, traps=[decimal.InvalidOperation])
TINY = float(np.finfo(np.float32).tiny)
EPS32 = float(np.finfo(np.float32).eps)
RTOL = {jnp.float32: 3 * EPS32, jnp.bfloat16: 2.0 ** -8 + 3 * EPS32}

# The sweep (-1e4, -100, -17.5, 0, 80, 1e4), the float32 cancellation region of
# elu(x) + 1 (-17.3, -14), the ends of float32 exp (-104, -88, 88) and of float32 itself.
SWEEP = [-3e38, -1e4, -104.0, -100.0, -88.0, -30.0, -17.5, -17.3, -14.0, -1.0, -1e-3, -1e-30,
         0.0, 1e-30, 1e-3, 1.0, 5.0, 80.0, 88.0, 1e4, 3e38]


def _dec(v):
    return _CTX.create_decimal(float(v))


def _log_phi(v):
    x = _dec(v)
    return x if x <= 0 else _CTX.ln(_CTX.add(x, 1))


def _sum_norm_ref(row, eps):
    """phi(x_i) / (sum_j phi(x_j) + eps) in decimal, as 1 / (sum_j phi_j / phi_i + eps / phi_i)."""
    logs = [_log_phi(v) for v in row]
    out = []
    for li in logs:
        den = sum(_CTX.exp(_CTX.subtract(lj, li)) for lj in logs)
        if eps:
            den += _dec(eps) * _CTX.exp(-li)
        out.append(float(_CTX.divide(1, den)))
    return np.array(out)


@functools.cache
def _rows():
    """[N, 4] rows: 300 random 4-subsets of SWEEP, each value repeated (exactly 1/4 each),
    and 100 rows uniform in [-120, 6] (mixed signs, results across the float32 range)."""
    rng = np.random.default_rng(0)
    subsets = list(itertools.combinations(SWEEP, 4))
    rows = [subsets[i] for i in rng.choice(len(subsets), 300, replace=False)]
    rows += [[v] * 4 for v in SWEEP]
    rows += list(rng.uniform(-120.0, 6.0, (100, 4)))
    return np.array(rows, np.float32)


@functools.cache
def _sum_norm_refs(dtype, eps):
    """(x [N, 4] in dtype, its values as float64, the decimal sum-norm of them)."""
    x, x64 = _as(_rows(), dtype)
    return x, x64, np.stack([_sum_norm_ref(r, float(np.float32(eps))) for r in x64])


def _as(x, dtype):
    """float32 numpy values rounded to `dtype`, and those exact values as float64."""
    a = jnp.asarray(x, dtype)
    return a, np.asarray(a.astype(jnp.float32), np.float64)


def _assert_close(got, want, rtol, atol=TINY):
    got = np.asarray(jnp.asarray(got).astype(jnp.float32), np.float64)
    assert np.all(np.isfinite(got))
    err = np.abs(got - want)
    bad = err > rtol * np.abs(want) + atol
    worst = np.max(err / np.maximum(np.abs(want), TINY))
    assert not bad.any(), f"{bad.sum()} entries off; worst relative error {worst:.3g}"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_elu_p1_matches_definition(dtype):
    grid = np.concatenate([SWEEP, -np.logspace(-30, 38, 300), np.logspace(-30, 38, 300),
                           np.linspace(-20, 2, 221)]).astype(np.float32)
    x, x64 = _as(grid, dtype)
    want = np.array([float(_CTX.exp(_log_phi(v))) for v in x64])
    got = jax.jit(elu_p1)(x)
    assert got.dtype == dtype
    _assert_close(got, want, RTOL[dtype])
    assert np.all(np.asarray(got[x64 > -87].astype(jnp.float32)) > 0)  # 0 only on underflow


@pytest.mark.parametrize("eps", [0.0, 1e-5])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_elu_p1_sum_norm_matches_definition(dtype, eps):
    x, _, want = _sum_norm_refs(dtype, eps)  # eps as the float32 computation rounds it
    got = jax.jit(lambda a: elu_p1_sum_norm(a, eps))(x)
    assert got.dtype == dtype
    _assert_close(got, want, RTOL[dtype])


def test_elu_p1_sum_norm_gradient():
    """VJP against the decimal derivative: d y_i / d x_j = y_j r_j (delta_ij - y_i), where
    r_j = phi'(x_j) / phi(x_j) = 1 (x_j <= 0) or 1 / (1 + x_j); so for a cotangent g,
    dx_j = y_j r_j (g_j - sum_i g_i y_i). The bound scales with the terms' magnitudes."""
    for eps in (0.0, 1e-5):
        x, x64, y = _sum_norm_refs(jnp.float32, eps)
        g = np.random.default_rng(1).normal(size=x64.shape)
        vjp = jax.jit(lambda a, ct, e=eps: jax.vjp(lambda b: elu_p1_sum_norm(b, e), a)[1](ct)[0])
        got = vjp(x, jnp.asarray(g, jnp.float32))
        r = np.where(x64 > 0, 1.0 / (1.0 + np.maximum(x64, 0.0)), 1.0)
        gy = np.sum(g * y, axis=-1, keepdims=True)
        want = y * r * (g - gy)
        scale = y * r * (np.abs(g) + np.sum(np.abs(g) * y, axis=-1, keepdims=True))
        got = np.asarray(got, np.float64)
        assert np.all(np.isfinite(got))
        # y_j below the smallest normal may be flushed: then dx_j is off by up to |g_j| TINY.
        bad = np.abs(got - want) > 8 * EPS32 * scale + (1 + np.abs(g)) * TINY
        assert not bad.any(), (x64[bad.any(-1)][:3], got[bad.any(-1)][:3], want[bad.any(-1)][:3])


def test_elu_p1_gradient_at_and_around_zero():
    """phi is C^1 at 0 (exp'(0) = 1 = (x + 1)'): the gradient is 1 there, not a split 0.5."""
    x = jnp.array([-1e4, -100.0, -17.5, 0.0, 80.0, 1e4], jnp.float32)
    got = jax.grad(lambda a: jnp.sum(elu_p1(a)))(x)
    want = np.where(np.asarray(x) > 0, 1.0, np.exp(np.minimum(np.asarray(x, np.float64), 0.0)))
    _assert_close(got, want, 2 * EPS32)


def test_sum_norm_rejects_bad_eps():
    with pytest.raises(ValueError, match="eps"):
        elu_p1_sum_norm(jnp.zeros(3), -1e-5)


def _softmax_ref(row):
    xs = [_dec(v) for v in row]
    return np.array([float(_CTX.divide(1, sum(_CTX.exp(_CTX.subtract(xj, xi)) for xj in xs)))
                     for xi in xs])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_softmax_and_sigmoid_used_by_the_layers(dtype):
    """The layers and kernels also apply softmax (SRWM q, k, input; SR-DeltaNet q, k) and
    sigmoid (beta, LSTM gates): jax.nn's and the kernels' own must stay finite and exact."""
    # the Pallas kernels' in-kernel softmax/sigmoid (plain jnp)
    from srwm_jax.kernels import _common

    x, x64 = _as(_rows(), dtype)
    want = np.stack([_softmax_ref(r) for r in x64])
    # exp(x_i - max) rounds the difference: relative error up to |x_i - max| * 2^-24 more.
    rtol = RTOL[dtype] + EPS32 * np.abs(x64 - x64.max(axis=-1, keepdims=True))
    for softmax in (lambda a: jax.nn.softmax(a, axis=-1), _common.softmax_last):
        got = jax.jit(softmax)(x.astype(jnp.float32)).astype(dtype)
        _assert_close(got, want, rtol)

    flat, flat64 = _as(np.array(SWEEP + list(np.linspace(-90, 90, 181)), np.float32), dtype)
    want = np.array([float(_CTX.divide(1, 1 + _CTX.exp(-_dec(v)))) for v in flat64])
    for sigmoid in (jax.nn.sigmoid, _common.sigmoid):
        got = jax.jit(sigmoid)(flat.astype(jnp.float32)).astype(dtype)
        _assert_close(got, want, RTOL[dtype] + 2 * EPS32)


def _deltanet_reference(params, x, H, d, eps):
    """The DeltaNet layer in float64 numpy, straight from its definition (LN, projections,
    elu + 1 sum-norm, delta rule with the read after the write, out projection, residual)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    x = np.asarray(x, np.float64)
    B, T, _ = x.shape
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ln = (x - mu) / np.sqrt(var + 1e-5) * p["LayerNorm_0"]["scale"] + p["LayerNorm_0"]["bias"]
    qkvb = (ln @ p["slow_proj"]["kernel"]).reshape(B, T, H, 3 * d + 1)
    assert qkvb[..., :2 * d].min() > -700  # plain float64 exp is exact enough above that
    phi = lambda a: np.where(a > 0, a + 1.0, np.exp(np.minimum(a, 0.0)))  # noqa: E731
    norm = lambda a: phi(a) / (phi(a).sum(-1, keepdims=True) + eps)  # noqa: E731
    q, k, v = norm(qkvb[..., :d]), norm(qkvb[..., d:2 * d]), qkvb[..., 2 * d:3 * d]
    beta = 1.0 / (1.0 + np.exp(-qkvb[..., 3 * d]))
    S = np.zeros((B, H, d, d))
    ys = np.zeros((B, T, H, d))
    for t in range(T):
        v_old = np.einsum("bhi,bhio->bho", k[:, t], S)
        S = S + np.einsum("bhi,bho->bhio", k[:, t], beta[:, t, :, None] * (v[:, t] - v_old))
        ys[:, t] = np.einsum("bhi,bhio->bho", q[:, t], S)
    return x + ys.reshape(B, T, H * d) @ p["out_proj"]["kernel"], S


@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_deltanet_layer_finite_with_large_qk_weights(eps):
    """q/k projection weights scaled x100 push whole heads below -17.3, where the literal
    elu(x) + 1 is 0 in float32 and its sum-norm 0/0; the layer must stay finite and exact."""
    B, T, H, d = 2, 8, 2, 4
    layer = DeltaNetLayer(H, d, sum_norm_eps=eps, impl="scan")
    x = jax.random.normal(jax.random.key(0), (B, T, H * d))
    params = jax.jit(layer.init)(jax.random.key(1), x)
    kernel = params["params"]["slow_proj"]["kernel"]
    is_qk = (np.arange(kernel.shape[1]) % (3 * d + 1)) < 2 * d
    params["params"]["slow_proj"]["kernel"] = kernel * jnp.where(is_qk, 100.0, 1.0)

    # The setup triggers the old failure: some head's q or k is all below -17.3, so the
    # literal float32 map sums to exactly zero there.
    ln = nn.LayerNorm(epsilon=1e-5).apply({"params": params["params"]["LayerNorm_0"]}, x)
    qk = (ln @ params["params"]["slow_proj"]["kernel"]).reshape(B, T, H, 3 * d + 1)
    qk = jnp.stack([qk[..., :d], qk[..., d:2 * d]])
    assert jnp.any(jnp.sum(jax.nn.elu(qk) + 1.0, axis=-1) == 0.0)

    def loss(p):
        y, S = layer.apply(p, x)
        return jnp.sum(y ** 2), (y, S)

    (_, (y, S)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(S))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    y_ref, S_ref = _deltanet_reference(params, x, H, d, float(np.float32(eps)))
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(S, S_ref, rtol=1e-4, atol=1e-4)


def test_rl_deltanet_uses_the_original_eps():
    """configs/rl/default.py sets agent.sum_norm_eps = 1e-5 (the original RL code's value) and
    the agent's memory stack receives it; the few-shot layers keep 0."""
    from configs.rl import default
    from rl.agent import make_agent

    config = default.get_config()
    config.agent.core = "deltanet"
    stack = make_agent(config)._make_core(parent=None)._stack(parent=None)
    assert stack.kind == "deltanet" and stack.sum_norm_eps == 1e-5
    assert DeltaNetLayer(2, 4).sum_norm_eps == 0.0
