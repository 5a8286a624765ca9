#!/usr/bin/env bash
# Python 3.12 and 3.13 (pyenv) in fresh venvs, plus the installed-package checks.
#
# For each Python: a fresh venv, a non-editable `pip install ".[test]"`, rl/install_procgen.sh
# (its output must hold no pip "ERROR", and numpy / jax must not change), then a subset of the
# suite run from the clone: cells, the RL env trace, the RL loop (IMPALA, two actor threads) on
# ProcGen, and the download tests. Then, on the first Python only (they test packaging, not the
# interpreter):
#   - Hugging Face's `kernels` installed next to srwm-jax: both import, and srwm_jax's dispatch
#     runs its own kernels (impl="pallas_interpret") from another directory;
#   - the installed package, used from another directory (configs copied there, as a user's own),
#     trains and evaluates a shortened omniglot_smoke config;
#   - site-packages gets no top-level name from srwm-jax but srwm_jax.
# pip's cache (~/.cache/pip) is reused between runs. Usage: bash .ci/python_versions.sh
# Environment: PYTHONS (default "3.12.1 3.13.0"), CI_VENVS (default /tmp/srwm_jax_ci_venvs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENVS=${CI_VENVS:-/tmp/srwm_jax_ci_venvs}
PYTHONS=${PYTHONS:-"3.12.1 3.13.0"}
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
DATA=$ROOT/../shared/data
CELLS="delta_rule_matches_float64_loop or finite_differences or rectangular_y or bf16 or bad_shapes or auto_uses_scan"
start=$(date +%s)
first=1
for version in $PYTHONS; do
  echo "=== Python $version"
  venv=$VENVS/py$version
  rm -rf "$venv"
  "$(pyenv prefix "$version")/bin/python" -m venv "$venv"
  py=$venv/bin/python
  "$py" -m pip install -q "$ROOT[test]"
  before=$("$py" -m pip list --format=freeze 2>/dev/null | grep -Ei '^(numpy|jax|jaxlib)==')
  log=$(mktemp)
  PYTHON=$py bash "$ROOT/rl/install_procgen.sh" 2>&1 | tee "$log" | grep -v '^WARNING: Location'
  if grep -q 'ERROR' "$log"; then echo "FAIL: install_procgen.sh printed an ERROR"; exit 1; fi
  after=$("$py" -m pip list --format=freeze 2>/dev/null | grep -Ei '^(numpy|jax|jaxlib)==')
  if [ "$before" != "$after" ]; then echo "FAIL: numpy/jax changed: $before -> $after"; exit 1; fi
  (cd "$ROOT" && "$py" -m pytest -q -p no:cacheprovider tests/test_ops.py -k "$CELLS" \
   && "$py" -m pytest -q -p no:cacheprovider tests/test_rl_envs.py tests/test_download.py \
     "tests/test_rl_sebulba.py::test_procgen_two_actor_threads_end_to_end")
  if [ $first = 1 ]; then
    first=0
    away=$(mktemp -d)
    # The installed files only: no top-level name but srwm_jax (and its dist-info).
    (cd "$away" && "$py" - <<'EOF'
import importlib.metadata as m
tops = {f.parts[0] for f in m.distribution("srwm-jax").files if not f.parts[0].endswith(".dist-info")}
assert tops == {"srwm_jax"}, f"srwm-jax installs top-level {sorted(tops)}"
print("installed top-level names:", sorted(tops))
EOF
    )
    "$py" -m pip install -q kernels
    (cd "$away" && "$py" - <<'EOF'
import sys
import jax.numpy as jnp
import kernels  # Hugging Face's
import srwm_jax
assert "site-packages/kernels/" in kernels.__file__ and hasattr(kernels, "get_kernel"), kernels.__file__
q = k = jnp.full((1, 8, 2, 16), 0.25); v = jnp.ones((1, 8, 2, 16)); beta = jnp.ones((1, 8, 2))
S0 = jnp.zeros((1, 2, 16, 16))
y, _ = srwm_jax.delta_rule(q, k, v, beta, S0, impl="pallas_interpret")
ref, _ = srwm_jax.delta_rule(q, k, v, beta, S0, impl="scan")
assert float(jnp.abs(y - ref).max()) < 1e-5
own = sys.modules["srwm_jax.kernels"].__file__
assert "site-packages/srwm_jax/kernels/" in own, own
print("HF kernels", kernels.__file__, "| srwm_jax kernels", own)
EOF
    )
    cp -r "$ROOT/configs" "$away/configs"
    (cd "$away" && SRWM_JAX_DATA=$DATA "$py" -m srwm_jax.fewshot.train \
        --config configs/fewshot/omniglot_smoke.py --workdir run --config.total_steps=20 \
        --config.eval_every_steps=20 --config.checkpoint_every_steps=20 --config.val_episodes=20 \
        --config.log_every_steps=10 \
     && SRWM_JAX_DATA=$DATA "$py" -m srwm_jax.fewshot.evaluate --workdir run \
        --num_sets 2 --episodes_per_set 10 --split test \
     && "$py" -c "import srwm_jax.fewshot.train as t; assert 'site-packages' in t.__file__, t.__file__")
    rm -rf "$away"
  fi
  echo "=== Python $version done at $(( $(date +%s) - start )) s"
done
echo "python_versions.sh: OK in $(( $(date +%s) - start )) s"
