"""Switches that restore the original code's computation (issue 19), against float64 references.

- state_gradient="step": the original RL layers (IDSIA/modern-srwm reinforcement_learning/
  torchbeast/layer.py SRlayer, FastFFlayer, SMFWPlayer, run one step per call by
  torchbeast_procgen/model.py) read a detached state at every step. The references below are
  written here, step by step in float64, with that detach (jax.lax.stop_gradient) on the state
  before every step; gradients of every parameter and of the input must match.
- dense_init="torch": torch.nn.Linear's U(+-1/sqrt(fan_in)) weight and bias; parameter counts
  as the original's modules.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.rl.default import get_config as rl_config
from rl.agent import MemoryCore, make_agent
from srwm_jax.layers import DeltaNetLayer, SRDeltaNetLayer, SRWMLayer
from tests.reference_helpers import random_reset, rel_err, to64

sg = jax.lax.stop_gradient
B, T, H, d = 2, 6, 2, 4
D = H * d
# float32 layer vs float64 reference over 6 steps of O(1) values: rounding ~1e-6 relative.
TOL = 2e-5


def _softmax(x):
    e = jnp.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def _mv(v, m):
    """v [B, H, i] @ m [B, H, i, o]."""
    return jnp.einsum("bhi,bhio->bho", v, m)


def _delta_update(m, k, rate, target):
    """m + outer(k, rate * (target - k m)) per (batch, head)."""
    return m + k[..., :, None] * (rate[..., None] * (target - _mv(k, m)))[..., None, :]


def _srwm_step_detached(slow, change, x_t, r_t):
    """One original RL SR step: W = slow + detached change (0 after a reset); read, then update.

    slow: (y, q, k, b) [H, d, *]; change: same with a leading B; x_t [B, H, d] -> (change, y_t)."""
    change = tuple(jnp.where(r_t[:, None, None, None], 0.0, sg(c)) for c in change)
    W = tuple(s[None] + c for s, c in zip(slow, change))
    a = _softmax(x_t)
    y = _mv(a, W[0])
    q, k = _softmax(_mv(a, W[1])), _softmax(_mv(a, W[2]))
    rates = _sigmoid(_mv(a, W[3]))
    new = tuple(_delta_update(m, k, rates[..., i], _mv(q, m)) for i, m in enumerate(W))
    return tuple(sg(n - s[None]) for n, s in zip(new, slow)), y


def _delta_step_detached(S, q, k, v, beta, r_t):
    """One step of the original's delta-rule function: no gradient into S; y read after the
    update."""
    S = jnp.where(r_t[:, None, None, None], 0.0, sg(S))
    S = _delta_update(S, k, beta, v)
    return S, _mv(q, S)


def _slow(p):
    return tuple(p["slow"][n] for n in ("W_y", "W_q", "W_k", "w_b"))


def ref_srwm_layer(p, h, reset):
    """RL SRlayer: out = h + proj(srwm(softmax(h heads))), no LayerNorm."""
    slow, x = _slow(p), h.reshape(B, T, H, d)
    change = tuple(jnp.zeros((B,) + s.shape) for s in slow)
    ys = []
    for t in range(T):
        change, y = _srwm_step_detached(slow, change, x[:, t], reset[:, t])
        ys.append(y.reshape(B, D))
    return h + jnp.stack(ys, 1) @ p["out_proj"]["kernel"]


def ref_deltanet_layer(p, x, reset, eps=1e-5):
    """RL FastFFlayer: LN -> projection -> (elu+1) sum-norm (eps) q, k, sigmoid beta
    -> delta rule."""
    mu = x.mean(-1, keepdims=True)
    ln = (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    ln = ln * p["LayerNorm_0"]["scale"] + p["LayerNorm_0"]["bias"]
    qkvb = (ln @ p["slow_proj"]["kernel"]).reshape(B, T, H, 3 * d + 1)
    elu_p1 = lambda z: jnp.where(z > 0, z + 1.0, jnp.exp(z))  # noqa: E731
    norm = lambda z: elu_p1(z) / (elu_p1(z).sum(-1, keepdims=True) + eps)  # noqa: E731
    q, k, v = norm(qkvb[..., :d]), norm(qkvb[..., d:2 * d]), qkvb[..., 2 * d:3 * d]
    beta = _sigmoid(qkvb[..., 3 * d])
    S, ys = jnp.zeros((B, H, d, d)), []
    for t in range(T):
        S, y = _delta_step_detached(S, q[:, t], k[:, t], v[:, t], beta[:, t], reset[:, t])
        ys.append(y.reshape(B, D))
    return x + jnp.stack(ys, 1) @ p["out_proj"]["kernel"]


def ref_srdelta_layer(p, h, reset):
    """SMFWPlayer (as the paper describes it): SRWM -> q, k softmax, v, beta sigmoid
    -> delta rule."""
    slow, x = _slow(p), h.reshape(B, T, H, d)
    change = tuple(jnp.zeros((B,) + s.shape) for s in slow)
    S, ys = jnp.zeros((B, H, d, d)), []
    for t in range(T):
        change, qkvb = _srwm_step_detached(slow, change, x[:, t], reset[:, t])
        q, k = _softmax(qkvb[..., :d]), _softmax(qkvb[..., d:2 * d])
        S, y = _delta_step_detached(S, q, k, qkvb[..., 2 * d:3 * d], _sigmoid(qkvb[..., 3 * d]),
                                    reset[:, t])
        ys.append(y.reshape(B, D))
    return h + jnp.stack(ys, 1) @ p["out_proj"]["kernel"]


LAYERS = {
    "srwm": (lambda mode: SRWMLayer(H, d, input_softmax=True, use_layer_norm=False, beta_init=0.0,
                                    impl="scan", state_gradient=mode), ref_srwm_layer),
    "deltanet": (lambda mode: DeltaNetLayer(H, d, sum_norm_eps=1e-5, impl="scan",
                                            state_gradient=mode), ref_deltanet_layer),
    "srdelta": (lambda mode: SRDeltaNetLayer(H, d, impl="scan", state_gradient=mode),
                ref_srdelta_layer),
}


def _setup(kind):
    kx, kr, kc, kp = jax.random.split(jax.random.key(19), 4)
    h = jax.random.normal(kx, (B, T, D))
    reset = random_reset(kr, B, T)
    cot = jax.random.normal(kc, (B, T, D))
    params = LAYERS[kind][0]("step").init(kp, h)["params"]
    return h, reset, cot, params


def _layer_grads(kind, mode, params, h, reset, cot):
    layer = LAYERS[kind][0](mode)

    def loss(p, h):
        return jnp.sum(layer.apply({"params": p}, h, None, reset)[0] * cot)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, h)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_step_gradients_equal_per_step_detached_float64_reference(kind):
    h, reset, cot, params = _setup(kind)
    g_params, g_h = _layer_grads(kind, "step", params, h, reset, cot)
    with jax.enable_x64(True):
        ref = LAYERS[kind][1]
        out64 = ref(to64(params), to64(h), reset)
        r_params, r_h = jax.jit(jax.grad(lambda p, x: jnp.sum(ref(p, x, reset) * to64(cot)),
                                         argnums=(0, 1)))(to64(params), to64(h))
    out = LAYERS[kind][0]("step").apply({"params": params}, h, None, reset)[0]
    assert rel_err(out, out64) < TOL
    assert rel_err(g_h, r_h) < TOL
    flat, flat_ref = jax.tree.leaves_with_path(g_params), jax.tree.leaves(r_params)
    for (path, g), r in zip(flat, flat_ref):
        if np.linalg.norm(np.asarray(r)) == 0:
            assert np.all(np.asarray(g) == 0), jax.tree_util.keystr(path)
        else:
            assert rel_err(g, r) < TOL, (jax.tree_util.keystr(path), rel_err(g, r))


@pytest.mark.parametrize("kind", ["srwm", "srdelta"])
def test_step_mode_gives_srwm_qkb_no_gradient_unroll_does(kind):
    """Under the original's per-step cut the SRWM's W_q, W_k, w_b only shape later states, which
    are constants: zero gradient. W_y still learns from each step's direct read."""
    h, reset, cot, params = _setup(kind)
    step, _ = _layer_grads(kind, "step", params, h, reset, cot)
    unroll, _ = _layer_grads(kind, "unroll", params, h, reset, cot)
    for name in ("W_q", "W_k", "w_b"):
        assert np.all(np.asarray(step["slow"][name]) == 0), name
        assert np.linalg.norm(np.asarray(unroll["slow"][name])) > 1e-3, name
    assert np.linalg.norm(np.asarray(step["slow"]["W_y"])) > 1e-3
    assert rel_err(step["slow"]["W_y"], unroll["slow"]["W_y"]) > 1e-3


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_step_mode_forward_and_state_equal_unroll(kind):
    h, reset, _, params = _setup(kind)
    layer_step, layer_unroll = LAYERS[kind][0]("step"), LAYERS[kind][0]("unroll")
    half = T // 2
    out_a, s_a = layer_step.apply({"params": params}, h[:, :half], None, reset[:, :half])
    out_b, s_b = layer_step.apply({"params": params}, h[:, half:], s_a, reset[:, half:])
    out_u, s_u = layer_unroll.apply({"params": params}, h, None, reset)
    assert rel_err(jnp.concatenate([out_a, out_b], 1), out_u) < 1e-5
    for a, b in zip(jax.tree.leaves(s_b), jax.tree.leaves(s_u)):
        assert rel_err(a, b) < 1e-5


