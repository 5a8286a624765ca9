"""Feature maps of the fast-weight layers, computed so that no finite input gives NaN or 0/0.

Legend: ... any leading axes, n the feature axis (a head's d).

DeltaNet (Schlag et al. 2021; original `elu_p1` + `sum_norm` in IDSIA/modern-srwm `layer.py`,
`elu_p1_sum_norm_eps` in its RL `torchbeast/layer.py`) maps keys and queries with
    phi(x) = elu(x) + 1 = exp(x) (x <= 0),  x + 1 (x > 0)
    sum_norm(x)_i = phi(x_i) / (sum_j phi(x_j) + eps)
Written literally (`jax.nn.elu(x) + 1.0`), phi is exactly 0 in float32 below x ~ -17.3 (the
exp(x) - 1 + 1 cancels; 2% off already at -14), so a head whose inputs are all that negative is
normalised as 0/0 = NaN and the NaN stays in the fast weights for the rest of the sequence.
Here phi uses exp(x) directly for x <= 0, and the normalisation divides numerator and
denominator by exp(c) for an integer c within one of max_j log phi(x_j) (the softmax trick):
    sum_norm(x)_i = e_i / (sum_j e_j + eps * exp(-c)),
    e_i = exp(x_i - c) if c < 0 (then x_i - c is exact), else phi(x_i) / exp(c)
The largest e_j is at least 1, so the denominator is never below 1: no 0/0 and no overflow for
any finite input, and the gradient is finite too.

Both functions compute in float32 (float64 for float64 input) and return the input's dtype,
so bfloat16 inputs get the float32 result rounded once. Measured against a 40-digit decimal
evaluation of the definition (tests/test_feature_maps.py): within 2 float32 ulps, or half a
bfloat16 ulp plus that; results below the smallest normal float may be flushed to zero.
"""
import jax.numpy as jnp
from jax import lax

_MAX_SHIFT = 64.0


def _compute_dtype(x):
    return jnp.promote_types(x.dtype, jnp.float32)


def elu_p1(x):
    """elu(x) + 1 elementwise: exp(x) for x <= 0, x + 1 for x > 0.

    Args:
      x: [...] floating-point array.
    Returns:
      [...] in x's dtype; positive for every input above float underflow (exp(x) > 0).
    Source: `elu_p1` in IDSIA/modern-srwm (layer.py), which computes F.elu(x) + 1.
    """
    return _phi(x.astype(_compute_dtype(x))).astype(x.dtype)


def _phi(xf):
    # exp of where(x > 0, 0, x) keeps the unselected branch finite, so the gradient of the
    # outer `where` is too (jnp.minimum would halve the gradient at the tie x = 0).
    positive = xf > 0
    return jnp.where(positive, xf + 1.0, jnp.exp(jnp.where(positive, 0.0, xf)))


def elu_p1_sum_norm(x, eps=0.0, axis=-1):
    """elu(x) + 1 normalised to sum one over `axis`: phi(x_i) / (sum_j phi(x_j) + eps).

    DeltaNet's key and query map (see the module docstring for how it stays finite).

    Args:
      x: [..., n] floating-point array.
      eps: float >= 0 added to the sum (0 in the few-shot code, 1e-5 in the original RL code).
      axis: the feature axis.
    Returns:
      [..., n] in x's dtype; every entry in [0, 1] and the entries sum to
      sum phi / (sum phi + eps) (1 for eps = 0), for every finite x.
    Raises:
      ValueError: if eps is negative or not finite.
    """
    eps = float(eps)
    if not 0.0 <= eps < float("inf"):
        raise ValueError(f"elu_p1_sum_norm: eps={eps} must be a finite number >= 0.")
    xf = x.astype(_compute_dtype(x))
    phi = _phi(xf)
    # c: an integer within one below max_j log phi(x_j) (and not below log eps), so the
    # largest shifted entry is >= 1 and eps * exp(-c) <= e. The ratio does not depend on c,
    # so no gradient flows through it.
    log_phi = jnp.where(xf > 0, jnp.log1p(jnp.where(xf > 0, xf, 0.0)), xf)
    c = jnp.max(log_phi, axis=axis, keepdims=True)
    if eps > 0:
        c = jnp.maximum(c, jnp.log(jnp.asarray(eps, xf.dtype)))
    c = lax.stop_gradient(jnp.minimum(jnp.floor(c), _MAX_SHIFT))
    # c < 0 (every x < 0): exp(x - c), and x - c is exact (both <= 0, |x - c| <= |x|), so
    # rows of very negative inputs keep full precision. c >= 0: phi(x) / exp(c), no rounded
    # difference at all. c is capped at _MAX_SHIFT because XLA may divide as a multiplication
    # by 1 / exp(c), which must not underflow; (x + 1) / e^64 cannot overflow (max float32 /
    # e^64 ~ 5e10, so neither can the sum). The inner where / maximum only keep the unselected
    # branch finite (a minimum would halve the gradient where x - c rounds to exactly 1).
    negative_row = c < 0
    shifted = jnp.where(negative_row, jnp.exp(jnp.where(negative_row, xf - c, 0.0)),
                        phi / jnp.exp(jnp.maximum(c, 0.0)))
    denominator = jnp.sum(shifted, axis=axis, keepdims=True)
    if eps > 0:
        denominator = denominator + eps * jnp.exp(-c)
    return (shifted / denominator).astype(x.dtype)


__all__ = ["elu_p1", "elu_p1_sum_norm"]
