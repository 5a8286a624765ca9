#!/usr/bin/env bash
# The jax legs beside the main suite, so that CI's 2 cores are both busy:
#   bash .ci/legs.sh start    # in the background: the two jax legs' venvs and installs, then
#                             # their tests (.ci/python_versions.sh setup, then test), and the
#                             # offline-node check (.ci/offline_node.sh); logs in $CI_VENVS/logs
#   bash .ci/legs.sh finish   # waits for them (each bounded by `timeout`), prints their logs,
#                             # fails if either failed
# Between the two, the README's test command runs the main suite on the system Python. Its
# timing-bound tests (heartbeats, stop signals, hung actors) passed with both legs' whole suites
# and five compile jobs beside them (load average 8-12 on 2 cores; the closing note of issue 23).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENVS=${CI_VENVS:-/tmp/srwm_jax_ci_venvs}
LOGS=$VENVS/logs
case ${1:-} in
  start)
    rm -rf "$LOGS"
    mkdir -p "$LOGS"
    # setsid + timeout: each job ends by itself (60 / 30 min) even if the caller is gone.
    setsid timeout 3600 bash -c "bash '$ROOT/.ci/python_versions.sh' setup \
        && JAX_PLATFORMS=cpu bash '$ROOT/.ci/python_versions.sh' test" > "$LOGS/legs.log" 2>&1 &
    echo $! > "$LOGS/legs.pid"
    JAX_PLATFORMS=cpu setsid timeout 1800 bash "$ROOT/.ci/offline_node.sh" > "$LOGS/offline.log" 2>&1 &
    echo $! > "$LOGS/offline.pid"
    echo "legs.sh: the jax legs (set-up, tests) and the offline-node check started in the background (logs: $LOGS)"
    ;;
  finish)
    failed=0
    for job in legs offline; do
      pid=$(cat "$LOGS/$job.pid")
      while kill -0 "$pid" 2>/dev/null; do sleep 5; done
      # The exit status of a job that is not our child: its log's last line says OK or not
      # (the legs' set-up also prints an OK line; only the last line counts).
      echo "----- $job ($LOGS/$job.log)"
      cat "$LOGS/$job.log"
      case $job in
        legs) tail -n 1 "$LOGS/$job.log" | grep -q "python_versions.sh: OK" || failed=1 ;;
        offline) tail -n 1 "$LOGS/$job.log" | grep -q "offline_node.sh: OK" || failed=1 ;;
      esac
    done
    if [ $failed = 1 ]; then echo "legs.sh: a background job failed (logs above)"; exit 1; fi
    echo "legs.sh: OK"
    ;;
  *) echo "usage: bash .ci/legs.sh start|finish"; exit 2 ;;
esac