def test_bad_state_gradient_raises():
    h = jnp.zeros((B, T, D))
    with pytest.raises(ValueError, match="state_gradient"):
        SRWMLayer(H, d, state_gradient="per_step").init(jax.random.key(0), h)


# --- dense initialisation and parameter counts -------------------------------------------

def _original_param_count(kind, in_dim=257, hidden=128, heads=8, ff=512, layers=2):
    """Parameters of the original RL cores (torchbeast/layer.py): input_proj Linear(257, 128);
    per layer the memory layer + TransformerFFlayers
    (LayerNorm, Linear(128, 512), Linear(512, 128)).
    SRlayer, PseudoSRlayer and SMFWPlayer also register a LayerNorm their forward never uses
    (2 * hidden parameters each, returned separately)."""
    dh = hidden // heads
    ff_block = 2 * hidden + hidden * ff + ff + ff * hidden + hidden
    out_proj = hidden * hidden
    memory, unused = {
        "srwm": (3 * heads * dh * dh + heads * dh * 4 + out_proj, 2 * hidden),
        "srdelta": (heads * dh * (3 * dh + 1) + 2 * heads * dh * dh + heads * dh * 4 + out_proj,
                    2 * hidden),
        "fakesr": (heads * dh * dh + out_proj, 2 * hidden),
        "deltanet": (2 * hidden + hidden * heads * (3 * dh + 1) + out_proj, 0),
    }[kind]
    return in_dim * hidden + hidden + layers * (memory + unused + ff_block), layers * unused


