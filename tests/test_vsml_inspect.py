"""fewshot.inspection on a VSML run of the delayed-label task: the VSMLStats sown by the layer
go through the same collection, tables and figures as the SRWM's (srwm_jax.introspect)."""
import numpy as np
import pytest

from tests.test_introspect import TINY, _initial_fewshot_run, _read_csv


@pytest.mark.omniglot
def test_fewshot_inspect_vsml_sequential_end_to_end(tmp_path):
    from configs.fewshot.sequential_omniglot_transformed_vsml_cpu import get_config
    from fewshot.inspection import inspect
    c = get_config()
    c.update(dict(TINY, batch_size=2, sequential_shots=3, max_trim=2, image_size=16))
    run = _initial_fewshot_run(c, str(tmp_path / "vsml"))
    out = tmp_path / "inspect"
    summary = inspect([run], str(out), num_episodes=4)["vsml"]
    for fig in ("learning_rates", "weight_change", "orders", "heatmap"):
        assert (out / f"{fig}_vsml.png").stat().st_size > 5000
    rows = _read_csv(out / "stats_vsml.csv")
    T = 2 * 5 * 3
    assert len(rows) == 4 * 1 * T  # sequences x layers (the "head" axis) x steps
    assert summary["accuracy"] == pytest.approx(np.mean([int(r["correct"]) for r in rows]))
    for r in rows:
        if r["step"] == "1":   # the first change is the distance from the fresh state
            assert float(r["distance"]) == pytest.approx(float(r["state_change"]), rel=1e-4)
        assert float(r["state_norm"]) > 0
