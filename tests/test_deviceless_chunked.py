"""The chunked delta rule compiles for a described TPU v5e (deviceless, on this CPU machine).

Needs the libtpu wheel (`pip install "jax[tpu]==0.11.2"`, Python 3.12 venv; see
benchmarks/RESULTS.md). Without it the test skips with the reason, except under CI=true,
where a missing wheel is a failure (CI must install it).
"""
import importlib.util
import os

import pytest


def _libtpu_or_skip():
    if importlib.util.find_spec("libtpu") is None:
        if unavailable := os.environ.get("SRWM_JAX_LIBTPU_UNAVAILABLE"):
            pytest.skip(unavailable)  # the wheel this jax pins is not served (CI says so)
        reason = "libtpu is not installed (bash benchmarks/install_libtpu.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must install it")
        pytest.skip(reason)


def test_chunked_compiles_for_tpu_v5e():
    _libtpu_or_skip()
    import jax.numpy as jnp

    from tests import deviceless_chunked as dc

    mesh = dc.tpu_mesh()
    for name, prog in dc.programs(64).items():
        seconds, mem = dc.compile_case("tpu", mesh, prog,
                                       dc.structs(mesh, 2, 300, 2, 64, jnp.bfloat16))
        # O(T*d) working memory: far below one [T, d, d] state per step (300*2*2*64*64*4 B).
        assert mem.temp_size_in_bytes < 300 * 2 * 2 * 64 * 64 * 4 / 4, (name, mem)
