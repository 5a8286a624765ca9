"""Fused Pallas kernels for the self-referential weight matrix (SRWM)."""
from .ops import SRWMBlockConfig, default_srwm_config, srwm_pallas, srwm_supported

__all__ = ["SRWMBlockConfig", "default_srwm_config", "srwm_pallas", "srwm_supported"]
