"""Sebulba actor-learner plumbing (Hessel et al., 2021, "Podracer architectures").

    actor thread k (owns a MultiGameEnv of N envs, runs on an actor device)
        loop: take the newest published params → T steps of batched inference + env steps
              → put an `Unroll` (N unrolls of T+1 observations) into the bounded rollout queue
    learner (the caller's thread): take unrolls until it has `batch_size`, update, publish params

The bounded queue gives back-pressure: when the learner is slower than the actors, actors block
on `put`, so the params that produced a batch are at most about
    queue_size + num_actor_threads + 1
versions old (the "policy lag", measured per unroll and reported).

Failures: an exception in an actor thread is stored and sets `stop`; the learner's next
`get_batch` raises `ActorFailed` from it (no hang: every blocking call polls `stop`).
"""

import collections
import dataclasses
import queue
import threading
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from .envs import EpisodeRecord, MultiGameEnv
from .learner import Batch, concat_batches, slice_batch

_POLL_SECONDS = 0.2


class ActorFailed(RuntimeError):
    """An actor thread raised; the original exception is the `__cause__`."""


@dataclasses.dataclass
class Unroll:
    batch: Batch                 # host numpy, N unrolls
    params_version: np.ndarray   # [N] version of the params that acted
    game_ids: np.ndarray         # [N]
    actor_id: int


class ParamsStore:
    """The newest params and their version; actors read it without blocking the learner."""

    def __init__(self, params, version: int = 0):
        self._lock = threading.Lock()
        self._params, self._version = params, version

    def publish(self, params, version: int):
        jax.block_until_ready(params)  # cleanba: unfinished arrays in other threads can hang jit
        with self._lock:
            self._params, self._version = params, version

    def latest(self):
        with self._lock:
            return self._params, self._version


def make_policy_fn(agent, greedy: bool = False):
    """jitted (params, state, frame [N,...], reward [N], first [N], key) -> (action, logits, state)."""

    def policy(params, state, frame, reward, first, key):
        (logits, _), new_state = agent.apply(params, frame[:, None], reward[:, None],
                                             first[:, None], state)
        logits = logits[:, 0]
        if greedy:
            action = jnp.argmax(logits, axis=-1)
        else:
            action = jax.random.categorical(key, logits, axis=-1)
        return action.astype(jnp.int32), logits, new_state

    return jax.jit(policy)


class SebulbaRunner:
    """Owns the actor threads, the queue and the published params. Use as a context manager."""

    def __init__(self, agent, config, params, *, actor_devices=None, env_factory=None,
                 seed: int = 0, start_version: int = 0):
        self.agent = agent
        self.config = config
        self.actor_devices = list(actor_devices or jax.devices()[:1])
        self.env_factory = env_factory or (lambda actor_id: MultiGameEnv(
            config.games, config.envs_per_game, num_levels=config.num_levels,
            start_level=config.start_level, distribution_mode=config.distribution_mode,
            seed=seed * 100 + actor_id, num_threads=config.env_threads))
        self.params_store = ParamsStore(params, start_version)
        self.rollout_queue: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self.stop = threading.Event()
        self.errors: list[tuple[str, BaseException, str]] = []
        self.episodes: collections.deque[EpisodeRecord] = collections.deque()
        self.env_steps_by_actors = 0
        self._steps_lock = threading.Lock()
        self._policy = make_policy_fn(agent)
        self._base_key = jax.random.key(seed)
        self._threads: list[threading.Thread] = []
        self._pending: list[Unroll] = []

    # -- actors -----------------------------------------------------------------------------
    def start(self):
        for actor_id in range(self.config.num_actor_threads):
            device = self.actor_devices[actor_id % len(self.actor_devices)]
            t = threading.Thread(target=self._actor_main, args=(actor_id, device),
                                 name=f"actor-{actor_id}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _actor_main(self, actor_id, device):
        try:
            self._actor_loop(actor_id, device)
        except BaseException as e:  # noqa: BLE001 - any failure must stop the run
            self.errors.append((f"actor-{actor_id}", e, traceback.format_exc()))
            self.stop.set()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.rollout_queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _actor_loop(self, actor_id, device):
        cfg = self.config
        env = self.env_factory(actor_id)
        n, unroll = env.num_envs, cfg.unroll_length
        key = jax.random.fold_in(self._base_key, actor_id)
        state = jax.device_put(self.agent.initial_state(n), device)
        version, params = -1, None
        reward, obs, first = env.observe()
        for ep in env.track(reward, first):
            self.episodes.append(ep)
        step = 0
        while not self.stop.is_set():
            latest, latest_version = self.params_store.latest()
            if latest_version != version:
                params, version = jax.device_put(latest, device), latest_version
            initial_state = jax.tree.map(np.asarray, state)
            frames = np.empty((n, unroll + 1) + obs.shape[1:], np.uint8)
            rewards = np.empty((n, unroll + 1), np.float32)
            firsts = np.empty((n, unroll + 1), bool)
            actions = np.empty((n, unroll), np.int32)
            logits = np.empty((n, unroll, cfg.num_actions), np.float32)
            for t in range(unroll + 1):
                frames[:, t], rewards[:, t], firsts[:, t] = obs, reward, first
                if t == unroll:
                    break  # obs_T is obs_0 of the next unroll: act on it there
                step_key = jax.random.fold_in(key, step)
                step += 1
                action, step_logits, state = self._policy(
                    params, state, jax.device_put(obs, device), jax.device_put(reward, device),
                    jax.device_put(first, device), step_key)
                action = np.asarray(action)
                actions[:, t], logits[:, t] = action, np.asarray(step_logits)
                env.act(action)
                reward, obs, first = env.observe()
                for ep in env.track(reward, first):
                    self.episodes.append(ep)
            with self._steps_lock:
                self.env_steps_by_actors += n * unroll
            batch = Batch(frames, rewards, firsts, actions, logits, initial_state)
            item = Unroll(batch, np.full(n, version), env.game_of_env.copy(), actor_id)
            if not self._put(item):
                return

    # -- learner side -----------------------------------------------------------------------
    def check_errors(self):
        if self.errors:
            name, error, tb = self.errors[0]
            raise ActorFailed(f"{name} failed with {type(error).__name__}: {error}\n{tb}") from error

    def get_batch(self, batch_size: int, timeout: float | None = None):
        """Blocks until `batch_size` unrolls have arrived. Returns (Batch, params_versions [B]).

        Raises `ActorFailed` if an actor died, TimeoutError after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        have = sum(len(u.params_version) for u in self._pending)
        while have < batch_size:
            self.check_errors()
            if self.stop.is_set():
                raise RuntimeError("runner stopped")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no unrolls for {timeout}s")
            try:
                item = self.rollout_queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            self._pending.append(item)
            have += len(item.params_version)
        batch = concat_batches([u.batch for u in self._pending])
        versions = np.concatenate([u.params_version for u in self._pending])
        games = np.concatenate([u.game_ids for u in self._pending])
        if have > batch_size:  # keep the rest for the next batch
            rest = Unroll(slice_batch(batch, batch_size, None), versions[batch_size:],
                          games[batch_size:], -1)
            self._pending = [rest]
        else:
            self._pending = []
        return slice_batch(batch, 0, batch_size), versions[:batch_size]

    def publish(self, params, version: int):
        self.params_store.publish(params, version)

    def drain_episodes(self) -> list[EpisodeRecord]:
        out = []
        while self.episodes:
            out.append(self.episodes.popleft())
        return out

    def close(self, timeout: float = 10.0):
        self.stop.set()
        for t in self._threads:
            t.join(timeout=timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False