def _core_params(kind, dense_init):
    core = MemoryCore(kind=kind, dense_init=dense_init)
    x = jnp.zeros((1, 2, 257))
    return core.init(jax.random.key(3), x, core.initial_state(1), jnp.zeros((1, 2), bool))["params"]


@pytest.mark.parametrize("kind", ["srwm", "deltanet", "srdelta", "fakesr"])
def test_rl_core_parameter_count_equals_original(kind):
    params = jax.eval_shape(lambda: _core_params(kind, "torch"))  # shapes only: no compile
    count = sum(np.prod(p.shape) for p in jax.tree.leaves(params))
    original, unused_layer_norms = _original_param_count(kind)
    assert count == original - unused_layer_norms


@pytest.mark.parametrize("kind", ["srwm", "deltanet"])
def test_torch_dense_init_bounds(kind):
    """Every Dense kernel and bias of the stack within U(+-1/sqrt(fan_in)) and filling it (std
    bound/sqrt(3)); Flax's default (std 1/sqrt(fan_in)) leaves those bounds."""
    def dense_leaves(params):
        out = []
        for path, leaf in jax.tree.leaves_with_path(params["MemoryStack_0"]):
            keys = [getattr(k, "key", "") for k in path]
            if keys[-1] == "kernel":
                parent = params["MemoryStack_0"]
                for k in keys[:-1]:
                    parent = parent[k]
                fan_in = leaf.shape[0]
                out.append((keys, leaf, fan_in))
                if "bias" in parent:
                    out.append((keys[:-1] + ["bias"], parent["bias"], fan_in))
        return out

    torch_leaves = dense_leaves(_core_params(kind, "torch"))
    assert len(torch_leaves) >= 6
    for keys, w, fan_in in torch_leaves:
        bound, w = fan_in ** -0.5, np.asarray(w)
        assert np.abs(w).max() <= bound, keys
        assert np.abs(w).max() > 0.8 * bound, keys
        if w.size >= 1000:
            assert abs(w.std() / (bound / 3 ** 0.5) - 1) < 0.1, keys
    flax_kernels = [(k, w, f) for k, w, f in dense_leaves(_core_params(kind, "flax"))
                    if k[-1] == "kernel"]
    assert any(np.abs(np.asarray(w)).max() > f ** -0.5 for _, w, f in flax_kernels)


