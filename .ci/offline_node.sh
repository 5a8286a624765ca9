#!/usr/bin/env bash
# The air-gapped GPU node path (README, "Air-gapped GPU node"), checked on CPU:
# a fresh Python 3.12 venv holding what the node holds (jax/jaxlib/jax-cuda13-plugin/pjrt
# 0.11.2, flax, optax, chex, orbax-checkpoint, absl-py, tensorboard, matplotlib, tqdm, scipy),
# `benchmarks/wheelhouse.sh build` (the connected side), `wheelhouse.sh install` with no index;
# then jax must be unchanged, every srwm_jax module must import from another directory, and
# benchmarks/gpu_check.py must refuse with its one line (exit 2) on this GPU-less machine.
# Usage: bash .ci/offline_node.sh   Environment: CI_VENVS (default /tmp/srwm_jax_ci_venvs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENVS=${CI_VENVS:-/tmp/srwm_jax_ci_venvs}
JAX=0.11.2
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 JAX_PLATFORMS=cpu
start=$(date +%s)
venv=$VENVS/node-py3.12
rm -rf "$venv"
"$(pyenv prefix 3.12.1)/bin/python" -m venv "$venv"
py=$venv/bin/python
pins=$(mktemp)
printf 'jax==%s\njaxlib==%s\njax-cuda13-plugin==%s\njax-cuda13-pjrt==%s\n' $JAX $JAX $JAX $JAX > "$pins"
# What the node has (no ml_collections, no tensorboardX, no pytest, no srwm-jax).
"$py" -m pip install -q -c "$pins" "jax==$JAX" "jaxlib==$JAX" "jax-cuda13-plugin==$JAX" \
  "jax-cuda13-pjrt==$JAX" flax optax chex orbax-checkpoint absl-py tensorboard matplotlib tqdm scipy
for absent in ml_collections tensorboardX pytest srwm_jax; do
  if (cd / && "$py" -c "import $absent" 2>/dev/null); then echo "FAIL: the node venv already has $absent"; exit 1; fi
done
house=$(mktemp -d)
PYTHON=$py bash "$ROOT/benchmarks/wheelhouse.sh" build "$house"
# No pip configuration either (this machine's names local indexes and wheel folders).
PYTHON=$py PIP_CONFIG_FILE=/dev/null bash "$ROOT/benchmarks/wheelhouse.sh" install "$house"
"$py" -m pip list --format=freeze 2>/dev/null | grep -Ei '^(jax|jaxlib|jax-cuda13-(plugin|pjrt))==' | sort > "$pins.after"
sort "$pins" | diff -i - "$pins.after" || { echo "FAIL: jax changed on the node venv"; exit 1; }
away=$(mktemp -d)
(cd "$away" && "$py" - <<'EOF'
import importlib
import pkgutil

import srwm_jax

import subprocess
import sys

from absl.flags import DuplicateFlagError

names = [m.name for m in pkgutil.walk_packages(srwm_jax.__path__, "srwm_jax.")]
for name in names:
    try:
        importlib.import_module(name)
    except DuplicateFlagError:  # two CLIs define the same absl flag: each gets its own process
        subprocess.run([sys.executable, "-c", f"import {name}"], check=True)
assert "site-packages" in srwm_jax.__file__, srwm_jax.__file__
print(f"offline node: imported {len(names)} srwm_jax modules")
EOF
)
set +e
out=$(cd "$ROOT" && "$py" benchmarks/gpu_check.py "$away/gpu_out" 2>&1)
status=$?
set -e
echo "$out"
if [ $status -ne 2 ] || [ "$(echo "$out" | wc -l)" -ne 1 ]; then
  echo "FAIL: gpu_check.py on a GPU-less machine must print one line and exit 2 (got $status)"
  exit 1
fi
rm -rf "$away" "$house" "$pins" "$pins.after"
echo "offline_node.sh: OK in $(( $(date +%s) - start )) s"
