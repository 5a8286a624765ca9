"""orbax checkpoints of the learner: params, optimizer state, update count, env steps, RNG key."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def make_manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    return ocp.CheckpointManager(directory,
                                 options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep))


def save(manager, train_state, env_steps: int, rng_key) -> None:
    """Saves at step `env_steps` (asynchronous: call manager.wait_until_finished() before exit)."""
    tree = dict(params=train_state.params, opt_state=train_state.opt_state,
                update=train_state.update, env_steps=np.asarray(env_steps, np.int64),
                rng=jax.random.key_data(rng_key))
    manager.save(int(env_steps), args=ocp.args.StandardSave(tree), force=True)


def restore(manager, train_state, rng_key, step=None):
    """Restores into the structure/shardings of `train_state`. Returns (train_state, env_steps, rng)."""
    step = manager.latest_step() if step is None else step
    target = dict(params=train_state.params, opt_state=train_state.opt_state,
                  update=train_state.update, env_steps=np.zeros((), np.int64),
                  rng=jax.random.key_data(rng_key))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    tree = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    new_state = type(train_state)(tree["params"], tree["opt_state"], tree["update"])
    return new_state, int(tree["env_steps"]), jax.random.wrap_key_data(tree["rng"])


def save_config(workdir: str, config) -> None:
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str):
    with open(os.path.join(workdir, "config.json")) as f:
        data = json.load(f)
    # JSON turns tuples into lists; ConfigDict fields declared as tuples need them back.
    for key in ("games", "eval_splits", "frame_shape", "actor_device_ids", "learner_device_ids"):
        if key in data:
            data[key] = tuple(tuple(x) if isinstance(x, list) else x for x in data[key])
    # Fields added since the run was started take their defaults.
    from configs.rl import default
    config = default.get_config()
    config.update(data)
    return config


def load_for_eval(workdir: str):
    """(config, params, env_steps) of the latest checkpoint in `workdir`, on the default device."""
    from .agent import make_agent
    from .learner import Learner
    from .training import init_params, num_updates_for
    config = load_config(workdir)
    agent = make_agent(config)
    learner = Learner(agent, config, num_updates_for(config), devices=jax.devices()[:1])
    train_state = learner.init_state(init_params(agent, jax.random.key(0), config.frame_shape))
    manager = make_manager(workdir)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
    train_state, env_steps, _ = restore(manager, train_state, jax.random.key(0))
    return config, train_state.params, env_steps
