"""Does the profiler give the same latencies twice? Passes over candidates of `hybrid`, compared.

    python benchmarks/latency_repeatability.py                          # old and new protocol
    python benchmarks/latency_repeatability.py --protocol new --candidates 14 --max-time-s 120

Candidates are drawn by seed from `spaces/hybrid.yaml` and measured as the search measures
its targets (CPU, batch 1, 224 px, channels-last, 2 threads). Each pass is a separate
profiling run, in forward, reverse, forward order:
  old: one network at a time (`profile_config`, min_time_s=1, min_iters=10), no cache;
  new: one interleaved window over all candidates with the paper's C1 as reference
       (`profile_window`); the first pass fixes the reference's anchor in a fresh cache, the
       later ones re-measure every candidate against it (`remeasure=True`), as the search
       does when it times its front again.
For every pair of passes: Spearman rank correlation, median and worst absolute relative
change. Targets: Spearman >= 0.97, median <= 1.5%, worst <= 5%. The load is printed with the
numbers: they mean something only next to it.
"""
from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.stats
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ascan import ArchConfig  # noqa: E402
from search.measure.profile import LatencySettings, ProfileCache, ProfileResult, profile_config, profile_window  # noqa: E402
from search.space.space import load_space  # noqa: E402

TARGETS = {"spearman": 0.97, "median": 0.015, "worst": 0.05}


def draw_candidates(n: int, seed: int) -> tuple[list[ArchConfig], ArchConfig]:
    """`n` distinct target configs of `hybrid` drawn with `seed`, and the space's C1 target."""
    space = load_space("hybrid")
    rng = random.Random(seed)
    configs: dict[str, ArchConfig] = {}
    while len(configs) < n:
        cfg = space.target_config(space.random_candidate(rng))
        configs.setdefault(cfg.arch_hash, cfg)
    return list(configs.values()), space.target_config(space.reference_candidates()[0])


def search_settings(args: argparse.Namespace) -> LatencySettings:
    """The search's own (see search/campaign.py: latency_settings) on CPU, plus this run's window knobs."""
    target = load_space("hybrid").target
    return LatencySettings(device="cpu", batch_size=target.batch_size, img_size=target.img_size, dtype=target.dtype,
                           channels_last=target.channels_last, compile=target.compile, num_threads=args.threads,
                           min_time_s=1.0, min_iters=10, max_time_s=args.max_time_s, clock=args.clock,
                           target_rel_ci=args.target_rel_ci, max_retries=args.max_retries,
                           warmup_iters=args.warmup_iters, iters_per_round=args.iters_per_round,
                           min_rounds=args.min_rounds)


def run_passes(protocol: str, configs: list[ArchConfig], reference: ArchConfig, settings: LatencySettings,
               passes: int) -> list[list[ProfileResult]]:
    cache = ProfileCache(Path(tempfile.mkdtemp(prefix="repeatability-")) / "profiles.db")
    results = []
    for p in range(passes):
        order = list(range(len(configs)))[::-1 if p % 2 else 1]
        start, load = time.perf_counter(), os.getloadavg()[0]
        if protocol == "old":
            measured = {i: profile_config(configs[i], settings) for i in order}
        else:
            window = profile_window([configs[i] for i in order], reference, settings, cache, remeasure=p > 0)
            measured = dict(zip(order, window))
        row = [measured[i] for i in range(len(configs))]
        results.append(row)
        flagged = sum(r.contaminated for r in row)
        foreign = [r.foreign_cpu for r in row if r.foreign_cpu is not None]
        ci = [r.ci_rel_half_width for r in row if r.ci_rel_half_width is not None]
        print(f"  {protocol} pass {p + 1}: {time.perf_counter() - start:.0f} s, load average {load:.1f} at start, "
              f"other processes' CPU {np.median(foreign) if foreign else float('nan'):.2f} cores (median), "
              f"{flagged}/{len(row)} flagged contaminated"
              + (f", CI half-width median {np.median(ci):.2%} max {max(ci):.2%}, rounds {row[0].rounds}" if ci else ""),
              flush=True)
    return results


def compare(passes: list[list[ProfileResult]]) -> list[dict[str, float | str]]:
    rows = []
    for a, b in itertools.combinations(range(len(passes)), 2):
        x = np.array([r.median_ms for r in passes[a]])
        y = np.array([r.median_ms for r in passes[b]])
        change = np.abs(y / x - 1)
        rows.append({"passes": f"{a + 1} vs {b + 1}", "spearman": float(scipy.stats.spearmanr(x, y).statistic),
                     "median": float(np.median(change)), "worst": float(change.max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=("old", "new", "both"), default="both")
    parser.add_argument("--candidates", type=int, default=14)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--max-time-s", type=float, default=120.0, help="cap per window (new) / per network (old)")
    parser.add_argument("--target-rel-ci", type=float, default=0.01)
    parser.add_argument("--max-retries", type=int, default=0, help="re-measurements of contaminated results")
    parser.add_argument("--warmup-iters", type=int, default=10, help="the search's default: 10")
    parser.add_argument("--iters-per-round", type=int, default=3)
    parser.add_argument("--min-rounds", type=int, default=10)
    args = parser.parse_args()
    if args.candidates < 2 or args.passes < 2:
        parser.error("--candidates and --passes: at least 2 each")
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)

    configs, reference = draw_candidates(args.candidates, args.seed)
    settings = search_settings(args)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"{len(configs)} candidates of hybrid (seed {args.seed}), reference C1 {reference.short_name()}; "
          f"{os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"settings: {settings.to_dict()}\n", flush=True)

    table = []
    for protocol in (("old", "new") if args.protocol == "both" else (args.protocol,)):
        passes = run_passes(protocol, configs, reference, settings, args.passes)
        values = np.array([[r.median_ms for r in row] for row in passes])
        print(f"  {protocol}: candidates span {values.min():.1f}-{values.max():.1f} ms", flush=True)
        table += [{"protocol": protocol, **row} for row in compare(passes)]

    print("\n| protocol | passes | Spearman | median abs change | worst change |\n|---|---|---|---|---|")
    for row in table:
        print(f"| {row['protocol']} | {row['passes']} | {row['spearman']:.3f} | {row['median']:.1%} | "
              f"{row['worst']:.1%} |")
    for protocol in dict.fromkeys(row["protocol"] for row in table):
        rows = [row for row in table if row["protocol"] == protocol]
        ok = all(r["spearman"] >= TARGETS["spearman"] and r["median"] <= TARGETS["median"]
                 and r["worst"] <= TARGETS["worst"] for r in rows)
        print(f"{protocol}: targets (Spearman >= 0.97, median <= 1.5%, worst <= 5%) {'PASS' if ok else 'FAIL'}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
