"""fewshot test accuracy: any number of devices with any number of episodes and any batch size
gives the single-device, one-episode-at-a-time accuracy (episode_accuracy's padding)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "omniglot"
pytestmark = pytest.mark.skipif(not (DATA / "omniglot.npz").exists(),
                                reason=f"Omniglot npz not found at {DATA}")


SCRIPT = r"""
import json, sys, jax, numpy as np
from configs.fewshot.omniglot_smoke import get_config
from fewshot.steps import make_eval_step
from fewshot.tasks import episode_accuracy
from fewshot.training import build, initial_state, make_sampler
c = get_config(); c.data_dir = sys.argv[1]; c.n_way = 5; c.conv_channels = 8; c.hidden_size = 16
sampler = make_sampler(c, "test", c.seed)
model, opt, mesh, _, eval_step = build(c)
state = initial_state(c, model, opt, mesh, sampler.sample(1, 0))  # fresh model: fine for equality
# Reference: all 49 episodes in one unsharded call of the plain eval function (no mesh, no pad).
correct = jax.jit(make_eval_step(model, c))(state, sampler.fixed_episodes(49, 4321))
reference = int(np.sum(np.asarray(correct))) / 49
# 49 episodes in batches of 4 over the devices: 12 batches padded 4 -> 6, then a batch of 1,
# smaller than the 2 episodes of padding 3 devices need (IndivisibleError before the fix).
acc = episode_accuracy(eval_step, mesh, state, sampler, 49, 4321, 4)
print(json.dumps({"devices": jax.device_count(), "acc": acc, "reference": reference}))
"""


def test_accuracy_is_the_same_on_three_devices_for_any_episode_count():
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=3")
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(DATA)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 3
    assert 0.0 < out["reference"] < 1.0  # not a degenerate model (all right or all wrong)
    assert out["acc"] == out["reference"], out
