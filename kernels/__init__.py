"""Fused Pallas GPU kernels for SRWM and the delta rule (DeltaNet); see kernels/README.md.

    y, W_T = srwm_pallas(x, W, *, input_softmax, interpret=False)
    y, S_T = delta_rule_pallas(q, k, v, beta, S0, *, interpret=False)
    ok, reason = srwm_supported(x, W)
    ok, reason = delta_rule_supported(q, k, v, beta, S0)

    y, S_T = delta_rule_mosaic(q, k, v, beta, S0, *, interpret=False)   # Mosaic GPU (Hopper)
    y, W_T = srwm_mosaic(x, W, *, input_softmax, interpret=False)        # Mosaic GPU (Hopper)

``interpret=True`` runs the same kernels in Pallas interpret mode on any backend.
"""
from .delta_rule import delta_rule_pallas, delta_rule_supported
from .delta_rule.mosaic_ops import delta_rule_mosaic, delta_rule_mosaic_supported
from .srwm import srwm_pallas, srwm_supported
from .srwm.mosaic_ops import srwm_mosaic, srwm_mosaic_supported

__all__ = ["srwm_pallas", "srwm_supported", "delta_rule_pallas", "delta_rule_supported",
           "delta_rule_mosaic", "delta_rule_mosaic_supported", "srwm_mosaic",
           "srwm_mosaic_supported"]
