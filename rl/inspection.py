"""Looking inside a trained RL agent: the fast-weight statistics over an episode, step by step
(CLI: rl.introspect).

`inspect` plays one env (ProcGen with the run's distribution mode on one level, or
rl.fake_env.FakeEnv) with the run's latest checkpoint until `episodes` episodes have ended (or
`max_steps`), then replays the recorded frames, rewards and episode boundaries through the agent
in one call with the statistics of srwm_jax.introspect recorded (the agent is causal, so the
replay gives the logits it acted with; summary.json reports the largest difference). Writes into
`out` (default <workdir>/inspect_<game>/):
  stats.csv     one row per (layer, head, step): step, episode, first (episode boundary: the
                state was reset before this step), action, reward (for that action), and every
                statistic (SRWM: lr_*, update_*, dist_*, entropy_*; DeltaNet: beta,
                error_norm, state_norm); distances are from the slow weights, so they restart
                at each boundary
  episode.png   rewards and actions on top, then per layer the four learning rates, the update
                norms and the distances from the slow weights (mean over heads), boundaries
                dashed
  summary.json  steps, episode returns, the logit check, the mean statistics

Legend: T env steps, A actions, H heads.
"""
import json
import os

import jax
import numpy as np

from .agent import make_agent
from .envs import MultiGameEnv, procgen_available
from .evaluation import load_for_eval, load_run_config
from .fake_env import FakeEnv
from .sebulba import make_policy_fn
from srwm_jax.introspect import MATRICES, STATS_COLLECTION, collect_layers
from srwm_jax.introspect_report import ensure_dir, layer_rows, line_grid, write_csv

# Cores whose layers sow statistics (fakesr and lstm have no fast weights).
FAST_WEIGHT_CORES = ("srwm", "deltanet", "srdelta")


class InspectError(ValueError):
    """A run or request this tool cannot serve; the message says why and what to do."""


def make_env(config, game, kind="procgen", level=0, seed=0):
    """One env playing `game`: ProcGen (kind "procgen": the run's distribution mode, level
    `level`) or FakeEnv (kind "fake").

    Raises:
      InspectError: ProcGen is not installed (the message says how to install it)."""
    if kind == "fake":
        return FakeEnv(1, games=(game,), frame_shape=tuple(config.frame_shape), seed=seed)
    ok, why = procgen_available()
    if not ok:
        raise InspectError(why)
    return MultiGameEnv((game,), 1, num_levels=1, start_level=level,
                        distribution_mode=config.distribution_mode, seed=seed)


def play(agent, params, env, episodes=1, max_steps=3000, greedy=False, seed=0):
    """Plays env 0 until `episodes` episodes have ended. Returns dict of [T] arrays: frames,
    last_reward (the agent's reward input), first, action, reward (received for the action),
    logits [T, A]."""
    policy = make_policy_fn(agent, greedy=greedy)
    state = agent.initial_state(env.num_envs)
    reward, obs, first = env.observe()
    key = jax.random.key(seed)
    rec = {k: [] for k in ("frames", "last_reward", "first", "action", "reward", "logits")}
    ended = 0
    for step in range(max_steps):
        action, logits, state = policy(params, state, obs, reward, first,
                                       jax.random.fold_in(key, step))
        for k, v in (("frames", obs), ("last_reward", reward), ("first", first),
                     ("action", action), ("logits", logits)):
            rec[k].append(np.asarray(v)[0])
        env.act(np.asarray(action))
        reward, obs, first = env.observe()
        rec["reward"].append(float(reward[0]))
        ended += bool(first[0])
        if ended >= episodes:
            break
    return {k: np.stack(v) for k, v in rec.items()}


def replay(agent, params, rec):
    """One apply over the recorded steps of `play` with the statistics recorded.

    Returns (logits [T, A], {layer path: {stat: [T, H]}})."""
    @jax.jit
    def run(frames, last_reward, first):
        (out, _), stats = agent.apply(params, frames[None], last_reward[None], first[None],
                                      agent.initial_state(1), mutable=[STATS_COLLECTION])
        return out[0][0], collect_layers(stats[STATS_COLLECTION])

    logits, layers = jax.device_get(run(rec["frames"], rec["last_reward"], rec["first"]))
    return logits, {p: {n: a[0] for n, a in s.items()} for p, s in layers.items()}


