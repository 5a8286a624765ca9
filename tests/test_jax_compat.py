"""srwm_jax.jax_compat: the helpers behave the same on every supported jax, and CI's rule that a
jax DeprecationWarning raised from our modules is an error (pyproject's filterwarnings) holds."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from srwm_jax import jax_compat


def test_single_device_sharding_places_the_whole_array_on_that_device():
    device = jax.devices()[0]
    sharding = jax_compat.single_device_sharding(device)
    x = jax.device_put(np.arange(6.0).reshape(2, 3), sharding)
    assert x.sharding.device_set == {device}
    np.testing.assert_array_equal(np.asarray(x), np.arange(6.0).reshape(2, 3))
    struct = jax.ShapeDtypeStruct((2, 3), jnp.float32, sharding=sharding)
    assert struct.sharding == sharding


def test_lowering_for_cuda_without_a_gpu_or_plugin():
    """The abstract GPU mesh (jax >= 0.11) or nothing (0.10) lets a plain function lower for
    CUDA on this CPU machine."""
    x = jnp.ones((4,), jnp.float32)
    with jax_compat.gpu_lowering_context():
        lowered = jax.jit(lambda a: a * 2).trace(x).lower(lowering_platforms=("cuda",))
    assert "multiply" in lowered.as_text()


def test_version_and_plugins():
    assert jax_compat.JAX_VERSION[:2] in {(0, 10), (0, 11), (0, 12)}, jax.__version__
    assert jax_compat.needs_abstract_gpu_mesh() == (jax_compat.JAX_VERSION[:2] >= (0, 11))
    assert set(jax_compat.installed_cuda_plugins()) <= set(jax_compat.CUDA_PLUGIN_MODULES)


def test_jax_deprecation_from_our_module_is_an_error(repo_root, tmp_path):
    """A jax DeprecationWarning attributed to a test module fails under the project's pytest
    configuration; another library's DeprecationWarning does not."""
    probe = tmp_path / "test_deprecation_probe.py"
    probe.write_text(
        "import warnings\n"
        "def test_jax_deprecation():\n"
        "    warnings.warn('jax.example_api is deprecated', DeprecationWarning)\n"
        "def test_other_deprecation():\n"
        "    warnings.warn('otherlib.api is deprecated', DeprecationWarning)\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-c", str(repo_root / "pyproject.toml"), "--rootdir", str(tmp_path),
                             str(probe)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "1 failed, 1 passed" in result.stdout, result.stdout[-2000:]
    assert "test_jax_deprecation" in result.stdout.split("short test summary")[-1]
