"""Agent cores: state reset at episode starts inside an unroll, and state carried across unrolls.

The cores are tested directly on random 257-d features (the ResNet stem is stateless and only
makes the tests slow); the full agent is checked for its parameter count.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl.agent import Agent, FeedForwardCore, MemoryCore, make_agent
from srwm_jax.layers import LSTMLayer
from srwm_jax.training.mesh import count_params


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
        return LSTMLayer(256, torch_init=True)
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


def _agent_param_count(agent):
    params = jax.eval_shape(agent.init, jax.random.key(0), jnp.zeros((1, 1, 64, 64, 3), jnp.uint8),
                            jnp.zeros((1, 1)), jnp.zeros((1, 1), bool), agent.initial_state(1))
    return count_params(params)


def test_lstm_agent_has_torch_lstm_parameter_count():
    """The LSTM core (srwm_jax.layers.LSTMLayer, torch_init) keeps torch.nn.LSTM(257, 256)'s
    parameters: 4H(D + H) weights and two bias vectors of 4H; its heads read 256 features."""
    D, H, A = 257, 256, 15
    torch_lstm = 4 * H * (D + H) + 2 * 4 * H
    heads_ff, heads_lstm = (D + 1) * A + D + 1, (H + 1) * A + H + 1
    expected = 626_272 - heads_ff + heads_lstm + torch_lstm
    assert _agent_param_count(Agent(core_kind="lstm")) == expected == 1_153_616  # paper: 1.2M


def test_torch_init_lstm_matches_float64_torch_equations():
    """LSTMLayer(torch_init=True) == a float64 NumPy loop of torch.nn.LSTM's equations
    (gate order i, f, g, o; c' = f c + i g; h' = o tanh c'), with weights in U(+-1/sqrt(H))."""
    D, H = 5, 3
    layer = LSTMLayer(H, torch_init=True)
    x = np.random.default_rng(0).normal(size=(B, T, D)).astype(np.float32)
    params = layer.init(jax.random.key(1), jnp.asarray(x))
    y, (c_T, h_T) = layer.apply(params, jnp.asarray(x))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    leaves = jax.tree.leaves(p)
    assert all(np.abs(a).max() <= H ** -0.5 for a in leaves) and len(leaves) == 4
    sigmoid = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    h, c = np.zeros((B, H)), np.zeros((B, H))
    for t in range(T):
        g = x[:, t] @ p["input_proj"]["kernel"] + p["input_proj"]["bias"] + h @ p["W_h"] + p["b_h"]
        i, f, gg, o = np.split(g, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
        h = sigmoid(o) * np.tanh(c)
        np.testing.assert_allclose(np.asarray(y[:, t]), h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(c_T), c, rtol=1e-5, atol=1e-6)


def test_make_agent_reads_num_actions_from_config():
    from configs.rl import ff_cpu
    config = ff_cpu.get_config()
    config.num_actions = 7
    assert make_agent(config).num_actions == 7
