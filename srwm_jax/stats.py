"""Confidence intervals for a mean over a few independent repetitions (test sets, seeds, episodes).

One place for the formula, used by `fewshot.evaluate` (95% interval over the test sets) and
`rl.evaluate` (standard error of the mean return over episodes).

    t_interval(values) -> Interval(mean, half_width, std, sem, n)

The interval is the Student-t one for the mean of n independent, roughly normal values:
    mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n),   s = sample std (ddof = 1).
With n = 5 sets that is 2.776 * s / sqrt(5); the former 1.96 * std_population / sqrt(5) is
1.58x narrower and covered the true mean only ~85% of the time (see tests/test_stats.py).
"""
from typing import NamedTuple

import numpy as np
from scipy import stats as _scipy_stats


class Interval(NamedTuple):
    mean: float
    half_width: float   # the interval is [mean - half_width, mean + half_width]; nan if n < 2
    std: float          # sample standard deviation (ddof = 1); nan if n < 2
    sem: float          # std / sqrt(n), the standard error of the mean; nan if n < 2
    n: int


def t_quantile(q: float, dof: int) -> float:
    """Quantile `q` in (0, 1) of Student's t distribution with `dof` >= 1 degrees of freedom."""
    if not 0.0 < q < 1.0 or dof < 1:
        raise ValueError(f"t_quantile needs 0 < q < 1 and dof >= 1, got q={q}, dof={dof}")
    return float(_scipy_stats.t.ppf(q, dof))


def sem(values) -> float:
    """Standard error of the mean, sample std (ddof = 1) / sqrt(n); nan for fewer than 2 values."""
    return t_interval(values).sem


def t_interval(values, confidence: float = 0.95) -> Interval:
    """Student-t confidence interval for the mean of `values` ([n] numbers, n >= 1).

    Raises ValueError for an empty input, non-finite values or confidence outside (0, 1).
    For n = 1 the mean is returned with nan half_width / std / sem (no spread to estimate).
    """
    x = np.asarray(values, np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("t_interval needs at least one value, got none")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"t_interval got non-finite values: {x[~np.isfinite(x)][:5]}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, mean = int(x.size), float(x.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), float("nan"), n)
    std = float(x.std(ddof=1))
    se = std / np.sqrt(n)
    return Interval(mean, t_quantile(0.5 + confidence / 2, n - 1) * se, std, float(se), n)
