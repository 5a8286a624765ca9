"""Flax layers: shapes, carried state, reset masks, and that every memory kind trains."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from srwm_jax.layers import MEMORY_KINDS, MemoryStack, ShortConv

B, T, D = 3, 8, 16


def make(kind, **kw):
    return MemoryStack(kind=kind, num_layers=2, hidden=D, num_heads=4, ff_dim=32,
                       input_softmax=kind in ("srwm", "srdelta"), **kw)


@pytest.fixture(scope="module")
def inputs():
    return jax.random.normal(jax.random.key(0), (B, T, D))


@pytest.mark.parametrize("kind", MEMORY_KINDS)
def test_shapes_carry_and_reset(kind, inputs):
    stack = make(kind)
    params = stack.init(jax.random.key(1), inputs)
    fresh = stack.initial_state(B)
    y, state = stack.apply(params, inputs, fresh)
    assert y.shape == (B, T, D)
    assert jax.tree.structure(state) == jax.tree.structure(fresh)

    # Carrying the state over two calls equals one call over the whole sequence.
    y1, s1 = stack.apply(params, inputs[:, :3], fresh)
    y2, s2 = stack.apply(params, inputs[:, 3:], s1)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y, rtol=2e-5, atol=2e-5)
    for a, b in zip(jax.tree.leaves(s2), jax.tree.leaves(state)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)

    # A reset at step 5 of sequence 1 equals starting that sequence fresh at step 5;
    # the other sequences are untouched.
    reset = jnp.zeros((B, T), bool).at[1, 5].set(True)
    y_r, _ = stack.apply(params, inputs, fresh, reset)
    y_fresh, _ = stack.apply(params, inputs[:, 5:], fresh)
    np.testing.assert_allclose(y_r[1, 5:], y_fresh[1], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(y_r[0], y[0], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(y_r[1, :5], y[1, :5], rtol=2e-5, atol=2e-5)
    if kind != "fakesr":  # stateless: nothing to reset
        assert not np.allclose(y_r[1, 5:], y[1, 5:], atol=1e-4)


def copy_task_batch(key, batch=32, length=4, vocab=4):
    """Sequences of random symbols, then a delimiter; the target is the sequence repeated."""
    symbols = jax.random.randint(key, (batch, length), 0, vocab)
    blank = jnp.full((batch, length), vocab)
    inp = jax.nn.one_hot(jnp.concatenate([symbols, blank], 1), vocab + 1)
    return inp, symbols


@pytest.mark.parametrize("kind", ["srwm", "srdelta", "fakesr", "deltanet", "lstm"])
def test_memory_kinds_learn_copy_task(kind):
    vocab, length = 4, 4
    class Model(nn.Module):
        stack: nn.Module

        @nn.compact
        def __call__(self, x):
            h, _ = self.stack(nn.Dense(D)(x))
            return nn.Dense(vocab)(h)

    model = Model(make(kind))
    x, target = copy_task_batch(jax.random.key(0))
    params = model.init(jax.random.key(1), x)
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)

    def loss_fn(params, x, target):
        logits = model.apply(params, x)[:, length:]
        return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()

    @jax.jit
    def step(params, opt_state, key):
        x, target = copy_task_batch(key)
        loss, g = jax.value_and_grad(loss_fn)(params, x, target)
        updates, opt_state = opt.update(g, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for i in range(80):
        params, opt_state, loss = step(params, opt_state, jax.random.key(100 + i % 4))
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < 0.9 * first, (losses[:5], losses[-10:])
    # Chance is log(vocab): memory layers must beat it; Fake SR has no state, so it cannot.
    if kind == "fakesr":
        assert last > 0.95 * np.log(vocab)
    else:
        assert last < 0.85 * np.log(vocab), (losses[:5], losses[-10:])


def test_unknown_kind_and_bad_width_raise():
    with pytest.raises(ValueError, match="unknown kind 'transformer'"):
        MemoryStack(kind="transformer").init(jax.random.key(0), jnp.zeros((1, 2, 8)))
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        MemoryStack(kind="srwm", hidden=10, num_heads=4).init(jax.random.key(0),
                                                              jnp.zeros((1, 2, 10)))


def test_short_conv_matches_a_loop_starts_as_identity_and_carries_state(inputs):
    conv = ShortConv(3)
    variables = conv.init(jax.random.key(0), inputs)
    np.testing.assert_array_equal(conv.apply(variables, inputs)[0], inputs)  # identity at init
    w = np.asarray(jax.random.normal(jax.random.key(1), (3, D)), np.float64)
    variables = {"params": {"kernel": jnp.asarray(w, jnp.float32)}}
    y, state = conv.apply(variables, inputs)
    x = np.asarray(inputs, np.float64)
    want = np.zeros_like(x)
    for t in range(T):
        for j in range(3):
            if t - j >= 0:
                want[:, t] += w[j] * x[:, t - j]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(state, inputs[:, -2:])
    head, s = conv.apply(variables, inputs[:, :5])
    tail, _ = conv.apply(variables, inputs[:, 5:], s)
    np.testing.assert_allclose(jnp.concatenate([head, tail], 1), y, rtol=1e-6, atol=1e-6)
    # With resets: a float64 loop that forgets everything before the last reset.
    reset = np.zeros((B, T), bool)
    reset[0, 3] = reset[1, 0] = reset[2, 6] = reset[2, 7] = True
    past = np.asarray(jax.random.normal(jax.random.key(2), (B, 2, D)), np.float64)
    y_r, state_r = conv.apply(variables, inputs, jnp.asarray(past, jnp.float32), jnp.asarray(reset))
    history = np.concatenate([past, x], axis=1)  # position p holds x_{p-2}
    want = np.zeros_like(x)
    for b in range(B):
        for t in range(T):
            start = max([s for s in range(t + 1) if reset[b, s]], default=-2)  # first visible step
            for j in range(3):
                if t - j >= start:
                    want[b, t] += w[j] * history[b, t - j + 2]
    np.testing.assert_allclose(y_r, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(state_r[0], inputs[0, -2:])     # no reset in the last 2 steps
    np.testing.assert_array_equal(state_r[2, 0], np.zeros(D))     # x_6 forgotten at step 7
    np.testing.assert_array_equal(state_r[2, 1], inputs[2, -1])


def _per_step_reference(stack, params, x, state, reset):
    """The old library path, kept here as the reference: one call per time step, every state
    leaf of sequence b zeroed (fresh) before step t where reset[b, t]."""
    def step(s, inputs):
        x_t, r_t = inputs
        s = jax.tree.map(lambda a: jnp.where(r_t.reshape((-1,) + (1,) * (a.ndim - 1)), 0.0, a), s)
        y_t, s = stack.apply(params, x_t[:, None], s)
        return s, y_t[:, 0]

    state, ys = jax.lax.scan(step, state, (jnp.swapaxes(x, 0, 1), jnp.swapaxes(reset, 0, 1)))
    return jnp.swapaxes(ys, 0, 1), state


@pytest.mark.parametrize("kind", MEMORY_KINDS)
def test_reset_in_one_call_equals_old_per_step_path(kind, inputs):
    """Outputs, final state and the gradients of the parameters, inputs and initial state."""
    stack = make(kind)
    params = stack.init(jax.random.key(1), inputs)
    state0 = jax.tree.map(lambda a: 0.1 * jax.random.normal(jax.random.key(4), a.shape),
                          stack.initial_state(B))
    reset = jnp.asarray(np.random.default_rng(0).random((B, T)) < 0.3).at[0, 0].set(True)

    def loss(fn):
        def f(params, x, state):
            y, s = fn(params, x, state)
            return (jnp.sum(jnp.sin(y)) + sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves(s)),
                    (y, s))
        return jax.jit(jax.grad(f, argnums=(0, 1, 2), has_aux=True))

    one = loss(lambda p, x, s: stack.apply(p, x, s, reset))
    ref = loss(lambda p, x, s: _per_step_reference(stack, p, x, s, reset))
    (g, out), (g_ref, out_ref) = one(params, inputs, state0), ref(params, inputs, state0)
    for a, b in zip(jax.tree.leaves((out, g)), jax.tree.leaves((out_ref, g_ref))):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
