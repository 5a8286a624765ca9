"""Sebulba actor-learner plumbing (Hessel et al., 2021, "Podracer architectures").

    actor thread k (owns a MultiGameEnv of N envs, runs on an actor device)
        loop: take the newest published params → T steps of batched inference + env steps
              → put an `Unroll` (N unrolls of T+1 observations) into the bounded rollout queue
    learner (the caller's thread): take unrolls until it has `batch_size`, update, publish params

The bounded queue gives back-pressure: when the learner is slower than the actors, actors block
on `put`, so the params that produced a batch are at most about
    queue_size + num_actor_threads + 1
versions old (the "policy lag", measured per unroll and reported).

Failures and liveness (no hang, whatever the timing):
  - an exception in an actor thread is stored, then `stop` is set; the learner's `get_batch`
    raises `ActorFailed` from it (`__cause__` is the actor's exception), also when the error
    lands while the learner is between its checks;
  - an actor that delivers no unroll within `unroll_timeout(config)` seconds (an env that never
    returns, a hung inference) makes `get_batch` raise `ActorStalled`, naming the actor, what it
    was doing (creating its envs, policy inference, env.act, env.observe) and for how long.
    Time an actor spends waiting for room in the full queue does not count;
  - actors end when `stop` is set (`close()`) or when the learner's thread (the one that called
    `start()`) has ended without closing the runner, also while waiting on a full queue.
A thread stuck inside `env.act` cannot be interrupted by Python: it is left behind as a daemon
thread and does not keep the process alive.
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


class ActorStalled(RuntimeError):
    """An actor delivered no unroll within the unroll timeout (message: which, doing what)."""


def unroll_timeout(config) -> float:
    """Seconds an actor may take for one unroll before the learner gives up on it.

    `config.unroll_timeout_seconds` if > 0, else automatic: 180 s (room for creating the envs
    and compiling the policy on the first unroll) + 50 ms per env step of one unroll
    (unroll_length x envs of one actor), e.g. 240 s for the paper setting (50 x 24).
    """
    value = float(config.unroll_timeout_seconds)
    if value > 0:
        return value
    envs = len(config.games) * config.envs_per_game
    return 180.0 + 0.05 * config.unroll_length * envs


_QUEUE_WAIT = "waiting for room in the full rollout queue"


@dataclasses.dataclass
class Unroll:
    """One actor's rollout of N unrolls, as put on the rollout queue."""
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
        """Makes `params` (policy version `version`) the newest; waits until they are computed."""
        jax.block_until_ready(params)  # cleanba: unfinished arrays in other threads can hang jit
        with self._lock:
            self._params, self._version = params, version

    def latest(self):
        """-> (params, version): the newest published pair."""
        with self._lock:
            return self._params, self._version


