"""Few-shot sequence learners: a vision backbone per image, then a sequence model over episodes.

Legend: B episodes, L sequence length (N*K support + query), N ways, S image side,
C channels, F feature width, D hidden width.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from srwm_jax.layers import MemoryStack, ShortConv, dense, torch_uniform
from srwm_jax.vsml_layer import VSMLLayer

BACKBONE_INITS = ("flax", "torch")


def check_backbone_init(init: str) -> None:
    """Raises:
      ValueError: `init` is not one of BACKBONE_INITS."""
    if init not in BACKBONE_INITS:
        raise ValueError(f"backbone_init={init!r}: choose one of {BACKBONE_INITS}.")


def max_pool_2x2(x):
    """2x2 max-pool, stride 2, floor mode (odd edges dropped, as torch MaxPool2d).

    Written as a reshape + max: same values as nn.max_pool, but its gradient is elementwise,
    far faster on CPU than the select-and-scatter that reduce_window's gradient lowers to."""
    N, H, W, C = x.shape
    x = x[:, : H // 2 * 2, : W // 2 * 2]
    return x.reshape(N, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))


class Conv4(nn.Module):
    """4 x [Conv3x3 (bias) -> BatchNorm -> MaxPool 2 -> Dropout -> ReLU] (pool before ReLU, as the
    original), flattened. Omniglot 28 px, 64 channels -> F = 64.

    init_scheme "flax": Flax's Conv default (kernel lecun normal, zero bias); "torch":
    torch.nn.Conv2d's default, kernel and bias U(+-1/sqrt(fan_in)) with fan_in = 9 x input
    channels (the original's ConvSRWMModel / ConvDeltaModel / ConvLSTMModel set no init of their
    own)."""
    channels: int = 64
    dropout: float = 0.0
    init_scheme: str = "flax"

    @nn.compact
    def __call__(self, images, *, train):
        """images [M, S, S, C] -> features [M, F]."""
        check_backbone_init(self.init_scheme)
        x = images
        for _ in range(4):
            if self.init_scheme == "torch":
                uniform = torch_uniform(9 * x.shape[-1])
                conv = nn.Conv(self.channels, (3, 3), padding=1, kernel_init=uniform,
                               bias_init=uniform)
            else:
                conv = nn.Conv(self.channels, (3, 3), padding=1)
            x = conv(x)
            # torch BatchNorm momentum 0.1 == flax momentum 0.9.
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
            x = max_pool_2x2(x)
            x = nn.Dropout(self.dropout)(x, deterministic=not train)
            x = nn.relu(x)
        return x.reshape(x.shape[0], -1)


# torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="leaky_relu") with its default
# slope 0: normal with std sqrt(2 / fan_out), fan_out = output channels x kernel area
# (resnet_impl.py of the original).
_KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class _ResBlock12(nn.Module):
    channels: int
    dropout: float
    init_scheme: str = "flax"

    @nn.compact
    def __call__(self, x, *, train):
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)  # noqa: E731
        kernel_init = (_KAIMING_FAN_OUT if self.init_scheme == "torch"
                       else nn.initializers.lecun_normal())
        out = x
        for i in range(3):
            out = bn()(nn.Conv(self.channels, (3, 3), padding=1, use_bias=False,
                               kernel_init=kernel_init)(out))
            if i < 2:
                out = nn.leaky_relu(out, 0.1)
        shortcut = bn()(nn.Conv(self.channels, (1, 1), use_bias=False, kernel_init=kernel_init)(x))
        out = nn.leaky_relu(out + shortcut, 0.1)
        out = max_pool_2x2(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)


