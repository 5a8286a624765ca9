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
    assert IMPLS == get_args(Impl) == ("auto", "scan", "pallas", "pallas_interpret", "triton",
                                       "triton_interpret", "mosaic", "mosaic_interpret",
                                       "chunked")
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
    for impl in ("pallas_interpret", "triton_interpret"):
        assert resolve_impl("srwm", impl, "srwm_supported", *ok_args) == "triton_interpret"
    with pytest.raises(ValueError, match=r"impl='pallas_interpret' does not support .*d=3"):
        resolve_impl("srwm", "pallas_interpret", "srwm_supported", *bad_args)
    assert resolve_impl("delta_rule", "chunked", "delta_rule_supported") == "chunked"
    with pytest.raises(ValueError, match=r"srwm: impl='chunked' exists for the delta rule only"):
        resolve_impl("srwm", "chunked", "srwm_supported", *ok_args)
    with pytest.raises(ValueError, match=r"unknown impl='cuda'; choose one of"):
        resolve_impl("srwm", "cuda", "srwm_supported", *ok_args)
    # On a GPU "auto" asks the kernel; SRWM_JAX_AUTO_KERNEL=0 makes it skip the kernel.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_impl("srwm", "auto", "srwm_supported", *ok_args) == "triton"
    assert resolve_impl("srwm", "auto", "srwm_supported", *bad_args) == "scan"
    monkeypatch.setenv("SRWM_JAX_AUTO_KERNEL", "0")
    assert resolve_impl("srwm", "auto", "srwm_supported", *ok_args) == "scan"


def _delta_args(dk, dv):
    q = jnp.zeros((1, 2, 1, dk))
    return q, q, jnp.zeros((1, 2, 1, dv)), jnp.zeros((1, 2, 1)), jnp.zeros((1, 1, dk, dv))


class _Device:
    def __init__(self, capability):
        self.compute_capability = capability


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="fakes the GPU generation")
def test_resolve_backend_by_gpu_generation(monkeypatch, caplog):
    """"pallas"/"auto" pick Mosaic GPU on Hopper where it supports the configuration, else
    Triton (the fallback logged once); explicit backends raise one clear error."""
    from srwm_jax import dispatch
    mosaic_ok = kernels_mosaic_available()
    delta_ok, delta_big = _delta_args(16, 16), _delta_args(64, 64)  # dk=64: no Mosaic kernel
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "devices", lambda: [_Device("9.0")])
    expect = "mosaic" if mosaic_ok else "triton"
    for impl in ("pallas", "auto"):
        assert resolve_impl("delta_rule", impl, "delta_rule_supported", *delta_ok) == expect
        assert resolve_impl("delta_rule", impl, "delta_rule_supported", *delta_big) == "triton"
        assert resolve_impl("srwm", impl, "srwm_supported", *_srwm_args(16)) == expect
    reset = jnp.zeros((1, 2), bool)  # masked calls stay on Triton (kernels/README.md)
    masked = (*delta_ok, reset)
    assert resolve_impl("delta_rule", "pallas", "delta_rule_supported", *masked) == "triton"
    srwm_masked = (*_srwm_args(64), reset)  # masked d=64: SMEM (kernels/README.md)
    assert resolve_impl("srwm", "pallas", "srwm_supported", *_srwm_args(16), reset) == expect
    assert resolve_impl("srwm", "pallas", "srwm_supported", *srwm_masked) == "triton"
    dispatch._logged.clear()
    caplog.clear()
    with caplog.at_level("WARNING", logger="srwm_jax"):
        for _ in range(3):
            resolve_impl("delta_rule", "auto", "delta_rule_supported", *delta_big)
    assert sum("trying Triton" in r.message for r in caplog.records) == 1
    why = "dk=64" if mosaic_ok else "needs jax >= 0.11"
    with pytest.raises(ValueError, match=rf"impl='mosaic' does not support .*{why}"):
        resolve_impl("delta_rule", "mosaic", "delta_rule_supported", *delta_big)
    why = "reset masks at d=64" if mosaic_ok else "needs jax >= 0.11"
    with pytest.raises(ValueError, match=rf"impl='mosaic_interpret' does not support .*{why}"):
        resolve_impl("srwm", "mosaic_interpret", "srwm_supported", *srwm_masked)
    assert resolve_impl("delta_rule", "triton", "delta_rule_supported", *delta_ok) == "triton"
    monkeypatch.setenv("SRWM_JAX_MOSAIC", "0")  # opt out of Mosaic GPU
    assert resolve_impl("delta_rule", "pallas", "delta_rule_supported", *delta_ok) == "triton"
    monkeypatch.delenv("SRWM_JAX_MOSAIC")
    monkeypatch.setattr(jax, "devices", lambda: [_Device("8.0")])  # Ampere: Triton only
    for impl in ("pallas", "auto"):
        assert resolve_impl("delta_rule", impl, "delta_rule_supported", *delta_ok) == "triton"


def kernels_mosaic_available():
    from srwm_jax.kernels.delta_rule.mosaic_ops import mosaic_available
    return mosaic_available()[0]


# Issue 24 kind 10: an empty batch (B = 0) or no heads (H = 0) on every impl, "auto" included:
# correctly shaped empty outputs and gradients (the kernels' grids cannot be empty).
@pytest.mark.parametrize("impl", ["scan", "pallas_interpret", "auto", "auto_on_gpu"])
@pytest.mark.parametrize("B, H", [(0, 2), (2, 0), (0, 0)])
def test_empty_batch_or_heads_give_empty_outputs_and_gradients(impl, B, H, monkeypatch):
    if impl == "auto_on_gpu":  # what "auto" chooses on a GPU (the kernel would be asked)
        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
        impl = "auto"
    T, d, dv = 3, 8, 8
    x = jnp.ones((B, T, H, d))
    W = srwm_jax.SRWMWeights(*(jnp.zeros((B, H, d, n)) for n in (dv, d, d, 4)))

    def srwm_loss(x, W):
        y, W_T = srwm_jax.srwm(x, W, impl=impl)
        assert y.shape == (B, T, H, dv) and W_T.y.shape == (B, H, d, dv)
        return y.sum() + sum(w.sum() for w in W_T)
    gx, gW = jax.grad(srwm_loss, argnums=(0, 1))(x, W)
    assert gx.shape == x.shape and all(g.shape == w.shape for g, w in zip(gW, W))

    q = k = jnp.ones((B, T, H, d))
    v, beta, S0 = jnp.ones((B, T, H, dv)), jnp.ones((B, T, H)), jnp.zeros((B, H, d, dv))

    def delta_loss(q, k, v, beta, S0):
        out, S_T = srwm_jax.delta_rule(q, k, v, beta, S0, impl=impl)
        assert out.shape == (B, T, H, dv) and S_T.shape == S0.shape
        return out.sum() + S_T.sum()
    grads = jax.grad(delta_loss, argnums=(0, 1, 2, 3, 4))(q, k, v, beta, S0)
    assert [g.shape for g in grads] == [a.shape for a in (q, k, v, beta, S0)]
