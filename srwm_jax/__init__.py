"""srwm-jax: self-referential weight matrices and fast weight programmers in JAX.

Functional core (pure functions, composable with jit / vmap / grad):
  srwm(x, W, *, input_softmax=False, reset=None, reset_weights=None, impl="auto") -> (y, W_T)
  delta_rule(q, k, v, beta, S0, *, reset=None, reset_state=None, impl="auto") -> (y, S_T)
Flax layers live in `srwm_jax.layers`; the plain step-by-step definitions (the reference for
every implementation) in `srwm_jax.reference`.
"""
from srwm_jax.ops.delta_rule import delta_rule, delta_rule_scan, delta_rule_step
from srwm_jax.ops.srwm import SRWMWeights, srwm, srwm_scan, srwm_step

__all__ = ["SRWMWeights", "srwm", "srwm_scan", "srwm_step",
           "delta_rule", "delta_rule_scan", "delta_rule_step"]
__version__ = "0.1.0"
