#!/usr/bin/env bash
# The jax legs beside the main suite, so that CI's 2 cores are not idle while pip installs:
#   bash .ci/legs.sh start    # in the background: the two jax legs' venvs and installs
#                             # (.ci/python_versions.sh setup) and the offline-node check
#                             # (.ci/offline_node.sh); logs in $CI_VENVS/logs
#   bash .ci/legs.sh finish   # waits for them (each bounded by `timeout`), prints their logs,
#                             # fails if either failed, then runs the legs' tests
#                             # (.ci/python_versions.sh test)
# Between the two, the README's test command runs the main suite on the system Python. The legs'
# tests run after it, not beside it: their compiles would load the 2 cores while the suite's
# timing-bound tests (heartbeats, stop signals, hung actors) run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENVS=${CI_VENVS:-/tmp/srwm_jax_ci_venvs}
LOGS=$VENVS/logs
case ${1:-} in
  start)
    rm -rf "$LOGS"
    mkdir -p "$LOGS"
    # setsid + timeout: each job ends by itself (30 min) even if the caller is gone.
    setsid timeout 1800 bash "$ROOT/.ci/python_versions.sh" setup > "$LOGS/setup.log" 2>&1 &
    echo $! > "$LOGS/setup.pid"
    JAX_PLATFORMS=cpu setsid timeout 1800 bash "$ROOT/.ci/offline_node.sh" > "$LOGS/offline.log" 2>&1 &
    echo $! > "$LOGS/offline.pid"
    echo "legs.sh: leg set-up and offline-node check started in the background (logs: $LOGS)"
    ;;
  finish)
    failed=0
    for job in setup offline; do
      pid=$(cat "$LOGS/$job.pid")
      while kill -0 "$pid" 2>/dev/null; do sleep 5; done
      # The exit status of a job that is not our child: its log's last line says OK or not.
      echo "----- $job ($LOGS/$job.log)"
      cat "$LOGS/$job.log"
      case $job in
        setup) grep -q "python_versions.sh: OK" "$LOGS/$job.log" || failed=1 ;;
        offline) grep -q "offline_node.sh: OK" "$LOGS/$job.log" || failed=1 ;;
      esac
    done
    if [ $failed = 1 ]; then echo "legs.sh: a background job failed (logs above)"; exit 1; fi
    JAX_PLATFORMS=cpu bash "$ROOT/.ci/python_versions.sh" test
    ;;
  *) echo "usage: bash .ci/legs.sh start|finish"; exit 2 ;;
esac
