"""The paper's findings, checked on the user's hardware: evidence and a verdict for each claim.

`python -m search.findings results/<study> [more study folders...] [--budget-ms X]` writes
`findings.md` and a self-contained `findings.html` (Plotly inlined) beside the first study.
Each of AsCAN's claims gets its evidence in numbers with their uncertainty and a verdict that
is computed from those numbers, never written by hand:

* **supported** / **contradicted**: the interval excludes "no effect" on the claimed /
  the opposite side;
* **inconclusive at this fidelity**: it does not, with what would decide it (replicates,
  architectures, a longer schedule, the paper's GPU), sized by a simple power estimate;
* **not run**: the studies lack the architectures the claim needs, with the command that
  would make them.

What is pooled: the trained, feasible architectures of every study given (one row per
architecture; its accuracy is the mean over its replicates, `search.replicates`). Latency
only compares on one device, so everything is grouped by the device the latency came from
(its profile fingerprint and settings) and each claim is judged once per device: a claim
that holds on a GPU and not on this CPU is a finding, not a failure.

Our choices, where the paper states none:
* claim 1 compares hypervolumes against the study's reference (2 x C1's latency, as the
  report does), with a seeded parametric bootstrap (each accuracy drawn from its mean and
  SE); latency is held at its median (it is the far less noisy objective). Families of
  unequal size are compared at equal size (the larger cut at random to the smaller's size in
  each draw): a family's front is its best members, and the best of many noisy layouts beats
  the best of few by chance;
* claim 2 weights a stage's T blocks by its token count relative to the last stage,
  4^(3-i) for stage i = 0..3 (each stage halves the resolution), and regresses latency on
  that weighted count *and* the total T count together, so the position effect is not the
  count effect in disguise; claim 3's latency slope is the total-count coefficient of the
  same fit;
* claim 3's "does not raise accuracy" holds when the accuracy slope's 95% CI stays below
  `FLAT_ACCURACY_PER_T`;
* claims 4-5 compare two architectures as "a beats b" when a is better on one axis by more
  than 2 SE and not worse on the other by more than 2 SE.
"""
from __future__ import annotations

import argparse
import html
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import TrialState
from plotly.subplots import make_subplots
from scipy import stats

from search.report import page
from search.report.files import write_atomically
from search.report.dashboard import FAMILY_COLOURS, OTHER_COLOUR, reference_for
from search.engine.record import TrialRecord
from search.engine.replicates import LatencyHistory, ReplicateStore
from search.report.tables import (HV_LATENCY_MULTIPLE, StudyFolderError, compute_hypervolume, front_trials, is_feasible,
                     open_study_dir)
from search.space.space import PAPER_C1, layout_family

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "supported", "contradicted", "inconclusive at this fidelity", "not run"
VANILLA_C, VANILLA_T = "fused_mbconv", "attention"  # the paper's winners; a record without t_block used these
C1 = "-".join(PAPER_C1)
Z95 = stats.norm.ppf(0.975)
Z_POWER = Z95 + stats.norm.ppf(0.80)  # a two-sided 5% test with 80% power
TIE_SE = 2.0  # accuracies (or latencies) within this many combined SEs are not told apart
FLAT_ACCURACY_PER_T = 0.002  # claim 3: a raise below 0.2 points of accuracy per T block is none (ours)
BOOTSTRAP_DRAWS = 2000
PAPER_RUN = "python run_search.py space=paper search.sampler=grid"
BLOCKS_RUN = "python run_search.py space=blocks search.sampler=grid"
ORDER_RUN = "python run_search.py space=order search.sampler=grid"
GPU_HINT = ("the paper's setting: a GPU at fp16, batch 16 (profile.device=cuda profile.batch_size=16 "
            "profile.dtype=float16)")


# ----------------------------------------------------------------- architectures
def t_counts(layout: str) -> tuple[int, ...]:
    return tuple(stage.count("T") for stage in layout.split("-"))


def weighted_t(counts: Sequence[int]) -> float:
    """T blocks weighted by their stage's token count relative to the last stage: 4^(3-i)."""
    return float(sum(t * 4 ** (len(counts) - 1 - i) for i, t in enumerate(counts)))


def t_before_c(layout: str) -> bool:
    """Whether some stage places a T block before a C block (the order ablation's variant)."""
    return any("T" in stage and "C" in stage[stage.index("T"):] for stage in layout.split("-"))


@dataclass(frozen=True)
class Architecture:
    """One trained, feasible architecture of one study, with its uncertainties."""

    study: str
    folder: Path
    number: int
    layout: str
    family: str
    c_block: str
    t_block: str
    accuracy: float  # mean over replicates
    accuracy_se: float
    replicates: tuple[float, ...]
    seed_sd: float | None
    latency_ms: float  # median
    latency_low_ms: float
    latency_high_ms: float
    latency_interval: str  # "95% CI", "IQR" or "none": what low/high are
    latency_se: float  # of the median
    device: str
    space: str
    paper_setting: bool = False  # timed as the paper times: a GPU at fp16, batch 16

    @property
    def n(self) -> int:
        return len(self.replicates)

    @property
    def counts(self) -> tuple[int, ...]:
        return t_counts(self.layout)

    @property
    def vanilla(self) -> bool:
        """The paper's own blocks and order: what claims 1-3 compare."""
        return self.c_block == VANILLA_C and self.t_block == VANILLA_T and not t_before_c(self.layout)


def device_label(fingerprint: dict | None, settings: dict | None) -> str:
    """Where a latency was measured, from its profile's fingerprint and settings."""
    fp, settings = fingerprint or {}, settings or {}
    if not fp:
        return "unknown device"
    parts = [str(fp.get("device_name") or fp.get("cpu") or fp.get("device_type", "?"))]
    if fp.get("device_type") != "cuda" and fp.get("threads"):
        parts.append(f"{fp['threads']} threads")
    parts += [str(settings[k]) if k == "dtype" else f"batch {settings[k]}" for k in ("dtype", "batch_size")
              if k in settings]
    if fp.get("torch"):
        parts.append(f"torch {fp['torch']}")
    return " · ".join(parts)


