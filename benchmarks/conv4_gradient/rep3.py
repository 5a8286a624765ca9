# ruff: noqa  (a scratch script of the jax 0.10.2 Conv4-gradient investigation, kept as it was run; docs/jax-0.10.2-conv4-gradient.md)
import os, sys
import numpy as np
import jax, jax.numpy as jnp
import flax.linen as nn
import fewshot.models as fm
N = 64
if os.environ.get("RANDOM_IMAGES"):
    imgs = np.asarray(jax.random.uniform(jax.random.key(3), (N, 28, 28, 1)))
else:
    z = np.load("./a10.npz")
    imgs = np.concatenate([z["b_support_images"], z["b_query_images"]], 1)
    imgs = imgs.reshape((-1,) + imgs.shape[2:]).astype(np.float32)[:N]
ct = jax.random.normal(jax.random.key(1), (N, 32))
m = fm.Conv4(32); v = m.init(jax.random.key(0), imgs, train=False)
def loss(p):
    y, _ = m.apply({"params": p, "batch_stats": v["batch_stats"]}, imgs, train=True, mutable=["batch_stats"])
    return jnp.sum(y * ct)
gj = jax.jit(jax.grad(loss))(v["params"]); ge = jax.grad(loss)(v["params"])
rel = max(float(jnp.linalg.norm(gj[k]["kernel"] - ge[k]["kernel"]) / jnp.linalg.norm(ge[k]["kernel"])) for k in ge if k.startswith("Conv"))
print(f"jax {jax.__version__} XLA_FLAGS={os.environ.get('XLA_FLAGS','')!r} random={bool(os.environ.get('RANDOM_IMAGES'))}: jit |db2| {float(jnp.linalg.norm(gj['Conv_2']['bias'])):.3e} |db3| {float(jnp.linalg.norm(gj['Conv_3']['bias'])):.3e}; max rel diff jit vs eager kernel grads {rel:.2e}")
