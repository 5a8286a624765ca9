"""Vectorised multi-game ProcGen with episode bookkeeping, on either ProcGen package.

gym3 semantics (also torchbeast's): `observe()` returns (reward, obs, first) where `first[i]`
marks obs[i] as the first frame of a new episode and `reward[i]` is the reward of the last
action — at a `first` step, the final reward of the *previous* episode. The agent's reset flag
for step t is `first[t]`; the transition (obs_t, a_t) has reward `reward[t+1]` and is terminal
iff `first[t+1]`. ProcGen's time-outs are treated as terminal, like the original code.

Backends (same C++ games, same level generation; rl/install_procgen.sh installs the one that
has a wheel for the running Python):
  "gym3"       the `procgen` module (PyPI `procgen2` on 3.11, `procgen-mirror` on 3.11/3.12):
               `procgen.ProcgenGym3Env`, gym3 `observe()` / `act()`.
  "gymnasium"  the `procgen_gym` module (PyPI `procgen-gym`, 3.13+): `gymnasium.make_vec`;
               `step()`'s `terminated` is procgen's `first` of the new observation (the port
               auto-resets inside C++ like gym3), so both backends give identical observations,
               rewards and `first` flags for the same levels and seeds
               (tests/test_rl_envs.py, against tests/fixtures/procgen_trace.npz).
"""

import dataclasses
import importlib.util

import numpy as np

NUM_ACTIONS = 15

EASY_GAMES = ("bigfish", "fruitbot", "maze", "leaper", "plunder", "starpilot")
MEMORY_GAMES = ("dodgeball", "heist", "maze", "miner")
# The games ProcGen builds in each distribution mode besides easy and hard (every game has
# those two); any other pair aborts inside ProcGen's C++ (an assertion, or a crash).
MODE_GAMES = {
    "extreme": ("chaser", "dodgeball", "leaper", "starpilot"),
    "memory": ("caveflyer", "dodgeball", "heist", "jumper", "maze", "miner"),
    "exploration": ("caveflyer", "climber", "coinrun", "heist", "jumper", "leaper", "maze",
                    "ninja"),
}
BACKENDS = ("gym3", "gymnasium")
_MODULES = {"gym3": "procgen", "gymnasium": "procgen_gym"}


def mode_has_game(distribution_mode: str, game: str) -> bool:
    """True if ProcGen builds `game` in `distribution_mode` (MODE_GAMES)."""
    return distribution_mode in ("easy", "hard") or game in MODE_GAMES.get(distribution_mode, ())


def procgen_backend() -> str | None:
    """The first of BACKENDS whose module is installed, or None."""
    for backend in BACKENDS:
        if importlib.util.find_spec(_MODULES[backend]) is not None:
            return backend
    return None


def procgen_available() -> tuple[bool, str]:
    """(True, "") if a ProcGen backend imports, else (False, reason)."""
    backend = procgen_backend()
    if backend is None:
        return False, ("ProcGen not installed (neither the procgen nor the procgen_gym module); "
                       "run rl/install_procgen.sh")
    try:
        importlib.import_module(_MODULES[backend])
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return False, (f"{_MODULES[backend]} not importable ({type(e).__name__}: {e}); "
                       "run rl/install_procgen.sh")
    return True, ""


class _Gym3Game:
    """`num` envs of one game through `procgen.ProcgenGym3Env`."""

    def __init__(self, num, game, **kwargs):
        from procgen import ProcgenGym3Env
        self._env = ProcgenGym3Env(num=num, env_name=game, **kwargs)

    def observe(self):
        reward, obs, first = self._env.observe()
        return reward, obs["rgb"], first

    def act(self, actions):
        self._env.act(actions)


class _GymnasiumGame:
    """`num` envs of one game through `gymnasium.make_vec` on `procgen_gym` (the env runs in the
    calling thread: its vector entry point fixes num_threads=0)."""

    def __init__(self, num, game, *, num_threads=None, **kwargs):
        del num_threads  # fixed to 0 by procgen_gym's make_vec entry point
        import gymnasium
        import procgen_gym  # noqa: F401 - registers the procgen_gym/* ids
        self._env = gymnasium.make_vec(f"procgen_gym/procgen-{game}-v0", num_envs=num,
                                       vectorization_mode="vector_entry_point", **kwargs)
        obs, _ = self._env.reset()
        # A fresh env shows the first frame of an episode with no reward, as gym3's observe().
        self._last = (np.zeros(num, np.float32), obs, np.ones(num, bool))

    def observe(self):
        return self._last

    def act(self, actions):
        obs, reward, terminated, truncated, _ = self._env.step(actions)
        self._last = (reward, obs, np.logical_or(terminated, truncated))


@dataclasses.dataclass
class EpisodeRecord:
    game: str
    episode_return: float
    episode_length: int


class MultiGameEnv:
    """`num_envs_per_game` ProcGen envs for each game in `games`, concatenated along the batch.

    env index i plays games[i // num_envs_per_game]. No task id is exposed to the agent.
    """

    def __init__(self, games, num_envs_per_game, *, num_levels, start_level,
                 distribution_mode="easy", seed=0, num_threads=1, backend="auto"):
        if backend == "auto":
            backend = procgen_backend()
            if backend is None:
                raise ImportError(procgen_available()[1])
        if backend not in BACKENDS:
            raise ValueError(f"unknown ProcGen backend {backend!r}; "
                             f"choose auto or one of {BACKENDS}")
        game_cls = _Gym3Game if backend == "gym3" else _GymnasiumGame
        self.backend = backend
        self.games = tuple(games)
        self.num_envs_per_game = num_envs_per_game
        self.num_envs = len(self.games) * num_envs_per_game
        self.game_of_env = np.repeat(np.arange(len(self.games)), num_envs_per_game)
        self._envs = [
            game_cls(num_envs_per_game, game, num_levels=num_levels, start_level=start_level,
                     distribution_mode=distribution_mode, rand_seed=(int(seed) * 1000 + g) % 2**31,
                     num_threads=num_threads)
            for g, game in enumerate(self.games)]
        self._returns = np.zeros(self.num_envs, np.float64)
        self._lengths = np.zeros(self.num_envs, np.int64)

    def observe(self):
        """Returns (reward [N] float32, obs [N, 64, 64, 3] uint8, first [N] bool)."""
        parts = [env.observe() for env in self._envs]
        reward = np.concatenate([p[0] for p in parts]).astype(np.float32)
        obs = np.concatenate([p[1] for p in parts])
        first = np.concatenate([p[2] for p in parts]).astype(bool)
        return reward, obs, first

    def act(self, actions):
        actions = np.asarray(actions, np.int32)
        n = self.num_envs_per_game
        for g, env in enumerate(self._envs):
            env.act(actions[g * n:(g + 1) * n])

    def track(self, reward, first) -> list[EpisodeRecord]:
        """Accumulates raw episode returns after an `observe`; returns the episodes that ended.

        Call once per observation, in order. A `first` after at least one step ends an episode
        (its return includes this observation's reward, the episode's last one).
        """
        finished = []
        self._returns += np.where(first & (self._lengths == 0), 0.0, reward)
        for i in np.nonzero(first & (self._lengths > 0))[0]:
            finished.append(EpisodeRecord(self.games[self.game_of_env[i]],
                                          float(self._returns[i]), int(self._lengths[i])))
        self._returns[first] = 0.0
        self._lengths[first] = 0
        self._lengths += 1
        return finished