def paper_setting(fingerprint: dict | None, settings: dict | None) -> bool:
    fp, settings = fingerprint or {}, settings or {}
    return (fp.get("device_type") == "cuda" and settings.get("dtype") == "float16"
            and settings.get("batch_size") == 16)


def _timing_advice(rows: Sequence["Architecture"]) -> str:
    """Where tighter latencies come from: on the paper's own setting, only a longer timing."""
    longer = "a longer timing (profile.min_time_s, profile.target_rel_ci)"
    return longer if rows and all(a.paper_setting for a in rows) else f"{longer}, or {GPU_HINT}"


def _latency_interval(record: TrialRecord) -> tuple[float, float, str, float]:
    """(low, high, what they are, SE of the median): the record's CI when it has one, else its
    IQR (SE of a median ~ 1.2533 sigma / sqrt(samples), sigma ~ IQR / 1.349), else nothing."""
    median = float(record.latency_ms)
    low, high = getattr(record, "latency_ci_low_ms", None), getattr(record, "latency_ci_high_ms", None)
    if low is not None and high is not None:
        return float(low), float(high), "95% CI", (float(high) - float(low)) / (2 * Z95)
    if record.latency_iqr_ms is not None:
        iqr = float(record.latency_iqr_ms)
        samples = record.latency_samples or 1
        return median - iqr / 2, median + iqr / 2, "IQR", 1.2533 * iqr / 1.349 / math.sqrt(samples)
    return median, median, "none", 0.0


def load_architectures(folder: Path, study: optuna.Study) -> list[Architecture]:
    """The study's trained, feasible, timed architectures (each once: its first trial)."""
    store, latencies, seen, found = ReplicateStore(study), LatencyHistory(study), set(), []
    space = str(study.user_attrs.get("space", ""))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = latencies.preferred(TrialRecord.load(trial))  # the latency every report shows
        if (not record.trained or not is_feasible(trial) or record.arch_hash in seen or not record.layout
                or record.latency_ms is None or not math.isfinite(record.latency_ms)):
            continue
        estimate = store.estimate(trial)
        if estimate is None:
            continue
        seen.add(record.arch_hash)
        config = record.target_config or {}
        low, high, interval, latency_se = _latency_interval(record)
        found.append(Architecture(
            study=study.study_name, folder=Path(folder), number=trial.number, layout=record.layout,
            family=record.family or layout_family(record.layout),
            c_block=record.c_block or config.get("c_block") or VANILLA_C,
            t_block=getattr(record, "t_block", None) or config.get("t_block") or VANILLA_T,
            accuracy=estimate.mean, accuracy_se=estimate.se,
            replicates=tuple(r.val_accuracy for r in store.replicates(trial)), seed_sd=estimate.seed_sd,
            latency_ms=float(record.latency_ms), latency_low_ms=low, latency_high_ms=high, latency_interval=interval,
            latency_se=latency_se, device=device_label(record.profile_fingerprint, record.profile_settings),
            space=space, paper_setting=paper_setting(record.profile_fingerprint, record.profile_settings)))
    return found


def pool(groups: Sequence[list[Architecture]]) -> list[Architecture]:
    """Every study's architectures; one architecture timed on one device counts once (the
    row with the most replicates; the first study wins ties)."""
    best: dict[tuple[str, str, str, str], Architecture] = {}
    for architectures in groups:
        for a in architectures:
            key = (a.layout, a.c_block, a.t_block, a.device)
            if key not in best or a.n > best[key].n:
                best[key] = a
    return list(best.values())


# ----------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    se: float

    def text(self, fmt: str = "{:+.4f}") -> str:
        return f"{fmt.format(self.estimate)} (95% CI {fmt.format(self.low)} to {fmt.format(self.high)})"


def sign_verdict(interval: Interval, expected: int) -> str:
    """SUPPORTED when the CI lies wholly on the `expected` side of 0, CONTRADICTED when wholly
    on the other, else INCONCLUSIVE."""
    if interval.low > 0 or interval.high < 0:
        return SUPPORTED if (interval.low > 0) == (expected > 0) else CONTRADICTED
    return INCONCLUSIVE


def needed(count: float, se: float, effect: float) -> int | None:
    """How many (replicates, architectures...) would make an `effect` significant with 80%
    power, if the SE shrinks as 1/sqrt(count): count x (z * SE / effect)^2. None: no effect."""
    if effect == 0 or not math.isfinite(effect):
        return None
    return max(math.ceil(count * (Z_POWER * se / abs(effect)) ** 2), math.ceil(count) + 1)


def ols(y: Sequence[float], regressors: dict[str, Sequence[float]]) -> dict[str, Interval] | None:
    """Least-squares slopes with 95% t intervals (None: too few rows, or collinear regressors)."""
    x = np.column_stack([np.ones(len(y)), *(np.asarray(v, float) for v in regressors.values())])
    y = np.asarray(y, float)
    n, k = x.shape
    if n <= k or np.linalg.matrix_rank(x) < k:
        return None
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    dof = n - k
    residual = y - x @ beta
    cov = (residual @ residual / dof) * np.linalg.inv(x.T @ x)
    t = stats.t.ppf(0.975, dof)
    return {name: Interval(float(b), float(b - t * s), float(b + t * s), float(s))
            for name, b, s in zip(regressors, beta[1:], np.sqrt(np.diag(cov))[1:])}


