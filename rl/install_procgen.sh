#!/usr/bin/env bash
# Installs ProcGen (gym3 interface) without letting its stale pins downgrade numpy/jax.
#
# procgen2 (a Python 3.11 wheel of openai/procgen, games + Qt bundled) pins numpy<2, gym3 pins
# numpy<2 and cffi<2, but both work with numpy 2 / cffi 2. `import procgen` also needs
# `gym` (for its gym registration), imageio (gym3.video_recorder) and cffi (gym3.libenv).
# glfw / moderngl / imageio-ffmpeg are only for gym3's interactive viewer and videos, and
# gym_notices only prints a deprecation banner on `import gym`: none of them is installed.
# Idempotent: re-running is a no-op once `import procgen` works.
set -euo pipefail
PY=${PYTHON:-python}
if "$PY" -c "import procgen" >/dev/null 2>&1; then
  echo "procgen already importable"; exit 0
fi
"$PY" -m pip install --no-deps "procgen2==0.10.7" "gym3==0.3.3" "gym==0.26.2"
"$PY" -m pip install "cffi>=1.13" "imageio>=2.6" "filelock>=3.0" "cloudpickle>=1.2"
"$PY" -c "import procgen; print('procgen', procgen.__version__.strip(), 'OK')"
