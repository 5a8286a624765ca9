"""Agent cores: state reset at episode starts inside an unroll, and state carried across unrolls.

The cores are tested directly on random 257-d features (the ResNet stem is stateless and only
makes the tests slow); the full agent is checked for its parameter count.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl.agent import Agent, FeedForwardCore, LSTMCore, MemoryCore, count_params


def _memory_stack_available():
    try:
        from srwm_jax.layers import MemoryStack  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


MEMORY = dict(num_layers=2, hidden=128, num_heads=8, ff_dim=512, dropout=0.0)
KINDS = ["ff", "lstm"] + [pytest.param(k, marks=pytest.mark.skipif(
    not _memory_stack_available(), reason="srwm_jax.layers.MemoryStack not importable"))
    for k in ("srwm", "deltanet", "fakesr")]  # srdelta: same reset path, slow compile; see tests/
B, T = 2, 4


def _make_core(kind):
    if kind == "ff":
        return FeedForwardCore()
    if kind == "lstm":
        return LSTMCore(256)
    return MemoryCore(kind=kind, **MEMORY)


@functools.lru_cache(maxsize=None)  # one compile per core kind and input length
def _setup(kind, seed=0):
    core = _make_core(kind)
    rng = np.random.default_rng(seed)
    features = jnp.asarray(rng.normal(size=(B, T, 257)).astype(np.float32))
    state0 = core.initial_state(B)
    params = core.init(jax.random.key(seed), features[:, :1], state0, jnp.zeros((B, 1), bool))
    apply = jax.jit(lambda p, x, s, r: core.apply(p, x, s, r))
    return core, params, apply, features, state0


def _random_state(state, seed):
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), max(len(leaves), 1))
    return jax.tree.unflatten(
        treedef, [0.1 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _assert_outputs_close(a, b):
    # float32 with different op orders (one vs two scans): differences ~1e-6 on O(1) outputs.
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_reset_inside_unroll(kind):
    core, params, apply, x, state0 = _setup(kind)
    state = _random_state(state0, 1)  # a non-fresh state, as mid-episode
    k = 2                             # episode of env 0 starts at step k; env 1 never resets
    reset = np.zeros((B, T), bool)
    reset[0, k] = True
    y, _ = apply(params, x, state, jnp.asarray(reset))
    no_reset = jnp.zeros((B, T), bool)
    y_nr, _ = apply(params, x, state, no_reset)
    # After the reset, env 0 behaves as a fresh episode started at step k.
    y_fresh, _ = apply(params, x[:, k:], core.initial_state(B), no_reset[:, k:])
    _assert_outputs_close(y[0, k:], y_fresh[0])
    # Before the reset, and for env 1 throughout, nothing changes.
    _assert_outputs_close((y[0, :k], y[1]), (y_nr[0, :k], y_nr[1]))
    if kind not in ("ff", "fakesr"):  # stateful cores: the reset must matter
        assert not np.allclose(y[0, k:], y_nr[0, k:], atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_carried_state_equals_one_long_unroll(kind):
    core, params, apply, x, state0 = _setup(kind)
    reset = np.zeros((B, T), bool)
    reset[:, 0] = True
    reset[1, 3] = True  # an episode boundary inside the second unroll
    reset = jnp.asarray(reset)
    y, final_state = apply(params, x, state0, reset)
    m = 2
    y1, mid_state = apply(params, x[:, :m], state0, reset[:, :m])
    mid_state = jax.tree.map(np.asarray, mid_state)  # through the host, as between actor unrolls
    y2, end_state = apply(params, x[:, m:], mid_state, reset[:, m:])
    _assert_outputs_close(y, jnp.concatenate([y1, y2], 1))
    _assert_outputs_close(final_state, end_state)


def test_parameter_counts_match_paper():
    # Paper, Table 3 caption: FF 626K, LSTM 1.2M (rounded); torchbeast_procgen model.py shapes.
    agent = Agent(core_kind="ff")
    params = jax.eval_shape(agent.init, jax.random.key(0), jnp.zeros((1, 1, 64, 64, 3), jnp.uint8),
                            jnp.zeros((1, 1)), jnp.zeros((1, 1), bool), agent.initial_state(1))
    assert count_params(params) == 626_272
