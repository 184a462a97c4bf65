"""Accuracy with its uncertainty: one replicate's scoring error, several replicates' combination.

A proxy accuracy is noisy in two ways. (1) Training noise: another seed (weights, data order,
augmentation) on the same data slice gives another accuracy; measured on the default preset,
the seed SD is about 1.5 points. (2) Validation sampling: the scored images are a sample of
the distribution; with `n` images and accuracy `p` the binomial standard error is
sqrt(p(1-p)/n), about 1.1 points at n = 2,000.

Replicates share the data slice (`ProxySettings.data_seed`), so (2) is common to them all and
does not shrink with more seeds; (1) does. `combine_replicates` therefore reports

    se = sqrt(s**2 / n + p(1-p) / n_val)

with `s` the seed SD, pooled: the measured `SEED_SD` counted as `PRIOR_DOF` degrees of freedom
plus the architecture's own n - 1. Two replicates alone would put their SD anywhere from 0 to
twice the truth (one degree of freedom), and one replicate has none, so without the prior a
lucky pair, or a single training, would look several times surer than it is. With many
replicates their own spread dominates.

This module is pure arithmetic (no torch, nothing from the driver): the record, the report
and the dashboard all call it.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Protocol, Sequence


# The seed-to-seed SD of one proxy accuracy at full scale, default recipe: 1.5 points pooled
# over 7 layouts x 3 replicates on the 2k slice (benchmarks/study_seed_tau.py), and 1.52 over
# 16 layouts x 2 seeds on the 10k slice (benchmarks/proxy_design.py): training noise, which a
# larger slice does not reduce.
SEED_SD = 0.015
# How much that measurement counts against an architecture's own replicates: as much as five
# replicates' spread. It was measured on one recipe; another recipe's replicates outweigh it soon.
PRIOR_DOF = 4


class Scored(Protocol):
    """What combining needs from one training (a `search.proxy.ProxyResult` has it)."""

    @property
    def ok(self) -> bool: ...
    @property
    def val_accuracy(self) -> float: ...
    @property
    def val_count(self) -> int: ...
    @property
    def seed(self) -> int: ...


@dataclass(frozen=True)
class AccuracyEstimate:
    """Mean accuracy over `n` replicates, its standard error, and the SE's two parts."""

    mean: float
    se: float
    n: int
    seed_sd: float | None  # the replicates' own SD; None with one replicate (unknown)
    val_se: float  # the validation-sampling part, common to all replicates

    def to_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "se": self.se, "n": self.n, "seed_sd": self.seed_sd, "val_se": self.val_se}


def binomial_se(accuracy: float, count: int) -> float:
    """sqrt(p(1-p)/n): the standard error of an accuracy measured on `count` images.

    Chosen over a Wilson interval because it is an SE (it adds in quadrature to the seed part)
    and, at the accuracies and slice sizes we score (p 0.2-0.8, n >= 200), the normal
    approximation it rests on holds; it is 0 at p = 0 or 1, which only broken models reach.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"binomial_se: count={count!r} must be a positive integer")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"binomial_se: accuracy={accuracy!r} must be in [0, 1]")
    return math.sqrt(accuracy * (1.0 - accuracy) / count)


def pooled_seed_sd(own_sd: float | None, n: int, prior_sd: float = SEED_SD, prior_dof: int = PRIOR_DOF) -> float:
    """The seed SD an SE should use: `prior_sd` (with `prior_dof` degrees of freedom) pooled
    with `n` replicates' own SD (n - 1 of them); `prior_sd` alone for one replicate."""
    if n < 2 or own_sd is None:
        return prior_sd
    return math.sqrt((prior_dof * prior_sd**2 + (n - 1) * own_sd**2) / (prior_dof + n - 1))


def combine_replicates(replicates: Sequence[Scored], prior_sd: float = SEED_SD) -> AccuracyEstimate:
    """Mean, SE and count of several trainings of ONE architecture on one data slice; the SE's
    seed part is `pooled_seed_sd` (`prior_sd` for one replicate).

    Raises ValueError for no replicates, a failed one (filter those first: a failure is not an
    accuracy), a reused seed (not an independent replicate) or differing slice sizes.
    """
    if not replicates:
        raise ValueError("combine_replicates: no replicates")
    for i, rep in enumerate(replicates):
        if not rep.ok:
            raise ValueError(f"combine_replicates: replicate {i} (seed {rep.seed}) failed; pass successful ones only")
    seeds = [rep.seed for rep in replicates]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"combine_replicates: seeds {seeds} repeat; a replicate needs its own seed")
    counts = {rep.val_count for rep in replicates}
    if len(counts) != 1:
        raise ValueError(f"combine_replicates: validation sizes {sorted(counts)} differ; replicates share one slice")
    accuracies = [rep.val_accuracy for rep in replicates]
    n, mean = len(accuracies), statistics.fmean(accuracies)
    val_se = binomial_se(mean, counts.pop())
    own_sd = statistics.stdev(accuracies) if n > 1 else None
    seed_part = pooled_seed_sd(own_sd, n, prior_sd)
    return AccuracyEstimate(mean, math.sqrt(seed_part**2 / n + val_se**2), n, own_sd, val_se)


def replicate_seed(base_seed: int, k: int) -> int:
    """The seed of replicate `k` (0, 1, 2, ...) of a training whose first seed is `base_seed`.

    Replicate 0 is `base_seed` itself, so a search's existing training counts as the first
    replicate; distinct k always give distinct seeds. Only the training seed varies: the data
    slice (`data_seed`) stays fixed, so replicates are scored on the same images.
    """
    for name, value in (("base_seed", base_seed), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"replicate_seed: {name}={value!r} must be an integer >= 0")
    return base_seed + k