class ResNet12(nn.Module):
    """Res-12: four residual blocks (three 3x3 conv + BN + LeakyReLU(0.1), 1x1 shortcut),
    max-pool and dropout after each, global average pool. Feature = last channel count.

    init_scheme "flax": Flax's Conv default (lecun normal); "torch": the original's resnet_impl.py,
    kaiming normal with std sqrt(2 / fan_out). BatchNorm starts at scale 1, bias 0 in both."""
    channels: tuple = (64, 96, 128, 256)
    dropout: float = 0.0
    init_scheme: str = "flax"

    @nn.compact
    def __call__(self, images, *, train):
        """images [M, S, S, C] -> features [M, channels[-1]]."""
        check_backbone_init(self.init_scheme)
        x = images
        for c in self.channels:
            x = _ResBlock12(c, self.dropout, self.init_scheme)(x, train=train)
        return jnp.mean(x, axis=(1, 2))


def build_backbone(config):
    """The vision backbone of config.backbone: Conv4 or ResNet12.

    Raises:
      ValueError: unknown config.backbone."""
    init = config.backbone_init
    if config.backbone == "conv4":
        return Conv4(config.conv_channels, config.vision_dropout, init)
    if config.backbone == "res12":
        return ResNet12(tuple(config.res12_channels), config.vision_dropout, init)
    raise ValueError(f"config.backbone={config.backbone!r}: choose 'conv4' or 'res12'.")


class SequenceLearner(nn.Module):
    """Backbone features, concatenated with the one-hot label input, through a sequence model.

    model: "srwm" | "deltanet" | "lstm" (| "srdelta" | "fakesr"). For fast weights:
    Linear(F + N -> D) -> num_layers x [memory layer -> feed-forward block] -> Linear(D -> N).
    For the LSTM baseline: LSTM(F + N -> D) -> Linear(D -> N), as the original.
    config.short_conv K > 0 adds a causal depthwise convolution over the last K steps before
    the memory (not in the paper; see srwm_jax.layers.ShortConv). config.dense_init "torch"
    initialises every Dense of the sequence model (input projection, memory stack, classifier)
    as torch.nn.Linear, the original's; "flax" (the default) with Flax's Dense default.
    """
    config: object

    @nn.compact
    def __call__(self, images, label_inputs, *, train, state=None, parallel_queries=0):
        """images [B, L, S, S, C]; label_inputs [B, L, N] (one-hot or zeros) -> logits [B, L, N].

        parallel_queries Q > 0: the last Q steps are queries that each read the state left by
        the first L - Q steps independently (none sees another query); logits are then
        [B, Q, N] for the queries only and the returned state is the support state. Q = 1
        equals the plain sequence. All L images share one backbone call (one BatchNorm batch).
        """
        c = self.config
        dense_init = c.get("dense_init", "flax")
        B, L = images.shape[:2]
        feats = build_backbone(c)(images.reshape((B * L,) + images.shape[2:]), train=train)
        if c.model == "vsml":
            return self._vsml(feats.reshape(B, L, -1), label_inputs, state, parallel_queries)
        x = jnp.concatenate([feats.reshape(B, L, -1), label_inputs.astype(feats.dtype)], axis=-1)
        if c.model == "lstm":
            stack = MemoryStack("lstm", num_layers=c.num_layers, hidden=c.hidden_size, name="lstm")
        else:
            x = dense(c.hidden_size, x.shape[-1], dense_init, name="input_proj")(x)
            stack = MemoryStack(c.model, num_layers=c.num_layers, hidden=c.hidden_size,
                                num_heads=c.num_heads, ff_dim=c.hidden_size * c.ff_factor,
                                dropout=c.dropout, input_softmax=c.input_softmax,
                                use_layer_norm=True, beta_init=c.beta_init,
                                impl=c.impl, dense_init=dense_init, name="memory")
        short_conv = (ShortConv(c.short_conv, c.short_conv_init_std, name="short_conv")
                      if c.short_conv else None)

        def run(x, state):
            """The memory (after the short convolution, if any; its state is then (conv, stack))."""
            if short_conv is None:
                return stack(x, state, deterministic=not train)
            conv_state, stack_state = (None, None) if state is None else state
            x, conv_state = short_conv(x, conv_state)
            x, stack_state = stack(x, stack_state, deterministic=not train)
            return x, (conv_state, stack_state)

        Q = parallel_queries
        if not Q:
            x, state = run(x, state)
            return dense(c.n_way, x.shape[-1], dense_init, name="classifier")(x), state
        if not 0 < Q < L:
            raise ValueError(f"parallel_queries={Q} must be in [1, {L - 1}] for a sequence "
                             f"of {L} steps.")
        _, state = run(x[:, : L - Q], state)
        queries = x[:, L - Q:].reshape(B * Q, 1, x.shape[-1])
        y, _ = run(queries, repeat_per_query(state, Q))
        return (dense(c.n_way, y.shape[-1], dense_init, name="classifier")(y.reshape(B, Q, -1)),
                state)


    def _vsml(self, feats, label_inputs, state, parallel_queries):
        """model "vsml" (delayed-label task only): the backbone features [B, L, F] are the
        input units of a VSML network F -> N (srwm_jax.vsml_layer); label_inputs, the one-hot
        label of the previous step, are its error feedback targets. Logits: the output units'
        channel 0 times one learned temperature."""
        c = self.config
        if parallel_queries:
            raise ValueError("model='vsml' runs the delayed-label sequential task only (its "
                             "feedback is the previous step's label), not parallel queries.")
        hidden = (c.vsml_hidden_units,) if c.vsml_hidden_units else ()
        layer = VSMLLayer(feats.shape[-1], c.n_way, hidden=hidden, msg_size=c.vsml_msg_size,
                          state_size=c.vsml_state_size, micro_ticks=c.vsml_micro_ticks,
                          forget_offset=c.vsml_gate_offset, input_offset=-c.vsml_gate_offset,
                          name="vsml")
        y, state = layer(feats, state, feedback=label_inputs.astype(feats.dtype))
        return y * self.param("logit_scale", nn.initializers.constant(4.0), ()), state


