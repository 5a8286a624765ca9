"""Per-step statistics (srwm_jax.introspect): every statistic against a float64 NumPy loop
written here from the definitions, resets, jit/vmap, and the layers' sow path (outputs unchanged
with statistics on or off, nothing computed when off, any impl)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srwm_jax import SRWMWeights, delta_rule, introspect, srwm
from srwm_jax.introspect import STATS_COLLECTION, delta_rule_stats, srwm_stats
from srwm_jax.layers import DeltaNetLayer, MemoryStack, SRWMLayer

# float32 recorder vs float64 loop over <= 7 steps of size-4 heads: observed errors ~1e-6
# relative; 1e-4 leaves room for other BLAS orderings without hiding a wrong formula (a wrong
# index or a read from W_t instead of W_{t-1} changes values by > 1e-2).
RTOL, ATOL = 1e-4, 1e-5


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def srwm_stats_loop(x, W, reset, W_reset, input_softmax):
    """float64 per (b, h, t) loop: lr, update norm, distance [B, T, H, 4], entropies [B, T, H]."""
    x = np.asarray(x, np.float64)
    W = [np.asarray(w, np.float64).copy() for w in W]
    ref = W if W_reset is None else [np.asarray(w, np.float64) for w in W_reset]
    B, T, H, d = x.shape
    out = {n: np.zeros((B, T, H, 4)) for n in ("lr", "upd", "dist")}
    out.update(eq=np.zeros((B, T, H)), ek=np.zeros((B, T, H)))
    for b in range(B):
        for h in range(H):
            cur = [w[b, h].copy() for w in W]
            r = [w[b, h] if w.ndim == 4 else w[h] for w in ref]
            for t in range(T):
                if reset is not None and reset[b, t]:
                    cur = [m.copy() for m in r]
                xt = _softmax(x[b, t, h]) if input_softmax else x[b, t, h]
                q, k = _softmax(xt @ cur[1]), _softmax(xt @ cur[2])
                lr = 1.0 / (1.0 + np.exp(-(xt @ cur[3])))
                out["eq"][b, t, h] = -np.sum(q * np.log(q))
                out["ek"][b, t, h] = -np.sum(k * np.log(k))
                new = []
                for i, m in enumerate(cur):
                    update = np.outer(k, lr[i] * (q @ m - k @ m))
                    out["upd"][b, t, h, i] = np.linalg.norm(update)
                    new.append(m + update)
                cur = new
                out["lr"][b, t, h] = lr
                out["dist"][b, t, h] = [np.linalg.norm(m - m0) for m, m0 in zip(cur, r)]
    return out


def delta_stats_loop(k, v, beta, S0, reset, S_reset):
    k, v, beta = (np.asarray(a, np.float64) for a in (k, v, beta))
    B, T, H, dk = k.shape
    err, norm = np.zeros((B, T, H)), np.zeros((B, T, H))
    for b in range(B):
        for h in range(H):
            S = np.asarray(S0, np.float64)[b, h].copy()
            for t in range(T):
                if reset is not None and reset[b, t]:
                    S = (np.zeros_like(S) if S_reset is None
                         else np.asarray(S_reset, np.float64)[b, h].copy())
                e = v[b, t, h] - k[b, t, h] @ S
                S = S + np.outer(k[b, t, h], beta[b, t, h] * e)
                err[b, t, h], norm[b, t, h] = np.linalg.norm(e), np.linalg.norm(S)
    return err, norm


def _srwm_inputs(key, B=2, T=7, H=2, d=4, dy=4, scale=0.6):
    ks = jax.random.split(key, 6)
    x = jax.random.normal(ks[0], (B, T, H, d))
    W = SRWMWeights(*(scale * jax.random.normal(kk, (B, H, d, n))
                      for kk, n in zip(ks[1:5], (dy, d, d, 4))))
    reset = jax.random.bernoulli(ks[5], 0.25, (B, T))
    return x, W, reset


def _delta_inputs(key, B=2, T=7, H=2, dk=4, dv=3):
    ks = jax.random.split(key, 5)
    k = jax.nn.softmax(jax.random.normal(ks[0], (B, T, H, dk)), -1)
    v = jax.random.normal(ks[1], (B, T, H, dv))
    beta = jax.nn.sigmoid(jax.random.normal(ks[2], (B, T, H)))
    S0 = jax.random.normal(ks[3], (B, H, dk, dv))
    reset = jax.random.bernoulli(ks[4], 0.25, (B, T))
    return k, k, v, beta, S0, reset  # q = k: q does not enter the statistics


def _check_srwm(stats, ref):
    for got, name in ((stats.learning_rate, "lr"), (stats.update_norm, "upd"),
                      (stats.distance, "dist"), (stats.entropy_q, "eq"), (stats.entropy_k, "ek")):
        np.testing.assert_allclose(np.asarray(got), ref[name], rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("input_softmax", [False, True])
@pytest.mark.parametrize("with_reset", [False, True])
def test_srwm_stats_match_float64_loop(input_softmax, with_reset):
    x, W, reset = _srwm_inputs(jax.random.key(0), dy=5)
    reset = reset if with_reset else None
    W_reset = SRWMWeights(*(0.5 * w[0] for w in W))  # unbatched [H, d, *], differs from W
    stats = srwm_stats(x, W, reset, W_reset=W_reset, input_softmax=input_softmax)
    assert stats.learning_rate.shape == (2, 7, 2, 4) and stats.entropy_q.shape == (2, 7, 2)
    _check_srwm(stats, srwm_stats_loop(x, W, None if reset is None else np.asarray(reset), W_reset,
                                       input_softmax))


def test_srwm_stats_default_reference_is_the_start():
    x, W, reset = _srwm_inputs(jax.random.key(1))
    reset = np.asarray(reset)
    _check_srwm(srwm_stats(x, W, reset), srwm_stats_loop(x, W, reset, None, False))


@pytest.mark.parametrize("given_reset_state", [False, True])
def test_delta_rule_stats_match_float64_loop(given_reset_state):
    q, k, v, beta, S0, reset = _delta_inputs(jax.random.key(2))
    S_reset = 0.3 * S0[::-1] if given_reset_state else None
    stats = delta_rule_stats(q, k, v, beta, S0, reset, S_reset=S_reset)
    err, norm = delta_stats_loop(k, v, beta, S0, np.asarray(reset), S_reset)
    np.testing.assert_allclose(np.asarray(stats.beta), np.asarray(beta), rtol=0, atol=0)
    np.testing.assert_allclose(np.asarray(stats.error_norm), err, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.asarray(stats.state_norm), norm, rtol=RTOL, atol=ATOL)


def test_recorder_follows_the_ops():
    """The recorder's outputs and final state are the op's (same recurrence), and its last
    distance is the norm of W_T - W_0."""
    x, W, _ = _srwm_inputs(jax.random.key(3))
    y, W_T = srwm(x, W, impl="scan")
    y_rec, stats, W_rec = introspect._srwm_record(x, W, None, None, False)
    np.testing.assert_allclose(np.asarray(y_rec), np.asarray(y), rtol=1e-5, atol=1e-6)
    for a, b, w0, dist in zip(W_rec, W_T, W, jnp.moveaxis(stats.distance[:, -1], -1, 0)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(dist),
                                   np.linalg.norm(np.asarray(b - w0), axis=(-2, -1)),
                                   rtol=1e-5, atol=1e-6)
    q, k, v, beta, S0, _ = _delta_inputs(jax.random.key(4))
    _, S_T = delta_rule(q, k, v, beta, S0, impl="scan")
    np.testing.assert_allclose(np.asarray(delta_rule_stats(q, k, v, beta, S0).state_norm[:, -1]),
                               np.linalg.norm(np.asarray(S_T), axis=(-2, -1)), rtol=1e-5)


def test_jit_and_vmap():
    x, W, reset = _srwm_inputs(jax.random.key(5))
    eager = srwm_stats(x, W, reset)
    jitted = jax.jit(srwm_stats)(x, W, reset)
    # vmap over a leading "seed" axis of size 2: each slice equals its own call.
    xs, Ws, rs = (jax.tree.map(lambda a: jnp.stack([a, a[::-1]]), t) for t in (x, W, reset))
    mapped = jax.vmap(srwm_stats)(xs, Ws, rs)
    second = srwm_stats(*(jax.tree.map(lambda a: a[::-1], t) for t in (x, W, reset)))
    for e, j, m, s in zip(eager, jitted, mapped, second):
        np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(m[0]), np.asarray(e), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(m[1]), np.asarray(s), rtol=1e-6, atol=1e-7)
    q, k, v, beta, S0, reset = _delta_inputs(jax.random.key(6))
    d_eager = delta_rule_stats(q, k, v, beta, S0, reset)
    d_mapped = jax.jit(jax.vmap(delta_rule_stats, in_axes=(None,) * 5 + (0,)))(
        q, k, v, beta, S0, jnp.stack([reset, reset]))
    for e, m in zip(d_eager, d_mapped):
        np.testing.assert_allclose(np.asarray(m[1]), np.asarray(e), rtol=1e-6, atol=1e-7)


def test_bad_reset_shape_is_one_clear_error():
    x, W, _ = _srwm_inputs(jax.random.key(7))
    with pytest.raises(ValueError, match=r"reset has shape \[7, 2\], expected \[2, 7\]"):
        srwm_stats(x, W, jnp.zeros((7, 2), bool))


def _apply_both(module, variables, h, state, reset):
    plain = module.apply(variables, h, state, reset)
    recorded, stats = module.apply(variables, h, state, reset, mutable=[STATS_COLLECTION])
    return plain, recorded, stats[STATS_COLLECTION]


def test_srwm_layer_sows_the_reference_stats_and_keeps_outputs():
    B, T, H, d = 2, 6, 2, 4
    layer = SRWMLayer(H, d, input_softmax=True)
    h = jax.random.normal(jax.random.key(8), (B, T, H * d))
    variables = layer.init(jax.random.key(9), h)
    assert STATS_COLLECTION not in variables  # init never records
    # A carried state (weight change) and resets: the sown stats use W = slow + change as the
    # start and the slow weights as the reset state and the distance's reference.
    state = jax.tree.map(lambda a: 0.2 * jax.random.normal(jax.random.key(10), a.shape),
                         layer.initial_state(B))
    reset = jnp.array([[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]], bool)
    (y0, s0), (y1, s1), stats = _apply_both(layer, variables, h, state, reset)
    assert jnp.array_equal(y0, y1) and all(jnp.array_equal(a, b) for a, b in zip(s0, s1))
    (sown,) = stats["srwm"]
    p = variables["params"]["slow"]
    slow = SRWMWeights(p["W_y"], p["W_q"], p["W_k"], p["w_b"])
    W0 = SRWMWeights(*(s[None] + c for s, c in zip(slow, state)))
    ref = srwm_stats_loop(h.reshape(B, T, H, d), W0, np.asarray(reset), slow, True)
    _check_srwm(sown, ref)
    # The last distance is the norm of the layer's new state (its change from the slow weights).
    np.testing.assert_allclose(np.asarray(sown.distance[:, -1, :, 0]),
                               np.linalg.norm(np.asarray(s1.y), axis=(-2, -1)), rtol=1e-5)


def test_deltanet_layer_sows_the_reference_stats_and_keeps_outputs():
    B, T, H, d = 2, 5, 2, 4
    layer = DeltaNetLayer(H, d)
    x = jax.random.normal(jax.random.key(11), (B, T, H * d))
    variables = layer.init(jax.random.key(12), x)
    state = jax.random.normal(jax.random.key(13), (B, H, d, d))
    reset = jnp.array([[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]], bool)
    (y0, s0), (y1, s1), stats = _apply_both(layer, variables, x, state, reset)
    assert jnp.array_equal(y0, y1) and jnp.array_equal(s0, s1)
    (sown,) = stats["delta_rule"]
    np.testing.assert_allclose(np.asarray(sown.state_norm[:, -1]),
                               np.linalg.norm(np.asarray(s1), axis=(-2, -1)), rtol=1e-5)
    # beta, k and v from the layer's own projection, recomputed here from the parameters.
    p = variables["params"]
    ln = p["LayerNorm_0"]
    xn = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)
    qkvb = ((xn * ln["scale"] + ln["bias"]) @ p["slow_proj"]["kernel"]).reshape(B, T, H, 3 * d + 1)
    k = jax.nn.elu(qkvb[..., d:2 * d]) + 1
    k = k / k.sum(-1, keepdims=True)
    beta = jax.nn.sigmoid(qkvb[..., 3 * d])
    err, norm = delta_stats_loop(k, qkvb[..., 2 * d:3 * d], beta, state, np.asarray(reset), None)
    np.testing.assert_allclose(np.asarray(sown.beta), np.asarray(beta), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sown.error_norm), err, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(sown.state_norm), norm, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["srwm", "deltanet", "srdelta"])
def test_memory_stack_stats_on_off_and_nothing_computed_when_off(kind, monkeypatch):
    stack = MemoryStack(kind, num_layers=2, hidden=8, num_heads=2, ff_dim=16)
    x = jax.random.normal(jax.random.key(14), (2, 5, 8))
    variables = stack.init(jax.random.key(15), x)
    reset = jnp.zeros((2, 5), bool).at[1, 2].set(True)
    (y1, _), stats = jax.jit(
        lambda v: stack.apply(v, x, None, reset, mutable=[STATS_COLLECTION]))(variables)
    leaves = {"srwm": ["srwm"], "deltanet": ["delta_rule"], "srdelta": ["srwm", "delta_rule"]}[kind]
    for i in range(2):
        assert sorted(stats[STATS_COLLECTION][f"{kind}_{i}"]) == sorted(leaves)
    # Off: the recorder must not even be traced.
    def boom(*a, **k):
        raise AssertionError("statistics computed although the collection is not mutable")
    monkeypatch.setattr(introspect, "_srwm_record", boom)
    monkeypatch.setattr(introspect, "delta_rule_stats", boom)
    y0, _ = jax.jit(lambda v: stack.apply(v, x, None, reset))(variables)
    assert jnp.array_equal(y0, y1)


def test_stats_do_not_depend_on_impl():
    """A model run with a kernel (interpret mode on CPU) sows the reference's statistics."""
    x = jax.random.normal(jax.random.key(16), (2, 4, 32))  # d = 16: a head dim the kernel takes
    out = {}
    for impl in ("scan", "pallas_interpret"):
        stack = MemoryStack("srwm", num_layers=1, hidden=32, num_heads=2, ff_dim=16, impl=impl)
        variables = stack.init(jax.random.key(17), x)
        out[impl] = stack.apply(variables, x, mutable=[STATS_COLLECTION])
    (y_s, _), st_s = out["scan"]
    (y_p, _), st_p = out["pallas_interpret"]
    np.testing.assert_allclose(np.asarray(y_p), np.asarray(y_s), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(st_s), jax.tree.leaves(st_p)):
        assert jnp.array_equal(a, b)


