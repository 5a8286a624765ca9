"""srwm_jax.stats: Student-t quantiles against printed tables, the interval against a plain
float64 loop, and its coverage in simulated few-shot test runs (5 sets of binomial episodes)."""
import math

import numpy as np
import pytest

from srwm_jax.stats import sem, t_interval, t_quantile

# t_{0.975, dof} from standard printed tables (e.g. Fisher & Yates), 3 decimals.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 19: 2.093, 29: 2.045, 120: 1.980}


@pytest.mark.parametrize("dof", sorted(T975))
def test_t_quantile_matches_tables(dof):
    assert t_quantile(0.975, dof) == pytest.approx(T975[dof], abs=6e-4)
    assert t_quantile(0.025, dof) == pytest.approx(-T975[dof], abs=6e-4)


def test_t_quantile_tends_to_normal():
    assert t_quantile(0.975, 10**7) == pytest.approx(1.959964, abs=1e-5)


def test_interval_matches_a_float64_loop():
    values = [0.9012, 0.9105, 0.8987, 0.9070, 0.9043]
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    r = t_interval(values)
    assert r.n == n and r.mean == pytest.approx(mean, rel=1e-12)
    assert r.std == pytest.approx(std, rel=1e-12)
    assert r.sem == pytest.approx(std / math.sqrt(n), rel=1e-12) == sem(values)
    assert r.half_width == pytest.approx(2.776445 * std / math.sqrt(n), rel=1e-5)
    # 99%: t_{0.995, 4} = 4.604 (tables).
    assert t_interval(values, 0.99).half_width == pytest.approx(4.604 * std / math.sqrt(n),
                                                                rel=2e-4)


def test_single_value_and_bad_input():
    r = t_interval([0.5])
    assert r.mean == 0.5 and math.isnan(r.half_width) and math.isnan(r.sem)
    for bad in ([], [0.1, float("nan")]):
        with pytest.raises(ValueError):
            t_interval(bad)
    with pytest.raises(ValueError, match="confidence"):
        t_interval([0.1, 0.2], confidence=95)


def test_coverage_of_five_binomial_test_sets():
    """2,000 simulated evaluations: 5 sets of 1,000 one-query episodes at p = 0.9. The t interval
    covers p 95% +- 1.5% of the time; the former 1.96 * population std / sqrt(5) about 85%."""
    rng = np.random.default_rng(0)
    p, sets, episodes, trials = 0.9, 5, 1000, 2000
    set_acc = rng.binomial(episodes, p, size=(trials, sets)) / episodes
    covered = [abs(r.mean - p) <= r.half_width for r in map(t_interval, set_acc)]
    assert abs(np.mean(covered) - 0.95) < 0.015, np.mean(covered)
    old = 1.96 * set_acc.std(axis=1) / math.sqrt(sets)
    old_coverage = np.mean(np.abs(set_acc.mean(axis=1) - p) <= old)
    assert 0.80 < old_coverage < 0.90, old_coverage
