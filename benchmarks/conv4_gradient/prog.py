# ruff: noqa  (a scratch script of the jax 0.10.2 Conv4-gradient investigation, kept as it was run; docs/jax-0.10.2-conv4-gradient.md)

import json, sys
import jax
from configs.fewshot.omniglot_srwm_cpu import get_config
from fewshot import training
c = get_config()
c.data_dir = sys.argv[1]
model, optimizer, mesh, train_step, _ = training.build(c)
sampler = training.make_sampler(c, "train", c.seed)
state = training.initial_state(c, model, optimizer, mesh, sampler.sample(1, 0))
key = jax.random.fold_in(jax.random.key(c.seed), 1)
out = []
for step, batch in sampler.iterate(c.batch_size, start_step=0, num_steps=int(sys.argv[2])):
    state, m = train_step(state, mesh.put_process_batch(batch), key)
    out.append([float(m["loss"]), float(m["grad_norm"]), float(m["accuracy"])])
print("RESULT " + json.dumps(out))

