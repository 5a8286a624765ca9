"""VSML op (srwm_jax.ops.vsml) against the float64 step-by-step reference (srwm_jax.reference_vsml):
forward, gradients (and finite differences), resets, micro-ticks, error feedback, chunked
checkpointing, jit / vmap / grad, and one clear error per bad shape."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srwm_jax.ops.vsml import (VSMLState, init_network_state, init_vsml_params, vsml_network,
                               vsml_tick)
from srwm_jax.reference_vsml import vsml_network_reference, vsml_tick_reference
from tests.reference_helpers import rel_err, to64

B, T, m, s = 2, 7, 3, 4
SIZES = (5, 4, 3)   # A_0 = 5 inputs, a hidden layer of 4 units, 3 outputs


def _setup(key, sizes=SIZES, shared=False, dtype=jnp.float32):
    k = jax.random.split(key, 6)
    L = len(sizes) - 1
    params = [init_vsml_params(k[0 if shared else i], m, s, dtype) for i in range(L)]
    # Larger-than-init biases and random states, so every term of the tick matters.
    params = [p._replace(b=0.5 * jax.random.normal(k[4], p.b.shape, dtype),
                         b_fwd=0.3 * jnp.ones_like(p.b_fwd)) for p in params]
    state = init_network_state(B, sizes, m, s, key=k[3], rand_fraction=0.5, dtype=dtype)
    state = state._replace(lstm=tuple(VSMLState(0.3 * jax.random.normal(k[5], st.h.shape, dtype),
                                                st.c) for st in state.lstm))
    fwd = jax.random.normal(k[1], (B, T, sizes[0], m), dtype)
    bwd = jax.random.normal(k[2], (B, T, sizes[-1], m), dtype)
    return params, fwd, bwd, state


def _flat(out):
    fwd, bwd, st = out
    return [fwd, bwd] + jax.tree.leaves(tuple(st))


OFFSETS = dict(forget_offset=1.0, input_offset=-1.0)  # gates far from saturation in the tests


def test_tick_matches_reference(x64):
    params, fwd, bwd, state = to64(_setup(jax.random.key(0), sizes=(5, 3)))
    st = state.lstm[0]
    for reduce in ("mean", "sum"):
        got = vsml_tick(params[0], fwd[:, 0], bwd[:, 0], st, reduce=reduce, **OFFSETS)
        want = vsml_tick_reference(params[0], fwd[:, 0], bwd[:, 0], st.h, st.c, reduce, **OFFSETS)
        for g, w in zip(_flat(got), [want[0], want[1], want[2], want[3]]):
            assert rel_err(g, w) < 1e-12


@pytest.mark.parametrize("micro_ticks", [1, 3])
@pytest.mark.parametrize("error_feedback", [False, True])
def test_network_forward_matches_reference(x64, micro_ticks, error_feedback):
    params, fwd, bwd, state = to64(_setup(jax.random.key(1)))
    if error_feedback:
        bwd = jax.nn.one_hot(jnp.arange(B * T).reshape(B, T) % SIZES[-1], SIZES[-1],
                             dtype=jnp.float64)
    kw = dict(micro_ticks=micro_ticks, error_feedback=error_feedback, **OFFSETS)
    got = vsml_network(params, fwd, bwd, state, chunk=3, **kw)
    want = jax.jit(functools.partial(vsml_network_reference, **kw))(params, fwd, bwd, state)
    for g, w in zip(_flat(got), _flat(want)):
        assert rel_err(g, w) < 1e-12


def test_micro_ticks_change_the_result(x64):
    params, fwd, bwd, state = to64(_setup(jax.random.key(2)))
    one = vsml_network(params, fwd, bwd, state, micro_ticks=1, **OFFSETS)[0]
    two = vsml_network(params, fwd, bwd, state, micro_ticks=2, **OFFSETS)[0]
    assert rel_err(one, two) > 1e-3


def test_resets_match_reference_and_a_fresh_start(x64):
    params, fwd, bwd, state = to64(_setup(jax.random.key(3)))
    fresh = init_network_state(B, SIZES, m, s, key=jax.random.key(9), rand_fraction=0.5,
                               dtype=jnp.float64)
    reset = jnp.zeros((B, T), bool).at[0, 3].set(True).at[1, 0].set(True).at[1, 5].set(True)
    got = vsml_network(params, fwd, bwd, state, reset=reset, reset_state=fresh, chunk=2, **OFFSETS)
    want = vsml_network_reference(params, fwd, bwd, state, reset=reset, reset_state=fresh,
                                  **OFFSETS)
    for g, w in zip(_flat(got), _flat(want)):
        assert rel_err(g, w) < 1e-12
    # Sequence 0 after its reset at step 3 equals a fresh run of steps 3.. from `fresh`.
    tail = vsml_network(params, fwd[:, 3:], bwd[:, 3:], fresh, **OFFSETS)
    np.testing.assert_allclose(got[0][0, 3:], tail[0][0], rtol=1e-12, atol=1e-12)


def test_gradients_match_reference_and_finite_differences(x64):
    params, fwd, bwd, state = to64(_setup(jax.random.key(4)))
    fwd = fwd[:, :4]   # 4 steps: the unrolled reference compiles in reasonable time
    targets = jax.nn.one_hot(jnp.arange(B * 4).reshape(B, 4) % 3, 3, dtype=jnp.float64)
    w_out = jax.random.normal(jax.random.key(5), (B, 4, 3, m), jnp.float64)

    def loss(fn, params, fwd, **kw):
        out = fn(params, fwd, targets, state, micro_ticks=2, error_feedback=True, **OFFSETS, **kw)
        return jnp.sum(out[0] * w_out) + jnp.sum(jnp.sin(out[1]))

    g_op = jax.jit(jax.grad(lambda p, f: loss(vsml_network, p, f, chunk=3), (0, 1)))(params, fwd)
    g_ref = jax.jit(jax.grad(lambda p, f: loss(vsml_network_reference, p, f), (0, 1)))(params, fwd)
    for g, w in zip(jax.tree.leaves(g_op), jax.tree.leaves(g_ref)):
        assert rel_err(g, w) < 1e-10
    # Central finite differences along a random direction of the shared parameters.
    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.key(6), a.shape, a.dtype),
                             params)
    eps = 1e-6
    shift = lambda sgn: jax.tree.map(lambda p, d: p + sgn * eps * d, params, direction)  # noqa: E731
    ref_loss = jax.jit(lambda p: loss(vsml_network_reference, p, fwd))
    fd = (ref_loss(shift(1)) - ref_loss(shift(-1))) / (2 * eps)
    analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(g_op[0]),
                                                   jax.tree.leaves(direction)))
    assert abs(float(fd - analytic)) < 1e-6 * max(1.0, abs(float(analytic)))


def test_chunking_does_not_change_values_or_gradients():
    params, fwd, bwd, state = _setup(jax.random.key(7))

    @functools.partial(jax.jit, static_argnums=1)
    def value_and_grad(p, chunk):
        return jax.value_and_grad(
            lambda p: jnp.sum(jnp.square(vsml_network(p, fwd, bwd, state, chunk=chunk)[0])))(p)

    v7, g7 = value_and_grad(params, 7)
    v3, g3 = value_and_grad(params, 3)   # T = 7 is not a multiple of 3: a padded last chunk
    np.testing.assert_allclose(v3, v7, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g3), jax.tree.leaves(g7)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_jit_vmap_grad_compose():
    params, fwd, bwd, state = _setup(jax.random.key(8))

    def run(p, f, b, st):
        return vsml_network(p, f, b, st, micro_ticks=2)

    eager = run(params, fwd, bwd, state)
    jitted = jax.jit(run)(params, fwd, bwd, state)
    for a, b in zip(_flat(eager), _flat(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # vmap over an extra leading axis of sequences: each [1, ...] slice is one batch.
    add = lambda a: a[:, None]  # noqa: E731
    vm = jax.vmap(run, in_axes=(None, 0, 0, 0))(params, add(fwd), add(bwd),
                                                jax.tree.map(add, state))
    for a, b in zip(_flat(eager), _flat(vm)):
        np.testing.assert_allclose(a, b.reshape(a.shape), rtol=1e-5, atol=1e-6)
    g = jax.jit(jax.grad(lambda p: jnp.sum(run(p, fwd, bwd, state)[0])))(params)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(g))
    assert any(float(jnp.abs(a).max()) > 0 for a in jax.tree.leaves(g))


def test_bad_shapes_are_refused():
    params, fwd, bwd, state = _setup(jax.random.key(0))
    with pytest.raises(ValueError, match=r"fwd_in has shape \[2, 7, 5\], expected \[B, T, A, m\]"):
        vsml_network(params, fwd[..., 0], bwd, state)
    with pytest.raises(ValueError,
                       match=r"bwd_in has shape \[2, 7, 4, 3\], expected \[2, 7, 3, 3\]"):
        vsml_network(params, fwd, bwd[:, :, :1].repeat(4, 2), state)
    with pytest.raises(ValueError, match=r"fwd has shape \[2, 6, 3\].*\n?|state.h has shape"):
        vsml_network(params, jnp.zeros((B, T, 6, m)), bwd, state)
    with pytest.raises(ValueError, match=r"reset has shape \[7, 2\]"):
        vsml_network(params, fwd, bwd, state, reset=jnp.zeros((T, B), bool))
    with pytest.raises(ValueError, match=r"params.w_h has shape"):
        vsml_network([params[0]._replace(w_h=params[0].w_h[:1]), params[1]], fwd, bwd, state)
    with pytest.raises(ValueError, match="reduce='max'"):
        vsml_network(params, fwd, bwd, state, reduce="max")
    with pytest.raises(ValueError, match="micro_ticks=0"):
        vsml_network(params, fwd, bwd, state, micro_ticks=0)
    with pytest.raises(ValueError, match="expected L >= 1"):
        vsml_network(params[:1], fwd, bwd, state)
    with pytest.raises(ValueError, match=r"bwd has shape \[2, 3\]"):
        vsml_tick(params[1], fwd[:, 0, :4], bwd[:, 0, :, 0], state.lstm[1])
