"""The functional cells against float64 per-step loops, finite differences and themselves.

Tolerances: the implementation computes in float32 and the references in float64, so values
and gradients are compared with a relative L2 error; 1e-5 covers float32 rounding over the
short sequences here, and the issue's bound (1e-3) is checked at T=4096.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_helpers import random_reset, rel_err, run_split_at_resets, to64

import srwm_jax
from srwm_jax import SRWMWeights
from srwm_jax.reference import delta_rule_reference, srwm_reference


def make_srwm_inputs(B, T, H, d, seed=0, dy=None, dtype=jnp.float32):
    ks = jax.random.split(jax.random.key(seed), 5)
    x = jax.random.normal(ks[0], (B, T, H, d)).astype(dtype)
    dims = (dy or d, d, d, 4)
    W = SRWMWeights(*(jax.random.normal(k, (B, H, d, n)) / np.sqrt(d)
                      for k, n in zip(ks[1:], dims)))
    return x, W


def make_delta_inputs(B, T, H, dk, dv, seed=0):
    ks = jax.random.split(jax.random.key(seed), 5)
    q = jax.nn.softmax(jax.random.normal(ks[0], (B, T, H, dk)), -1)
    k = jax.nn.softmax(jax.random.normal(ks[1], (B, T, H, dk)), -1)
    v = jax.random.normal(ks[2], (B, T, H, dv))
    beta = jax.nn.sigmoid(jax.random.normal(ks[3], (B, T, H)))
    S0 = 0.3 * jax.random.normal(ks[4], (B, H, dk, dv))
    return q, k, v, beta, S0


def srwm_loss(fn, x, W, proj):
    """A loss touching every output: projected y plus all of W_T."""
    y, W_T = fn(x, W)
    return jnp.sum(y * proj) + sum(jnp.sum(jnp.sin(w)) for w in W_T)


@pytest.mark.parametrize("B,T,H,d,input_softmax", [
    (2, 1, 3, 8, False), (2, 7, 2, 16, True), (1, 37, 2, 32, False)])
def test_srwm_matches_float64_loop(B, T, H, d, input_softmax):
    x, W = make_srwm_inputs(B, T, H, d)
    proj = jax.random.normal(jax.random.key(9), (B, T, H, d))
    y, W_T = srwm_jax.srwm(x, W, input_softmax=input_softmax, impl="scan")
    grads = jax.grad(lambda x, W: srwm_loss(
        lambda a, b: srwm_jax.srwm(a, b, input_softmax=input_softmax, impl="scan"), x, W, proj),
        argnums=(0, 1))(x, W)
    with jax.enable_x64(True):
        ref = lambda a, b: srwm_reference(a, b, input_softmax=input_softmax)  # noqa: E731
        x64, W64, p64 = to64((x, tuple(W), proj))
        y_ref, W_ref = ref(x64, W64)
        g_ref = jax.jit(jax.grad(lambda a, b: srwm_loss(ref, a, b, p64), argnums=(0, 1)))(x64, W64)
        y_ref, W_ref, g_ref = (np.asarray(y_ref), [np.asarray(w) for w in W_ref],
                               jax.tree.map(np.asarray, g_ref))
    assert rel_err(y, y_ref) < 1e-5
    for w, w_ref in zip(W_T, W_ref):
        assert rel_err(w, w_ref) < 1e-5
    assert rel_err(grads[0], g_ref[0]) < 1e-5
    for g, g64 in zip(grads[1], g_ref[1]):
        assert rel_err(g, g64) < 1e-5


def test_srwm_rectangular_y_matches_loop():
    """W_y may have dy != d (the SR-DeltaNet's SRWM produces 3d+1 values per head)."""
    x, W = make_srwm_inputs(2, 9, 2, 8, dy=25)
    y, W_T = srwm_jax.srwm(x, W, input_softmax=True)
    with jax.enable_x64(True):
        y_ref, W_ref = srwm_reference(*to64((x, tuple(W))), input_softmax=True)
        y_ref, Wy_ref = np.asarray(y_ref), np.asarray(W_ref[0])
    assert y.shape == (2, 9, 2, 25)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(W_T.y, Wy_ref) < 1e-5


@pytest.mark.parametrize("B,T,H,dk,dv", [(2, 1, 2, 8, 8), (1, 50, 3, 32, 4)])
def test_delta_rule_matches_float64_loop(B, T, H, dk, dv):
    inputs = make_delta_inputs(B, T, H, dk, dv)
    proj = jax.random.normal(jax.random.key(3), (B, T, H, dv))

    def loss(fn, *a):
        y, S = fn(*a)
        return jnp.sum(y * proj.astype(y.dtype)) + jnp.sum(jnp.sin(S))

    y, S_T = srwm_jax.delta_rule(*inputs, impl="scan")
    grads = jax.grad(lambda *a: loss(lambda *b: srwm_jax.delta_rule(*b, impl="scan"), *a),
                     argnums=tuple(range(5)))(*inputs)
    with jax.enable_x64(True):
        in64 = to64(inputs)
        ref = delta_rule_reference
        y_ref, S_ref = ref(*in64)
        g_ref = jax.jit(jax.grad(lambda *a: loss(ref, *a), argnums=tuple(range(5))))(*in64)
        y_ref, S_ref, g_ref = np.asarray(y_ref), np.asarray(S_ref), jax.tree.map(np.asarray, g_ref)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(S_T, S_ref) < 1e-5
    for name, g, g64 in zip("q k v beta S0".split(), grads, g_ref):
        assert rel_err(g, g64) < 1e-5, name


def test_srwm_finite_differences():
    """Directional derivative of a scalar loss vs central differences (float32, so loose)."""
    x, W = make_srwm_inputs(1, 4, 1, 4, seed=1)
    proj = jax.random.normal(jax.random.key(2), (1, 4, 1, 4))
    f = lambda x, W: srwm_loss(lambda a, b: srwm_jax.srwm(a, b, input_softmax=True), x, W, proj)  # noqa: E731
    gx, gW = jax.grad(f, argnums=(0, 1))(x, W)
    dirs = jax.tree.map(lambda a: jax.random.normal(jax.random.key(5), a.shape), (x, W))
    analytic = float(jnp.sum(gx * dirs[0]) + sum(jnp.sum(g * u) for g, u in zip(gW, dirs[1])))
    eps = 1e-2
    shift = lambda s: jax.tree.map(lambda a, u: a + s * eps * u, (x, W), dirs)  # noqa: E731
    numeric = (float(f(*shift(1))) - float(f(*shift(-1)))) / (2 * eps)
    assert abs(analytic - numeric) <= 2e-3 * max(1.0, abs(numeric))


def test_delta_rule_finite_differences():
    inputs = make_delta_inputs(1, 5, 1, 4, 3, seed=4)
    f = lambda *a: jnp.sum(jnp.cos(srwm_jax.delta_rule(*a)[0]))  # noqa: E731
    grads = jax.grad(f, argnums=tuple(range(5)))(*inputs)
    dirs = [jax.random.normal(jax.random.key(i), a.shape) for i, a in enumerate(inputs)]
    analytic = float(sum(jnp.sum(g * u) for g, u in zip(grads, dirs)))
    eps = 1e-2
    numeric = (float(f(*[a + eps * u for a, u in zip(inputs, dirs)]))
               - float(f(*[a - eps * u for a, u in zip(inputs, dirs)]))) / (2 * eps)
    assert abs(analytic - numeric) <= 2e-3 * max(1.0, abs(numeric))


def test_srwm_gradients_exact_at_T4096():
    """The issue's bound: every gradient within 1e-3 relative of float64 at T=4096."""
    B, T, H, d = 1, 4096, 2, 16
    x, W = make_srwm_inputs(B, T, H, d, seed=7)
    proj = jax.random.normal(jax.random.key(8), (B, T, H, d))
    loss = lambda fn: (lambda a, b: srwm_loss(fn, a, b, proj))  # noqa: E731
    ours = jax.jit(jax.grad(loss(lambda a, b: srwm_jax.srwm(a, b, input_softmax=False)),
                            argnums=(0, 1)))
    g = ours(x, W)
    with jax.enable_x64(True):
        p64 = to64(proj)
        ref = jax.jit(jax.grad(lambda a, b: srwm_loss(lambda u, v: srwm_reference(u, v), a, b, p64),
                               argnums=(0, 1)))
        g_ref = jax.tree.map(np.asarray, ref(*to64((x, tuple(W)))))
    assert rel_err(g[0], g_ref[0]) < 1e-3
    for name, a, b in zip(W._fields, g[1], g_ref[1]):
        assert rel_err(a, b) < 1e-3, name


def test_delta_rule_gradients_exact_at_T4096():
    inputs = make_delta_inputs(1, 4096, 2, 16, 16, seed=3)
    f = lambda fn: (lambda *a: jnp.sum(jnp.cos(fn(*a)[0])) + jnp.sum(fn(*a)[1]))  # noqa: E731
    g = jax.jit(jax.grad(f(srwm_jax.delta_rule), argnums=tuple(range(5))))(*inputs)

    with jax.enable_x64(True):
        grad_ref = jax.jit(jax.grad(f(delta_rule_reference), argnums=tuple(range(5))))
        g_ref = jax.tree.map(np.asarray, grad_ref(*to64(inputs)))
    for name, a, b in zip("q k v beta S0".split(), g, g_ref):
        assert rel_err(a, b) < 1e-3, name


def test_srwm_carry_across_calls_equals_one_call():
    x, W = make_srwm_inputs(2, 30, 2, 8, seed=11)

    def one(x, W):
        y, W_T = srwm_jax.srwm(x, W, input_softmax=True)
        return y, W_T

    def two(x, W):
        y1, W_mid = srwm_jax.srwm(x[:, :13], W, input_softmax=True)
        y2, W_T = srwm_jax.srwm(x[:, 13:], W_mid, input_softmax=True)
        return jnp.concatenate([y1, y2], axis=1), W_T

    (y_a, W_a), (y_b, W_b) = one(x, W), two(x, W)
    np.testing.assert_allclose(y_a, y_b, rtol=1e-6, atol=1e-6)
    for a, b in zip(W_a, W_b):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    loss = lambda fn: (lambda W: jnp.sum(fn(x, W)[0] ** 2))  # noqa: E731
    for a, b in zip(jax.grad(loss(one))(W), jax.grad(loss(two))(W)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_delta_rule_carry_across_calls_equals_one_call():
    q, k, v, beta, S0 = make_delta_inputs(2, 25, 2, 8, 8, seed=2)
    one = lambda S: srwm_jax.delta_rule(q, k, v, beta, S)  # noqa: E731

    def two(S):
        y1, S = srwm_jax.delta_rule(q[:, :9], k[:, :9], v[:, :9], beta[:, :9], S)
        y2, S = srwm_jax.delta_rule(q[:, 9:], k[:, 9:], v[:, 9:], beta[:, 9:], S)
        return jnp.concatenate([y1, y2], 1), S

    np.testing.assert_allclose(one(S0)[0], two(S0)[0], rtol=1e-6, atol=1e-6)
    g1 = jax.grad(lambda S: jnp.sum(one(S)[0] ** 2))(S0)
    g2 = jax.grad(lambda S: jnp.sum(two(S)[0] ** 2))(S0)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-6)


def saved_residual_bytes(fn, *args):
    """Bytes of the arrays the VJP keeps between forward and backward."""
    _, vjp = jax.vjp(fn, *args)
    return sum(leaf.nbytes for leaf in jax.tree.leaves(vjp) if hasattr(leaf, "nbytes"))


def test_srwm_saved_residuals_scale_as_T_times_d():
    def per_step_per_dim(T, d):
        x, W = make_srwm_inputs(1, T, 1, d)
        return saved_residual_bytes(lambda x, W: srwm_jax.srwm(x, W), x, W) / (T * d * 4)

    # O(T*d): the floats saved per step per head dim stay bounded as T and d grow ...
    sizes = {(T, d): per_step_per_dim(T, d) for T in (128, 512) for d in (16, 32)}
    assert max(sizes.values()) < 8, sizes
    assert sizes[(512, 32)] < 1.2 * sizes[(128, 16)], sizes

    # ... while plain autodiff of the same scan keeps every W_t: O(T*d^2).
    def plain(x, W):
        W, ys = jax.lax.scan(lambda w, xt: srwm_jax.srwm_step(w, xt, False), W,
                             jnp.swapaxes(x, 0, 1))
        return ys, W

    x, W = make_srwm_inputs(1, 128, 1, 32)
    assert saved_residual_bytes(plain, x, W) > 10 * saved_residual_bytes(
        lambda x, W: srwm_jax.srwm(x, W), x, W)


def test_delta_rule_saved_residuals_scale_as_T_times_d():
    def per_step_per_dim(T, d):
        inputs = make_delta_inputs(1, T, 1, d, d)
        return saved_residual_bytes(srwm_jax.delta_rule, *inputs) / (T * d * 4)

    sizes = {(T, d): per_step_per_dim(T, d) for T in (128, 512) for d in (16, 32)}
    assert max(sizes.values()) < 6, sizes
    assert sizes[(512, 32)] < 1.2 * sizes[(128, 16)], sizes


def test_composes_with_jit_vmap_checkpoint():
    x, W = make_srwm_inputs(2, 6, 2, 8)
    y, _ = srwm_jax.srwm(x, W)
    y_jit, _ = jax.jit(lambda x, W: srwm_jax.srwm(x, W))(x, W)
    np.testing.assert_allclose(y, y_jit, rtol=1e-6, atol=1e-6)
    # vmap over an extra leading axis (e.g. seeds) equals a Python loop over it.
    xs = jnp.stack([x, 2 * x])
    y_vmap, _ = jax.vmap(lambda x: srwm_jax.srwm(x, W))(xs)
    np.testing.assert_allclose(y_vmap[1], srwm_jax.srwm(2 * x, W)[0], rtol=1e-6, atol=1e-6)
    # grad of vmap and jax.checkpoint give the same gradients as the plain call.
    loss = lambda x: jnp.sum(srwm_jax.srwm(x, W)[0] ** 2)  # noqa: E731
    g = jax.grad(loss)(x)
    np.testing.assert_allclose(jax.grad(jax.checkpoint(loss))(x), g, rtol=1e-6, atol=1e-6)
    g_vmap = jax.vmap(jax.grad(loss))(xs)
    np.testing.assert_allclose(g_vmap[0], g, rtol=1e-6, atol=1e-6)
    q, k, v, beta, S0 = make_delta_inputs(2, 5, 2, 4, 4)
    y_d = jax.jit(jax.vmap(lambda v: srwm_jax.delta_rule(q, k, v, beta, S0)[0]))(jnp.stack([v, v]))
    np.testing.assert_allclose(y_d[0], srwm_jax.delta_rule(q, k, v, beta, S0)[0], rtol=1e-6,
                               atol=1e-6)


def test_bf16_inputs_keep_float32_state():
    x, W = make_srwm_inputs(2, 12, 2, 16, dtype=jnp.bfloat16)
    y, W_T = srwm_jax.srwm(x, W)
    assert y.dtype == jnp.bfloat16 and all(w.dtype == jnp.float32 for w in W_T)
    y32, W32 = srwm_jax.srwm(x.astype(jnp.float32), W)
    np.testing.assert_allclose(W_T.q, W32.q, rtol=1e-6, atol=1e-6)  # same float32 computation
    assert rel_err(y.astype(jnp.float32), y32) < 1e-2  # bf16 rounding of the output only
    g = jax.grad(lambda x: jnp.sum(srwm_jax.srwm(x, W)[0].astype(jnp.float32)))(x)
    assert g.dtype == jnp.bfloat16
    q, k, v, beta, S0 = make_delta_inputs(1, 4, 2, 8, 8)
    y, S = srwm_jax.delta_rule(q.astype(jnp.bfloat16), k, v.astype(jnp.bfloat16), beta, S0)
    assert y.dtype == jnp.bfloat16 and S.dtype == jnp.float32


def test_bad_shapes_and_impl_raise_clear_errors():
    x, W = make_srwm_inputs(2, 5, 2, 8)
    with pytest.raises(ValueError, match=r"W.q has shape \[2, 2, 8, 7\], expected \[2, 2, 8, 8\]"):
        srwm_jax.srwm(x, W._replace(q=jnp.zeros((2, 2, 8, 7))))
    with pytest.raises(ValueError, match=r"x has shape .* expected \[B, T, H, d\]"):
        srwm_jax.srwm(x[0], W)
    with pytest.raises(ValueError, match="floating-point"):
        srwm_jax.srwm(x.astype(jnp.int32), W)
    with pytest.raises(ValueError, match="unknown impl='cuda'"):
        srwm_jax.srwm(x, W, impl="cuda")
    q, k, v, beta, S0 = make_delta_inputs(2, 5, 2, 8, 4)
    with pytest.raises(ValueError, match=r"beta has shape \[2, 5\], expected \[2, 5, 2\]"):
        srwm_jax.delta_rule(q, k, v, beta[..., 0], S0)
    with pytest.raises(ValueError, match=r"S0 has shape \[2, 2, 4, 8\], expected \[2, 2, 8, 4\]"):
        srwm_jax.delta_rule(q, k, v, beta, jnp.swapaxes(S0, -1, -2))


def test_auto_uses_scan_on_cpu():
    x, W = make_srwm_inputs(1, 3, 1, 8)
    np.testing.assert_array_equal(srwm_jax.srwm(x, W, impl="auto")[0],
                                  srwm_jax.srwm(x, W, impl="scan")[0])


# --- resets inside the ops --------------------------------------------------------------------

RESET_IMPLS = ["scan", "pallas_interpret"]


def _srwm_reset_case(seed=0, B=2, T=7, H=1, d=16):
    x, W = make_srwm_inputs(B, T, H, d, seed=seed)
    _, W_reset = make_srwm_inputs(B, T, H, d, seed=seed + 1)
    reset = random_reset(jax.random.key(seed + 2), B, T)
    proj = jax.random.normal(jax.random.key(seed + 3), (B, T, H, d))
    return x, W, W_reset, reset, proj


def _outputs_and_grads(loss_of_outputs, fn, args):
    """fn(*args), and the gradient of loss_of_outputs(fn(*args)) w.r.t. every argument."""
    def f(*a):
        out = fn(*a)
        return loss_of_outputs(out), out
    grad_fn = jax.grad(f, argnums=tuple(range(len(args))), has_aux=True)
    return jax.jit(grad_fn, compiler_options=_FAST_COMPILE)(*args)[::-1]


# Tiny shapes: compile time dominates, and skipping XLA's expensive CPU passes cuts it.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _state_loss(proj):
    return lambda out: jnp.sum(jnp.sin(out[0] * proj)) + sum(
        jnp.sum(jnp.cos(s)) for s in jax.tree.leaves(out[1]))


@pytest.mark.parametrize("impl", RESET_IMPLS)
def test_srwm_resets_equal_running_the_pieces_separately(impl):
    """One call with a random reset mask == every sequence cut at its resets, pieces run
    separately (each from the reset weights): outputs, W_T and the gradients of x, W_0 and
    the reset weights."""
    x, W, W_reset, reset, proj = _srwm_reset_case()
    one = lambda x, W, Wr: srwm_jax.srwm(x, W, input_softmax=True, reset=reset,  # noqa: E731
                                         reset_weights=Wr, impl=impl)
    piece = lambda inp, w: srwm_jax.srwm(inp[0], w, input_softmax=True, impl="scan")  # noqa: E731
    split = lambda x, W, Wr: run_split_at_resets(piece, (x,), W, Wr, reset)  # noqa: E731
    out, grads = _outputs_and_grads(_state_loss(proj), one, (x, W, W_reset))
    out_ref, grads_ref = _outputs_and_grads(_state_loss(proj), split, (x, W, W_reset))
    for name, a, b in zip(["y", "W_T"] + ["dx", "dW0", "dW_reset"],
                          list(out) + list(grads), list(out_ref) + list(grads_ref)):
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            assert rel_err(u, v) < 1e-5, name
    # The float64 definition with resets agrees too (independent of both).
    with jax.enable_x64(True):
        ref = lambda x, W, Wr: srwm_reference(x, W, input_softmax=True, reset=reset,  # noqa: E731
                                              reset_weights=Wr)
        out64, grads64 = _outputs_and_grads(_state_loss(to64(proj)), ref,
                                            to64((x, tuple(W), tuple(W_reset))))
        out64, grads64 = jax.tree.map(np.asarray, (out64, grads64))
    for a, b in zip(jax.tree.leaves((out, grads)), jax.tree.leaves((out64, grads64))):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("impl", RESET_IMPLS)
def test_delta_rule_resets_equal_running_the_pieces_separately(impl):
    B, T, H, dk, dv = 2, 8, 1, 16, 8
    q, k, v, beta, S0 = make_delta_inputs(B, T, H, dk, dv, seed=5)
    S_reset = 0.3 * jax.random.normal(jax.random.key(6), S0.shape)
    reset = random_reset(jax.random.key(7), B, T)
    proj = jax.random.normal(jax.random.key(8), (B, T, H, dv))
    args = (q, k, v, beta, S0, S_reset)
    one = lambda q, k, v, b, S, Sr: srwm_jax.delta_rule(  # noqa: E731
        q, k, v, b, S, reset=reset, reset_state=Sr, impl=impl)
    piece = lambda inp, S: srwm_jax.delta_rule(*inp, S, impl="scan")  # noqa: E731
    split = lambda q, k, v, b, S, Sr: run_split_at_resets(  # noqa: E731
        piece, (q, k, v, b), S, Sr, reset)
    out, grads = _outputs_and_grads(_state_loss(proj), one, args)
    out_ref, grads_ref = _outputs_and_grads(_state_loss(proj), split, args)
    names = ["y", "S_T", "dq", "dk", "dv", "dbeta", "dS0", "dS_reset"]
    for name, a, b in zip(names, list(out) + list(grads), list(out_ref) + list(grads_ref)):
        assert rel_err(a, b) < 1e-5, name
    with jax.enable_x64(True):
        ref = lambda q, k, v, b, S, Sr: delta_rule_reference(  # noqa: E731
            q, k, v, b, S, reset=reset, reset_state=Sr)
        out64, grads64 = _outputs_and_grads(_state_loss(to64(proj)), ref, to64(args))
        out64, grads64 = jax.tree.map(np.asarray, (out64, grads64))
    for name, a, b in zip(names, list(out) + list(grads), list(out64) + list(grads64)):
        assert rel_err(a, b) < 1e-5, name


def test_reset_defaults_restore_W0_and_zeros():
    """Without reset_weights / reset_state a reset restores W_0 / zeros; an all-False mask
    changes nothing."""
    x, W, _, reset, _ = _srwm_reset_case(seed=3, T=6)
    y, W_T = srwm_jax.srwm(x, W, reset=reset)
    y_ref, W_ref = srwm_jax.srwm(x, W, reset=reset, reset_weights=W)
    np.testing.assert_array_equal(y, y_ref)
    for a, b in zip(W_T, W_ref):
        np.testing.assert_array_equal(a, b)
    y0, _ = srwm_jax.srwm(x, W, reset=jnp.zeros(reset.shape, bool))
    np.testing.assert_allclose(y0, srwm_jax.srwm(x, W)[0], rtol=1e-6, atol=1e-6)
    q, k, v, beta, S0 = make_delta_inputs(2, 6, 1, 8, 8)
    y, _ = srwm_jax.delta_rule(q, k, v, beta, S0, reset=reset)
    y_ref, _ = srwm_jax.delta_rule(q, k, v, beta, S0, reset=reset, reset_state=jnp.zeros_like(S0))
    np.testing.assert_array_equal(y, y_ref)


def test_reset_bad_inputs_raise_clear_errors():
    x, W, W_reset, reset, _ = _srwm_reset_case(T=6)
    with pytest.raises(ValueError, match=r"reset has shape \[6, 2\], expected \[2, 6\]"):
        srwm_jax.srwm(x, W, reset=reset.T)
    with pytest.raises(ValueError, match="reset must be a bool"):
        srwm_jax.srwm(x, W, reset=reset.astype(jnp.float32))
    with pytest.raises(ValueError, match="reset_weights given without reset"):
        srwm_jax.srwm(x, W, reset_weights=W_reset)
    with pytest.raises(ValueError, match=r"reset_weights.q has shape"):
        srwm_jax.srwm(x, W, reset=reset, reset_weights=W_reset._replace(q=W_reset.q[..., :3]))
    q, k, v, beta, S0 = make_delta_inputs(2, 6, 1, 8, 4)
    with pytest.raises(ValueError, match=r"reset_state has shape"):
        srwm_jax.delta_rule(q, k, v, beta, S0, reset=reset, reset_state=S0[:, :, :4, :2])


def residual_bytes_with_and_without_mask(T, d=16, B=1, H=1):
    """Saved-residual bytes of srwm / delta_rule (scan impl) without and with a reset mask."""
    x, W = make_srwm_inputs(B, T, H, d)
    reset = random_reset(jax.random.key(1), B, T)
    srwm_plain = saved_residual_bytes(lambda x, W: srwm_jax.srwm(x, W, impl="scan"), x, W)
    srwm_mask = saved_residual_bytes(
        lambda x, W: srwm_jax.srwm(x, W, reset=reset, impl="scan"), x, W)
    inputs = make_delta_inputs(B, T, H, d, d)
    delta_plain = saved_residual_bytes(lambda *a: srwm_jax.delta_rule(*a, impl="scan"), *inputs)
    delta_mask = saved_residual_bytes(
        lambda *a: srwm_jax.delta_rule(*a, reset=reset, impl="scan"), *inputs)
    return dict(srwm=(srwm_plain, srwm_mask), delta_rule=(delta_plain, delta_mask))


def test_residuals_with_reset_mask_stay_O_T_times_d():
    """A mask adds T bools and one reset state (O(d^2), independent of T) to the residuals:
    no weights per step. Measured (d=16, B=H=1) in the closing note of issue 13."""
    small, large = (residual_bytes_with_and_without_mask(64),
                    residual_bytes_with_and_without_mask(256))
    d = 16
    for op in ("srwm", "delta_rule"):
        (plain64, mask64), (plain256, mask256) = small[op], large[op]
        reset_state_bytes = (3 * d * d + 4 * d) * 4 if op == "srwm" else d * d * 4
        # The mask's extra bytes: the reset state plus at most a few bytes per step.
        assert mask64 - plain64 <= reset_state_bytes + 8 * 64, (op, small)
        assert mask256 - plain256 <= reset_state_bytes + 8 * 256, (op, large)
        # O(T*d): 4x the steps gives about 4x the bytes (well under the 4x * d of O(T*d^2)).
        assert mask256 < 4.5 * mask64, (op, small, large)