def make_policy_fn(agent, greedy: bool = False):
    """jitted (params, state, frame [N,...], reward [N], first [N], key)
    -> (action, logits, state)."""

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
        self.unroll_timeout = unroll_timeout(config)
        # Liveness, per actor: what it is doing since when, and when its current unroll began.
        self._activity: dict[int, tuple[str, float]] = {}
        self._unroll_start: dict[int, float] = {}
        self._stalled: set[int] = set()
        self._learner_thread: threading.Thread | None = None

    # -- actors -----------------------------------------------------------------------------
    def start(self):
        """Starts config.num_actor_threads actor threads (round-robin over actor_devices); the
        calling thread is the learner's (actors end if it ends without close())."""
        self._learner_thread = threading.current_thread()
        now = time.monotonic()
        for actor_id in range(self.config.num_actor_threads):
            self._activity[actor_id] = ("starting", now)
            self._unroll_start[actor_id] = now
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
            # Error first, then `stop`: whoever sees `stop` set by an actor also sees the error.
            self.errors.append((f"actor-{actor_id}", e, traceback.format_exc()))
            self.stop.set()

    def _doing(self, actor_id, what):
        self._activity[actor_id] = (what, time.monotonic())

    def _running(self) -> bool:
        """False once the run is stopped or the learner's thread ended without closing it."""
        if self._learner_thread is not None and not self._learner_thread.is_alive():
            self.stop.set()
        return not self.stop.is_set()

    def _put(self, actor_id, item) -> bool:
        self._doing(actor_id, _QUEUE_WAIT)
        while self._running():
            try:
                self.rollout_queue.put(item, timeout=_POLL_SECONDS)
                self._unroll_start[actor_id] = time.monotonic()
                return True
            except queue.Full:
                continue
        return False

    def _actor_loop(self, actor_id, device):
        cfg = self.config
        self._doing(actor_id, "creating its environments (env_factory)")
        env = self.env_factory(actor_id)
        n, unroll = env.num_envs, cfg.unroll_length
        key = jax.random.fold_in(self._base_key, actor_id)
        state = jax.device_put(self.agent.initial_state(n), device)
        version, params = -1, None
        self._doing(actor_id, "env.observe (first observation)")
        reward, obs, first = env.observe()
        for ep in env.track(reward, first):
            self.episodes.append(ep)
        step, unroll_index = 0, 0
        while self._running():
            self._doing(actor_id, f"taking the newest params (unroll {unroll_index})")
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
                where = f"(step {t + 1} of {unroll}, unroll {unroll_index})"
                self._doing(actor_id, f"policy inference {where}")
                action, step_logits, state = self._policy(
                    params, state, jax.device_put(obs, device), jax.device_put(reward, device),
                    jax.device_put(first, device), step_key)
                action = np.asarray(action)
                actions[:, t], logits[:, t] = action, np.asarray(step_logits)
                self._doing(actor_id, f"env.act {where}")
                env.act(action)
                self._doing(actor_id, f"env.observe {where}")
                reward, obs, first = env.observe()
                for ep in env.track(reward, first):
                    self.episodes.append(ep)
            with self._steps_lock:
                self.env_steps_by_actors += n * unroll
            batch = Batch(frames, rewards, firsts, actions, logits, initial_state)
            item = Unroll(batch, np.full(n, version), env.game_of_env.copy(), actor_id)
            unroll_index += 1
            if not self._put(actor_id, item):
                return

    # -- learner side -----------------------------------------------------------------------
    def check_errors(self):
        """Raises:
          ActorFailed: an actor thread raised (the first error, with its traceback)."""
        if self.errors:
            name, error, tb = self.errors[0]
            raise ActorFailed(
                f"{name} failed with {type(error).__name__}: {error}\n{tb}") from error

    def check_liveness(self):
        """Raises `ActorStalled` if an actor has worked on one unroll longer than the timeout."""
        now = time.monotonic()
        for actor_id, thread in enumerate(self._threads):
            what, since = self._activity[actor_id]
            if what == _QUEUE_WAIT or not thread.is_alive():
                continue
            waited = now - self._unroll_start[actor_id]
            if waited > self.unroll_timeout:
                self._stalled.add(actor_id)
                self.stop.set()
                raise ActorStalled(
                    f"actor-{actor_id} delivered no unroll for {waited:.0f} s (limit "
                    f"{self.unroll_timeout:.0f} s, config.unroll_timeout_seconds): it has been in "
                    f"{what} for {now - since:.0f} s. Stopping; nothing is saved from this "
                    f"point (the last complete checkpoint stays). Check the environment, or "
                    f"raise unroll_timeout_seconds if unrolls are legitimately this slow.")

    def get_batch(self, batch_size: int, timeout: float | None = None):
        """Blocks until `batch_size` unrolls have arrived. Returns (Batch, params_versions [B]).

        Raises `ActorFailed` if an actor died (from its exception), `ActorStalled` if an actor
        delivered no unroll within `self.unroll_timeout` seconds, TimeoutError after `timeout`
        seconds without enough unrolls, RuntimeError if the runner was closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        have = sum(len(u.params_version) for u in self._pending)
        while have < batch_size:
            self.check_errors()
            if self.stop.is_set():
                # An actor may have failed after check_errors() above: it stores its error
                # before setting `stop`, so this second check always finds it.
                self.check_errors()
                raise RuntimeError("runner stopped (close() was called or an actor stalled)")
            self.check_liveness()
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
        """Hands the learner's new `params` (after update number `version`) to the actors."""
        self.params_store.publish(params, version)

    def drain_episodes(self) -> list[EpisodeRecord]:
        """Episodes finished by the actors since the last call."""
        out = []
        while self.episodes:
            out.append(self.episodes.popleft())
        return out

    def close(self, timeout: float = 10.0):
        """Stops the actors and waits up to `timeout` seconds in all for them (not for stalled
        ones: a thread stuck in env.act cannot be interrupted; it stays behind as a daemon)."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for actor_id, t in enumerate(self._threads):
            if actor_id not in self._stalled:
                t.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False