def test_rl_config_reaches_memory_core():
    c = rl_config()
    c.agent.state_gradient = "step"
    agent = make_agent(c)
    assert agent.memory["state_gradient"] == "step"
    assert agent.memory["dense_init"] == c.agent.dense_init


def test_lstm_stack_torch_init_is_torch_lstm():
    """dense_init="torch" on the LSTM kind: torch.nn.LSTM's two biases and U(+-1/sqrt(hidden))."""
    from srwm_jax.layers import MemoryStack
    n = 8
    x = jnp.zeros((1, 3, 5))
    params = MemoryStack("lstm", num_layers=1, hidden=n, dense_init="torch").init(
        jax.random.key(0), x)["params"]["lstm_0"]
    assert "b_h" in params
    for w in jax.tree.leaves(params):
        assert np.abs(np.asarray(w)).max() <= n ** -0.5
    count = sum(np.size(w) for w in jax.tree.leaves(params))
    assert count == 4 * n * (5 + n + 2)  # torch.nn.LSTM(5, 8): W_ih, W_hh, b_ih, b_hh


def test_fewshot_torch_dense_init_and_paper_configs():
    """config.dense_init="torch": every Dense of the sequence model within U(+-1/sqrt(fan_in)),
    same parameter shapes as "flax"; the paper-table configs carry the original's settings."""
    import ml_collections

    from configs.fewshot import table1
    from configs.fewshot.omniglot_smoke import get_config
    from fewshot.models import SequenceLearner

    def params(dense_init):
        c = get_config()
        c.model, c.n_way, c.conv_channels, c.hidden_size, c.num_heads = "srwm", 5, 8, 16, 4
        c.dense_init = dense_init
        images, labels = jnp.zeros((1, 3, 28, 28, 1)), jnp.zeros((1, 3, 5))
        return SequenceLearner(ml_collections.FrozenConfigDict(c)).init(
            jax.random.key(0), images, labels, train=False)["params"]

    torch_p, flax_p = params("torch"), params("flax")
    assert jax.tree.map(np.shape, torch_p) == jax.tree.map(np.shape, flax_p)
    checked = 0
    for path, w in jax.tree.leaves_with_path(torch_p):
        keys = [getattr(k, "key", "") for k in path]
        if keys[0] == "Conv4_0" or keys[-1] not in ("kernel", "bias") or "LayerNorm" in keys[-2]:
            continue
        parent = torch_p
        for k in keys[:-1]:
            parent = parent[k]
        fan_in = parent["kernel"].shape[0]
        assert np.abs(np.asarray(w)).max() <= fan_in ** -0.5, keys
        checked += 1
    assert checked >= 8  # input_proj, 2 x (out_proj + 2 FF Dense with bias), classifier
    for row in ("omniglot,srwm,1", "miniimagenet,srwm,5"):
        c = table1.get_config(row)
        assert (c.beta_init, c.dense_init) == (0.0, "torch")


