"""HybridBench: measure every layout of the `hybrid` space with the tool itself, and report on it.

    python benchmarks/hybridbench.py                    # 125 layouts x 2 seeds, default recipe (hours)
    python benchmarks/hybridbench.py --recipe smoke --limit 3 --csv /tmp/hb.csv
    python benchmarks/hybridbench.py --report           # from the table: tau, the true front, the claims, recall

Measuring runs the search's own jobs (`ProxyEvaluator`: the proxy training and the profiling
window a search runs) on each layout, sampled through the real space's parameterisation, with
the recipe's proxy settings and training seeds 0 and 1. Latency is the target's: CPU, fp32,
batch 1, 2 threads, timed in windows of `--window` layouts interleaved with C1's target and
anchored to it, with a 95% interval. Each (layout, seed) becomes one row of the CSV, written
the moment its training ends (the file is rewritten atomically), with every field the
training and the profile record, the recipe's name and hash, and the machine's fingerprint.
A rerun skips the rows present, so a stopped run resumes. Seed 0 of every layout comes
before seed 1: a table stopped halfway is already whole, with one seed.

The report: the seed-to-seed Kendall tau over layouts (bootstrap 95% CI), the true front
(mean over seeds; C1 on it or not), the paper's claims 1, 2, 3a and 3b judged on the whole
grid, and the recall of the true front by a 16-trial default search (its sampler + refinement)
against random search, replayed over 20 seeds (and at 32 and 64 trials, to show what it takes).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.app.replay import DEFAULT_ARM, HYBRIDBENCH_CSV, Replayer, pareto_rows  # noqa: E402
from search.engine.record import TrialRecord  # noqa: E402
from search.engine.refine import RefineSettings  # noqa: E402
from search.engine.replicates import Replicate  # noqa: E402
from search.measure.estimate import combine_replicates  # noqa: E402
from search.measure.data import load_dataset  # noqa: E402
from search.measure.evaluator import ProxyEvaluator  # noqa: E402
from search.measure.profile import LatencySettings  # noqa: E402
from search.measure.profile_cache import stable_hash  # noqa: E402
from search.measure.proxy import preset  # noqa: E402
from search.measure.tables.hybridbench import SPACE, HybridSpace, hybridbench_table, read_rows  # noqa: E402
from search.report.findings import Z95, Architecture, device_label, layout_claims, paper_setting  # noqa: E402
from search.report.tables import HV_LATENCY_MULTIPLE  # noqa: E402
from search.space.space import PAPER_C1, load_space  # noqa: E402

SEEDS = (0, 1)
PROFILE_CACHE = ROOT / "results" / "profile_cache.sqlite"  # the tool's default cache
THREADS = 2
# Latency as every study of `hybrid` measures it on a 2-core CPU; `smoke` only checks the plumbing.
LATENCY = {
    "default": {},
    "smoke": dict(warmup_iters=1, min_iters=2, min_time_s=0.05, max_time_s=2.0, iters_per_round=1, min_rounds=3,
                  target_rel_ci=0.5, max_retries=0),
}


def recipe_settings(recipe: str) -> dict[str, Any]:
    """The proxy recipe (a preset, trained with `THREADS` threads), without its seed."""
    return preset(recipe, num_threads=THREADS, device="cpu").to_dict()


def recipe_hash(recipe: str) -> str:
    """What the table's accuracies depend on: every proxy setting but the seed."""
    return stable_hash({k: v for k, v in recipe_settings(recipe).items() if k != "seed"})


def make_evaluator(recipe: str, profile_cache: Path | None = None) -> ProxyEvaluator:
    """The search's own evaluator for `hybrid`. Latency windows are anchored to C1's latency
    as kept in `profile_cache` (the tool's cache): without one, each window would have its
    own scale, and windows would not compare."""
    space = load_space(SPACE)
    dataset = load_dataset("cifar10")
    target = space.target
    latency = LatencySettings(device="cpu", batch_size=1, img_size=target.img_size, dtype="float32",
                              channels_last=target.channels_last, compile=False, num_threads=THREADS,
                              **LATENCY[recipe]).to_dict()
    c1 = space.target_config(space.reference_candidates()[0]).to_dict()
    return ProxyEvaluator(space, dataset, recipe_settings(recipe), latency, str(profile_cache) if profile_cache else None,
                          c1, dataset.num_classes, dataset.in_chans)


def records(evaluator: ProxyEvaluator, limit: int | None) -> list[TrialRecord]:
    """Every layout of the space (the first `limit`), described as a search describes a trial."""
    space = evaluator.space
    found = []
    for candidate in space.enumerate()[:limit]:
        trial = optuna.trial.FixedTrial(space.params_for(candidate))
        found.append(TrialRecord(**evaluator.propose(trial)))
    return found


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the table atomically: a reader, or a kill, never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as out:
        pd.DataFrame(rows).map(_cell).to_csv(out, index=False)
    os.replace(tmp, path)


