"""Fused Pallas kernels for the delta rule (DeltaNet fast weights)."""
from .ops import (DeltaRuleBlockConfig, default_delta_rule_config,
                                    delta_rule_pallas, delta_rule_supported)

__all__ = ["DeltaRuleBlockConfig", "default_delta_rule_config", "delta_rule_pallas",
           "delta_rule_supported"]
