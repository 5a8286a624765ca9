"""A tiny deterministic stand-in for MultiGameEnv (no procgen, small frames) for loop tests.

Used by tests/test_rl_sebulba.py and tests/test_rl_liveness.py; also handy to smoke-test the
loop without ProcGen."""

import threading
import time

import numpy as np

from .envs import MultiGameEnv


class FakeEnv(MultiGameEnv):
    """`num_envs` envs with 16x16 frames; episode of env i lasts 5 + i steps; reward 1 for action 0.

    `fail_after`: raise RuntimeError on that many `act` calls (to test failure propagation).
    `hang_after`: on that many `act` calls, block until the `release` event is set (a hung env;
    without `release`, for ever). `act_delay`: sleep uniform [0, act_delay) seconds in each `act`.
    """

    def __init__(self, num_envs=4, games=("starpilot",), frame_shape=(16, 16, 3), fail_after=None,
                 seed=0, hang_after=None, release=None, act_delay=0.0):
        self._hang_after, self._act_delay = hang_after, act_delay
        self._release = release if release is not None else threading.Event()
        self._delay_rng = np.random.default_rng(seed + 10_000)
        self.games = tuple(games)
        self.num_envs = num_envs
        self.game_of_env = np.arange(num_envs) % len(self.games)
        self._frame_shape = frame_shape
        self._fail_after = fail_after
        self._acts = 0
        self._t = np.zeros(num_envs, np.int64)
        self._lengths_per_env = 5 + np.arange(num_envs)
        self._reward = np.zeros(num_envs, np.float32)
        self._first = np.ones(num_envs, bool)
        self._rng = np.random.default_rng(seed)
        self._returns = np.zeros(num_envs, np.float64)
        self._lengths = np.zeros(num_envs, np.int64)

    def observe(self):
        """-> (reward [N] float32, obs [N, *frame_shape] uint8, first [N] bool), as gym3."""
        obs = self._rng.integers(0, 256, (self.num_envs,) + self._frame_shape, dtype=np.uint8)
        return self._reward.copy(), obs, self._first.copy()

    def act(self, actions):
        """Steps every env with int actions [N]."""
        self._acts += 1
        if self._fail_after is not None and self._acts >= self._fail_after:
            raise RuntimeError("fake env exploded")
        if self._hang_after is not None and self._acts >= self._hang_after:
            self._release.wait()
        if self._act_delay:
            time.sleep(self._delay_rng.uniform(0.0, self._act_delay))
        self._reward = (np.asarray(actions) == 0).astype(np.float32)
        self._t += 1
        self._first = self._t >= self._lengths_per_env
        self._t[self._first] = 0
