"""Every public layer checks x, state and reset and names the argument, the expected shape with
its legend and what it got (srwm_jax.layer_inputs.check_layer_inputs).

The checks run while tracing, so `jax.eval_shape` of `init` exercises them without compiling.
"""
import jax
import jax.numpy as jnp
import pytest

from srwm_jax import layers

B, T, H, d = 2, 3, 2, 4
D = H * d

LAYERS = {
    "srwm": lambda: layers.SRWMLayer(H, d, impl="scan"),
    "fakesr": lambda: layers.FakeSRLayer(H, d),
    "deltanet": lambda: layers.DeltaNetLayer(H, d, impl="scan"),
    "srdelta": lambda: layers.SRDeltaNetLayer(H, d, impl="scan"),
    "lstm": lambda: layers.LSTMLayer(5),
    "shortconv": lambda: layers.ShortConv(3),
    "stack_srwm": lambda: layers.MemoryStack("srwm", num_layers=2, hidden=D, num_heads=H,
                                             ff_dim=8, impl="scan"),
    "stack_lstm": lambda: layers.MemoryStack("lstm", num_layers=2, hidden=5),
}
WIDTH_CHECKED = ("srwm", "fakesr", "srdelta", "stack_srwm")  # the others take any width D


def fresh_state(name, layer, batch=B):
    return layer.initial_state(batch, D) if name == "shortconv" else layer.initial_state(batch)


def trace_init(layer, x, state=None, reset=None):
    return jax.eval_shape(lambda: layer.init(jax.random.key(0), x, state, reset))


def x_ok():
    return jnp.zeros((B, T, D))


def reset_ok():
    return jnp.zeros((B, T), bool)


@pytest.mark.parametrize("name", LAYERS)
def test_valid_inputs_pass(name):
    layer = LAYERS[name]()
    reset = None if name == "shortconv" else reset_ok()  # ShortConv takes no resets
    trace_init(layer, x_ok(), fresh_state(name, layer), reset)
    trace_init(layer, x_ok().astype(jnp.bfloat16))  # any float dtype; state=None is fresh


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("bad_x, got", [
    (jnp.zeros((B, D)), r"shape \[2, 8\] and dtype float32"),                # no time axis
    (jnp.zeros((B, T, 1, D)), r"shape \[2, 3, 1, 8\] and dtype float32"),     # split into heads
    (jnp.zeros((B, T, D), jnp.int32), r"shape \[2, 3, 8\] and dtype int32"),
    ([[[0.0] * D] * T] * B, r"a list \(not an array\)"),
], ids=["rank2", "rank4", "int", "list"])
def test_bad_x_is_refused(name, bad_x, got):
    with pytest.raises(ValueError, match=rf"x has {got}, expected a floating-point \[B, T, D\] "
                                         r"array \(B batch, T time, D width; batch-major\)"):
        trace_init(LAYERS[name](), bad_x)


@pytest.mark.parametrize("name", WIDTH_CHECKED)
def test_x_of_the_wrong_width_is_refused(name):
    what = "hidden" if name.startswith("stack") else "num_heads \\* head_dim"
    with pytest.raises(ValueError, match=rf"x has shape \[2, 3, 6\], expected \[B, T, D\] with "
                                         rf"D = 8 \({what}; B batch, T time\)"):
        trace_init(LAYERS[name](), jnp.zeros((B, T, 6)))


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("bad_reset, got", [
    (jnp.zeros((B,), bool), r"shape \[2\] and dtype bool"),             # one flag per sequence
    (jnp.zeros((T, B), bool), r"shape \[3, 2\] and dtype bool"),        # time-major
    (jnp.zeros((B, T + 1), bool), r"shape \[2, 4\] and dtype bool"),    # one step too many
    (jnp.zeros((B, T), jnp.float32), r"shape \[2, 3\] and dtype float32"),
    (jnp.zeros((B, T), jnp.int32), r"shape \[2, 3\] and dtype int32"),
], ids=["per-sequence", "time-major", "too-long", "float", "int"])
def test_bad_reset_is_refused(name, bad_reset, got):
    with pytest.raises(ValueError, match=rf"reset has {got}, expected bool \[B, T\] = \[2, 3\] "
                                         r"\(B batch, T time of x; batch-major like x"):
        trace_init(LAYERS[name](), x_ok(), None, bad_reset)