def bootstrap_accuracies(architectures: Sequence[Architecture], draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, architectures): each architecture's mean accuracy drawn from Normal(mean, SE).
    Its SE, not its replicates: resampling two or three replicates would see only their own
    spread, which the SE pools with the measured seed noise."""
    columns = [rng.normal(a.accuracy, a.accuracy_se, draws) for a in architectures]
    return np.column_stack(columns) if columns else np.empty((draws, 0))


def non_dominated(accuracy: Sequence[float], latency: Sequence[float]) -> np.ndarray:
    """Mask of the points no other point beats (higher accuracy, lower latency)."""
    acc, lat = np.asarray(accuracy, float), np.asarray(latency, float)
    return np.array([not np.any((acc >= a) & (lat <= l) & ((acc > a) | (lat < l))) for a, l in zip(acc, lat)], bool)


def hypervolume_of(accuracy: np.ndarray, latency: np.ndarray, reference_ms: float) -> float:
    """Hypervolume of (error, latency / reference) against (1, 1), as the report computes it."""
    points = np.column_stack([1.0 - accuracy, latency / reference_ms])
    points = points[(points[:, 0] < 1.0) & (points[:, 1] < 1.0)]
    return compute_hypervolume(points, np.ones(2)) if len(points) else 0.0


def coverage(a: list[Architecture], b: list[Architecture]) -> float:
    """Share of b's members that some member of a weakly dominates (Zitzler's set coverage)."""
    if not b:
        return math.nan
    return sum(any(x.accuracy >= y.accuracy and x.latency_ms <= y.latency_ms for x in a) for y in b) / len(b)


# ----------------------------------------------------------------- findings
@dataclass
class Finding:
    """One claim on one device: evidence lines, a computed verdict, what would decide it."""

    key: str
    claim: str
    verdict: str
    evidence: list[str] = field(default_factory=list)
    decide: str = ""
    table: pd.DataFrame | None = None
    figure: go.Figure | None = None


CLAIMS = {
    "1": "Asymmetric layouts give a better accuracy-latency trade-off than symmetric ones",
    "2": "T blocks in early stages lower throughput",
    "3a": "More T blocks overall speed a network up",
    "3b": "More T blocks overall do not raise accuracy",
    "4a": "FusedMBConv is the fastest C block at equal accuracy",
    "4b": "Vanilla attention is the best T block",
    "5": "C before T inside a stage beats T before C",
}


def _not_run(key: str, why: str, command: str) -> Finding:
    return Finding(key, CLAIMS[key], NOT_RUN, [why], f"run `{command}` and pass its folder too")


def _arch_table(architectures: Sequence[Architecture], extra: dict[str, Sequence] | None = None) -> pd.DataFrame:
    rows = [{"study": a.study, "trial": a.number, "layout": a.layout, "family": a.family, "C block": a.c_block,
             "T block": a.t_block, "accuracy": f"{a.accuracy:.4f} ± {a.accuracy_se:.4f} (n={a.n})",
             "latency ms": f"{a.latency_ms:.2f} [{a.latency_low_ms:.2f}, {a.latency_high_ms:.2f}] "
                           f"({a.latency_interval})"} for a in architectures]
    frame = pd.DataFrame(rows)
    for name, values in (extra or {}).items():
        frame[name] = list(values)
    return frame


def _mean_n(architectures: Sequence[Architecture]) -> float:
    return float(np.mean([a.n for a in architectures])) if architectures else 0.0


def claim_asymmetric(group: list[Architecture], reference_ms: float, draws: int, seed: int) -> Finding:
    """Claim 1: each family's front and hypervolume, their difference with a bootstrap CI."""
    families = {f: [a for a in group if a.family == f] for f in ("asymmetric", "symmetric")}
    missing = [f for f, members in families.items() if not members]
    if missing:
        return _not_run("1", f"no trained {' or '.join(missing)} layout on this device", PAPER_RUN)
    members = families["asymmetric"] + families["symmetric"]
    latency = np.array([a.latency_ms for a in members])
    is_asym = np.array([a.family == "asymmetric" for a in members])
    rng = np.random.default_rng(seed)
    samples = bootstrap_accuracies(members, draws, rng)
    hv = {f: np.array([hypervolume_of(row[mask], latency[mask], reference_ms) for row in samples])
          for f, mask in (("asymmetric", is_asym), ("symmetric", ~is_asym))}
    point = {f: hypervolume_of(np.array([a.accuracy for a in families[f]]),
                               np.array([a.latency_ms for a in families[f]]), reference_ms) for f in families}
    size = min(len(m) for m in families.values())
    if len(families["asymmetric"]) == len(families["symmetric"]):
        diff, estimate = hv["asymmetric"] - hv["symmetric"], point["asymmetric"] - point["symmetric"]
    else:
        pairs = [equal_size(is_asym, size, rng) for _ in range(draws)]
        accuracy = np.array([a.accuracy for a in members])

        def difference_of(values: np.ndarray, pair: tuple[np.ndarray, np.ndarray]) -> float:
            return (hypervolume_of(values[pair[0]], latency[pair[0]], reference_ms)
                    - hypervolume_of(values[pair[1]], latency[pair[1]], reference_ms))

        diff = np.array([difference_of(row, pair) for row, pair in zip(samples, pairs)])
        estimate = float(np.mean([difference_of(accuracy, pair) for pair in pairs]))
    low, high = np.percentile(diff, [2.5, 97.5])
    difference = Interval(estimate, float(low), float(high), float(diff.std(ddof=1)))
    verdict = sign_verdict(difference, +1)
    fronts = {f: [a for a, keep in zip(m, non_dominated([a.accuracy for a in m], [a.latency_ms for a in m])) if keep]
              for f, m in families.items()}
    joint = [a for a, keep in zip(members, non_dominated([a.accuracy for a in members], latency)) if keep]
    evidence = [f"hypervolume against the reference latency {reference_ms:.2f} ms (error x latency / reference; "
                f"95% percentile intervals from {draws} seeded bootstrap draws, each accuracy from its mean and SE: "
                "the HV of noisy points is biased upward, so a point estimate may sit near its interval's low end)"]
    for f in families:
        lo, hi = np.percentile(hv[f], [2.5, 97.5])
        evidence.append(f"{f}: HV {point[f]:.4f} (95% CI {lo:.4f} to {hi:.4f}) from {len(families[f])} layouts, "
                        f"{len(fronts[f])} on its own front, {_mean_n(families[f]):.1f} replicates each on average")
    if len(families["asymmetric"]) == len(families["symmetric"]):
        evidence.append(f"difference asymmetric - symmetric: {difference.text()}")
    else:  # the larger family's front reaches further by chance: compare them at equal size
        evidence.append(f"difference asymmetric - symmetric at equal size (the larger family cut at random to "
                        f"{size} layouts in each draw; uncut, {point['asymmetric'] - point['symmetric']:+.4f}): "
                        f"{difference.text()}")
    shares = {f: sum(a.family == f for a in joint) for f in families}
    evidence.append("joint front: " + ", ".join(f"{f} {shares[f]} of {len(joint)} ({shares[f] / len(joint):.0%})"
                                                for f in families))
    evidence.append(f"set coverage: the asymmetric front dominates "
                    f"{coverage(fronts['asymmetric'], fronts['symmetric']):.0%} of the symmetric front; the symmetric "
                    "front dominates "
                    f"{coverage(fronts['symmetric'], fronts['asymmetric']):.0%} of the asymmetric front")
    decide = ""
    if verdict == INCONCLUSIVE:
        decide = _replicates_advice(members, difference.se, difference.estimate, "the HV difference")
    table = _arch_table(members, {"on own front": ["yes" if any(a is b for b in fronts[a.family]) else ""
                                                   for a in members]})
    return Finding("1", CLAIMS["1"], verdict, evidence, decide, table, _fronts_figure(families, fronts))


