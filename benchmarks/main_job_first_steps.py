"""What the README's main job computes in its first steps, at any checkout (issue 24 kind 14).

    JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=2 \
        python benchmarks/main_job_first_steps.py CHECKOUT [STEPS]

CHECKOUT is a source tree of this project (e.g. `git worktree add /tmp/old 9c30d27`); it is put
first on the path, so the same command compares two commits under one jax. Prints a hash of
configs/fewshot/omniglot_srwm_cpu.py's config, of the first training batches, of the initial
parameters, then loss / grad norm / accuracy of the first STEPS steps (default 12) and a hash
of the parameters after them. Works on the layouts before and after the run-layer refactor
(fewshot.train.build / fewshot.training.build).
"""
import hashlib
import json
import os
import sys


def digest(array) -> str:
    import numpy as np  # noqa: PLC0415

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:12]


def main(root: str, steps: int) -> None:
    sys.path.insert(0, os.path.abspath(root))
    os.chdir(root)
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from configs.fewshot.omniglot_srwm_cpu import get_config  # noqa: PLC0415
    try:
        from fewshot import training as t  # noqa: PLC0415
    except ImportError:  # before the module renames
        try:
            from fewshot import trainer as t  # noqa: PLC0415
        except ImportError:  # before the run-layer refactor
            from fewshot import train as t  # noqa: PLC0415
    c = get_config()
    c.data_dir = os.environ.get("SRWM_JAX_DATA_OMNIGLOT", "/work/shared/data/omniglot")
    data = json.loads(c.to_json_best_effort())
    print("config", digest(np.frombuffer(json.dumps(data, sort_keys=True).encode(), np.uint8)))
    sampler = t.make_sampler(c, "train", c.seed)
    first = sampler.sample(1, 0)
    model, optimizer, mesh, train_step, _ = t.build(c)
    state = t.initial_state(c, model, optimizer, mesh, first)
    flat = lambda tree: np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree)])  # noqa: E731
    print("initial params", digest(flat(state.params)), "devices", jax.device_count())
    key = jax.random.fold_in(jax.random.key(c.seed), 1)
    put = getattr(mesh, "put_process_batch", None) or mesh.put_batch
    for step, batch in sampler.iterate(c.batch_size, start_step=0, num_steps=steps):
        print("batch", step, digest(np.concatenate([np.asarray(v).ravel().view(np.uint8)
                                                    for _, v in sorted(batch.items())])))
        state, m = train_step(state, put(batch), key)
        print("step", step, json.dumps({k: float(v) for k, v in sorted(m.items())}))
    print("params after", digest(flat(state.params)))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 12)
