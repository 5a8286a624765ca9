#!/usr/bin/env bash
# A venv for the deviceless TPU compile of impl="chunked" (tests/test_deviceless_chunked.py,
# tests/deviceless_chunked.py): jax 0.11.2 with its libtpu wheel (0.0.48.1 here), Python 3.12.
#   benchmarks/install_libtpu.sh VENV [PYTHON]
#   PYTHONPATH=. JAX_PLATFORMS=cpu VENV/bin/python -m pytest -q tests/test_deviceless_chunked.py
# srwm_jax is used from the checkout (PYTHONPATH): the chunked op needs only jax and numpy.
set -euo pipefail
venv="${1:?usage: install_libtpu.sh VENV [PYTHON]}"
python="${2:-python3.12}"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q "jax[tpu]==0.11.2" pytest
"$venv/bin/python" -c "import libtpu, jax; print('jax', jax.__version__, 'libtpu ok')"
