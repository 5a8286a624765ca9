#!/usr/bin/env bash
# Installs ProcGen for the running Python without downgrading numpy or jax.
#
# One package per Python (wheels on PyPI; rl/envs.py has a backend for each):
#   3.11         procgen2 0.10.7        (module `procgen`, gym3 interface)
#   3.12         procgen-mirror 0.10.7  (same module and interface)
#   3.13 and up  procgen-gym 0.1.1      (module `procgen_gym`, Gymnasium port of the same games)
# procgen2 / procgen-mirror pin numpy<2 and gym3 pins numpy<2 and cffi<2, but all work with
# numpy 2 / cffi 2 (tests/test_rl_envs.py replays a recorded trace bit-identically on each).
# So they are installed with --no-deps, and --no-warn-conflicts keeps pip from printing those
# stale pins as resolver errors. `import procgen` also needs `gym` (its gym registration),
# imageio (gym3.video_recorder) and cffi (gym3.libenv); glfw / moderngl / imageio-ffmpeg (gym3's
# viewer and videos) and gym_notices (a banner on `import gym`) are not installed.
# procgen-gym asks for gymnasium[other] (opencv, moviepy, matplotlib: rendering and videos,
# which rl/ does not use) and filelock: it is installed with --no-deps and then plain gymnasium
# and filelock, with their own dependencies.
# Every install holds numpy and jax at their installed versions by a constraints file.
# Idempotent: re-running is a no-op once a ProcGen backend imports.
set -euo pipefail
PY=${PYTHON:-python}
if "$PY" -c "import procgen" >/dev/null 2>&1 || "$PY" -c "import procgen_gym" >/dev/null 2>&1; then
  echo "ProcGen already importable"; exit 0
fi
minor=$("$PY" -c "import sys; print(sys.version_info[1])")
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PY" - >"$constraints" <<'EOF'
import importlib.metadata as m
for name in ("numpy", "jax", "jaxlib"):
    try:
        print(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        pass
EOF
pip_install() { "$PY" -m pip install --no-warn-conflicts -c "$constraints" "$@"; }
if [ "$minor" -ge 13 ]; then
  pip_install --no-deps "procgen-gym==0.1.1"
  pip_install "gymnasium>=1.2.3" "filelock>=3.20.3"
  "$PY" -c "import procgen_gym; print('procgen_gym', procgen_gym.__version__, 'OK')"
else
  if [ "$minor" -eq 11 ]; then pkg="procgen2==0.10.7"; else pkg="procgen-mirror==0.10.7"; fi
  pip_install --no-deps "$pkg" "gym3==0.3.3" "gym==0.26.2"
  pip_install "cffi>=1.13" "imageio>=2.6" "filelock>=3.0" "cloudpickle>=1.2"
  "$PY" -c "import procgen; print('procgen', procgen.__version__.strip(), 'OK')"
fi