@pytest.mark.parametrize("backbone", ["conv4", "res12"])
def test_fewshot_torch_backbone_init(backbone):
    """config.backbone_init="torch" gives the original's conv init: conv4 torch.nn.Conv2d's
    default (kernel and bias U(+-1/sqrt(fan_in)), fan_in = in_channels x 9: max near the bound,
    std bound/sqrt(3)); res12 resnet_impl.py's kaiming_normal_(mode="fan_out", leaky_relu),
    std sqrt(2 / (out_channels x kernel area)). BatchNorm scale 1, bias 0; shapes as "flax"."""
    import ml_collections

    from configs.fewshot import table1
    from configs.fewshot.omniglot_smoke import get_config
    from fewshot.models import build_backbone

    def params(init):
        c = get_config()
        c.backbone, c.conv_channels, c.res12_channels, c.backbone_init = (
            backbone, 32, (16, 32, 32, 64), init)
        side, channels = (28, 1) if backbone == "conv4" else (32, 3)
        model = build_backbone(ml_collections.FrozenConfigDict(c))
        return model.init(jax.random.key(0), jnp.zeros((1, side, side, channels)),
                          train=False)["params"]

    torch_p, flax_p = params("torch"), params("flax")
    assert jax.tree.map(np.shape, torch_p) == jax.tree.map(np.shape, flax_p)
    checked = 0
    for path, w in jax.tree.leaves_with_path(torch_p):
        keys = [getattr(k, "key", "") for k in path]
        w = np.asarray(w, np.float64)
        if keys[-2].startswith("BatchNorm"):
            assert np.all(w == (1.0 if keys[-1] == "scale" else 0.0)), keys
            continue
        parent = torch_p
        for k in keys[:-1]:
            parent = parent[k]
        kh, kw, c_in, c_out = parent["kernel"].shape
        if backbone == "conv4":
            bound = (kh * kw * c_in) ** -0.5
            assert bound * 0.8 < np.abs(w).max() <= bound, keys
            if w.size >= 1000:
                assert abs(w.std() / (bound / 3 ** 0.5) - 1) < 0.1, keys
        else:
            assert keys[-1] == "kernel", keys  # no conv bias in Res-12
            std = (2.0 / (kh * kw * c_out)) ** 0.5
            assert abs(w.std() / std - 1) < (0.1 if w.size >= 1000 else 0.5), keys
            assert np.abs(w).max() > 2.5 * std, keys  # untruncated normal tails (n >= 256)
        checked += 1
    assert checked == (8 if backbone == "conv4" else 16)
    for row in ("omniglot,srwm,1", "miniimagenet,srwm,5"):
        assert table1.get_config(row).backbone_init == "torch"


def test_rl_original_code_config_is_the_paper_setting_with_the_per_step_cut():
    """configs/rl/original_code.py differs from the paper setting only in the switch of the
    deviations table that is not the original's by default, and it reaches the memory core."""
    from configs.rl import original_code
    from srwm_jax.training.run_config import flatten

    default, original = (flatten(rl_config().to_dict()),
                         flatten(original_code.get_config().to_dict()))
    assert {k for k in default if default[k] != original[k]} == {"agent.state_gradient"}
    assert original["agent.state_gradient"] == "step"
    assert make_agent(original_code.get_config()).memory["state_gradient"] == "step"
