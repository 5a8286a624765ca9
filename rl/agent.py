"""IMPALA agent for ProcGen with a pluggable memory core (torchbeast_procgen/model.py semantics).

Legend: B batch (envs / unrolls), T time, A actions, H core width.

    frame [B, T, 64, 64, 3] uint8 ─ ResNet stem ([16, 32, 32], FC 256, ReLU) ─┐
    last reward [B, T] ─ clip to [-1, 1] ───────────────────────────────────── concat (257)
        ─ core ("ff": identity, "lstm": LSTM 256, memory kinds: Linear 257→128 + MemoryStack)
        ─ policy logits [B, T, A], baseline [B, T]

Every core has the same interface: `core(x [B, T, D], state, reset [B, T]) -> (y, new_state)` and
`core.initial_state(batch_size)` (zeros = fresh episode). `reset[b, t]` True means the state is
reset to fresh *before* step t is processed (torchbeast multiplies the state by (1 - done_t)).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from .envs import NUM_ACTIONS
from srwm_jax.layers import MEMORY_KINDS, LSTMLayer, MemoryStack, torch_uniform

# "ff" (no memory) plus every sequence layer of srwm_jax.layers ("lstm" and the fast-weight
# memories); the memory kinds run inside MemoryCore.
CORE_KINDS = ("ff",) + MEMORY_KINDS


class TorchDense(nn.Module):
    """Dense layer initialised like torch.nn.Linear."""
    features: int

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        return nn.Dense(self.features, kernel_init=torch_uniform(fan_in),
                        bias_init=torch_uniform(fan_in))(x)


class TorchConv3x3(nn.Module):
    """3x3 stride-1 'same' convolution initialised like torch.nn.Conv2d."""
    features: int

    @nn.compact
    def __call__(self, x):
        fan_in = 9 * x.shape[-1]
        return nn.Conv(self.features, (3, 3), padding=1, kernel_init=torch_uniform(fan_in),
                       bias_init=torch_uniform(fan_in))(x)


class ImpalaStem(nn.Module):
    """Espeholt et al. (2018) 15-layer ResNet: per stage conv → maxpool(3, s2) → 2 residual blocks.

    frames [N, 64, 64, 3] uint8 -> features [N, 256] (after the FC 256 + ReLU).
    """
    channels: tuple[int, ...] = (16, 32, 32)
    fc_size: int = 256

    @nn.compact
    def __call__(self, frames):
        x = frames.astype(jnp.float32) / 255.0
        for num_ch in self.channels:
            x = TorchConv3x3(num_ch)(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
            for _ in range(2):
                block_input = x
                x = TorchConv3x3(num_ch)(nn.relu(x))
                x = TorchConv3x3(num_ch)(nn.relu(x))
                x = x + block_input
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.relu(TorchDense(self.fc_size)(x))


class FeedForwardCore(nn.Module):
    """No memory: the identity, with an empty state."""

    def initial_state(self, batch_size: int):
        """The empty state ()."""
        del batch_size
        return ()

    def __call__(self, x, state, reset, deterministic: bool = True):
        del reset, deterministic
        return x, state


class MemoryCore(nn.Module):
    """Linear(257 → hidden) then the lead's `srwm_jax.layers.MemoryStack` (2 × [memory + FF])."""
    kind: str = "srwm"
    num_layers: int = 2
    hidden: int = 128
    num_heads: int = 8
    ff_dim: int = 512
    dropout: float = 0.0
    # The RL SR layer of the original code has no LayerNorm (out = h + proj(y)) and draws w_b
    # around 0 ("tried -1 for beta but 0 seems to be better", torchbeast/layer.py SRlayer).
    use_layer_norm: bool = False
    beta_init: float = 0.0
    # DeltaNet key/query normalisation (elu+1)(x) / (sum + eps): the original RL code adds 1e-5
    # (torchbeast/layer.py `elu_p1_sum_norm_eps`; the few-shot code adds nothing).
    sum_norm_eps: float = 1e-5
    # "unroll": backpropagate through the fast-weight states of the whole unroll; "step": the
    # original's per-step cut (its core is called once per step and returns detached states),
    # see srwm_jax.layers.
    state_gradient: str = "unroll"
    # "torch": the memory stack's projections and FF blocks as torch.nn.Linear (the original's);
    # "flax": Flax's Dense default.
    dense_init: str = "flax"

    def _stack(self, **kwargs):
        return MemoryStack(kind=self.kind, num_layers=self.num_layers, hidden=self.hidden,
                           num_heads=self.num_heads, ff_dim=self.ff_dim, dropout=self.dropout,
                           input_softmax=True, use_layer_norm=self.use_layer_norm,
                           beta_init=self.beta_init, sum_norm_eps=self.sum_norm_eps,
                           state_gradient=self.state_gradient, dense_init=self.dense_init,
                           **kwargs)

    def initial_state(self, batch_size: int):
        """Fresh MemoryStack state for `batch_size` sequences."""
        return self._stack(parent=None).initial_state(batch_size)

    @nn.compact
    def __call__(self, x, state, reset, deterministic: bool = True):
        x = TorchDense(self.hidden)(x)
        return self._stack()(x, state, reset, deterministic=deterministic)


