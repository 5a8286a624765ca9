#!/usr/bin/env bash
# The other two supported jax versions, each in a fresh venv, plus the installed-package checks.
# The whole suite runs once, in .ci/run, on the system Python 3.11 = jax 0.10.2: that is the
# environment of the README's one-line test command (pip serves no newer jax on Python 3.11),
# and repeating its slow multi-process, data and training tests per jax would not fit CI's 45
# minutes; what depends on the jax version (ops, kernels, layers, dispatch, the H100 gate, the
# few-shot and RL smoke runs) runs on all three.
#
# Legs (LEGS, default "3.12.1:0.11.2 3.13.0:0.12.1", PYTHON:JAX):
#   Python 3.12.1 + jax 0.11.2: exactly the GPU nodes' versions: jax, jaxlib,
#     jax-cuda13-plugin and jax-cuda13-pjrt 0.11.2 (CUDA 13), pinned as constraints for every
#     later install;
#   Python 3.13.0 + jax 0.12.1 (the newest pip serves here) with its CUDA 13 plugin.
# For each: a fresh venv, the jax pins, a non-editable `pip install ".[test]"`,
# rl/install_procgen.sh (its output must hold no pip "ERROR", and numpy / jax must not change),
# then from the clone: every ops / kernels / layers / dispatch test (test_ops,
# test_feature_maps, test_sequential, test_kernels, test_layers, test_layer_validation,
# test_dispatch), the H100 gate (test_h100_compile; under CI=true it may not skip), the main
# job's pinned first steps and the Conv4 gradient check (jaxlib 0.10.2 miscompiles it), the RL env
# trace and the RL loop (IMPALA, two actor threads) on ProcGen, the download tests; and the
# few-shot smoke run end to end from the installed package, used from another directory
# (configs copied there, as a user's own): train a shortened omniglot_smoke config, evaluate. Each leg prints its time and pytest counts. Then, on the first leg only
# (they test packaging, not jax):
#   - Hugging Face's `kernels` installed next to srwm-jax: both import, and srwm_jax's dispatch
#     runs its own kernels (impl="pallas_interpret") from another directory;
#   - site-packages gets no top-level name from srwm-jax but srwm_jax.
# pip's cache (~/.cache/pip) is reused between runs. Usage: bash .ci/python_versions.sh [PHASE]
# PHASE: setup (make the venvs and install; no tests), test (the tests, in venvs a setup made),
# or all (default: both, leg by leg). .ci/legs.sh runs setup, then test, in the background
# beside the main suite.
# Environment: LEGS, TESTS (the pytest arguments), CI_VENVS (default /tmp/srwm_jax_ci_venvs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENVS=${CI_VENVS:-/tmp/srwm_jax_ci_venvs}
LEGS=${LEGS:-"3.12.1:0.11.2 3.13.0:0.12.1"}
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
DATA=$ROOT/../shared/data
PHASE=${1:-all}
case $PHASE in setup|test|all) ;; *) echo "usage: python_versions.sh [setup|test|all]"; exit 2;; esac
TESTS=${TESTS:-"tests/test_ops.py tests/test_chunked.py tests/test_mosaic_kernels.py
 tests/test_deviceless_chunked.py tests/test_feature_maps.py tests/test_sequential.py tests/test_kernels.py
 tests/test_layers.py tests/test_layer_validation.py tests/test_dispatch.py tests/test_h100_compile.py
 tests/test_jax_compat.py tests/test_rl_envs.py tests/test_download.py
 tests/test_xla_cpu_miscompile.py tests/test_main_job_pinned.py
 tests/test_rl_sebulba.py::test_procgen_two_actor_threads_end_to_end"}
start=$(date +%s)
first=1
summary=""
for leg in $LEGS; do
  version=${leg%%:*} jax=${leg##*:}
  leg_start=$(date +%s)
  echo "=== Python $version, jax $jax ($PHASE)"
  venv=$VENVS/py$version-jax$jax
  py=$venv/bin/python
  if [ "$PHASE" != test ]; then
  rm -rf "$venv"
  "$(pyenv prefix "$version")/bin/python" -m venv "$venv"
  pins=$venv/jax-pins.txt
  printf 'jax==%s\njaxlib==%s\njax-cuda13-plugin==%s\njax-cuda13-pjrt==%s\n' "$jax" "$jax" "$jax" "$jax" > "$pins"
  "$py" -m pip install -q -c "$pins" "jax==$jax" "jaxlib==$jax" "jax-cuda13-plugin==$jax" "jax-cuda13-pjrt==$jax"
  "$py" -m pip install -q -c "$pins" "$ROOT[test]"
  got=$("$py" -c 'import jax, jaxlib; print(jax.__version__, jaxlib.__version__)')
  if [ "$got" != "$jax $jax" ]; then echo "FAIL: wanted jax $jax, have jax/jaxlib $got"; exit 1; fi
  PYTHON=$py bash "$ROOT/benchmarks/install_cuda_plugin.sh"
  before=$("$py" -m pip list --format=freeze 2>/dev/null | grep -Ei '^(numpy|jax|jaxlib)==')
  log=$(mktemp)
  PYTHON=$py bash "$ROOT/rl/install_procgen.sh" 2>&1 | tee "$log" | grep -v '^WARNING: Location'
  if grep -q 'ERROR' "$log"; then echo "FAIL: install_procgen.sh printed an ERROR"; exit 1; fi
  after=$("$py" -m pip list --format=freeze 2>/dev/null | grep -Ei '^(numpy|jax|jaxlib)==')
  if [ "$before" != "$after" ]; then echo "FAIL: numpy/jax changed: $before -> $after"; exit 1; fi
  # jax 0.12.1 pins a libtpu that the package index does not serve: the TPU compile test then
  # skips with that reason (CI's other legs run it).
  if ! PYTHON=$py bash "$ROOT/benchmarks/install_libtpu.sh"; then
    echo "libtpu for jax $jax is not on the package index" > "$venv/libtpu-unavailable"
  fi
  fi
  if [ -f "$venv/libtpu-unavailable" ]; then
    export SRWM_JAX_LIBTPU_UNAVAILABLE="$(cat "$venv/libtpu-unavailable")"
  else
    unset SRWM_JAX_LIBTPU_UNAVAILABLE
  fi
  if [ "$PHASE" = setup ]; then
    echo "=== Python $version jax $jax set up in $(( $(date +%s) - leg_start )) s"
    continue
  fi
  if [ ! -x "$py" ]; then echo "FAIL: no venv $venv (run the setup phase first)"; exit 1; fi
  log=$(mktemp)
  set +e
  # shellcheck disable=SC2086
  (cd "$ROOT" && "$py" -m pytest -q -p no:cacheprovider $TESTS) > "$log" 2>&1
  rc=$?
  set -e
  grep -v '^WARNING: All log\|cudart_stub' "$log" || true
  counts=$(grep -E '(passed|failed|error)' "$log" | tail -1 | tr -d '=')
  if [ $rc -ne 0 ]; then echo "FAIL: Python $version jax $jax: pytest exit $rc: $counts"; exit 1; fi
  away=$(mktemp -d)
  cp -r "$ROOT/configs" "$away/configs"
  (cd "$away" && SRWM_JAX_DATA=$DATA "$py" -m srwm_jax.fewshot.train \
      --config configs/fewshot/omniglot_smoke.py --workdir run --config.total_steps=20 \
      --config.eval_every_steps=20 --config.checkpoint_every_steps=20 --config.val_episodes=20 \
      --config.log_every_steps=10 \
   && SRWM_JAX_DATA=$DATA "$py" -m srwm_jax.fewshot.evaluate --workdir run \
      --num_sets 2 --episodes_per_set 10 --split test \
   && "$py" -c "import srwm_jax.fewshot.train as t; assert 'site-packages' in t.__file__, t.__file__")
  rm -rf "$away"
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
    rm -rf "$away"
  fi
  line="Python $version jax $jax: $(( $(date +%s) - leg_start )) s, pytest: $counts"
  summary="$summary$line"$'\n'
  echo "=== $line"
done
printf '%s' "$summary"
echo "python_versions.sh: OK in $(( $(date +%s) - start )) s"
