#!/usr/bin/env bash
# Installs jax's CUDA 12 PJRT plugin of exactly the installed jax version, for deviceless H100
# compilation on a machine without a GPU (tests/h100_gate.py, tests/test_h100_compile.py),
# unless a CUDA plugin (cuda12 or cuda13, e.g. the GPU nodes' jax-cuda13-plugin) of that
# version is already installed.
# Never upgrades or downgrades jax (--no-deps; the plugin's CUDA wheels are not needed to
# compile). Needs a ptxas: a CUDA toolkit's on the PATH, else the nvidia-cuda-nvcc-cu12 wheel's.
# Run jax with JAX_PLATFORMS=cpu afterwards on GPU-less machines (else the plugin logs a
# "Unable to load CUDA" traceback at every start-up; the backend is still the CPU).
#
#   bash benchmarks/install_cuda_plugin.sh            # uses `python`; PYTHON=... to override
set -euo pipefail
PYTHON=${PYTHON:-python}
version=$("$PYTHON" -c 'import jax; print(jax.__version__)')
have=$("$PYTHON" -m pip list --format=freeze 2>/dev/null | grep -Ei "^jax-cuda1[23]-plugin==${version}\$" || true)
if [ -n "$have" ]; then
  echo "install_cuda_plugin.sh: $have already installed"
elif ! "$PYTHON" -m pip install --no-deps "jax-cuda12-plugin==${version}" "jax-cuda12-pjrt==${version}"; then
  # Not fatal: tests/test_h100_compile.py then skips, naming this script (fails under CI=true).
  echo "install_cuda_plugin.sh: no jax-cuda12-plugin ${version} could be installed; the H100 compile tests will skip" >&2
  exit 0
fi
if ! command -v ptxas >/dev/null 2>&1; then
  "$PYTHON" -m pip install --no-deps nvidia-cuda-nvcc-cu12
fi
"$PYTHON" -c 'import jax; from tests import h100_gate as h100; assert h100.cuda_plugin_installed(); print("jax", jax.__version__, "CUDA plugin installed; ptxas:", h100.find_ptxas())'
