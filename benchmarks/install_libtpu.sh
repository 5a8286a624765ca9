#!/usr/bin/env bash
# Installs the libtpu wheel that the installed jax pins in its `tpu` extra (jax 0.10.2:
# libtpu 0.0.42.*, 0.11.2: 0.0.48.*), for the deviceless TPU v5e compile of impl="chunked" on a
# machine without a TPU (tests/test_deviceless_chunked.py, tests/deviceless_chunked.py).
# Never changes jax (--no-deps). Run jax with JAX_PLATFORMS=cpu afterwards (the backend stays
# the CPU; the TPU is only described, through jax.experimental.topologies).
#
#   bash benchmarks/install_libtpu.sh            # uses `python`; PYTHON=... to override
set -euo pipefail
PYTHON=${PYTHON:-python}
pin=$("$PYTHON" - <<'PY'
import importlib.metadata as m
pins = [r.split(";")[0].strip() for r in (m.requires("jax") or [])
        if r.startswith("libtpu") and 'extra == "tpu"' in r]
print(pins[0] if pins else "")
PY
)
if [ -z "$pin" ]; then
  echo "install_libtpu.sh: this jax names no libtpu in its tpu extra; the TPU compile test will skip" >&2
  exit 0
fi
if "$PYTHON" -m pip install -q --no-deps "$pin"; then
  "$PYTHON" -c 'import jax, libtpu; print("jax", jax.__version__, "libtpu installed")'
else
  # Exit 3: the caller decides (.ci/python_versions.sh tells the test the wheel is not served).
  echo "install_libtpu.sh: $pin could not be installed" >&2
  exit 3
fi
