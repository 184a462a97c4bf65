"""Does the search's accuracy estimate rank layouts like a longer, replicated training does?

On layouts drawn by seed from a space (the same draw as `proxy_design.py`: half from each
family, none picked by hand), trains the search's estimate, `--fast` (default: `default`)
with `--replicates N` seeds averaged, and a reference, `--reference` (default: `thorough`)
with `--reference-seeds 2` seeds averaged. It prints Kendall's tau (`scipy.stats.kendalltau`)
between the two rankings (target >= 0.6), and the reference's own seed-to-seed tau: the
ceiling, since no estimate can agree with the reference better than the reference agrees
with itself. Replicates vary the training seed only (`search.estimate.replicate_seed`); every
training is scored on the same validation slice, held out of the TRAIN split.

    PYTHONPATH=. .venv/bin/python benchmarks/proxy_fidelity.py [--layouts 10] [--replicates 1]
        [--fast default] [--reference thorough] [--reference-seeds 2] [--scale 1] [--threads 1]
        [--csv results/proxy_fidelity.csv] [--table]

Each training appends a row to the CSV, so a stopped run resumes, and `--table` re-prints the
table from it. At full scale on one idle core a `default` training takes about 100 CPU s and
`thorough` about 5x that: 10 layouts x (N + 2 x 5) default-equivalents, about 3.5 h for N = 1.
`--scale S` trains both presets on S times their images (same epochs, same validation slice).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Sleeping OpenMP waits: spinning threads collapse when other work shares the cores (measured:
# 43 vs 314 images/s); on an idle machine they cost ~25%. Read once, so before torch's import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402
from proxy_design import append_row, draw_layouts, read_rows  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from search.measure.data import load_dataset, make_split  # noqa: E402
from search.measure.estimate import combine_replicates, replicate_seed  # noqa: E402
from search.measure.proxy import PRESETS, fit, seeded_model  # noqa: E402
from search.space.space import Candidate, SearchSpace, load_space  # noqa: E402


def train_row(space: SearchSpace, candidate: Candidate, preset_name: str, seed: int, scale: float,
              threads: int) -> dict:
    base = PRESETS[preset_name]
    settings = base.replace(train_size=max(base.batch_size, round(base.train_size * scale)), seed=seed,
                            num_threads=threads, device="cpu")
    dataset = load_dataset("cifar10")
    split = make_split(dataset, train_size=settings.train_size, val_size=settings.val_size, seed=settings.data_seed)
    cpu, wall = time.process_time(), time.perf_counter()
    result = fit(seeded_model(space.proxy_config(candidate, dataset.num_classes), seed), split, settings)
    return {"preset": preset_name, "scale": scale, "layout": candidate.layout, "family": space.family(candidate),
            "seed": seed, "train_size": settings.train_size, "status": result.status,
            "failure_reason": result.failure_reason or "", "val_accuracy": result.val_accuracy,
            "val_correct": result.val_correct, "val_count": result.val_count,
            "cpu_s": round(time.process_time() - cpu, 1), "wall_s": round(time.perf_counter() - wall, 1),
            "load1": round(os.getloadavg()[0], 2)}


def estimates(rows: list[dict], preset_name: str, scale: float, seeds: list[int]) -> pd.DataFrame:
    """Per layout: the mean, SE and n of `preset_name`'s successful replicates among `seeds`."""
    by_layout: dict[str, list[StoredReplicate]] = {}
    for r in rows:
        if r["preset"] == preset_name and float(r["scale"]) == scale and int(r["seed"]) in seeds \
                and r["status"] == "ok":
            by_layout.setdefault(r["layout"], []).append(_replicate(r))
    lines = []
    for layout, reps in by_layout.items():
        estimate = combine_replicates(reps)
        lines.append({"layout": layout, "mean": estimate.mean, "se": estimate.se, "n": estimate.n,
                      **{f"seed {rep.seed}": rep.val_accuracy for rep in reps}})
    return pd.DataFrame(lines).set_index("layout") if lines else pd.DataFrame()


@dataclass(frozen=True)
class StoredReplicate:
    """A successful training read back from the CSV: what `combine_replicates` needs."""

    val_accuracy: float
    val_count: int
    seed: int
    ok: bool = True