def repeat_per_query(state, num_queries):
    """Recurrent state [B, ...] -> [B*Q, ...], episode b's copies at rows b*Q .. b*Q+Q-1 (the
    order of a [B, Q] query array reshaped to [B*Q]), so each query reads its own copy."""
    return jax.tree.map(lambda s: jnp.repeat(s, num_queries, axis=0), state)


def first_queries(batch, num_queries):
    """query_images [B, Q', ...] -> its first Q = num_queries queries [B, Q, ...]."""
    have = batch["query_images"].shape[1]
    if have < num_queries:
        raise ValueError(f"the batch holds {have} queries per episode, fewer than the "
                         f"{num_queries} requested.")
    return batch["query_images"][:, :num_queries]


def query_label_inputs(query_label, shape, n_way):
    """Label input of query steps [*shape, N]: "class0" a one-hot of class 0, as the original
    code does; "zeros" an all-zero vector."""
    if query_label == "class0":
        return jax.nn.one_hot(jnp.zeros(shape, jnp.int32), n_way)
    if query_label == "zeros":
        return jnp.zeros(tuple(shape) + (n_way,))
    raise ValueError(f"query_label={query_label!r}: choose 'class0' or 'zeros'.")


def sync_episode_inputs(batch, n_way, query_label="class0", num_queries=1):
    """Synchronous-label sequence (paper Fig. 2): support pairs, then the query.

    batch: support_images [B, NK, ...], support_labels [B, NK], query_images [B, Q', ...]; the
    first num_queries (Q) queries are used (the original uses one). query_label "class0" feeds
    the query a one-hot of class 0, as the original code does; "zeros" an all-zero vector.
    Returns images [B, NK+Q, ...], label inputs [B, NK+Q, N], targets [B] (Q = 1) or [B, Q].
    """
    Q = num_queries
    images = jnp.concatenate([batch["support_images"], first_queries(batch, Q)], axis=1)
    support = jax.nn.one_hot(batch["support_labels"], n_way)
    dummy = query_label_inputs(query_label, (support.shape[0], Q), n_way)
    targets = batch["query_labels"][:, 0] if Q == 1 else batch["query_labels"][:, :Q]
    return images, jnp.concatenate([support, dummy], axis=1), targets
