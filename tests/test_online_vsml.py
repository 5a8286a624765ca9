"""CPU smoke run of VSML's learning setting (fewshot.online): meta-trained by backprop through
online episodes of synthetic Gaussian classes, the shared LSTMs learn to learn within an
episode, i.e. later occurrences of a class are classified far above chance while the label
of each example only arrives, as feedback, one step later."""
import numpy as np

from fewshot.online import (OnlineConfig, SyntheticEpisodes, meta_train, occurrence_accuracy,
                            occurrences)


def test_occurrences_count_per_class():
    labels = np.array([[2, 0, 2, 2, 1, 0]])
    np.testing.assert_array_equal(occurrences(labels), [[0, 0, 1, 2, 0, 1]])


def test_vsml_learns_within_episodes_on_cpu():
    n_way, length, dim = 3, 24, 8
    config = OnlineConfig(kind="vsml", n_way=n_way, length=length, dim=dim, msg_size=4,
                          state_size=8, batch_size=32, steps=120, learning_rate=1e-2, chunk=8)
    episodes = SyntheticEpisodes(n_way, length, dim, seed=0)
    model, params, history = meta_train(config, episodes)
    acc, count, _ = occurrence_accuracy(model, params, episodes, num_batches=1)
    later = float(np.nansum(acc[2:] * count[2:]) / count[2:].sum())   # 3rd occurrence on
    chance = 1.0 / n_way
    assert np.isfinite([h[1] for h in history]).all()
    assert later > chance + 0.25, (acc, history)
    # Nothing is known about a class before its label has been fed back once.
    assert acc[0] < later - 0.2, acc


def test_sequence_learner_runs_vsml_on_the_delayed_label_task():
    import jax
    import jax.numpy as jnp

    from configs.fewshot.sequential_omniglot_transformed_vsml_cpu import get_config
    from fewshot.config_checks import field_problems
    from fewshot.models import SequenceLearner
    from fewshot.sequential import delayed_label_inputs

    config = get_config()
    config.conv_channels = 4
    assert field_problems(config) == []
    images = jax.random.uniform(jax.random.key(0), (2, 6, 28, 28, 3))
    labels = jnp.array([[0, 1, 2, 3, 4, 0], [4, 3, 2, 1, 0, 4]])
    model = SequenceLearner(config)
    variables = model.init(jax.random.key(1), images, delayed_label_inputs(labels, 5), train=False)
    assert "vsml" in variables["params"]
    logits, state = model.apply(variables, images, delayed_label_inputs(labels, 5), train=False)
    assert logits.shape == (2, 6, 5) and np.isfinite(np.asarray(logits)).all()
    assert state.lstm[0].c.shape == (2, 4, 5, config.vsml_state_size)
    config.task = "sync"
    assert any("needs task='sequential'" in p for p in field_problems(config))
