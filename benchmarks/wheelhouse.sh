#!/usr/bin/env bash
# An air-gapped GPU node: build a wheelhouse on a connected machine, install it on the node
# with no index, without touching the node's jax / jaxlib / CUDA plugin.
#
#   bash benchmarks/wheelhouse.sh build DIR     # connected machine (any OS/Python with pip)
#   bash benchmarks/wheelhouse.sh install DIR   # on the node, from the clone; then
#   python benchmarks/gpu_check.py OUT_DIR
#
# The node (GPU nodes we target): Python 3.12, manylinux x86_64, with jax, jaxlib and
# jax-cuda13-plugin/pjrt 0.11.2, flax, optax, chex, orbax-checkpoint, absl-py, tensorboard,
# matplotlib, tqdm, scipy. DIR gets what the project needs beyond that: the srwm-jax wheel
# (built here, no dependencies), ml_collections and tensorboardX with their dependencies, and
# pytest (gpu_check runs tests/test_kernels_gpu.py), all as cp312 manylinux x86_64 wheels.
# Wheels the node already has (numpy, protobuf, ...) may be in DIR too; pip leaves the
# installed versions alone. procgen (the RL step of gpu_check) is not included: use
# `gpu_check.py --skip rl`, or build procgen for the node as rl/install_procgen.sh does.
#
# install: pip install --no-index --find-links DIR srwm-jax, with the node's installed
# jax/jaxlib/CUDA plugin versions pinned as constraints, so pip fails rather than change them;
# then checks that they did not change. Environment: PYTHON (default python),
# NODE_PYTHON_VERSION (3.12), NODE_PLATFORM (manylinux2014_x86_64).
set -euo pipefail
usage="usage: bash benchmarks/wheelhouse.sh build|install DIR"
[ $# -eq 2 ] || { echo "error: $usage" >&2; exit 2; }
action=$1 dir=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
export PIP_DISABLE_PIP_VERSION_CHECK=1
case "$action" in
  build)
    pyver=${NODE_PYTHON_VERSION:-3.12}
    mkdir -p "$dir"
    "$PYTHON" -m pip wheel -q --no-deps -w "$dir" "$ROOT"
    "$PYTHON" -m pip download -q --only-binary=:all: --python-version "$pyver" \
      --implementation cp --platform "${NODE_PLATFORM:-manylinux2014_x86_64}" -d "$dir" \
      "ml_collections>=1.1.0" "tensorboardX>=2.6" "pytest>=8.0" "pillow>=10.0"
    echo "wheelhouse.sh: $(ls "$dir" | wc -l) wheels in $dir for Python $pyver; copy it to the node"
    ;;
  install)
    [ -d "$dir" ] || { echo "error: no wheelhouse folder $dir: build it with 'bash benchmarks/wheelhouse.sh build $dir' on a connected machine" >&2; exit 2; }
    pins=$(mktemp)
    "$PYTHON" -m pip list --format=freeze 2>/dev/null | grep -Ei '^(jax|jaxlib|jax-cuda1[23]-(plugin|pjrt))==' > "$pins" || true
    if ! grep -qi '^jax==' "$pins"; then
      echo "error: no jax installed for $PYTHON: this installs the project next to the node's own jax" >&2
      exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --find-links "$dir" -c "$pins" srwm-jax
    after=$("$PYTHON" -m pip list --format=freeze 2>/dev/null | grep -Ei '^(jax|jaxlib|jax-cuda1[23]-(plugin|pjrt))==')
    if [ "$after" != "$(cat "$pins")" ]; then
      echo "error: the install changed jax: $(tr '\n' ' ' < "$pins") -> $(echo "$after" | tr '\n' ' ')" >&2
      exit 1
    fi
    echo "wheelhouse.sh: srwm-jax installed offline next to $(tr '\n' ' ' < "$pins")"
    rm -f "$pins"
    ;;
  *) echo "error: unknown action '$action': $usage" >&2; exit 2 ;;
esac
