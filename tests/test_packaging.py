"""The distribution installs only `srwm_jax` (kernels/, fewshot/, rl/ as srwm_jax.*), and
srwm_jax runs its own kernels whatever else is called `kernels`.

The slow checks (a real wheel in fresh venvs, Hugging Face's `kernels` next to it, training from
another directory) are in .ci/python_versions.sh.
"""

import ast
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from srwm_jax import dispatch

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_installed_under_srwm_jax():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    folder_of = {"srwm_jax": "srwm_jax", **tool["package-dir"]}
    assert all(name.split(".")[0] == "srwm_jax" for name in listed), sorted(listed)
    expected = set()
    for name, folder in folder_of.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            expected.add(".".join((name, *rel)))
    assert listed == expected, f"pyproject packages {sorted(listed)} != folders {sorted(expected)}"


def test_folders_installed_under_srwm_jax_import_themselves_relatively():
    """kernels/, fewshot/ and rl/ are installed as srwm_jax.*: an absolute `from fewshot...`
    (or `import rl...`, `from kernels...`) inside them would only work from a clone."""
    bad = []
    for top in ("kernels", "fewshot", "rl"):
        for path in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                bad += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                        if n.split(".")[0] in ("kernels", "fewshot", "rl")]
    assert not bad, "use relative imports: " + ", ".join(bad)


def test_dispatch_ignores_another_top_level_kernels(monkeypatch):
    """A foreign `kernels` module (e.g. Hugging Face's) is neither used nor an error."""
    monkeypatch.setitem(sys.modules, "kernels", types.ModuleType("kernels"))
    assert dispatch.resolve_impl("delta_rule", "pallas_interpret", "delta_rule_supported",
                                 *_delta_args()) == "triton_interpret"
    import srwm_jax
    y, _ = srwm_jax.delta_rule(*_delta_args(), impl="pallas_interpret")
    ref, _ = srwm_jax.delta_rule(*_delta_args(), impl="scan")
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), atol=1e-5)
    assert sys.modules["srwm_jax.kernels"].__file__ == str(REPO / "kernels" / "__init__.py")


def _delta_args():
    q = k = jnp.full((1, 8, 2, 16), 0.25)
    return q, k, jnp.ones((1, 8, 2, 16)), jnp.ones((1, 8, 2)), jnp.zeros((1, 2, 16, 16))


@pytest.mark.slow
@pytest.mark.parametrize("foreign", [False, True])
def test_missing_own_kernels_is_a_clear_error(tmp_path, foreign):
    """srwm_jax without its kernels (none, or someone else's `kernels/` beside it): explicit
    pallas impls raise one clear error; scan still works."""
    shutil.copytree(REPO / "srwm_jax", tmp_path / "srwm_jax",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if foreign:
        (tmp_path / "kernels").mkdir()
        (tmp_path / "kernels" / "__init__.py").write_text("def get_kernel(): pass\n")
    # An editable install of this checkout maps srwm_jax.kernels to its kernels/ folder; drop
    # that finder so the copied srwm_jax really has no kernels of its own.
    script = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path\n"
        "                    if not getattr(f, '__module__', '').startswith('__editable__')]\n"
        "import jax.numpy as jnp, srwm_jax\n"
        "from srwm_jax.dispatch import KernelsUnavailable\n"
        "a = (jnp.ones((1, 4, 1, 8)),) * 3 + (jnp.ones((1, 4, 1)), jnp.zeros((1, 1, 8, 8)))\n"
        "srwm_jax.delta_rule(*a, impl='scan')\n"
        "try:\n"
        "    srwm_jax.delta_rule(*a, impl='pallas_interpret')\n"
        "except KernelsUnavailable as e:\n"
        "    print('ERROR', e)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    want = "is not srwm_jax's kernels" if foreign else "srwm_jax's Pallas kernels are missing"
    assert want in out.stdout and out.stdout.count("\n") == 1, out.stdout
