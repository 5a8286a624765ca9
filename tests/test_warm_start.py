"""Warm start (config.init_from): a sequential learner starts from a sync run's weights."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import OMNIGLOT_DIR

from fewshot.warm_start import WarmStartError, read_arrays, source_step_dir, transfer, warm_start
from srwm_jax.training.checkpoints import Checkpoints

DATA = OMNIGLOT_DIR
needs_data = pytest.mark.omniglot

SIZES = dict(n_way=5, conv_channels=8, hidden_size=16, num_heads=2, num_layers=1, ff_factor=1)


def test_grayscale_kernel_on_replicated_channels_gives_the_same_convolution():
    conv = nn.Conv(6, (3, 3), padding=1)
    gray = jax.random.uniform(jax.random.key(0), (2, 9, 9, 1))
    source = conv.init(jax.random.key(1), gray)["params"]
    fresh = conv.init(jax.random.key(2), jnp.zeros((2, 9, 9, 3)))["params"]
    source = {"conv": source, "head": {"w": np.ones((4, 2))}, "other": {"w": np.ones((3,))}}
    target = {"conv": fresh, "head": {"w": np.zeros((4, 3))}, "new": {"w": np.zeros((2,))}}
    moved, copied, kept = transfer(target, source)
    rgb = jnp.repeat(gray, 3, axis=-1)
    np.testing.assert_allclose(conv.apply({"params": moved["conv"]}, rgb),
                               conv.apply({"params": source["conv"]}, gray), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(moved["conv"]["bias"], source["conv"]["bias"])
    # A shape mismatch other than 1 -> C input channels, and a name the source lacks, stay fresh.
    np.testing.assert_array_equal(moved["head"]["w"], np.zeros((4, 3)))
    assert sorted(copied) == ["['conv']['bias']", "['conv']['kernel']"]
    assert sorted(kept) == ["['head']['w']", "['new']['w']"]


def _sync_config(**kw):
    from configs.fewshot.omniglot_smoke import get_config
    c = get_config()
    c.update(dict(data_dir=str(DATA), total_steps=4, log_every_steps=2, eval_every_steps=4,
                  checkpoint_every_steps=4,
                  val_episodes=10, eval_batch_size=10, batch_size=4, **SIZES))
    c.update(kw)
    return c


def _sequential_config(**kw):
    from configs.fewshot.sequential_omniglot_transformed_srwm_cpu import get_config
    c = get_config()
    c.update(dict(data_dir=str(DATA), total_steps=2, log_every_steps=1, eval_every_steps=2,
                  checkpoint_every_steps=2,
                  val_episodes=4, eval_batch_size=4, batch_size=2, sequential_shots=2, max_trim=2,
                  **SIZES))
    c.update(kw)
    return c


@needs_data
def test_sequential_run_starts_from_a_sync_run(tmp_path, capsys):
    """Every weight of a 1-channel sync run lands in the 3-channel sequential model (the first
    conv kernel spread over the channels); the run then trains from there."""
    from fewshot.training import build, initial_state, make_sampler, train_and_evaluate

    sync_dir = tmp_path / "sync"
    train_and_evaluate(_sync_config(), str(sync_dir))
    source = read_arrays(source_step_dir(str(sync_dir), "latest"))

    c = _sequential_config(init_from=str(sync_dir), init_from_checkpoint="latest")
    model, optimizer, mesh, _, _ = build(c)
    state = initial_state(c, model, optimizer, mesh, make_sampler(c, "train", c.seed).sample(1, 0))
    started, report = warm_start(state, c.init_from, "latest")
    assert "kept fresh" in report
    got = dict(jax.tree_util.tree_flatten_with_path(started.params)[0])
    want = dict(jax.tree_util.tree_flatten_with_path(source["params"])[0])
    assert set(got) == set(want)
    for path, value in want.items():
        if value.shape == got[path].shape:
            np.testing.assert_array_equal(np.asarray(got[path]), value)
        else:  # the first conv: [3, 3, 1, O] -> [3, 3, 3, O], each channel a third
            assert value.shape[2] == 1 and got[path].shape[2] == 3
            np.testing.assert_allclose(np.asarray(got[path]), np.repeat(value, 3, axis=2) / 3,
                                       rtol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(started.batch_stats["Conv4_0"]["BatchNorm_0"]["mean"]),
        source["batch_stats"]["Conv4_0"]["BatchNorm_0"]["mean"])

    train_and_evaluate(c, str(tmp_path / "seq"))
    assert "Warm start from" in capsys.readouterr().out


@needs_data
def test_bad_source_gives_one_clear_error(tmp_path):
    from fewshot.training import build, initial_state, make_sampler

    with pytest.raises(WarmStartError, match="no best checkpoint"):
        source_step_dir(str(tmp_path / "missing"))
    broken = tmp_path / "broken" / "best" / "7" / "default"
    broken.mkdir(parents=True)
    (broken / "garbage").write_text("not a checkpoint")
    with pytest.raises(WarmStartError, match="could not read"):
        read_arrays(source_step_dir(str(tmp_path / "broken")))
    # A source whose every shape differs (other sizes) is refused rather than silently ignored.
    c = _sequential_config(hidden_size=24, conv_channels=4, num_heads=3, n_way=3)
    model, optimizer, mesh, _, _ = build(c)
    state = initial_state(c, model, optimizer, mesh, make_sampler(c, "train", c.seed).sample(1, 0))
    other = tmp_path / "other"
    saved = Checkpoints(str(other))
    saved.save_best(1, {"params": {"x": np.ones(3)}, "batch_stats": {}}, 0.5)
    saved.close()
    with pytest.raises(WarmStartError, match="no parameter matches"):
        warm_start(state, str(other))
