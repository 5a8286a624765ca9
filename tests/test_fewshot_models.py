"""Few-shot sequence learner, loss and schedules: queries read in parallel from the support state
equal running each query after the support as its own sequence; the multi-query loss averages
them; learning-rate schedules follow their closed forms."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.fewshot.omniglot_smoke import get_config
from fewshot.models import SequenceLearner, sync_episode_inputs
from fewshot.steps import episode_loss


def small_model(model, short_conv=0):
    c = get_config()
    c.model, c.n_way, c.conv_channels, c.hidden_size, c.num_heads = model, 5, 8, 16, 4
    c.short_conv = short_conv
    return c, SequenceLearner(ml_collections.FrozenConfigDict(c))


@pytest.mark.parametrize("model,short_conv",
                         [("srwm", 0), ("deltanet", 0), ("lstm", 0), ("srwm", 3)])
def test_parallel_queries_equal_one_sequence_per_query(model, short_conv):
    """With a short convolution, each query also sees the support's last steps through it."""
    c, m = small_model(model, short_conv)
    B, NK, Q = 3, 5, 4
    images = jax.random.uniform(jax.random.key(0), (B, NK + Q, 28, 28, 1))
    labels = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (B, NK + Q), 0, 5), 5)
    variables = m.init(jax.random.key(2), images, labels, train=False)
    if short_conv:  # away from its identity initialisation, so the past steps matter
        kernel = variables["params"]["short_conv"]["kernel"]
        variables["params"]["short_conv"]["kernel"] = jax.random.normal(jax.random.key(3),
                                                                        kernel.shape)
    parallel, _ = jax.jit(lambda v, x, y: m.apply(v, x, y, train=False, parallel_queries=Q))(
        variables, images, labels)
    assert parallel.shape == (B, Q, 5)
    apply = jax.jit(lambda v, x, y: m.apply(v, x, y, train=False)[0])
    for q in range(Q):
        steps = list(range(NK)) + [NK + q]
        alone = apply(variables, images[:, steps], labels[:, steps])
        np.testing.assert_allclose(parallel[:, q], alone[:, -1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="parallel_queries"):
        m.apply(variables, images, labels, train=False, parallel_queries=NK + Q)


def test_multi_query_loss_is_mean_over_queries():
    """train_queries=Q: the training loss is the mean cross-entropy of the Q queries, each
    target aligned with its query; in eval mode each parallel query's loss equals the plain
    one-query episode's loss."""
    c, m = small_model("srwm")
    rng = np.random.default_rng(0)
    B, Q = 4, 3
    batch = {"support_images": rng.random((B, 5, 28, 28, 1), np.float32),
             "support_labels": np.tile(np.arange(5, dtype=np.int32), (B, 1)),
             "query_images": rng.random((B, Q, 28, 28, 1), np.float32),
             "query_labels": rng.integers(0, 5, (B, Q)).astype(np.int32)}
    images, labels_in, targets = sync_episode_inputs(batch, 5, num_queries=Q)
    assert targets.shape == (B, Q) and images.shape[1] == 5 + Q
    variables = m.init(jax.random.key(0), images, labels_in, train=False)
    params, stats = variables["params"], variables["batch_stats"]

    def cross_entropy(logits):
        logp = jax.nn.log_softmax(logits, -1)
        return -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]  # [B, Q]

    # Training path (batch statistics over all 5 + Q images of each episode).
    c.train_queries = Q
    loss, _ = jax.jit(lambda p, s: episode_loss(m, c, p, s, batch, jax.random.key(0), True))(
        params, stats)
    (logits, _), _ = m.apply(variables, images, labels_in, train=True, parallel_queries=Q,
                             mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    np.testing.assert_allclose(loss, cross_entropy(logits).mean(), rtol=1e-5)

    # Eval mode: query q read in parallel == the one-query episode with that query.
    logits, _ = jax.jit(lambda v, x, y: m.apply(v, x, y, train=False, parallel_queries=Q))(
        variables, images, labels_in)
    single_loss = jax.jit(lambda p, s, b: episode_loss(m, c, p, s, b, jax.random.key(0), False)[0])
    expected = [float(single_loss(params, stats,
                                  dict(batch, query_images=batch["query_images"][:, q:q + 1],
                                       query_labels=batch["query_labels"][:, q:q + 1])))
                for q in range(Q)]
    np.testing.assert_allclose(cross_entropy(logits).mean(0), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="fewer than"):
        sync_episode_inputs(batch, 5, num_queries=Q + 1)


def test_learning_rate_schedules_match_their_formulas():
    import math

    from fewshot.steps import make_schedule
    c = get_config()
    c.learning_rate, c.total_steps, c.hidden_size, c.warmup_steps = 2e-3, 1000, 256, 100
    c.schedule = "cosine"
    cosine = make_schedule(c)
    for s in (0, 250, 500, 1000):
        assert math.isclose(float(cosine(s)), 2e-3 * 0.5 * (1 + math.cos(math.pi * s / 1000)),
                            rel_tol=1e-5, abs_tol=1e-12)
    c.schedule, c.decay_fraction = "decay_end", 0.2  # flat to step 800, then linear to 0 at 1000
    decay_end = make_schedule(c)
    for s, expected in ((0, 2e-3), (800, 2e-3), (900, 1e-3), (950, 5e-4), (1000, 0.0), (1200, 0.0)):
        assert math.isclose(float(decay_end(s)), expected, rel_tol=1e-5, abs_tol=1e-12)
    c.schedule = "warmup"
    warmup = make_schedule(c)
    for s in (0, 50, 99, 100, 400):  # peak at step index warmup - 1 (s counted from 1)
        n = s + 1
        assert math.isclose(float(warmup(s)), 256 ** -0.5 * min(n ** -0.5, n * 100 ** -1.5),
                            rel_tol=1e-5)
    c.schedule = "linear"
    with pytest.raises(ValueError, match="schedule='linear'"):
        make_schedule(c)
