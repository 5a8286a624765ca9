# ruff: noqa  (a scratch script of the jax 0.10.2 Conv4-gradient investigation, kept as it was run; docs/jax-0.10.2-conv4-gradient.md)
import sys, json
import numpy as np
import jax, jax.numpy as jnp
from configs.fewshot.omniglot_srwm_cpu import get_config
from fewshot import training
from fewshot.steps import sync_loss
c = get_config()
c.data_dir = sys.argv[1]
out = sys.argv[2]
model, optimizer, mesh, train_step, _ = training.build(c)
sampler = training.make_sampler(c, "train", c.seed)
state = training.initial_state(c, model, optimizer, mesh, sampler.sample(1, 0))
key = jax.random.fold_in(jax.random.fold_in(jax.random.key(c.seed), 1), 0)
step, batch = next(iter(sampler.iterate(c.batch_size, start_step=0, num_steps=1)))
batch = jax.tree.map(np.asarray, batch)
params = jax.device_get(state.params); bs = jax.device_get(state.batch_stats)
f = jax.jit(jax.value_and_grad(lambda p: sync_loss(model, c, p, bs, batch, key, True), has_aux=True))
(loss, aux), g = f(params)
flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(g)[0]}
pflat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
print("jax", jax.__version__, "devices", jax.device_count(), "loss", float(loss), "gnorm", float(np.sqrt(sum((v.astype(np.float64)**2).sum() for v in flat.values()))))
np.savez(out, **{"g" + k: v for k, v in flat.items()}, **{"p" + k: v for k, v in pflat.items()}, **{"b_" + k: v for k, v in batch.items()})
