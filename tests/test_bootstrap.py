"""Bootstrapping loss (fewshot/bootstrap.py): the KL term against its torch definition, no gradient
into the teacher, weight 0 == the plain K-shot + (K+F)-shot losses, and a tiny Omniglot run of
the bootstrapped and the plain model evaluated side by side."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import OMNIGLOT_DIR

from configs.fewshot.default import get_config as default_config
from fewshot.bootstrap import bootstrap_loss, bootstrap_objective
from fewshot.models import SequenceLearner
from fewshot.steps import episode_loss

DATA = OMNIGLOT_DIR


def tiny_config(**overrides):
    c = default_config()
    c.update(dict(image_size=16, conv_channels=4, hidden_size=16, num_heads=2, num_layers=1,
                  ff_factor=1, k_shot=2, future_shots=3, task="bootstrap"))
    c.update(overrides)
    return c


def random_batch(config, batch_size=3, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    N, K, F, S = config.n_way, config.k_shot, config.future_shots, config.image_size
    img = lambda n: rng.random((batch_size, n, S, S, channels), dtype=np.float32)  # noqa: E731
    lab = lambda n: rng.integers(0, N, (batch_size, n)).astype(np.int32)  # noqa: E731
    return {"support_images": img(N * K), "support_labels": lab(N * K), "future_images": img(N * F),
            "future_labels": lab(N * F), "query_images": img(1), "query_labels": lab(1)}


def init(config, batch):
    model = SequenceLearner(ml_collections.FrozenConfigDict(config))
    images = jnp.concatenate([batch["support_images"], batch["query_images"]], axis=1)
    labels_in = jax.nn.one_hot(jnp.concatenate([batch["support_labels"], batch["query_labels"]], 1),
                               config.n_way)
    variables = jax.jit(lambda k: model.init({"params": k}, images, labels_in, train=False))(
        jax.random.key(0))
    # Non-trivial running BatchNorm statistics, so eval mode is not the identity normalisation.
    stats = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(1), a.shape),
                         variables["batch_stats"])
    return model, variables["params"], stats


def test_kl_term_matches_torch_kldivloss_batchmean_log_target():
    """KLDivLoss(reduction='batchmean', log_target=True)(input=log p_s, target=log p_t)
    = sum(exp(log p_t) * (log p_t - log p_s)) / batch, written out in float64 NumPy."""
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    target = rng.integers(0, 5, 7)
    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    ls, lt = log_softmax(s), log_softmax(t)
    kl = np.sum(np.exp(lt) * (lt - ls)) / 7
    ce_s, ce_t = -ls[np.arange(7), target].mean(), -lt[np.arange(7), target].mean()
    loss, terms = bootstrap_objective(jnp.asarray(s), jnp.asarray(t), jnp.asarray(target), 1.0,
                                      10.0, 1.0)
    np.testing.assert_allclose(terms["bootstrap_kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(loss, ce_s + 10 * kl + ce_t, rtol=1e-5)  # float32 vs float64


def test_teacher_logits_get_no_gradient_from_the_kl_term():
    rng = np.random.default_rng(1)
    s, t = jnp.asarray(rng.normal(size=(4, 5))), jnp.asarray(rng.normal(size=(4, 5)))
    target = jnp.asarray(rng.integers(0, 5, 4))
    kl_only = lambda s, t: bootstrap_objective(s, t, target, 0.0, 10.0, 0.0)[0]  # noqa: E731
    g_student, g_teacher = jax.grad(kl_only, argnums=(0, 1))(s, t)
    np.testing.assert_array_equal(g_teacher, 0.0)
    # d/ds of w * KL(p_t || softmax(s)) / B = w (softmax(s) - p_t) / B.
    expected = 10 * (jax.nn.softmax(s) - jax.nn.softmax(t)) / 4
    np.testing.assert_allclose(g_student, expected, rtol=1e-5, atol=1e-7)
    # With the (K+F)-shot CE on, the teacher's gradient is exactly that CE's: (softmax(t) - y) / B.
    g_teacher = jax.grad(lambda t: bootstrap_objective(s, t, target, 1.0, 10.0, 1.0)[0])(t)
    np.testing.assert_allclose(g_teacher, (jax.nn.softmax(t) - jax.nn.one_hot(target, 5)) / 4,
                               rtol=1e-5, atol=1e-7)


def test_future_images_get_no_gradient_through_the_kl_term():
    """End to end through the model: the future examples only reach the loss through the teacher,
    so with both CE weights 0 their gradient is exactly zero (training mode, per-call BatchNorm)."""
    config = tiny_config(bootstrap_main_weight=0.0, bootstrap_future_weight=0.0,
                         bootstrap_weight=10.0)
    batch = random_batch(config)
    model, params, stats = init(config, batch)

    def loss_of(support_images, future_images):
        b = dict(batch, support_images=support_images, future_images=future_images)
        return bootstrap_loss(model, config, params, stats, b, jax.random.key(2), True)[0]
    g_support, g_future = jax.jit(jax.grad(loss_of, argnums=(0, 1)))(
        jnp.asarray(batch["support_images"]), jnp.asarray(batch["future_images"]))
    assert float(jnp.abs(g_support).max()) > 0
    np.testing.assert_array_equal(g_future, 0.0)


def test_zero_bootstrap_weight_equals_plain_kshot_plus_more_shot_losses():
    """bootstrap_weight = 0: the loss is CE(K-shot) + CE((K+F)-shot) as the original defines them,
    i.e. the ordinary synchronous-label episode loss on [support, query] plus the one on
    [support, future, query] (one sequence each; the chained passes must agree with them)."""
    config = tiny_config(bootstrap_weight=0.0)
    batch = random_batch(config, seed=3)
    model, params, stats = init(config, batch)
    loss, (terms, _) = jax.jit(
        lambda b: bootstrap_loss(model, config, params, stats, b, jax.random.key(0), False))(batch)
    kshot = {k: batch[k]
             for k in ("support_images", "support_labels", "query_images", "query_labels")}
    more = dict(kshot,
                support_images=np.concatenate([batch["support_images"], batch["future_images"]], 1),
                support_labels=np.concatenate([batch["support_labels"], batch["future_labels"]], 1))
    plain = jax.jit(lambda b: episode_loss(model, config, params, stats, b, jax.random.key(0),
                                           False)[0])
    ce_k, ce_more = plain(kshot), plain(more)
    np.testing.assert_allclose(terms["kshot_loss"], ce_k, rtol=1e-5)
    np.testing.assert_allclose(terms["future_loss"], ce_more, rtol=1e-5)
    np.testing.assert_allclose(loss, ce_k + ce_more, rtol=1e-5)


def test_parallel_queries_equal_separate_single_query_passes():
    """num_queries = 3: query q's student and teacher logits equal those of a batch whose only
    query is q (eval mode, so BatchNorm uses running statistics and queries are independent)."""
    from fewshot.bootstrap import bootstrap_passes
    config = tiny_config()
    batch = random_batch(config, seed=5)
    rng = np.random.default_rng(6)
    batch["query_images"] = rng.random((3, 3) + batch["query_images"].shape[2:], dtype=np.float32)
    batch["query_labels"] = rng.integers(0, config.n_way, (3, 3)).astype(np.int32)
    model, params, stats = init(config, dict(batch, query_images=batch["query_images"][:, :1],
                                             query_labels=batch["query_labels"][:, :1]))
    passes = jax.jit(lambda b, q: bootstrap_passes(model, config, params, stats, b,
                                                   jax.random.key(0), False, q)[:2],
                     static_argnums=1)
    student, teacher = passes(batch, 3)
    assert student.shape == teacher.shape == (3, 3, config.n_way)
    for q in range(3):
        one = dict(batch, query_images=batch["query_images"][:, q:q + 1])
        s1, t1 = passes(one, 1)
        np.testing.assert_allclose(student[:, q], s1[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(teacher[:, q], t1[:, 0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(student[:, 0], student[:, 1])  # different queries, different reads
    with pytest.raises(ValueError, match="fewer than"):
        passes(batch, 4)


@pytest.mark.omniglot
def test_bootstrap_and_plain_train_on_omniglot_side_by_side(tmp_path):
    """Tiny real-data run: the bootstrapped 1-shot SRWM through fewshot.train (checkpoints,
    metrics), and the plain one (same model, data and steps) through the same jitted steps; both
    tested on the same fixed test episodes with one eval step. Prints both accuracies (far too
    short to compare them; see the README for the CPU-sized runs)."""
    from configs.fewshot.omniglot_1shot_4bootstrap_srwm_cpu import get_config
    from srwm_jax.training.metrics import read_metrics
    from fewshot.tasks import episode_accuracy
    from fewshot.training import build, initial_state, make_sampler, train_and_evaluate

    def config(task):
        c = get_config()
        c.update(dict(data_dir=str(DATA), task=task, total_steps=4, log_every_steps=2,
                      eval_every_steps=4,
                      checkpoint_every_steps=4, val_episodes=32, eval_batch_size=32, batch_size=8,
                      conv_channels=8, hidden_size=16, num_heads=2, num_layers=1, ff_factor=1))
        return c
    states = {"bootstrap": train_and_evaluate(config("bootstrap"), str(tmp_path / "bootstrap"))}
    train = [m for m in read_metrics(tmp_path / "bootstrap") if m["split"] == "train"]
    assert all(np.isfinite(m["loss"]) for m in train)
    assert {"bootstrap_kl", "kshot_loss", "future_loss", "future_accuracy"} <= set(train[-1])

    c = config("sync")
    sampler = make_sampler(c, "train", c.seed)
    model, optimizer, mesh, train_step, eval_step = build(c)
    state = initial_state(c, model, optimizer, mesh, sampler.sample(1, 0))
    for step, batch in sampler.iterate(c.batch_size, num_steps=c.total_steps):
        state, _ = train_step(state, mesh.put_batch(batch), jax.random.key(1))
    states["plain"] = state
    test = make_sampler(config("bootstrap"), "test", 0)
    assert "future_images" not in test.sample(1, 0)  # evaluation is plain K-shot
    acc = {k: episode_accuracy(eval_step, mesh, s, test, 64, c.eval_seed + 1000, 32)
           for k, s in states.items()}
    print(f"\n1-shot test accuracy after 4 steps: bootstrapped {acc['bootstrap']:.3f}, "
          f"plain {acc['plain']:.3f}")
    assert all(0.0 <= a <= 1.0 for a in acc.values())