def equal_size(is_asym: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Masks of `size` asymmetric and `size` symmetric members, drawn at random from the larger
    family. A family's hypervolume is that of its best members, and the best of 98 noisy layouts
    beats the best of 27 whatever they are: claim 1 compares the families at equal size."""
    masks = []
    for family in (is_asym, ~is_asym):
        chosen = np.flatnonzero(family)
        if len(chosen) > size:
            chosen = rng.choice(chosen, size, replace=False)
        mask = np.zeros(len(is_asym), bool)
        mask[chosen] = True
        masks.append(mask)
    return masks[0], masks[1]


def _replicates_advice(members: Sequence[Architecture], se: float, effect: float, what: str) -> str:
    n = _mean_n(members)
    count = needed(n, se, effect)
    lines = []
    if count is None:
        lines.append(f"{what} is 0 at this fidelity: no number of replicates can make it significant")
    else:
        trainings = max(0, math.ceil((count - n) * len(members)))
        lines.append(f"about {count} replicates per architecture (now {n:.1f}) would make {what} of {effect:+.4f} "
                     f"significant with 80% power, if it stays at that size (SE shrinks as 1/sqrt(n)): rerun the "
                     f"study's command with `refine.max_replicates={count} refine.trainings={trainings}`")
    if any(a.n == 1 for a in members):
        lines.append("with one replicate the seed part of the SE is the seed SD measured on the default recipe, "
                     "not this study's own: replicates measure it")
    lines.append("replicates shrink only the seed part of the SE; a longer schedule (proxy.preset=thorough) or a "
                 "larger validation slice shrinks the rest")
    return "; ".join(lines)


def claim_t_position(group: list[Architecture]) -> tuple[Finding, Finding]:
    """Claims 2 and 3a: latency ~ position-weighted T count + total T count, by least squares."""
    rows = [a for a in group if a.vanilla]
    fit = ols([a.latency_ms for a in rows], {"weighted": [weighted_t(a.counts) for a in rows],
                                            "total": [sum(a.counts) for a in rows]}) if len(rows) >= 4 else None
    if fit is None:
        why = (f"{len(rows)} architectures with the paper's blocks and order on this device; the fit needs 4 or more "
               "whose T counts and T placement vary independently")
        return _not_run("2", why, PAPER_RUN), _not_run("3a", why, PAPER_RUN)
    model = ("latency_ms ~ b_w x weighted T + b_t x total T (least squares over "
             f"{len(rows)} architectures; weighted T = sum of stage i's T count x 4^(3-i), its token share)")
    table = _arch_table(rows, {"T per stage": ["-".join(map(str, a.counts)) for a in rows],
                               "weighted T": [weighted_t(a.counts) for a in rows],
                               "total T": [sum(a.counts) for a in rows]})
    findings = []
    for key, name, expected, text in (("2", "weighted", +1, "latency per position-weighted T block, at equal total T"),
                                      ("3a", "total", -1, "latency per extra T block, at equal T placement")):
        slope = fit[name]
        verdict = sign_verdict(slope, expected)
        evidence = [model, f"{text}: {slope.text('{:+.3f}')} ms"]
        decide = ""
        if verdict == INCONCLUSIVE:
            count = needed(len(rows), slope.se, slope.estimate)
            more = f"about {count} architectures (now {len(rows)})" if count else "no number of architectures"
            decide = (f"{more} would make a slope of {slope.estimate:+.3f} ms significant, at this latency noise; "
                      f"or time them with {_timing_advice(rows)}")
        findings.append(Finding(key, CLAIMS[key], verdict, evidence, decide, table if key == "2" else None,
                                _latency_t_figure(rows) if key == "2" else None))
    return findings[0], findings[1]


def claim_t_accuracy(group: list[Architecture]) -> Finding:
    """Claim 3b: the accuracy slope against the total T count stays below FLAT_ACCURACY_PER_T."""
    rows = [a for a in group if a.vanilla]
    fit = ols([a.accuracy for a in rows], {"total": [sum(a.counts) for a in rows]}) if len(rows) >= 3 else None
    if fit is None:
        return _not_run("3b", f"{len(rows)} architectures with the paper's blocks and order on this device; "
                              "the slope needs 3 or more with different total T counts", PAPER_RUN)
    slope = fit["total"]
    verdict = CONTRADICTED if slope.low > 0 else SUPPORTED if slope.high < FLAT_ACCURACY_PER_T else INCONCLUSIVE
    evidence = [f"accuracy per extra T block (least squares over {len(rows)} architectures, mean of replicates): "
                f"{slope.text()}",
                f"'no raise' means the CI stays below +{FLAT_ACCURACY_PER_T} per T block (ours); "
                "'a raise' means the CI lies above 0"]
    decide = ""
    if verdict == INCONCLUSIVE:
        target = slope.estimate if slope.estimate > FLAT_ACCURACY_PER_T / 2 else slope.estimate - FLAT_ACCURACY_PER_T
        count = needed(len(rows), slope.se, target)
        decide = (f"about {count} architectures (now {len(rows)}) would settle a slope of {slope.estimate:+.4f}, or "
                  "fewer with more replicates each; "
                  + _replicates_advice(rows, slope.se, target, f"the slope's distance to the +{FLAT_ACCURACY_PER_T} "
                                                               "line or to 0"))
    return Finding("3b", CLAIMS["3b"], verdict, evidence, decide, None, _accuracy_t_figure(rows, slope))


def layout_claims(group: list[Architecture], reference_ms: float, draws: int = BOOTSTRAP_DRAWS,
                  seed: int = 0) -> list[Finding]:
    """Claims 1, 2, 3a and 3b on one device's architectures: those about the layout alone."""
    two, three = claim_t_position(group)
    return [claim_asymmetric([a for a in group if a.vanilla], reference_ms, draws, seed), two, three,
            claim_t_accuracy(group)]


# ----------------------------------------------------------------- pairwise claims (4, 5)
def beats(a: Architecture, b: Architecture) -> bool:
    """a is better than b on one axis by more than TIE_SE combined SEs and not worse on the other."""
    acc_se, lat_se = math.hypot(a.accuracy_se, b.accuracy_se), math.hypot(a.latency_se, b.latency_se)
    acc, lat = a.accuracy - b.accuracy, b.latency_ms - a.latency_ms  # positive: a better
    better = acc > TIE_SE * acc_se or lat > TIE_SE * lat_se
    return better and acc >= -TIE_SE * acc_se and lat >= -TIE_SE * lat_se


def compare(matches: Sequence[tuple[Architecture, Sequence[Architecture]]]) -> tuple[str, list[str], str]:
    """Verdict of 'each claimed architecture beats its rivals': supported if it beats them all,
    contradicted if a rival beats it, else inconclusive; the evidence lines, and the advice for
    the pairs the data cannot tell apart."""
    lines, advice, lost, tied = [], [], False, False
    for claimed, rivals in matches:
        for rival in rivals:
            acc_se = math.hypot(claimed.accuracy_se, rival.accuracy_se)
            acc, lat = claimed.accuracy - rival.accuracy, rival.latency_ms - claimed.latency_ms
            outcome = "beats" if beats(claimed, rival) else "is beaten by" if beats(rival, claimed) else "ties with"
            lost |= outcome == "is beaten by"
            lines.append(f"{_name(claimed)} {outcome} {_name(rival)}: accuracy {acc:+.4f} ± {acc_se:.4f}, "
                         f"{lat:+.2f} ± {math.hypot(claimed.latency_se, rival.latency_se):.2f} ms faster")
            if outcome == "ties with":
                tied = True
                count = needed(_mean_n([claimed, rival]), acc_se, acc)
                advice.append(f"{rival.layout} {rival.c_block}/{rival.t_block}: "
                              + (f"about {count} replicates each would separate the accuracies" if count
                                 else "identical accuracies"))
    verdict = CONTRADICTED if lost else INCONCLUSIVE if tied else SUPPORTED
    if verdict == INCONCLUSIVE:
        timed = [member for claimed, rivals in matches for member in (claimed, *rivals)]
        advice.append(f"latency ties shrink with {_timing_advice(timed)}")
    return verdict, lines, "; ".join(advice) if verdict == INCONCLUSIVE else ""


def _name(a: Architecture) -> str:
    return f"{a.layout} ({a.c_block} + {a.t_block}, trial {a.number} of {a.study})"


def _by_study(rows: Sequence[Architecture]) -> list[list[Architecture]]:
    """Rows split by study: ablation rivals are compared within the study (and proxy) they came from."""
    return [[a for a in rows if a.folder == folder] for folder in dict.fromkeys(a.folder for a in rows)]


def claim_blocks(group: list[Architecture]) -> tuple[Finding, Finding]:
    """Claims 4a/4b: on C1's layout, FusedMBConv against the other C blocks (with attention),
    and vanilla attention against the other T blocks (with FusedMBConv), within each study."""
    c1 = [a for a in group if a.layout == C1]
    findings = []
    for key, axis, winner, other in (("4a", "c_block", VANILLA_C, "t_block"), ("4b", "t_block", VANILLA_T, "c_block")):
        fixed = VANILLA_T if axis == "c_block" else VANILLA_C
        matches = []
        for rows in _by_study([a for a in c1 if getattr(a, other) == fixed]):
            claimed = next((a for a in rows if getattr(a, axis) == winner), None)
            rivals = [a for a in rows if getattr(a, axis) != winner]
            if claimed is not None and rivals:
                matches.append((claimed, rivals))
        if not matches:
            findings.append(_not_run(key, f"no study on this device holds C1's layout with {winner} and another "
                                          f"{axis.replace('_', ' ')}", BLOCKS_RUN))
            continue
        verdict, lines, decide = compare(matches)
        members = [a for claimed, rivals in matches for a in (claimed, *rivals)]
        findings.append(Finding(key, CLAIMS[key], verdict, lines, decide, _arch_table(members),
                                _pairs_figure(members, [], f"C1's layout with each {axis.replace('_', ' ')}")))
    return findings[0], findings[1]


def claim_order(group: list[Architecture]) -> Finding:
    """Claim 5: each T-before-C layout against its C-before-T twin (same T counts, same blocks,
    same study)."""
    flipped = [a for a in group if t_before_c(a.layout)]
    pairs = []
    for b in flipped:
        twin = next((a for a in group if not t_before_c(a.layout) and a.counts == b.counts and a.folder == b.folder
                     and a.c_block == b.c_block and a.t_block == b.t_block), None)
        if twin is not None:
            pairs.append((twin, b))
    if not pairs:
        why = (f"{len(flipped)} T-before-C layouts on this device, none with its C-before-T twin in its study"
               if flipped else "no T-before-C layout on this device")
        return _not_run("5", why, ORDER_RUN)
    verdict, lines, decide = compare([(twin, [b]) for twin, b in pairs])
    members = list(dict.fromkeys(a for pair in pairs for a in pair))
    return Finding("5", CLAIMS["5"], verdict, lines, decide, _arch_table(members),
                   _pairs_figure(members, pairs, "C before T vs T before C"))


# ----------------------------------------------------------------- figures
def _scatter(architectures: Sequence[Architecture], x: Sequence[float], name: str, colour: str,
             y_accuracy: bool = True) -> go.Scatter:
    return go.Scatter(
        x=list(x), y=[a.accuracy if y_accuracy else a.latency_ms for a in architectures], mode="markers", name=name,
        marker=dict(color=colour, size=9), text=[f"{_name(a)}<br>accuracy {a.accuracy:.4f} ± {a.accuracy_se:.4f} "
                                                 f"(n={a.n})<br>latency {a.latency_ms:.2f} ms" for a in architectures],
        hovertemplate="%{text}<extra></extra>",
        error_y=dict(type="data", array=[a.accuracy_se for a in architectures], visible=y_accuracy))


def _fronts_figure(families: dict[str, list[Architecture]], fronts: dict[str, list[Architecture]]) -> go.Figure:
    fig = go.Figure()
    for family, members in families.items():
        colour = FAMILY_COLOURS.get(family, OTHER_COLOUR)
        trace = _scatter(members, [a.latency_ms for a in members], f"{family} ({len(members)})", colour)
        trace.error_x = dict(type="data", array=[a.latency_high_ms - a.latency_ms for a in members],
                             arrayminus=[a.latency_ms - a.latency_low_ms for a in members], visible=True)
        fig.add_trace(trace)
        front = sorted(fronts[family], key=lambda a: a.latency_ms)
        fig.add_trace(go.Scatter(x=[a.latency_ms for a in front], y=[a.accuracy for a in front], mode="lines",
                                 line_shape="hv", line=dict(color=colour, dash="dot"), name=f"{family} front",
                                 hoverinfo="skip"))
    return fig.update_layout(title="Claim 1: each family's front (accuracy ± SE over replicates, latency interval)",
                             xaxis_title="latency, median (ms)", yaxis_title="proxy accuracy (mean of replicates)")


def _latency_t_figure(rows: Sequence[Architecture]) -> go.Figure:
    fig = go.Figure()
    for total in sorted({sum(a.counts) for a in rows}):
        part = [a for a in rows if sum(a.counts) == total]
        fig.add_trace(_scatter(part, [weighted_t(a.counts) for a in part], f"{total} T blocks", None,
                               y_accuracy=False))
    return fig.update_layout(title="Claim 2: latency against the position-weighted T count (one trace per total T)",
                             xaxis_title="weighted T count (stage i's T x 4^(3-i))", yaxis_title="latency, median (ms)")


def _accuracy_t_figure(rows: Sequence[Architecture], slope: Interval) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("latency", "accuracy"))
    totals = [sum(a.counts) for a in rows]
    fig.add_trace(_scatter(rows, totals, "latency", FAMILY_COLOURS["symmetric"], y_accuracy=False), row=1, col=1)
    fig.add_trace(_scatter(rows, totals, "accuracy", FAMILY_COLOURS["asymmetric"]), row=1, col=2)
    intercept = float(np.mean([a.accuracy for a in rows]) - slope.estimate * np.mean(totals))
    line = [min(totals), max(totals)]
    fig.add_trace(go.Scatter(x=line, y=[intercept + slope.estimate * t for t in line], mode="lines",
                             name=f"accuracy slope {slope.estimate:+.4f} per T", line=dict(dash="dot")), row=1, col=2)
    fig.update_xaxes(title_text="total T blocks")
    return fig.update_layout(title="Claim 3: latency and accuracy against the total T count")


