"""Delayed-label sequential task (fewshot/sequential.py): label inputs, masked loss, padding,
instance-level accounting, and a tiny Omniglot -> omniglot_transformed run with its evaluation
outputs (table, CSV, PNG)."""
import csv
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import OMNIGLOT_DIR

from configs.fewshot.default import get_config as default_config
from fewshot.models import SequenceLearner
from fewshot.sequential import SequentialAccuracy, delayed_label_inputs, pad_batch, sequence_loss

DATA = OMNIGLOT_DIR


def test_delayed_label_inputs_shift_by_one_and_start_with_class0():
    labels = np.array([[2, 0, 1, 4], [3, 3, 1, 0]])
    expected = np.eye(5)[np.array([[0, 2, 0, 1], [0, 3, 3, 1]])]
    np.testing.assert_array_equal(delayed_label_inputs(jnp.asarray(labels), 5), expected)


def tiny_model():
    c = default_config()
    c.update(dict(task="sequential", image_size=16, conv_channels=4, hidden_size=16, num_heads=2,
                  num_layers=1, ff_factor=1))
    model = SequenceLearner(ml_collections.FrozenConfigDict(c))
    return c, model


def test_loss_is_masked_mean_cross_entropy_and_padding_leaves_real_steps_unchanged():
    c, model = tiny_model()
    rng = np.random.default_rng(0)
    B, T = 2, 7
    batch = {"images": rng.random((B, T, 16, 16, 3), dtype=np.float32),
             "labels": rng.integers(0, 5, (B, T)).astype(np.int32),
             "segment_ids": np.repeat([[0] * 4 + [1] * 3], B, 0).astype(np.int32),
             "occurrence": np.zeros((B, T), np.int32), "mask": np.ones((B, T), bool),
             "first_segment": 0}
    label_inputs = delayed_label_inputs(jnp.asarray(batch["labels"]), 5)
    variables = jax.jit(lambda k: model.init({"params": k}, batch["images"], label_inputs,
                                             train=False))(
        jax.random.key(0))
    params, stats = variables["params"], variables["batch_stats"]
    apply = jax.jit(lambda images, labels_in: model.apply(variables, images, labels_in,
                                                          train=False)[0])
    loss_fn = jax.jit(lambda b: sequence_loss(model, c, params, stats, b, jax.random.key(0),
                                              False)[0])
    logits = np.asarray(apply(batch["images"], label_inputs), np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_p, batch["labels"][..., None], -1)[..., 0]  # [B, T]
    np.testing.assert_allclose(loss_fn(pad_batch(batch, None)), ce.mean(), rtol=1e-5)

    padded = pad_batch(batch, 11)
    assert padded["images"].shape[1] == 11 and padded["mask"][:, T:].sum() == 0
    assert padded["first_segment"].tolist() == [0, 0]
    np.testing.assert_array_equal(padded["images"][:, T:], batch["images"][:, :4])  # wrapped copies
    padded_logits = np.asarray(apply(padded["images"],
                                     delayed_label_inputs(jnp.asarray(padded["labels"]), 5)))
    np.testing.assert_allclose(padded_logits[:, :T], logits, rtol=1e-5, atol=1e-6)  # causal model
    np.testing.assert_allclose(loss_fn(padded), ce.mean(), rtol=1e-5)  # the pad is masked out


def test_instance_level_and_curve_accounting_by_hand():
    # One sequence per order; segment lengths 4 + 4; occurrences of each class within a segment.
    seg = np.array([[0, 0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 0]])
    occ = np.array([[0, 0, 1, 2, 0, 1, 0, 1], [0, 1, 2, 0, 0, 0, 1, 1]])
    correct = np.array([[0, 1, 1, 1, 0, 1, 1, 0], [1, 0, 1, 1, 1, 0, 1, 1]], bool)
    acc = SequentialAccuracy(length=8, max_occurrence=3)
    for i in range(2):  # one batch per order, as the evaluation stream alternates
        acc.add({"mask": np.ones((1, 8), bool), "first_segment": np.array([i]),
                 "segment_ids": seg[i:i + 1], "occurrence": occ[i:i + 1]}, correct[i:i + 1])
    s = acc.summary(("A", "B"))
    assert s["total"] == correct.mean()
    a_first = s["orders"]["A->B"]
    assert a_first["A"]["total"] == 3 / 4 and a_first["B"]["total"] == 2 / 4
    assert a_first["A"]["instance"] == {"1": 1 / 2, "2": 1.0, "3": 1.0}
    assert a_first["B"]["instance"] == {"1": 1 / 2, "2": 1 / 2, "3": None}
    b_first = s["orders"]["B->A"]
    assert b_first["B"]["instance"] == {"1": 1.0, "2": 0.0, "3": 1.0}
    assert b_first["A"]["instance"] == {"1": 1 / 2, "2": 1.0, "3": None}
    assert s["pooled"]["A"]["instance"]["1"] == 2 / 4 and s["pooled"]["A"]["total"] == 6 / 8
    np.testing.assert_array_equal(acc.curves(), correct.astype(float))


@pytest.mark.omniglot
def test_sequential_training_and_evaluation_outputs_on_omniglot(tmp_path):
    """A tiny delayed-label run (Omniglot then omniglot_transformed, or the reverse) trains with
    finite, falling loss; the evaluation writes the Table 2/7 numbers, the curve CSV and the
    plot."""
    from configs.fewshot.sequential_omniglot_transformed_srwm_cpu import get_config
    from fewshot.evaluation import evaluate_sequential as evaluate, write_outputs
    from srwm_jax.training.metrics import read_metrics
    from fewshot.training import train_and_evaluate

    c = get_config()
    c.update(dict(data_dir=str(DATA), total_steps=10, log_every_steps=5, eval_every_steps=10,
                  checkpoint_every_steps=10,
                  val_episodes=8, eval_batch_size=8, batch_size=4, sequential_shots=3, max_trim=4,
                  conv_channels=8, hidden_size=16, num_heads=2, num_layers=1, ff_factor=1,
                  learning_rate=3e-3))
    workdir = tmp_path / "run"
    train_and_evaluate(c, str(workdir))
    metrics = read_metrics(workdir)
    train = [m["loss"] for m in metrics if m["split"] == "train"]
    assert np.all(np.isfinite(train)) and train[-1] < train[0], train
    valid = [m for m in metrics if m["split"] == "valid"][-1]
    # Per-occurrence validation accuracy: 3 shots per class, so occurrences 1-3 only.
    assert ({"occurrence_1", "occurrence_2", "occurrence_3"} <= set(valid)
            and "occurrence_5" not in valid)
    assert all(0.0 <= valid[f"occurrence_{k}"] <= 1.0 for k in (1, 2, 3))
    result = evaluate(str(workdir), num_sequences=8, batch_size=4, checkpoint="latest")
    assert set(result["orders"]) == {"omniglot->omniglot_transformed",
                                     "omniglot_transformed->omniglot"}
    assert (set(result["orders"]["omniglot->omniglot_transformed"]["omniglot"]["instance"])
            == {"1", "2", "3", "5", "10"})
    assert np.asarray(result["curves"], float).shape == (2, 30)
    assert json.loads((workdir / "eval_sequential_test.json").read_text())["num_sequences"] == 8
    out = write_outputs([result, result], ["srwm", "copy"], str(tmp_path / "eval"))
    assert (Path(out) / "accuracy_curve.png").stat().st_size > 0
    assert "| srwm |" in (Path(out) / "table.md").read_text()
    with open(Path(out) / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 30 and rows[15]["segment"] == "omniglot_transformed"
