"""Functional fast-weight operators: SRWM and the delta rule (scan references + dispatch)."""
