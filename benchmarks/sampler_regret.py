"""Which sampler finds the accuracy-latency front: HV regret on tabular benchmarks.

Replays the real search (`search.app.replay`: the same driver, samplers, refinement, front and
hypervolume code, in simulated time) with tpe, nsga2, gp and random search, and the tool's
default (its sampler + refinement), over many seeds, on NAS-Bench-201 CIFAR-10 and, when its table
exists, HybridBench (`benchmarks/hybridbench.py`). Prints a markdown table (HV regret mean ±
SE and median at 16/32/64/128 evaluations, and the paired Wilcoxon test against random search
on the same seeds), writes every replay's regret to a CSV and draws regret against
evaluations with ± SE bands (plotly HTML, with a PNG where kaleido is installed).

    python benchmarks/sampler_regret.py                      # 20 seeds, 128 evaluations
    python benchmarks/sampler_regret.py --seeds 5 --evaluations 32 --samplers tpe,random
    python benchmarks/sampler_regret.py --samplers gp+refine,random --evaluations 64   # gp with the default's refinement

GP is far slower per trial than the others (Optuna's GPSampler optimises its acquisition
function with torch at every ask): `--gp-seeds` and `--gp-evaluations` cap what it gets.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one process per core: GP's torch must not oversubscribe

import numpy as np
import optuna
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.app.replay import (DEFAULT_ARM, HYBRIDBENCH_CSV, Arm, Replay, Replayer, format_rows,  # noqa: E402
                               load_bench, summary_rows)

DATA = ROOT / "benchmarks" / "data"
_replayers: dict[str, Replayer] = {}


def _replay(job: tuple[str, Arm, int, int]) -> tuple[str, Arm, Replay]:
    bench, arm, seed, evaluations = job
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if bench not in _replayers:
        _replayers[bench] = Replayer(*load_bench(bench))
    return bench, arm, _replayers[bench].run(arm.sampler, seed, evaluations, arm.refine)


def arms_for(samplers: list[str]) -> list[Arm]:
    """`default` is the tool's default arm; `NAME+refine` is sampler NAME with the default's refinement."""
    arms = [DEFAULT_ARM] if "default" in samplers else []
    for name in (n for n in samplers if n != "default"):
        sampler, _, refine = name.partition("+")
        arms.append(Arm(f"{sampler} + refinement", sampler, DEFAULT_ARM.refine) if refine == "refine"
                    else Arm(name, name))
    return arms


def plot(frame: pd.DataFrame, path: Path) -> list[Path]:
    """Regret against evaluations, one panel per bench, mean ± SE bands."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    benches = list(dict.fromkeys(frame["bench"]))
    figure = make_subplots(rows=1, cols=len(benches), subplot_titles=benches)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for col, bench in enumerate(benches, start=1):
        for i, (arm, group) in enumerate(frame[frame["bench"] == bench].groupby("arm", sort=False)):
            stats = group.groupby("evaluations")["regret"].agg(["mean", "std", "count"]).reset_index()
            se = stats["std"].fillna(0) / np.sqrt(stats["count"])
            colour = colours[i % len(colours)]
            x = list(stats["evaluations"])
            figure.add_trace(go.Scatter(x=x + x[::-1], y=list(stats["mean"] + se) + list(stats["mean"] - se)[::-1],
                                        fill="toself", fillcolor=colour, opacity=0.2, line={"width": 0},
                                        showlegend=False, hoverinfo="skip"), row=1, col=col)
            figure.add_trace(go.Scatter(x=x, y=stats["mean"], mode="lines+markers", name=arm, line={"color": colour},
                                        legendgroup=arm, showlegend=col == 1), row=1, col=col)
        figure.update_xaxes(title_text="evaluations (trainings)", type="log", row=1, col=col)
        figure.update_yaxes(title_text="HV regret (mean ± SE over seeds)", type="log", row=1, col=col)
    figure.update_layout(title="Hypervolume regret against the true front", width=600 * len(benches), height=450)
    written = [path.with_suffix(".html")]
    figure.write_html(written[0], include_plotlyjs=True)
    try:
        figure.write_image(path.with_suffix(".png"))
        written.append(path.with_suffix(".png"))
    except (ImportError, ValueError, RuntimeError):
        pass  # no kaleido: the HTML is the plot
    return written


