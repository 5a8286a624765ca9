"""srwm_jax.dispatch: the one place that turns an `impl` into the implementation that runs."""
import inspect
from typing import get_args

import jax
import jax.numpy as jnp
import pytest

import srwm_jax
from srwm_jax import layers
from srwm_jax.dispatch import IMPLS, Impl, resolve_impl


def _srwm_args(d):
    x = jnp.zeros((1, 2, 1, d))
    return x, srwm_jax.SRWMWeights(*(jnp.zeros((1, 1, d, n)) for n in (d, d, d, 4)))


def test_impl_is_one_literal_used_by_ops_and_layers():
    assert IMPLS == get_args(Impl) == ("auto", "scan", "pallas", "pallas_interpret", "chunked")
    for op in (srwm_jax.srwm, srwm_jax.delta_rule):
        assert inspect.signature(op).parameters["impl"].annotation is Impl
    for layer in (layers.SRWMLayer, layers.DeltaNetLayer, layers.SRDeltaNetLayer,
                  layers.MemoryStack):
        assert layer.__annotations__["impl"] is Impl


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="'auto' picks the kernel on GPU")
def test_resolve_impl(monkeypatch):
    ok_args, bad_args = _srwm_args(16), _srwm_args(3)  # d=3: no kernel for that head dim
    assert resolve_impl("srwm", "scan", "srwm_supported", *bad_args) == "scan"
    assert resolve_impl("srwm", "auto", "srwm_supported", *ok_args) == "scan"  # not on a GPU
    interpret = "pallas_interpret"
    assert resolve_impl("srwm", interpret, "srwm_supported", *ok_args) == interpret
    with pytest.raises(ValueError, match=r"impl='pallas_interpret' does not support .*d=3"):
        resolve_impl("srwm", "pallas_interpret", "srwm_supported", *bad_args)
    assert resolve_impl("delta_rule", "chunked", "delta_rule_supported") == "chunked"
    with pytest.raises(ValueError, match=r"srwm: impl='chunked' exists for the delta rule only"):
        resolve_impl("srwm", "chunked", "srwm_supported", *ok_args)
    with pytest.raises(ValueError, match=r"unknown impl='cuda'; choose one of"):
        resolve_impl("srwm", "cuda", "srwm_supported", *ok_args)
    # On a GPU "auto" asks the kernel; SRWM_JAX_AUTO_KERNEL=0 makes it skip the kernel.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_impl("srwm", "auto", "srwm_supported", *ok_args) == "pallas"
    assert resolve_impl("srwm", "auto", "srwm_supported", *bad_args) == "scan"
    monkeypatch.setenv("SRWM_JAX_AUTO_KERNEL", "0")
    assert resolve_impl("srwm", "auto", "srwm_supported", *ok_args) == "scan"