# (layer, how to spoil its fresh state, the leaf and expected shape named in the message)
BAD_STATES = [
    ("srwm", lambda s: s._replace(b=s.b[..., :3]), r"state\.b has shape \[2, 2, 4, 3\] and dtype "
     r"float32, expected a floating-point \[2, 2, 4, 4\] array \(SRWMWeights"),
    ("srwm", lambda s: s._replace(q=s.q.astype(jnp.int32)), r"state\.q has shape \[2, 2, 4, 4\] "
     r"and dtype int32"),
    ("deltanet", lambda s: s[:1], r"state has shape \[1, 2, 4, 4\] and dtype float32, expected a "
     r"floating-point \[2, 2, 4, 4\] array \(fast weights \[B, H, d, d\]; H heads, d head dim; "
     r"B = 2 from x\)"),
    ("deltanet", lambda s: s[:, :, :, :, None], r"state has shape \[2, 2, 4, 4, 1\]"),
    ("srdelta", lambda s: (s[0], s[1][:, :1]), r"state\[1\] has shape \[2, 1, 4, 4\]"),
    ("srdelta", lambda s: s[0], r"state has structure .*SRWMWeights.*, expected .*\(SRWMWeights "
     r"of the weight change: y \[B, H, d, 3d\+1\]"),
    ("fakesr", lambda s: jnp.zeros((B, 1)), r"state has structure PyTreeDef\(\*\), expected "
     r"PyTreeDef\(\(\)\) \(\(\) \(stateless\)"),
    ("lstm", lambda s: [s[0], s[1]], r"state has structure PyTreeDef\(\[\*, \*\]\), expected "
     r"PyTreeDef\(\(\*, \*\)\) \(\(c, h\), each \[B, hidden\]"),
    ("lstm", lambda s: (s[0], s[1][:, :4]), r"state\[1\] has shape \[2, 4\]"),
    ("shortconv", lambda s: s[:, :1], r"state has shape \[2, 1, 8\] and dtype float32, expected "
     r"a floating-point \[2, 2, 8\] array \(the last K-1 inputs \[B, K-1, D\]"),
    ("stack_srwm", lambda s: (s[0], s[1]._replace(y=s[1].y[:1])), r"state\[1\]\.y has shape "
     r"\[1, 2, 4, 4\] .* \(a tuple of 2 SRWMLayer states: SRWMWeights"),
    ("stack_lstm", lambda s: s[:1], r"state has structure .*a tuple of 2 LSTMLayer states"),
]


@pytest.mark.parametrize("name, spoil, message", BAD_STATES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_STATES)])
def test_bad_state_is_refused(name, spoil, message):
    layer = LAYERS[name]()
    with pytest.raises(ValueError, match=message + ".*Pass None for a fresh sequence"):
        trace_init(layer, x_ok(), spoil(fresh_state(name, layer)))


@pytest.mark.parametrize("name", [n for n in LAYERS if n != "fakesr"])  # fakesr: state ()
def test_state_of_another_batch_size_is_refused(name):
    layer = LAYERS[name]()
    with pytest.raises(ValueError, match=r"state\S* has shape \[3, .*; B = 2 from x\)"):
        trace_init(layer, x_ok(), fresh_state(name, layer, batch=3))


def test_feed_forward_checks_x():
    with pytest.raises(ValueError, match="FeedForward: x must be a floating-point array, got "
                                         "dtype int32"):
        jax.eval_shape(lambda: layers.FeedForward(4).init(jax.random.key(0),
                                                          jnp.zeros((B, T, D), jnp.int32)))
