"""Statistical inference for the signal lab: pure functions on arrays, no I/O.

* :func:`hac_mean_test` - mean of a series with a Newey-West (Bartlett kernel) standard error,
  the right error for overlapping ``h``-day returns (lag = horizon);
* :func:`bootstrap_mean_ci` - block-bootstrap percentile intervals of column means
  (``arch.bootstrap.CircularBlockBootstrap``);
* :func:`expected_max_sharpe` / :func:`deflated_sharpe` - Bailey & López de Prado (2014),
  "The Deflated Sharpe Ratio", J. Portfolio Management 40(5);
* :func:`pbo_cscv` - probability of backtest overfitting by combinatorially symmetric
  cross-validation, Bailey, Borwein, López de Prado & Zhu (2017), J. Computational Finance;
* :func:`spa_pvalue` - Hansen's (2005) superior predictive ability test via
  ``arch.bootstrap.SPA`` (no home-made bootstrap);
* :func:`holm` - Holm's step-down adjustment of a family of p-values.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class MeanTest:
    """A series' mean with its HAC standard error and one-sided p-value (H1: mean > 0)."""

    mean: float
    se: float
    t_stat: float
    p_value: float
    n: int


def newey_west_se(values: np.ndarray, lag: int) -> float:
    """Newey-West standard error of the mean of ``values`` (finite values, Bartlett weights
    ``1 - k / (lag + 1)``); NaN with fewer than 3 observations."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 3:
        return math.nan
    d = x - x.mean()
    variance = float(d @ d) / n
    for k in range(1, min(lag, n - 1) + 1):
        variance += 2.0 * (1.0 - k / (lag + 1.0)) * float(d[k:] @ d[:-k]) / n
    return math.sqrt(max(variance, 0.0) / n)


def hac_mean_test(values: np.ndarray, lag: int) -> MeanTest:
    """Mean, Newey-West SE (``lag``), t and the one-sided p-value of H1: mean > 0
    (Student t with n - 1 degrees of freedom)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    se = newey_west_se(x, lag)
    if not np.isfinite(se) or se <= 0:
        return MeanTest(mean, se, math.nan, math.nan, n)
    t_stat = mean / se
    return MeanTest(mean, se, t_stat, float(stats.t.sf(t_stat, n - 1)), n)


