"""V-trace off-policy targets (Espeholt et al., 2018, Sec. 4.1), as in torchbeast's `vtrace.py`.

Shapes (time-major, like torchbeast): T unroll length, B batch.

The recursion computed here (Remark 1 of the IMPALA paper) is

        v_s - V(x_s) = δ_s + γ_s c_s (v_{s+1} - V(x_{s+1})),
        δ_s = ρ_s (r_s + γ_s V(x_{s+1}) - V(x_s)),
        ρ_s = min(ρ̄, π(a_s|x_s) / μ(a_s|x_s)),   c_s = min(c̄, π/μ),

with v_T = V(x_T) = `bootstrap_value`; the policy-gradient advantage is
ρ^pg_s (r_s + γ_s v_{s+1} - V(x_s)). No λ (λ = 1), no gradient through the targets.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class VTraceReturns(NamedTuple):
    """V-trace value targets and policy-gradient advantages (time-major)."""
    vs: jax.Array             # [T, B] value targets v_s
    pg_advantages: jax.Array  # [T, B] ρ^pg_s (r_s + γ_s v_{s+1} - V(x_s))


def vtrace_from_importance_weights(
        log_rhos: jax.Array,
        discounts: jax.Array,
        rewards: jax.Array,
        values: jax.Array,
        bootstrap_value: jax.Array,
        clip_rho_threshold: float | None = 1.0,
        clip_pg_rho_threshold: float | None = 1.0,
        clip_c_threshold: float = 1.0,
) -> VTraceReturns:
    """V-trace from log importance weights log(π/μ).

    Args:
        log_rhos: [T, B] log π(a_t|x_t) - log μ(a_t|x_t).
        discounts: [T, B] γ_t, zero where the episode ended after step t.
        rewards: [T, B] r_t (already clipped by the caller).
        values: [T, B] V(x_t) under the learner's parameters.
        bootstrap_value: [B] V(x_T).
        clip_rho_threshold: ρ̄ (None: no clipping).
        clip_pg_rho_threshold: ρ̄ for the policy-gradient advantage (None: no clipping).
        clip_c_threshold: c̄.

    Returns:
        `VTraceReturns` with gradients stopped.
    """
    rhos = jnp.exp(log_rhos)
    clipped_rhos = rhos if clip_rho_threshold is None else jnp.minimum(clip_rho_threshold, rhos)
    cs = jnp.minimum(clip_c_threshold, rhos)
    values_t_plus_1 = jnp.concatenate([values[1:], bootstrap_value[None]], axis=0)
    deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)

    def backward_step(acc, inputs):
        delta_t, discount_t, c_t = inputs
        acc = delta_t + discount_t * c_t * acc
        return acc, acc

    _, vs_minus_v = jax.lax.scan(
            backward_step, jnp.zeros_like(bootstrap_value), (deltas, discounts, cs), reverse=True)
    vs = vs_minus_v + values
    vs_t_plus_1 = jnp.concatenate([vs[1:], bootstrap_value[None]], axis=0)
    clipped_pg_rhos = rhos if clip_pg_rho_threshold is None else jnp.minimum(
            clip_pg_rho_threshold, rhos)
    pg_advantages = clipped_pg_rhos * (rewards + discounts * vs_t_plus_1 - values)
    return VTraceReturns(jax.lax.stop_gradient(vs), jax.lax.stop_gradient(pg_advantages))


def vtrace_from_logits(
        behaviour_logits: jax.Array,
        target_logits: jax.Array,
        actions: jax.Array,
        discounts: jax.Array,
        rewards: jax.Array,
        values: jax.Array,
        bootstrap_value: jax.Array,
        clip_rho_threshold: float | None = 1.0,
        clip_pg_rho_threshold: float | None = 1.0,
) -> VTraceReturns:
    """V-trace from policy logits. behaviour/target logits: [T, B, A]; actions: [T, B] int."""
    log_rhos = (action_log_probs(target_logits, actions)
                            - action_log_probs(behaviour_logits, actions))
    return vtrace_from_importance_weights(
            log_rhos, discounts, rewards, values, bootstrap_value,
            clip_rho_threshold=clip_rho_threshold, clip_pg_rho_threshold=clip_pg_rho_threshold)


def action_log_probs(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """log softmax(logits)[action]; logits [..., A], actions [...] -> [...]."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(log_probs, actions[..., None], axis=-1)[..., 0]
