"""Accuracy estimates: binomial scoring error, combined replicates, replicate seeds."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from search.measure.estimate import SEED_SD, binomial_se, combine_replicates, pooled_seed_sd, replicate_seed


@dataclass(frozen=True)
class Rep:  # the Replicate protocol, as a ProxyResult would fill it
    val_accuracy: float
    seed: int
    val_count: int = 2000
    ok: bool = True


def test_binomial_se_is_sqrt_p_q_over_n():
    assert binomial_se(0.5, 2000) == pytest.approx(0.01118, abs=1e-5)  # the "about 1.1 points" in the docs
    assert binomial_se(0.5, 8000) == pytest.approx(binomial_se(0.5, 2000) / 2)
    assert binomial_se(0.0, 100) == 0.0 and binomial_se(1.0, 100) == 0.0
    with pytest.raises(ValueError, match="count=0"):
        binomial_se(0.5, 0)
    with pytest.raises(ValueError, match="accuracy=1.5"):
        binomial_se(1.5, 10)


def test_one_replicate_carries_the_measured_seed_sd_and_the_binomial_error():
    estimate = combine_replicates([Rep(0.49, seed=0)])
    val_se = 0.0111781  # sqrt(0.49 * 0.51 / 2000)
    assert estimate.mean == 0.49 and estimate.n == 1 and estimate.seed_sd is None
    assert estimate.val_se == pytest.approx(val_se, abs=1e-7)
    assert estimate.se == pytest.approx(0.0187070, abs=1e-7)  # sqrt(0.015**2 + val_se**2)


def test_two_lucky_replicates_do_not_look_surer_than_the_seed_noise_allows():
    twins = combine_replicates([Rep(0.50, seed=0), Rep(0.50, seed=1)])
    assert twins.seed_sd == 0.0
    # their own SD (0) counts for one degree of freedom against the measured SD's four
    assert twins.se == pytest.approx((0.8 * SEED_SD**2 / 2 + 0.5 * 0.5 / 2000) ** 0.5, abs=1e-9)
    assert twins.se > twins.val_se + 0.003  # about 1.5 points, not the 1.1 of scoring alone
    assert pooled_seed_sd(None, 1) == SEED_SD and pooled_seed_sd(0.03, 1) == SEED_SD
    assert pooled_seed_sd(0.03, 1000) == pytest.approx(0.03, rel=0.01)  # many replicates speak for themselves


def test_several_replicates_add_the_seed_spread_in_quadrature():
    accs = [0.515, 0.484, 0.470]  # C1's three seeds on the default recipe (a measured study)
    estimate = combine_replicates([Rep(a, seed=k) for k, a in enumerate(accs)])
    # By hand: mean 1.469 / 3; sample SD sqrt(sum of squared deviations / 2); pooled with the
    # measured 0.015 at 4 degrees of freedom: sqrt((4 * 0.015**2 + 2 * 0.0230290**2) / 6); the
    # binomial part sqrt(mean * (1 - mean) / 2000); the two in quadrature, the seed part over 3 seeds.
    assert estimate.n == 3 and estimate.mean == pytest.approx(0.4896667, abs=1e-7)
    assert estimate.seed_sd == pytest.approx(0.0230290, abs=1e-7)
    assert estimate.val_se == pytest.approx(0.0111780, abs=1e-7)
    assert estimate.se == pytest.approx(0.0152926, abs=1e-6)  # sqrt(0.0180771**2 / 3 + 0.0111780**2)
    # more seeds shrink the seed part but never below the shared slice's error
    many = combine_replicates([Rep(a, seed=k) for k, a in enumerate(accs * 10)])
    assert estimate.val_se < many.se < estimate.se
    assert set(estimate.to_dict()) == {"mean", "se", "n", "seed_sd", "val_se"}


def test_combine_refuses_what_is_not_a_replicate_set():
    with pytest.raises(ValueError, match="no replicates"):
        combine_replicates([])
    with pytest.raises(ValueError, match=r"seeds \[0, 0\] repeat"):
        combine_replicates([Rep(0.5, seed=0), Rep(0.6, seed=0)])
    with pytest.raises(ValueError, match="replicate 1 .seed 1. failed"):
        combine_replicates([Rep(0.5, seed=0), Rep(0.0, seed=1, ok=False)])
    with pytest.raises(ValueError, match=r"validation sizes \[2000, 5000\] differ"):
        combine_replicates([Rep(0.5, seed=0), Rep(0.6, seed=1, val_count=5000)])


def test_replicate_seeds_never_repeat_and_start_at_the_base():
    for base in (0, 7, 2**31):
        seeds = [replicate_seed(base, k) for k in range(1000)]
        assert seeds[0] == base and len(set(seeds)) == len(seeds)
    for bad in ({"base_seed": -1, "k": 0}, {"base_seed": 0, "k": -1}, {"base_seed": 0, "k": 1.0}):
        with pytest.raises(ValueError, match="must be an integer >= 0"):
            replicate_seed(**bad)
