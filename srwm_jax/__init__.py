"""srwm-jax: self-referential weight matrices and fast weight programmers in JAX.

Functional core (pure functions, composable with jit / vmap / grad):
  srwm(x, W, *, input_softmax=False, impl="auto") -> (y, W_T)
  delta_rule(q, k, v, beta, S0, *, impl="auto") -> (y, S_T)
Flax layers live in `srwm_jax.layers`.
"""
from srwm_jax.ops.delta_rule import delta_rule, delta_rule_scan, delta_rule_step
from srwm_jax.ops.srwm import SRWMWeights, srwm, srwm_scan, srwm_step

__all__ = ["SRWMWeights", "srwm", "srwm_scan", "srwm_step",
           "delta_rule", "delta_rule_scan", "delta_rule_step"]
__version__ = "0.1.0"