def _replicate(row: dict) -> StoredReplicate:
    return StoredReplicate(float(row["val_accuracy"]), int(row["val_count"]), int(row["seed"]))


def report(rows: list[dict], args: argparse.Namespace) -> None:
    fast_seeds = [replicate_seed(args.seed, k) for k in range(args.replicates)]
    ref_seeds = [replicate_seed(args.seed, k) for k in range(args.reference_seeds)]
    fast = estimates(rows, args.fast, args.scale, fast_seeds)
    ref = estimates(rows, args.reference, args.scale, ref_seeds)
    if fast.empty or ref.empty:
        print("no finished layouts yet")
        return
    fast, ref = fast[fast["n"] == len(fast_seeds)], ref[ref["n"] == len(ref_seeds)]  # layouts with every seed done
    both = fast.add_suffix(f" {args.fast}").join(ref.add_suffix(f" {args.reference}"), how="inner")
    pd.set_option("display.width", 200)
    print(both.to_string(float_format=lambda v: f"{v:.3f}"))
    if len(both) < 2:
        print(f"\n{len(both)} layout(s) with every replicate done: no tau yet")
        return
    tau = kendalltau(both[f"mean {args.fast}"], both[f"mean {args.reference}"])
    print(f"\nKendall tau, {args.fast} (mean of {len(fast_seeds)}) vs {args.reference} (mean of {len(ref_seeds)}), "
          f"{len(both)} layouts: {tau.statistic:.2f} (p = {tau.pvalue:.2g}; target >= 0.6)")
    if len(ref_seeds) >= 2:
        same = ref.loc[both.index]
        ceiling = kendalltau(same[f"seed {ref_seeds[0]}"], same[f"seed {ref_seeds[1]}"])
        print(f"Ceiling, {args.reference} seed {ref_seeds[0]} vs seed {ref_seeds[1]}: {ceiling.statistic:.2f} "
              f"(p = {ceiling.pvalue:.2g})")
    print(f"scale {args.scale}; CSV {args.csv}; {os.cpu_count()} CPUs, load average now {os.getloadavg()[0]:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", type=int, default=10, help="layouts drawn from the space")
    parser.add_argument("--layout-seed", type=int, default=0, help="seed of the layout draw")
    parser.add_argument("--fast", default="default", help="the search's preset")
    parser.add_argument("--replicates", type=int, default=1, help="seeds averaged into the search's estimate")
    parser.add_argument("--reference", default="thorough", help="the reference preset")
    parser.add_argument("--reference-seeds", type=int, default=2, help="seeds averaged into the reference")
    parser.add_argument("--seed", type=int, default=0, help="base training seed")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of both presets' training images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--space", default="hybrid")
    parser.add_argument("--csv", type=Path, default=Path("results/proxy_fidelity.csv"))
    parser.add_argument("--table", action="store_true", help="only print the table from the CSV")
    args = parser.parse_args(argv)
    for name in (args.fast, args.reference):
        if name not in PRESETS:
            print(f"--fast/--reference: unknown preset {name!r} (choose from {', '.join(PRESETS)})", file=sys.stderr)
            return 2
    if not 0 < args.scale <= 1 or args.layouts < 1 or args.replicates < 1 or args.reference_seeds < 1:
        print("--scale must be in (0, 1]; --layouts, --replicates, --reference-seeds >= 1", file=sys.stderr)
        return 2

    if not args.table:
        space = load_space(args.space)
        done = {(r["preset"], float(r["scale"]), r["layout"], int(r["seed"])) for r in read_rows(args.csv)}
        plan = [(args.fast, replicate_seed(args.seed, k)) for k in range(args.replicates)]
        plan += [(args.reference, replicate_seed(args.seed, k)) for k in range(args.reference_seeds)]
        for candidate in draw_layouts(space, args.layouts, args.layout_seed):
            for preset_name, seed in plan:
                if (preset_name, args.scale, candidate.layout, seed) in done:
                    continue
                row = train_row(space, candidate, preset_name, seed, args.scale, args.threads)
                append_row(args.csv, row)
                print(f"{preset_name:9s} {candidate.layout:20s} seed {seed}: {row['val_accuracy']:.3f} "
                      f"({row['status']}, {row['cpu_s']:.0f} CPU s, load {row['load1']})", flush=True)
    report(read_rows(args.csv), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