def summarise(frame: pd.DataFrame) -> list[dict]:
    """The summary rows of every bench in a raw frame (one row per replay and budget)."""
    rows = []
    for bench, group in frame.groupby("bench", sort=False):
        regrets: dict[str, dict[int, dict[int, float]]] = {}
        for r in group.itertuples():
            regrets.setdefault(r.arm, {}).setdefault(r.seed, {})[r.evaluations] = r.regret
        rows += [{**row, "bench": bench} for row in summary_rows(regrets, sorted(group["evaluations"].unique()))]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", action="append", help="nb201-cifar10 (default) and hybridbench when its CSV exists")
    parser.add_argument("--samplers", default="default,tpe,nsga2,gp,random")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--evaluations", type=int, default=128)
    parser.add_argument("--gp-seeds", type=int, default=None, help="seeds for gp (default: --seeds)")
    parser.add_argument("--gp-evaluations", type=int, default=None, help="evaluations for gp (default: --evaluations)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=DATA / "sampler_regret.csv")
    parser.add_argument("--summarise", action="store_true", help="only summarise and plot the replays in --out")
    args = parser.parse_args()
    if not args.summarise:
        replay_all(args)
    frame = pd.read_csv(args.out)
    rows = summarise(frame)
    print(format_rows(rows))
    if "replay_cpu_s" in frame and frame["replay_cpu_s"].notna().all():
        cpu = frame.drop_duplicates(["bench", "arm", "seed"]).groupby("arm", sort=False)["replay_cpu_s"].sum()
        print(f"\nCPU seconds by arm: {', '.join(f'{arm} {s:.0f}' for arm, s in cpu.items())}; total {cpu.sum():.0f} "
              f"({cpu.sum() / 2:.0f} s of wall time on 2 idle cores)")
    summary = args.out.with_name(args.out.stem + "_summary.csv")
    pd.DataFrame(rows).to_csv(summary, index=False)
    written = plot(frame, args.out.with_suffix(""))
    print(f"wrote {summary} and {', '.join(map(str, written))}")
    return 0


def _complete(bench: str) -> bool:
    """Whether the bench's table exists and covers its space (a table still being measured does not)."""
    if bench == "hybridbench" and not HYBRIDBENCH_CSV.exists():
        return False
    try:
        load_bench(bench)
    except ValueError as err:
        print(f"{bench}: skipped ({err})")
        return False
    return True


def replay_all(args: argparse.Namespace) -> None:
    """Every replay, seed by seed (so a stopped run leaves paired results), each appended to
    `args.out` as it ends. Rows of arms not replayed now stay; those of arms replayed now go."""
    benches = args.bench or ["nb201-cifar10"] + (["hybridbench"] if _complete("hybridbench") else [])
    arms = arms_for(args.samplers.split(","))
    jobs = []
    for bench in benches:
        evaluations = args.evaluations if not bench.startswith("hybridbench") else min(args.evaluations, 64)
        for seed in range(max(args.seeds, args.gp_seeds or 0)):
            for arm in arms:
                gp = arm.sampler == "gp"
                if seed < ((args.gp_seeds or args.seeds) if gp else args.seeds):
                    n = min(args.gp_evaluations or evaluations, evaluations) if gp else evaluations
                    jobs.append((bench, arm, seed, n))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists():  # keep the other arms' rows: a table can be built up over several runs
        kept = pd.read_csv(args.out)
        redone = {(bench, arm.label) for bench, arm, _, _ in jobs}
        kept = kept[[(b, a) not in redone for b, a in zip(kept["bench"], kept["arm"])]]
        kept.to_csv(args.out, index=False)
        if kept.empty:
            args.out.unlink()
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for done, (bench, arm, r) in enumerate(pool.imap_unordered(_replay, jobs), start=1):
            rows = [{"bench": bench, "arm": arm.label, "sampler": arm.sampler, "refine": arm.refine, "seed": r.seed,
                     "evaluations": b, "regret": s.regret, "hypervolume": s.hypervolume, "front_size": len(s.front),
                     "simulated_h": s.simulated_s / 3600, "replay_s": r.wall_s, "replay_cpu_s": r.cpu_s}
                    for b, s in sorted(r.snapshots.items())]
            pd.DataFrame(rows).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)
            print(f"[{done}/{len(jobs)}] {bench} {arm.label} seed {r.seed}: regret "
                  f"{r.snapshots[max(r.snapshots)].regret:.4f} ({r.cpu_s:.1f} CPU s)", flush=True)
    print(f"{len(jobs)} replays on {args.workers} workers in {time.perf_counter() - started:.0f} s of wall time")


if __name__ == "__main__":
    raise SystemExit(main())
