# ruff: noqa  (a scratch script of the jax 0.10.2 Conv4-gradient investigation, kept as it was run; docs/jax-0.10.2-conv4-gradient.md)
import sys, os
import numpy as np
import jax, jax.numpy as jnp
from configs.fewshot.omniglot_srwm_cpu import get_config
from fewshot import training
from fewshot.steps import sync_loss
c = get_config(); c.data_dir = sys.argv[1]; tag = sys.argv[2]
model, optimizer, mesh, _, _ = training.build(c)
z = np.load("./a10.npz")
def tree_from(prefix, like):
    leaves = jax.tree_util.tree_flatten_with_path(like)[0]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like),
        [z[prefix + jax.tree_util.keystr(k)] for k, _ in leaves])
sampler = training.make_sampler(c, "train", c.seed)
state = training.initial_state(c, model, optimizer, mesh, sampler.sample(1, 0))
params = tree_from("p", jax.device_get(state.params)); bs = jax.device_get(state.batch_stats)
batch = {k[2:]: z[k] for k in z.files if k.startswith("b_")}
key = jax.random.key(0)
def L(p, b=batch): return sync_loss(model, c, p, bs, b, key, True)[0]
g32 = jax.jit(jax.grad(L))(params)
# ties inside the 2x2 pooling windows of each BatchNorm output (float32 forward)
from fewshot.models import sync_episode_inputs
images, labels_in, _ = sync_episode_inputs(batch, c.n_way, c.query_label, c.train_queries)
_, st = model.apply({"params": params, "batch_stats": bs}, images, labels_in, train=True,
                    parallel_queries=c.train_queries, mutable=["batch_stats", "intermediates"],
                    capture_intermediates=lambda m, n: "BatchNorm" in type(m).__name__)
for i in range(4):
    x = np.asarray(st["intermediates"]["Conv4_0"][f"BatchNorm_{i}"]["__call__"][0])
    N, H, W, C = x.shape; x = x[:, :H//2*2, :W//2*2].reshape(N, H//2, 2, W//2, 2, C)
    m = x.max(axis=(2, 4), keepdims=True); cnt = (x == m).sum(axis=(2, 4))
    print(f"BN_{i} out {x.shape}: windows {cnt.size}, tied windows {(cnt>1).sum()} ({(cnt>1).mean():.3f})")
np.savez(f"./g32_{tag}.npz", **{jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(g32)[0]})
print("g32 norm", float(jnp.sqrt(sum(jnp.sum(v.astype(jnp.float64)**2) for v in jax.tree.leaves(g32)))))
# float64: backbone etc in float64 (the SRWM scan casts to float32 inside)
jax.config.update("jax_enable_x64", True)
p64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), params)
b64 = {k: (jnp.asarray(v, jnp.float64) if v.dtype == np.float32 else v) for k, v in batch.items()}
L64 = jax.jit(lambda p: L(p, b64))
g64 = jax.jit(jax.grad(lambda p: L(p, b64)))(p64)
np.savez(f"./g64_{tag}.npz", **{jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(g64)[0]})
print("L64", float(L64(p64)), "g64 norm", float(jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(g64)))))
# directional finite differences along backbone-only directions
others = [f for f in sys.argv[3:]]
dirs = {"g32_" + tag: g32, "g64_" + tag: g64}
for f in others:
    o = np.load(f); dirs[os.path.basename(f)[:-4]] = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(g32), [o[jax.tree_util.keystr(k)] for k, _ in jax.tree_util.tree_flatten_with_path(g32)[0]])
GROUPS = sys.argv[-1].split(",") if os.environ.get("FDGROUPS") is None else os.environ["FDGROUPS"].split(",")
def bb(t, grp): return {k: (v if k == grp else jax.tree.map(jnp.zeros_like, v)) for k, v in t.items()}
for name, g in [(n, g) for n, g in dirs.items()]:
  for grp in GROUPS:
    gb = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), bb(g, grp))
    n = float(jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(gb))))
    d = jax.tree.map(lambda v: v / n, gb)
    fd = {}
    for eps in (1e-3, 1e-4):
        lp = float(L64(jax.tree.map(lambda p, v: p + eps * v, p64, d)))
        lm = float(L64(jax.tree.map(lambda p, v: p - eps * v, p64, d)))
        l0 = float(L64(p64))
        fd[eps] = ((lp - lm) / (2 * eps), (lp - l0) / eps, (l0 - lm) / eps)
    print(f"dir {name} [{grp}]: |g| {n:.5f}; central/fwd/bwd FD: " + "; ".join(f"eps {e:g}: {a:.5f} {b:.5f} {cc:.5f}" for e, (a, b, cc) in fd.items()))