def _pairs_figure(members: Sequence[Architecture], pairs: Sequence[tuple[Architecture, Architecture]],
                  title: str) -> go.Figure:
    fig = go.Figure()
    for a in members:
        trace = _scatter([a], [a.latency_ms], f"{a.layout} {a.c_block}/{a.t_block}", None)
        trace.error_x = dict(type="data", array=[a.latency_high_ms - a.latency_ms],
                             arrayminus=[a.latency_ms - a.latency_low_ms], visible=True)
        fig.add_trace(trace)
    for a, b in pairs:
        fig.add_trace(go.Scatter(x=[a.latency_ms, b.latency_ms], y=[a.accuracy, b.accuracy], mode="lines",
                                 line=dict(color="#999", dash="dot"), showlegend=False, hoverinfo="skip"))
    return fig.update_layout(title=title, xaxis_title="latency, median (ms)", yaxis_title="proxy accuracy")


# ----------------------------------------------------------------- deployment
@dataclass(frozen=True)
class Recommendation:
    text: str
    command: str | None


def recommend(folder: Path, study: optuna.Study, architectures: Sequence[Architecture],
              budget_ms: float | None) -> Recommendation:
    """The most accurate front member within the budget; members within TIE_SE of it are ties,
    and the fastest tie wins."""
    by_number = {a.number: a for a in architectures}
    front = [by_number[t.number] for t in front_trials(study) if t.number in by_number]
    within = [a for a in front if budget_ms is None or a.latency_ms <= budget_ms]
    budget = "no latency budget given" if budget_ms is None else f"latency budget {budget_ms:g} ms"
    if not within:
        if not front:
            return Recommendation(f"{budget}: the study has no trained feasible architecture yet", None)
        fastest = min(front, key=lambda a: a.latency_ms)
        return Recommendation(f"{budget}: no front member is that fast; the fastest is trial {fastest.number} "
                              f"({fastest.layout}, {fastest.latency_ms:.2f} ms)", None)
    best = max(within, key=lambda a: a.accuracy)
    tied = [a for a in within if best.accuracy - a.accuracy <= TIE_SE * math.hypot(best.accuracy_se, a.accuracy_se)]
    pick = min(tied, key=lambda a: a.latency_ms)
    space = "".join(c if c.isalnum() else "_" for c in (pick.space or "net")).lower()
    command = f"python -m search.export {folder} --trial {pick.number} --name ascan_{space}_t{pick.number}"
    others = [a.number for a in tied if a is not pick]
    text = (f"{budget}: deploy trial {pick.number}, {pick.layout} ({pick.family}), accuracy {pick.accuracy:.4f} ± "
            f"{pick.accuracy_se:.4f} (n={pick.n}), latency {pick.latency_ms:.2f} ms on {pick.device}"
            + (f"; tied within {TIE_SE:g} SE of the most accurate with trials {others}, and the fastest of them"
               if others else ""))
    return Recommendation(text, command)


