"""The shared run layer (srwm_jax.training): config.json round trips and older runs load onto
today's defaults, checkpoints carry extra scalars and keep the best, metrics land in jsonl and
tensorboard/, and the mesh pads batches to the device count."""
import json

import jax
import numpy as np
import pytest

from configs.fewshot.default import get_config as fewshot_defaults
from configs.rl.default import get_config as rl_defaults
from fewshot.config_checks import RENAMED_KEYS as FEWSHOT_RENAMES
from rl.config_checks import RENAMED_KEYS as RL_RENAMES
from srwm_jax.training.checkpoints import Checkpoints
from srwm_jax.training.mesh import DataParallel, count_params
from srwm_jax.training.metrics import TENSORBOARD_DIR, MetricWriter, append_csv, read_metrics
from srwm_jax.training.run_config import load_config, save_config


@pytest.mark.parametrize("defaults", [fewshot_defaults, rl_defaults])
def test_config_round_trip_is_exact(tmp_path, defaults):
    config = defaults()
    save_config(tmp_path, config)
    loaded = load_config(tmp_path, defaults())
    assert loaded.to_dict() == config.to_dict()  # tuples come back as tuples, floats as floats


def test_older_fewshot_run_loads_with_renamed_and_missing_keys(tmp_path):
    old = fewshot_defaults().to_dict()
    for new_name in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                     "short_conv", "init_from"):  # fields an older run did not have
        old.pop(new_name)
    old.update(log_every=7, eval_every=70, checkpoint_every=700, res12_channels=[8, 8, 8, 8])
    (tmp_path / "config.json").write_text(json.dumps(old))
    c = load_config(tmp_path, fewshot_defaults(), renames=FEWSHOT_RENAMES)
    assert (c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps) == (7, 70, 700)
    assert "log_every" not in c and c.short_conv == 0 and c.init_from == ""
    assert c.res12_channels == (8, 8, 8, 8)


def test_older_rl_run_loads_nested_and_tuple_fields(tmp_path):
    old = rl_defaults().to_dict()
    old["max_checkpoints"] = old.pop("keep_checkpoints") + 4
    old["agent"] = {"core": "lstm"}  # nested fields missing from an older run keep defaults
    old["eval_splits"] = [[5, 6]]
    old["learning_rate"] = 1  # an int where the default is a float
    (tmp_path / "config.json").write_text(json.dumps(old))
    c = load_config(tmp_path, rl_defaults(), renames=RL_RENAMES)
    assert c.keep_checkpoints == rl_defaults().keep_checkpoints + 4
    assert c.agent.core == "lstm" and c.agent.lstm_hidden == rl_defaults().agent.lstm_hidden
    assert c.eval_splits == ((5, 6),) and c.learning_rate == 1.0
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_config(tmp_path / "missing", rl_defaults())


def test_checkpoints_periodic_best_and_extra_scalars(tmp_path):
    tree = lambda v: {"w": np.full((3,), v, np.float32), "env_steps": np.asarray(v, np.int64),  # noqa: E731
                      "rng": jax.random.key_data(jax.random.key(v))}
    ckpt = Checkpoints(tmp_path, keep=2)
    for step in (10, 20, 30):
        ckpt.save(step, tree(step))
    ckpt.save_best(20, tree(20), 0.75)
    ckpt.close()  # waits for the asynchronous saves
    ckpt = Checkpoints(tmp_path, keep=2)
    assert ckpt.latest_step() == 30 and ckpt.best_accuracy() == 0.75
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                  if p.name.isdigit()) == [20, 30]
    latest, best = ckpt.restore(tree(0)), ckpt.restore(tree(0), which="best")
    assert int(latest["env_steps"]) == 30 and float(best["w"][0]) == 20.0
    np.testing.assert_array_equal(latest["rng"], jax.random.key_data(jax.random.key(30)))
    with pytest.raises(ValueError, match="which"):
        ckpt.restore(tree(0), which="newest")
    ckpt.close()
    no_best = Checkpoints(tmp_path / "rl", best=False)
    assert not (tmp_path / "rl" / "best").exists() and no_best.latest_step() is None
    with pytest.raises(FileNotFoundError):
        no_best.restore(tree(0))
    no_best.close()


def test_metric_writer_jsonl_tensorboard_and_csv(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write(5, {"loss": 1.5}, "train")
    writer.write(5, {"starpilot": 3.0}, "episode_return", jsonl=False)
    writer.close()
    assert ([(m["step"], m["split"], m["loss"]) for m in read_metrics(tmp_path)]
            == [(5, "train", 1.5)])
    assert any(p.name.startswith("events") for p in (tmp_path / TENSORBOARD_DIR).iterdir())
    append_csv(tmp_path / "t.csv", ["step", "x"], [{"step": 1, "x": 2, "extra": 3}])
    append_csv(tmp_path / "t.csv", ["step", "x"], [{"step": 2, "x": 4}])
    assert (tmp_path / "t.csv").read_text().split() == ["step,x", "1,2", "2,4"]


def test_data_parallel_pads_to_the_device_count():
    mesh = DataParallel()
    batch = {"x": np.arange(2 * mesh.num_devices + 1)}
    padded, size = mesh.pad_batch(batch)
    assert size == 2 * mesh.num_devices + 1 and len(padded["x"]) % mesh.num_devices == 0
    np.testing.assert_array_equal(padded["x"][:size], batch["x"])
    assert count_params({"a": np.zeros((2, 3)), "b": [np.zeros(4)]}) == 10
    if mesh.num_devices > 1:
        with pytest.raises(ValueError, match="not divisible"):
            mesh.check_batch_size(mesh.num_devices + 1)
