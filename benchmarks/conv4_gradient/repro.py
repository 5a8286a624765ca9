# ruff: noqa  (a scratch script of the jax 0.10.2 Conv4-gradient investigation, kept as it was run; docs/jax-0.10.2-conv4-gradient.md)
import sys
import numpy as np
import jax, jax.numpy as jnp
import flax.linen as nn
import fewshot.models as fm
z = np.load("./a10.npz")
imgs = np.concatenate([z["b_support_images"], z["b_query_images"]], 1)
imgs = imgs.reshape((-1,) + imgs.shape[2:]).astype(np.float32)
print(jax.__version__, imgs.shape, "devices", jax.device_count())
ct_full = jax.random.normal(jax.random.key(1), (imgs.shape[0], 32))
def run(pool_name, pool, x):
    fm.max_pool_2x2 = pool
    m = fm.Conv4(32)
    v = m.init(jax.random.key(0), x, train=False)
    def loss(p):
        y, _ = m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(y * ct)
    g = (jax.jit(jax.grad(loss)) if JIT else jax.grad(loss))(v["params"])
    print(f"{pool_name:10s}", " ".join(f"|db{i}| {float(jnp.linalg.norm(g[f'Conv_{i}']['bias'])):.3e} |dk{i}| {float(jnp.linalg.norm(g[f'Conv_{i}']['kernel'])):.6f}" for i in range(4)))
orig = fm.max_pool_2x2
import os
for n in map(int, os.environ.get("NS", "320").split(",")):
  for JIT in (True, False):
    sub = imgs[:n]; ct = ct_full[:n]
    print("N", n, "jit", JIT)
    run("reshape", orig, sub)
    run("nn.max_pool", lambda x: nn.max_pool(x, (2, 2), (2, 2)), sub)
