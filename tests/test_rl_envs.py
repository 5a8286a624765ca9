"""rl/envs.py: every ProcGen backend replays the recorded trace exactly.

tests/fixtures/procgen_trace.npz was recorded with the gym3 backend (procgen2 on Python 3.11)
by tests/fixtures/make_procgen_trace.py; here the installed backend (gym3 through procgen2 /
procgen-mirror on 3.11-3.12, Gymnasium through procgen-gym on 3.13) replays the same levels,
seeds and actions and must give bit-identical frames, rewards and episode flags.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from rl import envs

FIXTURES = Path(__file__).with_name("fixtures")
sys.path.insert(0, str(FIXTURES))
import make_procgen_trace  # noqa: E402

available, why = envs.procgen_available()


@pytest.mark.skipif(not available, reason=why)
def test_installed_backend_replays_recorded_trace():
    recorded = np.load(FIXTURES / "procgen_trace.npz")
    backend = envs.procgen_backend()
    trace = make_procgen_trace.rollout(backend)
    np.testing.assert_array_equal(trace["actions"], recorded["actions"])
    assert recorded["first"][1:].sum() > 0  # the trace covers episode ends
    for key in ("first", "reward", "obs_md5"):
        mismatch = np.flatnonzero(
            ~(trace[key] == recorded[key]).reshape(len(trace[key]), -1).all(1))
        assert mismatch.size == 0, (f"{backend} differs from the trace recorded with "
                                    f"{recorded['recorded_with']} in {key} "
                                    f"from step {mismatch[:1]}")


def test_backend_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown ProcGen backend 'gym'"):
        envs.MultiGameEnv(("bigfish",), 1, num_levels=1, start_level=0, backend="gym")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert envs.procgen_backend() is None
    ok, reason = envs.procgen_available()
    assert not ok and "rl/install_procgen.sh" in reason
    with pytest.raises(ImportError, match="run rl/install_procgen.sh"):
        envs.MultiGameEnv(("bigfish",), 1, num_levels=1, start_level=0)
