"""Seed-to-seed Kendall tau from a finished study's replicates: how well the proxy orders its
architectures when only the training seed changes.

    python benchmarks/study_seed_tau.py results/paper-cifar10-default-s0 [--min-replicates 3]

Takes every trained, timed architecture (as the findings report does) with at least `--min-replicates` replicates (refinement adds
them; `refine.trainings` large enough gives every layout of a small space its replicates),
lines up the k-th replicate of each (same data slice, seed base + k), and prints scipy's
Kendall tau for each pair of replicate indices, their mean, and each architecture's accuracies.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import optuna
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.report.findings import load_architectures  # noqa: E402
from search.report.tables import StudyFolderError, open_study_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--min-replicates", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_study_dir(args.study_dir)
    except StudyFolderError as err:
        sys.exit(f"error: {err}")
    name = study.study_name
    rows = [(a.layout, list(a.replicates[:args.min_replicates])) for a in load_architectures(args.study_dir, study)
            if a.n >= args.min_replicates]
    if len(rows) < 3:
        sys.exit(f"error: {len(rows)} architectures with {args.min_replicates}+ replicates; need 3")
    matrix = np.array([acc for _, acc in rows])  # architectures x replicate index
    print(f"study {name}: {len(rows)} architectures with {args.min_replicates} replicates each\n")
    print("| layout | " + " | ".join(f"replicate {k}" for k in range(matrix.shape[1])) + " | mean | SD |")
    print("|---|" + "---|" * (matrix.shape[1] + 2))
    for (layout, _), acc in zip(rows, matrix):
        print(f"| {layout} | " + " | ".join(f"{a:.3f}" for a in acc) + f" | {acc.mean():.3f} | {acc.std(ddof=1):.3f} |")
    taus = []
    print()
    for i, j in itertools.combinations(range(matrix.shape[1]), 2):
        tau, p = kendalltau(matrix[:, i], matrix[:, j])
        taus.append(tau)
        print(f"replicates {i} vs {j}: Kendall tau {tau:+.2f} (p {p:.2f})")
    pooled_sd = float(np.sqrt(np.mean(matrix.var(axis=1, ddof=1))))
    means = matrix.mean(axis=1)
    print(f"\nmean seed-to-seed tau {np.mean(taus):+.2f}; pooled seed SD {pooled_sd:.4f}; "
          f"layout means span {means.min():.3f}-{means.max():.3f}")


if __name__ == "__main__":
    main()