def measure(path: Path, recipe: str = "default", seeds: tuple[int, ...] = SEEDS, limit: int | None = None,
            window: int = 5, profile_cache: Path = PROFILE_CACHE, say: Callable[[str], None] = print) -> int:
    """Measure the rows `path` lacks; returns how many were added."""
    evaluator = make_evaluator(recipe, profile_cache)
    wanted = records(evaluator, limit)
    digest = recipe_hash(recipe)
    rows = pd.read_csv(path).to_dict("records") if path.is_file() else []
    done = {(r["arch_hash"], int(r["seed"])) for r in rows if r["recipe_hash"] == digest}
    latency = {r["arch_hash"]: {k: v for k, v in r.items()
                                if k.startswith(("latency_", "params", "macs", "profile", "fingerprint"))}
               for r in rows if r["recipe_hash"] == digest}  # measured once per layout, whatever its seed
    added, started = 0, time.perf_counter()
    for seed in seeds:
        todo = [r for r in wanted if (r.arch_hash, seed) not in done]
        for chunk in [todo[i: i + window] for i in range(0, len(todo), window)]:
            unmeasured = [r for r in chunk if r.arch_hash not in latency]
            if unmeasured:
                fn, args = evaluator.latency(unmeasured)
                result = fn(*args)
                span = (result["finished_at"] - result["started_at"]) / len(unmeasured)
                for arch_hash, fields in result["fields"].items():
                    latency[arch_hash] = {**fields, "profile_s": span,
                                          "fingerprint_hash": stable_hash(fields.get("profile_fingerprint") or {})}
            for record in chunk:
                fn, args = evaluator.train(record, seed)
                result = fn(*args)
                if not result["ok"]:
                    say(f"{record.layout} seed {seed}: FAILED ({result['failure_reason']}); not recorded")
                    continue
                rows.append({"layout": record.layout, "family": record.family, "arch_hash": record.arch_hash,
                             "seed": seed, "recipe": recipe, "recipe_hash": digest, **result["fields"],
                             **latency[record.arch_hash],
                             "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
                write_rows(path, rows)
                added += 1
                say(f"[{len(rows)}/{len(wanted) * len(seeds)}] {record.layout} seed {seed}: acc "
                    f"{result['fields']['accuracy']:.3f}, {latency[record.arch_hash]['latency_ms']:.2f} ms, "
                    f"{result['fields']['proxy_wall_time_s']:.0f} s ({time.perf_counter() - started:.0f} s so far)")
    return added


def retrain(row: dict[str, Any]) -> float:
    """Train one row's layout again with its recorded recipe and seed; the accuracy."""
    evaluator = make_evaluator(row["recipe"])
    if recipe_hash(row["recipe"]) != row["recipe_hash"]:
        raise ValueError(f"recipe {row['recipe']} has changed since the row was measured (hash {row['recipe_hash']})")
    record = next(r for r in records(evaluator, None) if r.arch_hash == row["arch_hash"])
    fn, args = evaluator.train(record, int(row["seed"]))
    return fn(*args)["fields"]["accuracy"]


# ---------------------------------------------------------------------------- the report
def kendall_tau(rows: pd.DataFrame, resamples: int = 1000) -> tuple[float, float, float, int]:
    """Seed 0 against seed 1 over the layouts holding both: tau and its bootstrap 95% CI."""
    from scipy.stats import kendalltau

    pairs = rows.pivot_table(index="arch_hash", columns="seed", values="accuracy").dropna()
    if pairs.shape[1] < 2 or len(pairs) < 3:
        return math.nan, math.nan, math.nan, len(pairs)
    a, b = pairs.iloc[:, 0].to_numpy(), pairs.iloc[:, 1].to_numpy()
    rng = np.random.default_rng(0)
    boot = [kendalltau(a[i], b[i]).statistic for i in (rng.integers(len(a), size=len(a)) for _ in range(resamples))]
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    return float(kendalltau(a, b).statistic), float(low), float(high), len(pairs)


def _json(cell: Any) -> dict[str, Any]:
    return json.loads(cell) if isinstance(cell, str) and cell else {}


def architectures(rows: pd.DataFrame) -> list[Architecture]:
    """The table's layouts as the findings report sees a study's architectures: accuracy the
    mean over seeds with its SE, latency the anchored median with its 95% interval."""
    found = []
    for arch_hash, group in rows.groupby("arch_hash", sort=False):
        first = group.iloc[0]
        estimate = combine_replicates([Replicate(int(r.seed), float(r.accuracy), int(r.val_count))
                                       for r in group.itertuples()])
        fingerprint, settings = _json(first.get("profile_fingerprint")), _json(first.get("profile_settings"))
        low, high = float(first["latency_ci_low_ms"]), float(first["latency_ci_high_ms"])
        found.append(Architecture(
            study="hybridbench", folder=Path(), number=len(found), layout=first["layout"], family=first["family"],
            c_block="fused_mbconv", t_block="attention", accuracy=estimate.mean, accuracy_se=estimate.se,
            replicates=tuple(group["accuracy"]), seed_sd=estimate.seed_sd, latency_ms=float(first["latency_ms"]),
            latency_low_ms=low, latency_high_ms=high, latency_interval="95% CI", latency_se=(high - low) / (2 * Z95),
            device=device_label(fingerprint, settings), space=SPACE,
            paper_setting=paper_setting(fingerprint, settings)))
    return found


def findings(group: list[Architecture], reference_ms: float, say: Callable[[str], None] = print) -> dict[str, str]:
    """Claims 1, 2, 3a and 3b judged on every layout of the table, as `search.findings` judges a
    study; the verdict of each."""
    say(f"the paper's claims on the whole grid ({len(group)} layouts, latency on {group[0].device}; "
        f"hypervolume reference {reference_ms:.2f} ms):")
    verdicts = {}
    for finding in layout_claims(group, reference_ms):
        verdicts[finding.key] = finding.verdict
        say(f"  claim {finding.key}, {finding.claim}: {finding.verdict.upper()}")
        for line in finding.evidence:
            say(f"    - {line}")
        if finding.decide:
            say(f"    what would decide it: {finding.decide}")
    return verdicts


def report(path: Path, seeds: int = 20, budgets: tuple[int, ...] = (16, 32, 64),
           say: Callable[[str], None] = print) -> dict[str, Any]:
    """Tau, the true front, the claims, and the recall of the front by searches of each number
    of trials in `budgets` (16 is the default search's) over `seeds` replays."""
    rows = read_rows(path)
    tau, low, high, n = kendall_tau(rows)
    say(f"HybridBench {path.name}: {rows['arch_hash'].nunique()} layouts, {len(rows)} rows, recipe "
        f"{rows['recipe'].iloc[0]} ({rows['recipe_hash'].iloc[0]})")
    say(f"seed-to-seed Kendall tau over {n} layouts: {tau:.3f} [95% CI {low:.3f}, {high:.3f}]")
    table = hybridbench_table(path, c1_multiple=HV_LATENCY_MULTIPLE)
    layouts = rows.drop_duplicates("arch_hash").set_index("arch_hash")["layout"]
    front = sorted(pareto_rows(table), key=lambda r: table.latency_ms[r])
    c1 = "-".join(PAPER_C1)
    on_front = c1 in {layouts[table.keys[r]] for r in front}
    say(f"true front ({len(front)} layouts, mean over seeds; C1 {c1} is {'' if on_front else 'NOT '}on it):")
    group = architectures(rows)
    measured = {a.layout: a for a in group}
    for r in front:
        a = measured[layouts[table.keys[r]]]
        say(f"  {a.layout:<22} acc {a.accuracy:.3f} ± {a.accuracy_se:.3f} (n={a.n}), {a.latency_ms:.2f} ms "
            f"[{a.latency_low_ms:.2f}, {a.latency_high_ms:.2f}]")
    result: dict[str, Any] = {"tau": tau, "tau_ci": (low, high), "front": [layouts[table.keys[r]] for r in front]}
    result["verdicts"] = findings(group, table.reference_latency_ms, say)
    try:
        space = HybridSpace.for_table(table)
    except ValueError as err:
        say(f"recall: not replayed ({err})")
        return result
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    replayer, truth = Replayer(table, space), set(front)
    refine = RefineSettings().trainings
    arms = {"default": DEFAULT_ARM.sampler, "random": "random"}
    for trials in budgets:
        suffix = "" if trials == 16 else f"_{trials}"  # 16 trials, the default search, is the target's
        for arm, sampler in arms.items():
            recall = np.array([len(truth & set(replayer.search(sampler, seed, trials, refine).front)) / len(truth)
                               for seed in range(seeds)])
            result[f"recall_{arm}{suffix}"] = recall
            say(f"recall of the true front, {trials} trials + {refine} refinement trainings, {arm} ({sampler}): "
                f"median {np.median(recall):.0%}, mean {recall.mean():.0%} ± "
                f"{recall.std(ddof=1) / math.sqrt(seeds):.0%} (SE) over {seeds} seeds")
        default, random = result[f"recall_default{suffix}"], result[f"recall_random{suffix}"]
        if seeds >= 5 and np.any(default != random):
            from scipy.stats import wilcoxon

            say(f"  paired Wilcoxon p (default vs random, {trials} trials): {wilcoxon(default, random).pvalue:.2g}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=HYBRIDBENCH_CSV)
    parser.add_argument("--recipe", default="default", choices=["default", "smoke"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N layouts (tests, trials)")
    parser.add_argument("--window", type=int, default=5, help="layouts timed together in one profiling window")
    parser.add_argument("--profile-cache", type=Path, default=PROFILE_CACHE,
                        help="the profile cache that anchors every window to one scale (default: the tool's)")
    parser.add_argument("--report", action="store_true", help="report on the table instead of measuring")
    parser.add_argument("--replay-seeds", type=int, default=20)
    parser.add_argument("--recall-trials", default="16,32,64", help="search sizes whose recall is replayed")
    args = parser.parse_args()
    try:
        if args.report:
            report(args.csv, args.replay_seeds, tuple(int(n) for n in args.recall_trials.split(",")))
        else:
            added = measure(args.csv, args.recipe, limit=args.limit, window=args.window,
                            profile_cache=args.profile_cache)
            print(f"added {added} rows to {args.csv}")
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