def bootstrap_mean_ci(values: np.ndarray, *, block: int, reps: int = 1000, seed: int = 0,
                      size: float = 0.95) -> np.ndarray:
    """Percentile block-bootstrap interval of each column's mean (NaN ignored), shape (k, 2).

    Uses ``arch.bootstrap.CircularBlockBootstrap``: blocks of ``block`` consecutive rows keep
    the autocorrelation of overlapping returns. Columns with fewer than 3 finite values get
    NaN.
    """
    from arch.bootstrap import CircularBlockBootstrap

    data = np.asarray(values, dtype=float)
    if data.ndim == 1:
        data = data[:, None]
    out = np.full((data.shape[1], 2), np.nan)
    usable = np.isfinite(data).sum(axis=0) >= 3
    if not usable.any() or len(data) < 3:
        return out
    sub = data[:, usable]
    bootstrap = CircularBlockBootstrap(max(1, min(block, len(sub) - 1)), sub, seed=seed)
    # the resampled row indices come from arch (the same draws as ``bootstrap.apply``); the
    # means of all columns and replications are then one vectorised gather
    index = np.stack([bootstrap.update_indices() for _ in range(reps)])
    finite = np.isfinite(sub)
    filled = np.where(finite, sub, 0.0)
    draws = np.empty((reps, sub.shape[1]))
    step = max(1, 2_000_000 // max(sub.size, 1))
    for lo in range(0, reps, step):
        rows = index[lo:lo + step]
        counts = finite[rows].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            draws[lo:lo + step] = np.where(counts > 0, filled[rows].sum(axis=1)
                                           / np.maximum(counts, 1), np.nan)
    tail = (1 - size) / 2 * 100
    out[usable] = np.nanpercentile(draws, [tail, 100 - tail], axis=0).T
    return out


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """E[max of ``n_trials`` Sharpe ratios] under the null of no skill, when the trials'
    Sharpe ratios have ``variance`` (the paper's eq. with the Euler-Mascheroni constant)."""
    if n_trials < 2:
        return 0.0
    z1 = stats.norm.ppf(1 - 1 / n_trials)
    z2 = stats.norm.ppf(1 - 1 / (n_trials * math.e))
    return math.sqrt(max(variance, 0.0)) * ((1 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe(sharpe: float, *, n_trials: int, variance: float, n_obs: int,
                    skew: float, kurtosis: float) -> float:
    """Deflated Sharpe ratio: P(true Sharpe > E[max] of the trials | observed ``sharpe``).

    All Sharpe ratios per observation period (not annualised); ``kurtosis`` is the plain
    (non-excess) kurtosis, 3 for normal returns.
    """
    if n_obs < 3 or not np.isfinite(sharpe):
        return math.nan
    benchmark = expected_max_sharpe(n_trials, variance)
    denominator = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if denominator <= 0:
        return math.nan
    z = (sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(denominator)
    return float(stats.norm.cdf(z))


def sharpe_moments(returns: np.ndarray) -> tuple[float, float, float, int]:
    """(per-period Sharpe, skewness, plain kurtosis, observations) of a return series."""
    x = np.asarray(returns, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 3:
        return math.nan, math.nan, math.nan, n
    std = x.std(ddof=1)
    if std <= 0:
        return math.nan, 0.0, 3.0, n
    return (float(x.mean() / std), float(stats.skew(x)),
            float(stats.kurtosis(x, fisher=False)), n)


@dataclass(frozen=True)
class PBOResult:
    """Probability of backtest overfitting and the logits of the CSCV combinations."""

    pbo: float
    logits: np.ndarray
    partitions: int
    combinations: int


@functools.lru_cache(maxsize=4)
def _halves(partitions: int) -> np.ndarray:
    """0/1 membership matrix of every choice of half the blocks, (combinations, blocks)."""
    chosen = np.array(list(itertools.combinations(range(partitions), partitions // 2)))
    member = np.zeros((len(chosen), partitions))
    np.put_along_axis(member, chosen, 1.0, axis=1)
    member.setflags(write=False)
    return member


def pbo_cscv(returns: np.ndarray, partitions: int = 16) -> PBOResult:
    """PBO of choosing the best in-sample column of ``returns`` (rows = dates, columns =
    strategies), by CSCV with ``partitions`` contiguous blocks of rows.

    Every split of the blocks into two halves is an in-sample/out-of-sample pair; the column
    with the best in-sample Sharpe gets its relative out-of-sample rank ``w`` (1/(N+1) ..
    N/(N+1)), logit ``log(w / (1 - w))``; PBO = share of splits with logit <= 0 (the chosen
    strategy ranks at or below the median out of sample). Block sums are formed once; each
    split is one compiled pass over them (:func:`inference_kernels.cscv_logits`).
    """
    from darkpool_analysis.evaluation.inference_kernels import cscv_logits

    data = np.nan_to_num(np.asarray(returns, dtype=float), nan=0.0)
    rows, n = data.shape
    if partitions < 2 or partitions % 2 or rows < partitions or n < 2:
        raise ValueError("pbo_cscv needs an even number >= 2 of partitions, at least that many "
                         "rows and at least 2 strategies")
    blocks = np.array_split(np.arange(rows), partitions)
    total = np.stack([data[b].sum(axis=0) for b in blocks])       # (S, N)
    squares = np.stack([(data[b] ** 2).sum(axis=0) for b in blocks])
    count = np.array([len(b) for b in blocks], dtype=float)
    member = _halves(partitions)
    logits = cscv_logits(total, squares, count, np.ascontiguousarray(member))
    return PBOResult(float((logits <= 0).mean()), logits, partitions, len(member))


def _spa_class() -> type:
    """``arch.bootstrap.SPA`` with its two numpy loops compiled (same arithmetic, same
    bootstrap draws): the HAC variance over every lag (``_compute_variance``) and the
    means of the resampled loss differentials (``_simulate_values``: arch gathers every
    resample and takes its mean three times). Everything else - the stationary bootstrap,
    the validity rule, the re-centring, the p-values - is arch's own code. Falls back to
    plain ``SPA`` if arch's internals differ from the ones this mirrors."""
    from arch.bootstrap import SPA

    if not all(callable(getattr(SPA, name, None)) for name in (
            "_compute_variance", "_simulate_values", "_check_column_validity")):
        return SPA

    class CompiledSPA(SPA):  # type: ignore[misc, valid-type]
        def _compute_variance(self) -> None:
            from darkpool_analysis.evaluation.inference_kernels import lagged_cross_sums

            if self.nested:
                super()._compute_variance()
                return
            ld = self._loss_diff
            demeaned = ld - ld.mean(axis=0)
            t = self.t
            p = 1.0 / self.block_size
            weights = np.zeros(t)
            for i in range(1, t):
                kappa = ((1.0 - (i / t)) * ((1 - p) ** i)) + ((i / t) * ((1 - p) ** (t - i)))
                weights[i] = 2 * kappa
            variances = np.sum(demeaned**2, 0) / t
            self._loss_diff_var = lagged_cross_sums(np.ascontiguousarray(demeaned), weights,
                                                    t, variances)

        def _simulate_values(self) -> None:
            from darkpool_analysis.evaluation.inference_kernels import resampled_means

            self._compute_variance()
            self._valid_columns = self._check_column_validity()
            upper_mean = self._loss_diff.mean(0)
            consistent_mean = upper_mean.copy()
            consistent_mean[np.logical_not(self._valid_columns)] = 0.0
            lower_mean = upper_mean.copy()
            lower_mean[lower_mean < 0] = 0.0
            indices = np.stack([np.asarray(self.bootstrap.update_indices(), dtype=np.int64)
                                for _ in range(self.reps)])
            means = resampled_means(np.ascontiguousarray(self._loss_diff, dtype=float),
                                    indices)
            simulated = np.zeros((self.k, self.reps, 3))
            for j, mean in enumerate((lower_mean, consistent_mean, upper_mean)):
                simulated[:, :, j] = (means - mean).T
            self._simulated_vals = simulated

    return CompiledSPA


def spa_pvalue(benchmark: np.ndarray, models: np.ndarray, *, reps: int = 1000,
               block_size: int = 10, seed: int = 0) -> float:
    """Hansen's SPA p-value (consistent) that no model beats ``benchmark`` (daily returns;
    higher is better, so losses are the negative returns), via ``arch.bootstrap.SPA`` with a
    stationary bootstrap (its numpy loops compiled, see :func:`_spa_class`)."""
    bench = -np.nan_to_num(np.asarray(benchmark, dtype=float), nan=0.0)
    losses = -np.nan_to_num(np.asarray(models, dtype=float), nan=0.0)
    if losses.ndim == 1:
        losses = losses[:, None]
    spa = _spa_class()(bench, losses, block_size=block_size, reps=reps, seed=seed)
    spa.compute()
    return float(spa.pvalues["consistent"])


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries stay NaN and are not counted)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if not m:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(stepped, 1.0)
    return out