def _episode_index(first):
    """Episode counter per step (the first step is episode 0 whether or not it is marked)."""
    idx = np.cumsum(first.astype(int))
    return idx - idx[0]


def plot_episode(path, rec, layers, game):
    """episode.png (see the module docstring) from play's `rec` and replay's `layers`;
    returns `path`."""
    T = len(rec["action"])
    x = np.arange(T)
    bounds = [t - 0.5 for t in np.nonzero(rec["first"])[0] if t > 0]
    grid = [[{"title": f"{game}: reward received (line) and action taken (dots)", "legend": True,
              "lines": [("reward", rec["reward"], dict(color="tab:green")),
                        ("action", rec["action"],
                         dict(color="tab:blue", marker=".", linestyle="none", markersize=3))]}]]
    for p, s in layers.items():
        name = p.split("/")[-2]
        if "lr_y" in s:
            for prefix, what in (("lr", "learning rates sigma(x' w_b)"), ("update", "update norms"),
                                 ("dist", "distance from the slow weights")):
                grid.append([{"title": f"{name}: {what} (mean over heads)", "legend": True,
                              "lines": [(m if m != "b" else "b (w_b)",
                                         s[f"{prefix}_{m}"].mean(-1), {})
                                        for m in MATRICES]}])
        else:
            for n in ("beta", "error_norm", "state_norm"):
                grid.append([{"title": f"{name}: {n} (mean over heads)",
                              "lines": [(n, s[n].mean(-1), {})]}])
    return line_grid(path, grid, x, vlines=bounds, xlabel="env step (dashed: episode boundary)",
                     col_width=max(8.0, min(24.0, T / 25)), row_height=1.9)


def inspect(workdir, game, out=None, episodes=1, env_kind="procgen", level=0, greedy=False,
            max_steps=3000, seed=0, defaults=None):
    """Plays, replays with statistics, writes stats.csv, episode.png and summary.json.

    Args:
      workdir: run directory of rl.train (its latest checkpoint is used).
      game: the game to play (e.g. starpilot).
      out: output folder (default <workdir>/inspect_<game>).
      episodes: episodes to play; max_steps caps the env steps.
      env_kind: "procgen" or "fake" (rl.fake_env.FakeEnv; no ProcGen needed).
      level: ProcGen level; greedy: argmax actions instead of sampled ones; seed: of the env
        and the action sampling.
      defaults: ConfigDict filling fields an older config.json lacks (the CLI passes
        configs/rl/default.py).
    Returns:
      The summary dict (also written to summary.json).
    Raises:
      FileNotFoundError: no config.json or no checkpoint; RuntimeError: it cannot be restored;
      InspectError: the core has no fast weights, or ProcGen is missing.
    """
    core = load_run_config(workdir, defaults).agent.core  # checked before the checkpoint is read
    if core not in FAST_WEIGHT_CORES:
        raise InspectError(f"{workdir} has a {core!r} core: only fast-weight cores "
                           f"{FAST_WEIGHT_CORES} have statistics to inspect.")
    config, params, env_steps = load_for_eval(workdir, defaults)
    out = ensure_dir(out or os.path.join(workdir, f"inspect_{game}"))
    agent = make_agent(config)
    rec = play(agent, params, make_env(config, game, env_kind, level, seed), episodes, max_steps,
               greedy, seed)
    logits, layers = replay(agent, params, rec)
    ep = _episode_index(rec["first"])
    rows = layer_rows({p: {n: a[None] for n, a in s.items()} for p, s in layers.items()},
                      {}, {"step": np.arange(len(ep)), "episode": ep,
                           "first": rec["first"].astype(int),
                           "action": rec["action"], "reward": rec["reward"]})
    files = [write_csv(os.path.join(out, "stats.csv"), rows),
             plot_episode(os.path.join(out, "episode.png"), rec, layers, game)]
    returns = [float(rec["reward"][ep == e].sum()) for e in np.unique(ep)]
    summary = dict(workdir=workdir, game=game, env_steps_trained=int(env_steps), steps=int(len(ep)),
                   episode_returns=returns,
                   replay_max_logit_diff=float(np.abs(logits - rec["logits"]).max()),
                   means={p: {n: float(a.mean()) for n, a in s.items()} for p, s in layers.items()},
                   files=files)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