# ----------------------------------------------------------------- the report
@dataclass
class DeviceFindings:
    device: str
    reference_ms: float
    reference_source: str
    findings: list[Finding]


@dataclass
class Report:
    studies: list[tuple[Path, optuna.Study]]
    devices: list[DeviceFindings]
    recommendation: Recommendation
    seed: int
    draws: int

    def verdicts(self) -> dict[tuple[str, str], str]:
        return {(d.device, f.key): f.verdict for d in self.devices for f in d.findings}


def _reference(group: list[Architecture], studies: Sequence[tuple[Path, optuna.Study]]) -> tuple[float, str]:
    """Claim 1's hypervolume reference for one device: twice C1's latency there (the report's
    rule), else the first study's own reference, else twice the median latency (stated)."""
    c1 = next((a for a in group if a.layout == C1 and a.vanilla), None)
    if c1 is not None:
        return HV_LATENCY_MULTIPLE * c1.latency_ms, f"{HV_LATENCY_MULTIPLE:g} x C1's latency on this device"
    for folder, study in studies:
        if any(a.study == study.study_name for a in group):
            try:
                return reference_for(folder, study).latency_ms, f"the reference of study {study.study_name}"
            except StudyFolderError:
                break
    median = float(np.median([a.latency_ms for a in group]))
    return HV_LATENCY_MULTIPLE * median, f"{HV_LATENCY_MULTIPLE:g} x the median latency (no C1, no declared reference)"


