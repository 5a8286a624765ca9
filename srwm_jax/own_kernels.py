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


class KernelsUnavailable(ImportError):
    """srwm_jax's own Pallas kernel package is missing or fails to import."""


def own_kernels():
    """Returns the ``srwm_jax.kernels`` module.

    Raises:
      KernelsUnavailable: neither an installed ``srwm_jax.kernels`` nor a ``kernels/``
        folder next to ``srwm_jax/`` exists, or importing it failed (the message names why).
    """
    if NAME in sys.modules:
        return sys.modules[NAME]
    try:
        return importlib.import_module(NAME)
    except ModuleNotFoundError as e:
        if e.name != NAME:
            raise KernelsUnavailable(f"srwm_jax's Pallas kernels fail to import: {e!r}") from e
    folder = Path(__file__).resolve().parent.parent / "kernels"
    init = folder / "__init__.py"
    if not init.is_file():
        raise KernelsUnavailable(
            f"srwm_jax's Pallas kernels are missing (no {NAME} installed and no {init}): "
            "reinstall srwm-jax (pip install srwm-jax, or pip install . from a clone)")
    spec = importlib.util.spec_from_file_location(NAME, init, submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[NAME]
        raise KernelsUnavailable(f"srwm_jax's Pallas kernels in {folder} fail to import: {e!r}") from e
    return module
