"""Inference: deflated Sharpe against the paper's example, PBO on known cases, SPA equal to
arch, Holm and Newey-West by hand, bootstrap intervals equal to arch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from arch.bootstrap import SPA, CircularBlockBootstrap

from darkpool_analysis.evaluation.inference import (
    bootstrap_mean_ci,
    deflated_sharpe,
    expected_max_sharpe,
    hac_mean_test,
    holm,
    newey_west_se,
    pbo_cscv,
    spa_pvalue,
)


def test_deflated_sharpe_equals_the_papers_numerical_example() -> None:
    """Bailey & López de Prado (2014), section 'A numerical example': N = 100 trials whose
    annualised Sharpe ratios have variance 1/2, the best has annualised SR 2.5 over T = 1,250
    daily observations (250 a year), skewness -3, kurtosis 10. The paper gets
    SR0 = 0.1132 (per day) and DSR = 0.9004."""
    per_year = 250
    variance_daily = 0.5 / per_year
    assert expected_max_sharpe(100, variance_daily) == pytest.approx(0.1132, abs=1e-3)
    dsr = deflated_sharpe(2.5 / math.sqrt(per_year), n_trials=100, variance=variance_daily,
                          n_obs=1250, skew=-3.0, kurtosis=10.0)
    assert dsr == pytest.approx(0.9004, abs=1e-3)
    # one trial: no deflation, a normal track record at SR 0 is a coin toss
    assert deflated_sharpe(0.0, n_trials=1, variance=0.1, n_obs=500, skew=0.0,
                           kurtosis=3.0) == pytest.approx(0.5)


def test_pbo_of_pure_noise_is_about_one_half() -> None:
    values = [pbo_cscv(np.random.default_rng(seed).normal(0, 0.01, (800, 40)), 16).pbo
              for seed in range(12)]
    assert np.mean(values) == pytest.approx(0.5, abs=0.1)
    result = pbo_cscv(np.random.default_rng(0).normal(size=(160, 5)), 16)
    assert result.combinations == math.comb(16, 8) == len(result.logits)


def test_pbo_with_one_planted_winner_is_near_zero() -> None:
    rng = np.random.default_rng(1)
    returns = rng.normal(0, 0.01, (800, 40))
    returns[:, 17] += 0.004  # a real edge of 0.4 standard deviations a day
    assert pbo_cscv(returns, 16).pbo < 0.02


def test_pbo_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="partitions"):
        pbo_cscv(np.zeros((100, 3)), 15)
    with pytest.raises(ValueError, match="strategies"):
        pbo_cscv(np.zeros((100, 1)), 16)


def test_spa_pvalue_equals_calling_arch_directly() -> None:
    rng = np.random.default_rng(4)
    benchmark = rng.normal(0.0002, 0.01, 500)
    models = rng.normal(0.0, 0.01, (500, 12))
    models[:, 3] += 0.004
    ours = spa_pvalue(benchmark, models, reps=300, block_size=10, seed=7)
    spa = SPA(-benchmark, -models, block_size=10, reps=300, seed=7)
    spa.compute()
    assert ours == spa.pvalues["consistent"]
    assert ours < 0.05
    assert spa_pvalue(benchmark, models[:, [0, 1]], reps=300, seed=7) > 0.1


def test_holm_by_hand() -> None:
    adjusted = holm(np.array([0.01, 0.04, 0.03, 0.005, np.nan]))
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[4])
    assert holm(np.array([0.6, 0.9]))[1] == 1.0


def test_newey_west_by_hand_and_one_sided_p() -> None:
    x = np.array([1.0, 3.0, 2.0, 6.0, 3.0])
    d = x - x.mean()
    gamma0, gamma1 = d @ d / 5, d[1:] @ d[:-1] / 5
    assert newey_west_se(x, 0) == pytest.approx(math.sqrt(gamma0 / 5))
    assert newey_west_se(x, 1) == pytest.approx(math.sqrt((gamma0 + 2 * 0.5 * gamma1) / 5))
    test = hac_mean_test(x, 1)
    assert test.mean == 3.0 and test.n == 5
    assert 0 < test.p_value < 0.05
    assert hac_mean_test(-x, 1).p_value > 0.95  # one-sided: H1 is a positive mean


def test_hac_error_grows_with_overlap() -> None:
    rng = np.random.default_rng(3)
    daily = rng.normal(size=3000)
    overlapping = np.convolve(daily, np.ones(20), mode="valid")  # 20-day sums overlap
    assert newey_west_se(overlapping, 20) > 3 * newey_west_se(overlapping, 0)


def test_bootstrap_interval_equals_arch_and_covers_the_mean() -> None:
    rng = np.random.default_rng(5)
    data = rng.normal(0.01, 0.05, (300, 2))
    ci = bootstrap_mean_ci(data, block=5, reps=400, seed=11)
    direct = CircularBlockBootstrap(5, data, seed=11).apply(lambda x: x.mean(axis=0), 400)
    np.testing.assert_allclose(ci, np.percentile(direct, [2.5, 97.5], axis=0).T)
    assert (ci[:, 0] < data.mean(axis=0)).all() and (data.mean(axis=0) < ci[:, 1]).all()
    sparse = np.full((50, 1), np.nan)
    sparse[:2, 0] = 1.0
    assert np.isnan(bootstrap_mean_ci(sparse, block=3, reps=50)).all()


def _pbo_reference(returns: np.ndarray, partitions: int) -> np.ndarray:
    """CSCV logits the straightforward way: Sharpe matrices of every split by matrix
    products, then argmax and ranks."""
    import itertools

    data = np.nan_to_num(returns, nan=0.0)
    blocks = np.array_split(np.arange(len(data)), partitions)
    total = np.stack([data[b].sum(axis=0) for b in blocks])
    squares = np.stack([(data[b] ** 2).sum(axis=0) for b in blocks])
    count = np.array([len(b) for b in blocks], dtype=float)
    chosen = np.array(list(itertools.combinations(range(partitions), partitions // 2)))
    member = np.zeros((len(chosen), partitions))
    np.put_along_axis(member, chosen, 1.0, axis=1)

    def sharpe(t: np.ndarray, q: np.ndarray, c: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = t / c
            var = np.maximum(q / c - mean**2, 0.0)
            return np.where(var > 0, mean / np.sqrt(var), np.nan)

    is_sharpe = sharpe(member @ total, member @ squares, (member @ count)[:, None])
    oos = np.nan_to_num(sharpe((1 - member) @ total, (1 - member) @ squares,
                               ((1 - member) @ count)[:, None]), nan=-np.inf)
    best = np.argmax(np.nan_to_num(is_sharpe, nan=-np.inf), axis=1)
    best_oos = oos[np.arange(len(best)), best]
    rank = (oos < best_oos[:, None]).sum(axis=1) + ((oos == best_oos[:, None]).sum(axis=1)
                                                    + 1) / 2.0
    omega = rank / (data.shape[1] + 1)
    return np.log(omega / (1 - omega))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pbo_kernel_equals_matrix_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, 0.01, (400, 37))
    returns[:, 5] += 0.002 * seed
    returns[:, 7] = 0.0  # a flat strategy: NaN Sharpe everywhere
    returns[:, 9] = returns[:, 8]  # exact ties
    returns[rng.random(returns.shape) < 0.01] = np.nan
    got = pbo_cscv(returns, 10).logits
    np.testing.assert_allclose(got, _pbo_reference(returns, 10), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("seed", "shift"), [(1, 0.004), (2, 0.0), (3, -0.003)])
def test_compiled_spa_equals_arch_on_every_intermediate(seed: int, shift: float) -> None:
    """The compiled variance and bootstrap means reproduce arch's own arrays (and so its
    p-values), including columns the consistent rule drops (much worse models)."""
    from darkpool_analysis.evaluation.inference import _spa_class

    rng = np.random.default_rng(seed)
    benchmark = rng.normal(0.0002, 0.01, 300)
    models = rng.normal(0.0, 0.01, (300, 9))
    models[:, 2] += shift
    models[:, 4] -= 0.01  # invalid for the consistent p-value
    plain = SPA(-benchmark, -models, block_size=7, reps=200, seed=seed)
    compiled = _spa_class()(-benchmark, -models, block_size=7, reps=200, seed=seed)
    assert type(compiled) is not SPA
    plain.compute()
    compiled.compute()
    np.testing.assert_array_equal(compiled._loss_diff_var, plain._loss_diff_var)
    np.testing.assert_array_equal(compiled._valid_columns, plain._valid_columns)
    np.testing.assert_array_equal(compiled._simulated_vals, plain._simulated_vals)
    assert compiled.pvalues.equals(plain.pvalues)
    assert spa_pvalue(benchmark, models, reps=200, block_size=7, seed=seed) == \
        plain.pvalues["consistent"]
