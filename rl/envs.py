"""Vectorised multi-game ProcGen (gym3 interface) with episode bookkeeping.

gym3 semantics (also torchbeast's): `observe()` returns (reward, obs, first) where `first[i]`
marks obs[i] as the first frame of a new episode and `reward[i]` is the reward of the last
action — at a `first` step, the final reward of the *previous* episode. The agent's reset flag
for step t is `first[t]`; the transition (obs_t, a_t) has reward `reward[t+1]` and is terminal
iff `first[t+1]`. ProcGen's time-outs are treated as terminal, like the original code.
"""

import dataclasses

import numpy as np

NUM_ACTIONS = 15

EASY_GAMES = ("bigfish", "fruitbot", "maze", "leaper", "plunder", "starpilot")
MEMORY_GAMES = ("dodgeball", "heist", "maze", "miner")


def procgen_available() -> tuple[bool, str]:
    """(True, "") if `import procgen` works, else (False, reason)."""
    try:
        import procgen  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return False, f"procgen not importable ({type(e).__name__}: {e}); run rl/install_procgen.sh"
    return True, ""


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
                 distribution_mode="easy", seed=0, num_threads=1):
        from procgen import ProcgenGym3Env
        self.games = tuple(games)
        self.num_envs_per_game = num_envs_per_game
        self.num_envs = len(self.games) * num_envs_per_game
        self.game_of_env = np.repeat(np.arange(len(self.games)), num_envs_per_game)
        self._envs = [
            ProcgenGym3Env(num=num_envs_per_game, env_name=game, num_levels=num_levels,
                           start_level=start_level, distribution_mode=distribution_mode,
                           rand_seed=int(seed) * 1000 + g, num_threads=num_threads)
            for g, game in enumerate(self.games)]
        self._returns = np.zeros(self.num_envs, np.float64)
        self._lengths = np.zeros(self.num_envs, np.int64)

    def observe(self):
        """Returns (reward [N] float32, obs [N, 64, 64, 3] uint8, first [N] bool)."""
        parts = [env.observe() for env in self._envs]
        reward = np.concatenate([p[0] for p in parts]).astype(np.float32)
        obs = np.concatenate([p[1]["rgb"] for p in parts])
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
