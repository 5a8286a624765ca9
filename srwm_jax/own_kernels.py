"""Imports this project's Pallas kernels, never another distribution's ``kernels``.

An installed srwm-jax ships the kernels as ``srwm_jax.kernels`` (pyproject maps the
repository's top-level ``kernels/`` folder there), so a different top-level ``kernels``
package (e.g. Hugging Face's) can coexist. In a source checkout that is not installed,
``srwm_jax.kernels`` does not exist as a folder: the ``kernels/`` folder next to
``srwm_jax/`` is loaded under the name ``srwm_jax.kernels`` instead (its imports are
relative, so they work under either name). The top-level name ``kernels`` is never used.
"""

import importlib
import importlib.util
import sys
from pathlib import Path

NAME = "srwm_jax.kernels"
API = ("srwm_pallas", "srwm_supported", "delta_rule_pallas", "delta_rule_supported")


class KernelsUnavailable(ImportError):
    """srwm_jax's own Pallas kernel package is missing or fails to import."""


def own_kernels():
    """Returns the ``srwm_jax.kernels`` module.

    Raises:
      KernelsUnavailable: neither an installed ``srwm_jax.kernels`` nor a ``kernels/``
        folder next to ``srwm_jax/`` exists, importing it failed, or it lacks the kernel
        functions (someone else's folder); the message names which.
    """
    if NAME in sys.modules:
        return _checked(sys.modules[NAME])
    try:
        return _checked(importlib.import_module(NAME))
    except ModuleNotFoundError as e:
        if e.name != NAME:
            raise KernelsUnavailable(f"srwm_jax's Pallas kernels fail to import: {e!r}") from e
    folder = Path(__file__).resolve().parent.parent / "kernels"
    init = folder / "__init__.py"
    if not init.is_file():
        raise KernelsUnavailable(
            f"srwm_jax's Pallas kernels are missing (no {NAME} installed and no {init}): "
            "reinstall srwm-jax (pip install srwm-jax, or pip install . from a clone)")
    spec = importlib.util.spec_from_file_location(NAME, init,
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[NAME]
        raise KernelsUnavailable(
            f"srwm_jax's Pallas kernels in {folder} fail to import: {e!r}") from e
    return _checked(module)


def _checked(module):
    missing = [name for name in API if not hasattr(module, name)]
    if missing:
        raise KernelsUnavailable(
            f"{module.__file__} is not srwm_jax's kernels (it lacks {', '.join(missing)}): "
            "reinstall srwm-jax")
    return module