class Agent(nn.Module):
    """Policy/value network. `__call__(frames, last_rewards, reset, state)`;
    see module docstring."""
    num_actions: int = NUM_ACTIONS
    core_kind: str = "ff"
    lstm_hidden: int = 256
    memory: Any = None  # dict of MemoryCore fields (num_layers, hidden, num_heads, ff_dim, dropout,
                        # sum_norm_eps, state_gradient, dense_init)

    def setup(self):
        if self.core_kind not in CORE_KINDS:
            raise ValueError(f"core_kind must be one of {CORE_KINDS}, got {self.core_kind!r}")
        self.stem = ImpalaStem()
        self.core = self._make_core()
        self.policy = TorchDense(self.num_actions)
        self.baseline = TorchDense(1)

    def _make_core(self, **kwargs):
        if self.core_kind == "ff":
            return FeedForwardCore(**kwargs)
        if self.core_kind == "lstm":
            # torch.nn.LSTM parameterisation (torchbeast_procgen's core): torch init, two biases.
            return LSTMLayer(self.lstm_hidden, torch_init=True, **kwargs)
        return MemoryCore(kind=self.core_kind, **dict(self.memory or {}), **kwargs)

    def initial_state(self, batch_size: int):
        """Fresh-episode core state for `batch_size` envs (works on the unbound module)."""
        return self._make_core(parent=None).initial_state(batch_size)

    def __call__(self, frames, last_rewards, reset, state, deterministic: bool = True):
        """frames [B, T, 64, 64, 3] uint8, last_rewards [B, T], reset [B, T] bool.

        Returns (policy_logits [B, T, A], baseline [B, T]), new_state.
        """
        batch, time = frames.shape[:2]
        features = self.stem(frames.reshape((batch * time,) + frames.shape[2:]))
        features = features.reshape(batch, time, -1)
        clipped_reward = jnp.clip(last_rewards, -1.0, 1.0).astype(jnp.float32)[..., None]
        core_input = jnp.concatenate([features, clipped_reward], axis=-1)
        core_output, new_state = self.core(core_input, state, reset, deterministic=deterministic)
        logits = self.policy(core_output)
        baseline = self.baseline(core_output)[..., 0]
        return (logits, baseline), new_state


def make_agent(config) -> Agent:
    """Builds the agent described by `config.agent` (see configs/rl/default.py)."""
    agent_cfg = config.agent
    memory = dict(num_layers=agent_cfg.num_layers, hidden=agent_cfg.hidden,
                  num_heads=agent_cfg.num_heads, ff_dim=agent_cfg.ff_dim,
                  dropout=agent_cfg.dropout, sum_norm_eps=agent_cfg.sum_norm_eps,
                  state_gradient=agent_cfg.get("state_gradient", "unroll"),
                  dense_init=agent_cfg.get("dense_init", "flax"))
    return Agent(num_actions=config.num_actions, core_kind=agent_cfg.core,
                 lstm_hidden=agent_cfg.lstm_hidden, memory=memory)

