"""SRWM on Mosaic GPU: not written yet; every configuration runs on the Triton kernels.

Why and what it would take: kernels/README.md ("Mosaic GPU").
"""


def srwm_mosaic_supported(x, W, *unused_args, **unused_kwargs) -> tuple[bool, str]:
    """(False, reason): there is no Mosaic GPU SRWM kernel; use impl='triton' (or 'pallas')."""
    return False, "no Mosaic GPU SRWM kernel yet (kernels/README.md); use impl='triton'"
