"""srwm-jax: self-referential weight matrices and fast weight programmers in JAX.

Functional core (pure functions, composable with jit / vmap / grad):
  srwm(x, W, *, input_softmax=False, reset=None, reset_weights=None, impl="auto") -> (y, W_T)
  delta_rule(q, k, v, beta, S0, *, reset=None, reset_state=None, impl="auto") -> (y, S_T)
Flax layers live in `srwm_jax.layers`; the plain step-by-step definitions (the reference for
every implementation) in `srwm_jax.reference`.
"""
import os as _os

# The Pallas kernels have one import name, `srwm_jax.kernels`. An installed srwm-jax holds them
# in srwm_jax/kernels (pyproject's package-dir); in a clone they are the repository's top-level
# kernels/ folder, beside this package, so the repository root joins this package's search
# path: `from srwm_jax.kernels import ...` then works from a clone, installed or not. (The
# clone's fewshot/ and rl/ become reachable as srwm_jax.fewshot / srwm_jax.rl the same way;
# the library never imports them under that name.)
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (not _os.path.isdir(_os.path.join(__path__[0], "kernels"))
        and _os.path.isfile(_os.path.join(_root, "kernels", "__init__.py"))):
    __path__.append(_root)
from srwm_jax.ops.delta_rule import delta_rule, delta_rule_scan, delta_rule_step  # noqa: E402
from srwm_jax.ops.srwm import SRWMWeights, srwm, srwm_scan, srwm_step  # noqa: E402

__all__ = ["SRWMWeights", "srwm", "srwm_scan", "srwm_step",
           "delta_rule", "delta_rule_scan", "delta_rule_step"]
__version__ = "0.1.0"
