"""VSMLLayer (srwm_jax.vsml_layer): the layer contract (state carry, resets, errors), the float64
reference through the layer, and its introspection statistics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srwm_jax.introspect import STATS_COLLECTION, collect_layers
from srwm_jax.reference_vsml import vsml_network_reference
from srwm_jax.vsml_layer import VSMLLayer
from tests.reference_helpers import rel_err

B, T, A, O = 2, 6, 4, 3  # noqa: E741


def _layer(**kw):
    return VSMLLayer(A, O, hidden=(5,), msg_size=4, state_size=4, micro_ticks=2,
                     forget_offset=1.0, input_offset=-1.0, chunk=4, **kw)


def _inputs():
    x = jax.random.normal(jax.random.key(0), (B, T, A))
    labels = jnp.arange(B * T).reshape(B, T) % O
    return x, jax.nn.one_hot(labels, O)


def test_layer_matches_reference_and_carries_state(x64):
    layer = _layer()
    x, fb = _inputs()
    x, fb = x.astype(jnp.float64), fb.astype(jnp.float64)
    variables = layer.init(jax.random.key(1), x, feedback=fb)
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
    y, state = layer.apply(variables, x, feedback=fb)
    assert y.shape == (B, T, O)
    fresh = jax.tree.map(lambda a: a.astype(jnp.float64), layer.initial_state(B))
    p = variables["params"]["lstm"]
    from srwm_jax.ops.vsml import VSMLParams
    params = (VSMLParams(*p),) * 2
    fwd_in = jnp.pad(x[..., None], [(0, 0)] * 3 + [(0, 3)])
    want, _, want_state = vsml_network_reference(params, fwd_in, fb, fresh, micro_ticks=2,
                                                 error_feedback=True, forget_offset=1.0,
                                                 input_offset=-1.0)
    assert rel_err(y, want[..., 0]) < 1e-12
    for a, b in zip(jax.tree.leaves(tuple(state)), jax.tree.leaves(want_state)):
        assert rel_err(a, b) < 1e-12
    # Two calls carrying the state equal one call.
    y1, s1 = layer.apply(variables, x[:, :2], feedback=fb[:, :2])
    y2, s2 = layer.apply(variables, x[:, 2:], s1, feedback=fb[:, 2:])
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y, rtol=1e-12, atol=1e-12)
    for a, b in zip(jax.tree.leaves(s2), jax.tree.leaves(state)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_reset_restores_the_fresh_state():
    layer = _layer()
    x, fb = _inputs()
    variables = layer.init(jax.random.key(1), x, feedback=fb)
    reset = jnp.zeros((B, T), bool).at[1, 3].set(True)
    y, _ = layer.apply(variables, x, None, reset, feedback=fb)
    y_tail, _ = layer.apply(variables, x[:, 3:], feedback=fb[:, 3:])
    np.testing.assert_allclose(y[1, 3:], y_tail[1], rtol=1e-5, atol=1e-6)
    y_plain, _ = layer.apply(variables, x, feedback=fb)
    np.testing.assert_allclose(y[0], y_plain[0], rtol=1e-6, atol=1e-7)


def test_gradient_reaches_the_shared_lstm_under_jit():
    layer = _layer(shared=False, output_bound=5.0)
    x, fb = _inputs()
    variables = layer.init(jax.random.key(1), x, feedback=fb)
    assert set(variables["params"]) == {"lstm_0", "lstm_1"}
    g = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply(v, x, feedback=fb)[0] ** 2)))(variables)
    for name in ("lstm_0", "lstm_1"):
        assert float(jnp.abs(g["params"][name][0]).max()) > 0


def test_bad_inputs_are_refused():
    layer = _layer()
    x, fb = _inputs()
    variables = layer.init(jax.random.key(1), x, feedback=fb)
    with pytest.raises(ValueError, match=r"VSMLLayer: x has shape \[2, 6, 5\], expected "
                                         r"\[B, T, D\] with D = 4 \(in_features"):
        layer.apply(variables, jnp.zeros((B, T, A + 1)), feedback=fb)
    with pytest.raises(ValueError, match=r"VSMLLayer: reset has shape \[6, 2\]"):
        layer.apply(variables, x, None, jnp.zeros((T, B), bool), feedback=fb)
    with pytest.raises(ValueError, match=r"VSMLLayer: feedback has shape \[2, 6, 4\], expected "
                                         r"\[2, 6, 3\]"):
        layer.apply(variables, x, feedback=jnp.zeros((B, T, O + 1)))
    bad_state = layer.initial_state(B + 1)
    with pytest.raises(ValueError, match=r"VSMLLayer: state.*expected a floating-point"):
        layer.apply(variables, x, bad_state, feedback=fb)
    with pytest.raises(ValueError, match="reduce='max'"):
        _layer(reduce="max").init(jax.random.key(0), x, feedback=fb)


def test_statistics_are_sown_and_match_the_state():
    layer = _layer()
    x, fb = _inputs()
    variables = layer.init(jax.random.key(1), x, feedback=fb)
    assert STATS_COLLECTION not in variables
    (y, state), stats = layer.apply(variables, x, feedback=fb, mutable=[STATS_COLLECTION])
    series = collect_layers(stats[STATS_COLLECTION])
    assert list(series) == ["vsml"]
    s = series["vsml"]
    assert s["state_norm"].shape == (B, T, 2)
    for li in range(2):
        c = state.lstm[li].c
        np.testing.assert_allclose(s["state_norm"][:, -1, li],
                                   jnp.sqrt(jnp.sum(c ** 2, axis=(1, 2, 3))), rtol=1e-5)
    fresh = layer.initial_state(B)
    # At step 0 the change is the distance from the fresh state.
    np.testing.assert_allclose(s["state_change"][:, 0], s["distance"][:, 0], rtol=1e-6)
    c0 = fresh.lstm[0].c
    np.testing.assert_allclose(s["distance"][:, -1, 0],
                               jnp.sqrt(jnp.sum((state.lstm[0].c - c0) ** 2, axis=(1, 2, 3))),
                               rtol=1e-4)