def build_report(folders: Sequence[Path], budget_ms: float | None = None, seed: int = 0,
                 draws: int = BOOTSTRAP_DRAWS) -> Report:
    """Open every study (StudyFolderError for one that is not), pool, and judge each claim on
    each device its latencies came from."""
    studies = [(Path(f), open_study_dir(Path(f))) for f in folders]
    loaded = [load_architectures(folder, study) for folder, study in studies]
    pooled, everything = pool(loaded), [a for architectures in loaded for a in architectures]
    devices = []
    for device in dict.fromkeys(a.device for a in pooled):
        group = [a for a in pooled if a.device == device]
        ablations = [a for a in everything if a.device == device]
        reference_ms, source = _reference(group, studies)
        four_a, four_b = claim_blocks(ablations)
        findings = [*layout_claims(group, reference_ms, draws, seed), four_a, four_b, claim_order(ablations)]
        devices.append(DeviceFindings(device, reference_ms, source, findings))
    if not devices:
        why = "no trained, timed architecture with a scored accuracy (val_count and proxy_seed recorded)"
        devices.append(DeviceFindings("no device", math.nan, "none", [
            _not_run(key, why, BLOCKS_RUN if key.startswith("4") else ORDER_RUN if key == "5" else PAPER_RUN)
            for key in CLAIMS]))
    first_folder, first_study = studies[0]
    recommendation = recommend(first_folder, first_study, loaded[0], budget_ms)
    return Report(studies, devices, recommendation, seed, draws)


def _across_devices(report: Report) -> list[str]:
    """Claims whose verdict differs between devices: findings in their own right."""
    lines = []
    for key, claim in CLAIMS.items():
        by_device = {d.device: f.verdict for d in report.devices for f in d.findings if f.key == key}
        decided = {dev: v for dev, v in by_device.items() if v in (SUPPORTED, CONTRADICTED)}
        if len(set(decided.values())) > 1:
            lines.append(f"claim {key} ({claim}): " + "; ".join(f"{v} on {dev}" for dev, v in decided.items()))
    return lines