# --- The tools end to end on tiny runs ---
# One few-shot run is trained (one step, by fewshot.training) so that the tools meet what the
# trainer writes; the others are written as the trainers write them but from the initial
# parameters (compiling a training step costs more than the rest of a test, and the statistics'
# checks hold for any parameters). Loading trained runs is tested in test_run_layer.py and
# test_rl_sebulba.py (fewshot.finished_run.restore_run and rl.evaluation.load_for_eval, which the
# tools use).

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"
needs_omniglot = pytest.mark.skipif(not (OMNIGLOT / "omniglot.npz").exists(),
                                    reason=f"Omniglot npz not found at {OMNIGLOT}")
# The smallest model the tools meet in practice: one memory layer of two heads.
TINY = dict(data_dir=str(OMNIGLOT), total_steps=1, log_every_steps=1, eval_every_steps=1,
            checkpoint_every_steps=1, val_episodes=8, eval_batch_size=8, conv_channels=4,
            hidden_size=8, num_heads=2, ff_factor=1, num_layers=1)


def _run_cli(args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _initial_fewshot_run(config, workdir):
    """A run directory laid out as fewshot.training writes it, holding the initial parameters
    as its best and latest checkpoint (step 0)."""
    from fewshot.training import build, initial_state, make_sampler
    from srwm_jax.training.checkpoints import Checkpoints
    from srwm_jax.training.run_config import save_config
    save_config(workdir, config)
    model, optimizer, mesh, _, _ = build(config)
    state = initial_state(config, model, optimizer, mesh,
                          make_sampler(config, "train", config.seed).sample(1, 0))
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
    try:
        checkpoints.save_best(0, state, 0.0)
        checkpoints.save(0, state)
    finally:
        checkpoints.close()
    return workdir


@pytest.fixture(scope="module")
def sync_runs(tmp_path_factory):
    """Two tiny sync runs on the same episodes: {"srwm": trained one step, "deltanet": initial}."""
    from configs.fewshot.omniglot_smoke import get_config
    from fewshot.training import train_and_evaluate
    root = tmp_path_factory.mktemp("fewshot_runs")
    c = get_config()
    c.update(dict(TINY, model="srwm", batch_size=4))
    train_and_evaluate(c, str(root / "srwm"))
    c.model = "deltanet"
    return {"srwm": str(root / "srwm"), "deltanet": _initial_fewshot_run(c, str(root / "deltanet"))}


@needs_omniglot
def test_fewshot_inspect_end_to_end(sync_runs, tmp_path):
    """The two runs inspected together by the CLI on the same episodes."""
    from fewshot.evaluation import evaluate
    out = tmp_path / "inspect"
    r = _run_cli(["fewshot.introspect", "--workdir", sync_runs["srwm"], "--workdir",
                  sync_runs["deltanet"], "--episodes", "12", "--out", str(out)])
    assert "accuracy" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    for name in ("srwm", "deltanet"):
        for fig in ("learning_rates", "weight_change", "correct_vs_wrong", "heatmap"):
            assert (out / f"{fig}_{name}.png").stat().st_size > 5000
        rows = _read_csv(out / f"stats_{name}.csv")
        assert len(rows) == 12 * 2 * 3  # episodes x heads x steps (2 supports + query); one layer
        correct = {int(r["episode"]): int(r["correct"]) for r in rows}
        assert summary[name]["accuracy"] == pytest.approx(np.mean(list(correct.values())))
    # The episodes are fewshot.evaluate's first test set, for every compared run (they come from
    # the first run's config), and the query is scored as there: one run's accuracy checks both.
    result = evaluate(sync_runs["srwm"], num_sets=1, episodes_per_set=12)
    assert summary["srwm"]["accuracy"] == pytest.approx(result["accuracy"])
    assert (out / "compare.png").stat().st_size > 5000
    srwm_rows = _read_csv(out / "stats_srwm.csv")
    assert {r["phase"] for r in srwm_rows} == {"support", "query"}
    for r in srwm_rows:
        assert 0 < float(r["lr_y"]) < 1 and 0 <= float(r["entropy_q"]) <= np.log(4) + 1e-5
        if r["step"] == "1":  # after the first step the distance from W_0 is that step's update
            for m in "yqkb":
                assert float(r[f"dist_{m}"]) == pytest.approx(float(r[f"update_{m}"]), rel=1e-4)
    delta_rows = _read_csv(out / "stats_deltanet.csv")
    for r in delta_rows:  # S_0 = 0: after the first step ||S_1|| = beta ||k|| ||v - 0||
        assert 0 < float(r["beta"]) < 1 and float(r["state_norm"]) > 0
        if r["step"] == "1":
            assert float(r["state_norm"]) < float(r["error_norm"])  # beta < 1, ||k|| <= 1


@needs_omniglot
def test_fewshot_inspect_bad_input_is_one_clear_error(sync_runs, tmp_path):
    """Checked from the configs, before any checkpoint is read."""
    from fewshot.inspection import InspectError, inspect
    with pytest.raises(InspectError,
                       match=r"--layer 1 / --head 0 out of range for srwm \(1 layers"):
        inspect([sync_runs["srwm"]], str(tmp_path), num_episodes=2, layer=1)
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        inspect([str(tmp_path)], str(tmp_path), num_episodes=2)


@needs_omniglot
def test_fewshot_inspect_sequential_end_to_end(tmp_path):
    """A tiny delayed-label run: statistics over the whole sequence, both orders, on
    fewshot.evaluate_sequential's test sequences."""
    from configs.fewshot.sequential_omniglot_transformed_srwm_cpu import get_config
    from fewshot.inspection import fixed_episodes, inspect
    from fewshot.sequential import SequentialEpisodeSampler
    c = get_config()
    c.update(dict(TINY, batch_size=2, sequential_shots=3, max_trim=2, image_size=16))
    run = _initial_fewshot_run(c, str(tmp_path / "seq"))
    out = tmp_path / "inspect"
    summary = inspect([run], str(out), num_episodes=4)["seq"]
    for fig in ("learning_rates", "weight_change", "orders", "heatmap"):
        assert (out / f"{fig}_seq.png").stat().st_size > 5000
    rows = _read_csv(out / "stats_seq.csv")
    T = 2 * 5 * 3  # two segments of n_way x shots steps
    assert len(rows) == 4 * 2 * T  # sequences x heads x steps
    assert {r["first_segment"] for r in rows} == {"0", "1"}  # both orders
    assert {int(r["segment"]) for r in rows if int(r["step"]) > T // 2} == {2}
    assert summary["accuracy"] == pytest.approx(np.mean([int(r["correct"]) for r in rows]))
    # The sequences are evaluate_sequential's (stream seed eval_seed + 1000; 4 sequences in 2s).
    ours = fixed_episodes(c, 4)
    theirs = list(SequentialEpisodeSampler(c, "test", c.eval_seed + 1000).fixed_batches(4, 2))
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    for r in rows:
        if r["step"] == "1":
            assert float(r["dist_y"]) == pytest.approx(float(r["update_y"]), rel=1e-4)


def _initial_rl_run(config, workdir):
    """A run directory laid out as rl.training writes it, with the initial parameters."""
    from rl.agent import make_agent
    from rl.learner import Learner, checkpoint_tree, init_params, num_updates_for
    from srwm_jax.training.checkpoints import Checkpoints
    from srwm_jax.training.run_config import save_config
    save_config(workdir, config)
    agent = make_agent(config)
    learner = Learner(agent, config, num_updates_for(config), devices=jax.devices()[:1])
    state = learner.init_state(init_params(agent, jax.random.key(config.seed), config.frame_shape))
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints, best=False)
    try:
        checkpoints.save(20, checkpoint_tree(state, 20, jax.random.key(config.seed)))
    finally:
        checkpoints.close()
    return workdir


def test_rl_inspect_end_to_end(tmp_path):
    """A tiny SRWM agent inspected over two episodes of the fake env; the CLI's error path on a
    run without fast weights."""
    from configs.rl import srwm_cpu
    from rl.inspection import inspect
    from srwm_jax.training.run_config import save_config
    c = srwm_cpu.get_config()
    c.update(dict(frame_shape=(16, 16, 3), num_actor_threads=1, unroll_length=5, batch_size=2,
                  queue_size=1, total_steps=20))
    c.agent.update(dict(hidden=16, num_heads=2, ff_dim=32, num_layers=1))
    run = _initial_rl_run(c, str(tmp_path / "srwm"))
    out = tmp_path / "insp"
    inspect(run, "starpilot", str(out), episodes=2, env_kind="fake")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 10  # FakeEnv's env 0 plays 5-step episodes
    assert summary["replay_max_logit_diff"] < 1e-4  # the replay is what the agent acted on
    assert (out / "episode.png").stat().st_size > 5000
    rows = _read_csv(out / "stats.csv")
    assert len(rows) == 10 * 2  # steps x heads (one layer)
    firsts = sorted({int(r["step"]) for r in rows if r["first"] == "1"})
    assert firsts == [0, 5]
    # Rewards: FakeEnv pays 1 exactly for action 0.
    assert all(float(r["reward"]) == float(r["action"] == "0") for r in rows)
    # At a boundary the state was reset to the slow weights: the distance is that step's update.
    for r in rows:
        if r["first"] == "1":
            for m in "yqkb":
                assert float(r[f"dist_{m}"]) == pytest.approx(float(r[f"update_{m}"]), rel=1e-4)
        elif r["step"] == "4":
            assert float(r["dist_y"]) > float(r["update_y"])
    # The CLI (flags, --defaults, one error line): refused from the config, before any restore.
    c.agent.core = "lstm"
    save_config(str(tmp_path / "lstm"), c)
    r = subprocess.run([sys.executable, "-m", "rl.introspect", "--workdir", str(tmp_path / "lstm"),
                        "--game", "starpilot", "--env", "fake"], cwd=REPO, capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=600)
    assert (r.returncode == 2 and "error: " in r.stderr
            and "'lstm' core" in r.stderr), r.stderr[-2000:]


def test_collect_layers_names_and_joins_calls():
    from srwm_jax.introspect import DeltaRuleStats, SRWMStats, collect_layers
    def stats(B, T, H=2):
        a = jnp.arange(B * T * H, dtype=jnp.float32).reshape(B, T, H)
        four = jnp.stack([a, a + 1, a + 2, a + 3], -1)
        return SRWMStats(four, four, four, a, a)
    joined = collect_layers({"memory": {"srwm_0": {"srwm": (stats(2, 3), stats(2, 1))}},
                             "d": {"delta_rule": (DeltaRuleStats(*[jnp.ones((2, 3, 2))] * 3),)}})
    assert joined["memory/srwm_0/srwm"]["lr_k"].shape == (2, 4, 2)
    np.testing.assert_array_equal(joined["memory/srwm_0/srwm"]["lr_k"][:, :3],
                                  stats(2, 3).learning_rate[..., 2])
    assert sorted(joined["d/delta_rule"]) == ["beta", "error_norm", "state_norm"]
    split = collect_layers({"srwm": (stats(2, 3), stats(6, 1))})  # support, then B * Q queries
    assert (split["srwm/call0"]["dist_b"].shape == (2, 3, 2)
            and split["srwm/call1"]["dist_b"].shape == (6, 1, 2))