def _md_table(frame: pd.DataFrame) -> str:
    cells = [[str(c) for c in frame.columns]] + [[str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    return "\n".join([lines[0], "|" + "---|" * len(frame.columns), *lines[1:]])


def render_markdown(report: Report) -> str:
    out = ["# The paper's findings, checked on this hardware", "",
           "Studies: " + ", ".join(f"`{folder}` ({study.study_name})" for folder, study in report.studies) + ".",
           f"Verdicts are computed from the numbers below (bootstrap: {report.draws} draws, seed {report.seed}); "
           "accuracies are proxy scores (mean ± SE over replicates), latencies medians with their interval.", "",
           "| device | claim | verdict |", "|---|---|---|"]
    out += [f"| {d.device} | {f.key}. {f.claim} | **{f.verdict}** |" for d in report.devices for f in d.findings]
    differences = _across_devices(report)
    if differences:
        out += ["", "**Verdicts that differ between devices** (a finding, not a failure):", *[f"- {line}" for line in
                                                                                               differences]]
    out += ["", "## Which layout to deploy", "", report.recommendation.text + "."]
    if report.recommendation.command:
        out += ["", f"    {report.recommendation.command}"]
    for d in report.devices:
        out += ["", f"## Latency measured on: {d.device}"]
        if math.isfinite(d.reference_ms):
            out += ["", f"Hypervolume reference latency: {d.reference_ms:.2f} ms ({d.reference_source})."]
        for f in d.findings:
            out += ["", f"### Claim {f.key}: {f.claim}: **{f.verdict}**", "", *[f"- {line}" for line in f.evidence]]
            if f.decide:
                out += ["", f"What would decide it: {f.decide}."]
            if f.table is not None and len(f.table):
                out += ["", _md_table(f.table)]
    return "\n".join(out) + "\n"


VERDICT_COLOURS = {SUPPORTED: "#2b8a3e", CONTRADICTED: "#c92a2a", INCONCLUSIVE: "#e67700", NOT_RUN: "#868e96"}


def render_html(report: Report) -> str:
    sections, n_plots = [], 0
    for i, d in enumerate(report.devices):
        sections.append(f"<h2>Latency measured on: {html.escape(d.device)}</h2>")
        if math.isfinite(d.reference_ms):
            sections.append(f"<p>Hypervolume reference latency: {d.reference_ms:.2f} ms "
                            f"({html.escape(d.reference_source)}).</p>")
        for f in d.findings:
            badge = f'<span class="verdict" style="background:{VERDICT_COLOURS[f.verdict]}">{f.verdict}</span>'
            body = "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in f.evidence) + "</ul>"
            if f.decide:
                body += f"<p><b>What would decide it:</b> {html.escape(f.decide)}.</p>"
            if f.figure is not None:
                n_plots += 1
                body += page.plot(f.figure, f"claim-{f.key}-{i}", height=460)
            if f.table is not None and len(f.table):
                body += f.table.to_html(index=False, border=0, classes="evidence")
            sections.append(f'<section id="finding-{f.key}-{i}" data-verdict="{html.escape(f.verdict)}">'
                            f"<h3>Claim {f.key}: {html.escape(f.claim)} {badge}</h3>{body}</section>")
    summary = "".join(f"<tr><td>{html.escape(d.device)}</td><td>{f.key}. {html.escape(f.claim)}</td>"
                      f'<td><span class="verdict" style="background:{VERDICT_COLOURS[f.verdict]}">{f.verdict}</span>'
                      "</td></tr>" for d in report.devices for f in d.findings)
    differences = "".join(f"<li>{html.escape(line)}</li>" for line in _across_devices(report))
    recommendation = html.escape(report.recommendation.text) + (
        f"<pre>{html.escape(report.recommendation.command)}</pre>" if report.recommendation.command else "")
    studies = ", ".join(html.escape(f"{folder} ({study.study_name})") for folder, study in report.studies)
    return PAGE.format(head=page.head("AsCAN: the paper's findings, checked", n_plots, STYLE), n_plots=n_plots,
                       studies=studies, draws=report.draws, seed=report.seed,
                       summary=summary, recommendation=recommendation, sections="".join(sections),
                       differences=f"<h3>Verdicts that differ between devices</h3><ul>{differences}</ul>"
                       if differences else "",
                       rendered=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def write_findings(report: Report, out: Path) -> tuple[Path, Path]:
    """Write findings.md and findings.html into `out` (each atomically)."""
    return (write_atomically(Path(out) / "findings.md", render_markdown(report)),
            write_atomically(Path(out) / "findings.html", render_html(report)))


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of milliseconds")
    return value


def _draws(text: str) -> int:
    value = int(text)
    if value < 100:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 100 draws make a 95% interval")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.findings", description=__doc__.splitlines()[0])
    parser.add_argument("study_dirs", type=Path, nargs="+", help="results/<study> folders (paper, blocks, order...)")
    parser.add_argument("--budget-ms", type=_positive, help="latency budget for the layout to deploy")
    parser.add_argument("--out", type=Path, help="default: the first study's folder")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--draws", type=_draws, default=BOOTSTRAP_DRAWS, help=f"bootstrap draws ({BOOTSTRAP_DRAWS})")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = args.out or args.study_dirs[0]
    if args.out is not None and not out.is_dir():  # a missing study folder is named by build_report
        print(f"error: --out {out}: not a folder", file=sys.stderr)
        return 2
    try:
        report = build_report(args.study_dirs, args.budget_ms, args.seed, args.draws)
    except StudyFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in write_findings(report, out):
        print(path)
    return 0


STYLE = """.verdict { color: white; padding: .1em .5em; border-radius: .3em; font-size: .85em; white-space: nowrap; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { padding: .25em .6em; border-bottom: 1px solid #ddd; text-align: left; }
section { border-top: 1px solid #eee; margin-top: 1em; } pre { background: #f3f3f3; padding: .5em; }"""
PAGE = """{head}
<body data-plots-expected="{n_plots}">
<h1>AsCAN: the paper's findings, checked on this hardware</h1>
<p>Studies: {studies}. Verdicts are computed from the numbers shown (bootstrap: {draws} draws, seed {seed}).
Accuracies are proxy scores (mean ± SE over replicates); latencies are medians with their interval.</p>
<table id="verdicts"><thead><tr><th>device</th><th>claim</th><th>verdict</th></tr></thead>
<tbody>{summary}</tbody></table>
{differences}
<h2>Which layout to deploy</h2><p>{recommendation}</p>
{sections}
<p class="hint">Rendered {rendered}.</p>
</body></html>
"""

if __name__ == "__main__":
    sys.exit(main())
