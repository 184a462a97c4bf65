"""Which proxy recipe and score rank layouts most consistently from one seed to the next, at equal cost?

Each recipe trains every drawn layout twice, with two replicate seeds (weights, data order,
augmentation) on the same data slice. Every training gives several scores (`ProxyResult`):
accuracy on the whole 10k validation slice, on its first 2k images (the slice the search
scored before), the mean training loss over the run (TSE) and its end-weighted moving
average (TSE-EMA). Each (recipe, score) is judged by the seed-to-seed Kendall tau of the
layouts' scores (`scipy.stats.kendalltau`) with a bootstrap 95% interval over layouts: a
ranking that another seed reshuffles cannot pick a front. Beside it: the pooled seed SD, the
intra-class correlation (the share of the variance that is the layout's), and the tau that
the ICC predicts for one replicate and for the mean of two (two seeds cannot measure the
latter directly: that needs four).

Recipes cost about the same CPU per architecture as `default`, scoring counted: on the
paper's C1 proxy, MACs x (TRAIN_TO_SCORE_COST x training images x epochs + scored images)
is held equal (see `equal_cost_train_size`); the training images follow.

Layouts are drawn by seed from `spaces/hybrid.yaml`, alternating families (none picked by
hand). Two trainings run at once, one thread each, in separate processes. Every training
appends one row to the CSV as it ends, so a stopped run resumes where it was (rows present
are skipped), and `--table` re-prints the table from the CSV alone. Work is ordered layout
by layout, both seeds, every recipe: after any number of rows all recipes cover the same
layouts.

    python benchmarks/proxy_design.py [--recipes default,one-epoch,...] [--layouts 16] [--scale 1]
        [--workers 2] [--csv benchmarks/data/proxy_design.csv] [--table]

Full scale is 5 recipes x 16 layouts x 2 seeds = 160 trainings of about 100 CPU s each
(about 2.3 h of two idle cores). `--scale S` trains every recipe on S times its images
(same epochs, same validation slice): cheaper, and noisier than the recipe it stands for.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import random
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace

# One thread per training, sleeping OpenMP waits: on a shared machine spinning threads collapse
# (see proxy_fidelity.py). Set before torch loads, here and in the worker processes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from search.measure.data import load_dataset, make_split  # noqa: E402
from search.measure.estimate import replicate_seed  # noqa: E402
from search.measure.macs import analytic_macs  # noqa: E402
from search.measure.proxy import PRESETS, ProxySettings, fit, seeded_model  # noqa: E402
from search.space.space import PAPER_C1, Candidate, SearchSpace, load_space  # noqa: E402

# A training step (forward + backward + update) costs about 2.6 scoring passes per image:
# measured on the C1 proxy, 650 images/s trained vs 1,700 images/s scored (search/measure/proxy.py).
TRAIN_TO_SCORE_COST = 2.6
DEFAULT_CSV = Path(__file__).resolve().parent / "data" / "proxy_design.csv"
BOOTSTRAP_DRAWS = 2000
# Each score as a row names it, and whether lower is better (a loss): tau is the same either way,
# but the table's "mean" reads better with the sign the score has.
SCORES = {"accuracy": "10k-image accuracy", "head_accuracy": "2k-image accuracy (the first 2k of the slice)",
          "tse": "mean training loss over the run", "tse_ema": "its end-weighted moving average"}


@dataclass(frozen=True)
class Recipe:
    """A proxy recipe: what differs from `default`. Training images follow from the cost."""

    name: str
    epochs: int = 3
    val_size: int = 10000
    val_head: int = 2000
    lr: float = 3e-3
    warmup_fraction: float = 0.1
    width_mult: float = 0.25  # the hybrid space's proxy width
    img_size: int = 32

    def hash(self) -> str:
        """Of every field but the name: a renamed recipe keeps its rows, a changed one does not."""
        fields = {k: v for k, v in asdict(self).items() if k != "name"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


RECIPES = {r.name: r for r in (
    Recipe("default"),                            # today's default: 10k images x 3 epochs
    Recipe("one-epoch", epochs=1),                # ~31k images x 1 (more images, fewer epochs: EcoNAS)
    Recipe("two-epochs", epochs=2),               # ~15k images x 2
    Recipe("px64", img_size=64, epochs=1),        # 64 px: stage-4 attention sees 16 tokens, not 4
    Recipe("lr-warmup", lr=6e-3, warmup_fraction=0.3),  # twice the peak rate, three times the warm-up
)}
DEFAULT_RECIPES = ",".join(RECIPES)


def proxy_space(space: SearchSpace, recipe: Recipe) -> SearchSpace:
    """`space` with the recipe's proxy width and input size."""
    import dataclasses
    return dataclasses.replace(space, proxy=dataclasses.replace(space.proxy, width_mult=recipe.width_mult,
                                                                img_size=recipe.img_size))


def scored_images(epochs: int, val_size: int, val_head: int) -> int:
    """Images a training scores: the head after every epoch, the rest of the slice once."""
    head = min(val_head, val_size)
    return head * epochs + (val_size - head)


def recipe_cost(space: SearchSpace, recipe: Recipe, train_size: int) -> float:
    """CPU cost on the C1 proxy, in scoring passes x MACs."""
    c1 = Candidate(PAPER_C1, tuple(choices[0] for choices in space.widths))
    macs = analytic_macs(proxy_space(space, recipe).proxy_config(c1, num_classes=10))
    return macs * (TRAIN_TO_SCORE_COST * train_size * recipe.epochs
                   + scored_images(recipe.epochs, recipe.val_size, recipe.val_head))


def equal_cost_train_size(space: SearchSpace, recipe: Recipe, base: ProxySettings) -> int:
    """Training images that make `recipe` cost what `base` costs on the C1 proxy."""
    base_recipe = Recipe("base", epochs=base.epochs, val_size=base.val_size, val_head=base.val_head)
    budget = recipe_cost(space, base_recipe, base.train_size)
    per_image = recipe_cost(space, recipe, 1) - recipe_cost(space, recipe, 0)
    train = round((budget - recipe_cost(space, recipe, 0)) / per_image)
    if train < base.batch_size:
        raise ValueError(f"recipe {recipe.name}: leaves {train} training images at equal cost")
    return train


def draw_layouts(space: SearchSpace, n: int, seed: int) -> list[Candidate]:
    """`n` distinct candidates drawn by `seed`, alternating families (asymmetric first), so
    both families appear; within a family every candidate is equally likely."""
    rng = random.Random(seed)
    by_family: dict[str, list[Candidate]] = {}
    for candidate in space.enumerate():
        by_family.setdefault(space.family(candidate), []).append(candidate)
    pools = [rng.sample(by_family[f], len(by_family[f])) for f in sorted(by_family)]  # asymmetric, symmetric
    drawn = [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]
    if n > len(drawn):
        raise ValueError(f"--layouts {n}: space {space.name} has only {len(drawn)} candidates")
    return drawn[:n]


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict) -> None:
    """Append one training's row (the header first, for a new file): each row is kept as it finishes."""
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def environment() -> str:
    """A short fingerprint of where the rows were measured (rows of different machines differ in time only)."""
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{socket.gethostname()}|{cpu}|{os.cpu_count()} CPUs|torch {torch.__version__}|py {platform.python_version()}"


def train_one(space_name: str, recipe: Recipe, layout: str, seed: int, scale: float, device: str) -> dict:
    """One training (in a worker process, one thread): its row."""
    space = load_space(space_name)
    candidate = next(c for c in space.enumerate() if c.layout == layout)
    base = PRESETS["default"]
    train_size = max(base.batch_size, round(equal_cost_train_size(space, recipe, base) * scale))
    settings = base.replace(epochs=recipe.epochs, val_size=recipe.val_size, val_head=recipe.val_head, lr=recipe.lr,
                            warmup_fraction=recipe.warmup_fraction, train_size=train_size, seed=seed,
                            num_threads=1, device=device)
    dataset = load_dataset("cifar10", img_size=None if recipe.img_size == 32 else recipe.img_size)
    split = make_split(dataset, train_size=train_size, val_size=recipe.val_size, seed=settings.data_seed)
    config = proxy_space(space, recipe).proxy_config(candidate, num_classes=dataset.num_classes)
    cpu, wall = time.process_time(), time.perf_counter()
    result = fit(seeded_model(config, seed), split, settings)
    return {"recipe": recipe.name, "recipe_hash": recipe.hash(), "scale": scale, "layout": layout,
            "family": space.family(candidate), "seed": seed, "train_size": train_size, "epochs": recipe.epochs,
            "val_size": recipe.val_size, "val_head": recipe.val_head, "lr": recipe.lr,
            "warmup_fraction": recipe.warmup_fraction, "width_mult": recipe.width_mult, "img_size": recipe.img_size,
            "status": result.status, "accuracy": result.val_accuracy, "val_correct": result.val_correct,
            "val_count": result.val_count, "head_accuracy": result.head_accuracy,
            "head_correct": result.head_correct, "head_count": result.head_count, "tse": result.tse,
            "tse_ema": result.tse_ema, "curve": json.dumps([round(a, 5) for a in result.curve]),
            "train_loss_curve": json.dumps([round(v, 5) for v in result.train_loss_curve]),
            "cpu_s": round(time.process_time() - cpu, 1), "wall_s": round(time.perf_counter() - wall, 1),
            "threads": 1, "load1": round(os.getloadavg()[0], 2), "device": result.device,
            "environment": environment(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# ---------------------------------------------------------------------------- the table
def icc(pairs: np.ndarray) -> float:
    """ICC(1) of a layouts x replicates array: the share of a score's variance that is the
    layout's, from the one-way ANOVA mean squares."""
    n, k = pairs.shape
    within = pairs.var(axis=1, ddof=1).mean()
    between = k * pairs.mean(axis=1).var(ddof=1)
    return float((between - within) / (between + (k - 1) * within))


def predicted_tau(reliability: float) -> float:
    """Kendall's tau of two bivariate-normal measures correlated `reliability` (Greiner: 2/pi asin r)."""
    return 2 / math.pi * math.asin(max(-1.0, min(1.0, reliability)))


def bootstrap_tau(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile interval of tau over layouts resampled with replacement."""
    draws = []
    for _ in range(BOOTSTRAP_DRAWS):
        index = rng.integers(0, len(a), len(a))
        tau = kendalltau(a[index], b[index]).statistic
        if math.isfinite(tau):
            draws.append(tau)
    if not draws:
        return math.nan, math.nan
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def table(rows: list[dict], seed: int = 0) -> pd.DataFrame:
    """One line per (recipe, scale, score): cost, seed spread, ICC and seed-to-seed tau with its CI."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame[frame["status"] == "ok"]
    numeric = ["accuracy", "head_accuracy", "tse", "tse_ema", "cpu_s", "wall_s", "scale"]
    frame = frame.astype({**{c: float for c in numeric if c in frame}, "seed": int, "train_size": int})
    rng = np.random.default_rng(seed)
    lines = []
    for (recipe, scale), group in frame.groupby(["recipe", "scale"], sort=False):
        for score in (s for s in SCORES if s in group and group[s].notna().any()):
            pairs = group.pivot_table(index="layout", columns="seed", values=score).dropna()
            if pairs.shape[1] < 2 or len(pairs) < 2:
                continue
            values = pairs.iloc[:, :2].to_numpy()
            a, b = values[:, 0], values[:, 1]
            # Seed SD and ICC from 2 layouts on; a tau over fewer than 3 layouts can only be +-1: not shown.
            tau = kendalltau(a, b) if len(pairs) >= 3 else SimpleNamespace(statistic=math.nan, pvalue=math.nan)
            low, high = bootstrap_tau(a, b, rng) if len(pairs) >= 3 else (math.nan, math.nan)
            share = icc(values)
            reliable = max(share, 0.0)  # a negative ICC estimates a share of 0
            first = group.iloc[0]
            lines.append({
                "recipe": recipe, "scale": scale, "score": score, "images": int(first["train_size"]),
                "epochs": int(first["epochs"]), "px": int(first["img_size"]), "CPU s": group["cpu_s"].mean(),
                "mean": values.mean(), "seed SD": math.sqrt(values.var(axis=1, ddof=1).mean()),
                "ICC": share, "tau": tau.statistic, "tau low": low, "tau high": high, "p": tau.pvalue,
                "tau pred 1": predicted_tau(reliable),
                "tau pred mean2": predicted_tau(2 * reliable / (1 + reliable)),
                "layouts": len(pairs)})
    return pd.DataFrame(lines)


def rows_done(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.groupby("recipe", sort=False).agg(rows=("layout", "size"), layouts=("layout", "nunique"),
                                                   ok=("status", lambda s: int((s == "ok").sum())))


def print_table(path: Path) -> None:
    rows = read_rows(path)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(rows_done(rows).to_string())
    print()
    print(table(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\ntau: scipy.stats.kendalltau of seed-A vs seed-B scores over the layouts, [tau low, tau high] its 95% "
          f"bootstrap interval over layouts ({BOOTSTRAP_DRAWS} draws); seed SD pooled over layouts; ICC(1) the "
          f"layout's share of the variance; tau pred: the tau the ICC predicts (2/pi asin r) for one replicate "
          f"and for the mean of two (Spearman-Brown). CSV: {path}. {os.cpu_count()} CPUs, load average now "
          f"{os.getloadavg()[0]:.2f}.")


# ---------------------------------------------------------------------------- the run
def plan(space: SearchSpace, recipes: list[Recipe], layouts: int, layout_seed: int, base_seed: int,
         scale: float) -> list[tuple[Recipe, str, int]]:
    """Every (recipe, layout, seed) training, layout by layout, both seeds, every recipe."""
    seeds = [replicate_seed(base_seed, k) for k in range(2)]
    return [(recipe, candidate.layout, seed) for candidate in draw_layouts(space, layouts, layout_seed)
            for seed in seeds for recipe in recipes]


def run(args: argparse.Namespace, recipes: list[Recipe]) -> None:
    space = load_space(args.space)
    done = {(r["recipe"], r.get("recipe_hash"), float(r["scale"]), r["layout"], int(r["seed"]))
            for r in read_rows(args.csv)}
    todo = [(recipe, layout, seed) for recipe, layout, seed in
            plan(space, recipes, args.layouts, args.layout_seed, args.seed, args.scale)
            if (recipe.name, recipe.hash(), args.scale, layout, seed) not in done]
    print(f"{len(todo)} trainings to go ({len(done)} rows already in {args.csv}), {args.workers} at a time",
          flush=True)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        # Submitted in order; the pool starts them in that order, so the CSV fills layout by layout.
        futures = {pool.submit(train_one, args.space, recipe, layout, seed, args.scale, args.device):
                   (recipe.name, layout, seed) for recipe, layout, seed in todo}
        for future in as_completed(futures):
            row = future.result()
            append_row(args.csv, row)
            print(f"{row['recipe']:10s} {row['layout']:20s} seed {row['seed']}: acc {row['accuracy']:.3f} "
                  f"2k {row['head_accuracy'] or math.nan:.3f} tse {row['tse'] or math.nan:.3f} "
                  f"({row['status']}, {row['cpu_s']:.0f} CPU s, {row['wall_s']:.0f} s, load {row['load1']})",
                  flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=DEFAULT_RECIPES, help=f"comma-separated, from: {DEFAULT_RECIPES}")
    parser.add_argument("--layouts", type=int, default=16, help="layouts drawn from the space, alternating families")
    parser.add_argument("--layout-seed", type=int, default=0, help="seed of the layout draw")
    parser.add_argument("--seed", type=int, default=0, help="base training seed; replicates 0 and 1 are used")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each recipe's training images")
    parser.add_argument("--workers", type=int, default=2, help="trainings at once, one thread each")
    parser.add_argument("--device", default="cpu", help="cpu | cuda: where the proxies train")
    parser.add_argument("--space", default="hybrid")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--table", action="store_true", help="only print the table from the CSV")
    args = parser.parse_args(argv)
    unknown = [name for name in args.recipes.split(",") if name not in RECIPES]
    if unknown:
        print(f"--recipes: unknown {', '.join(unknown)} (choose from {DEFAULT_RECIPES})", file=sys.stderr)
        return 2
    if not 0 < args.scale <= 1 or args.layouts < 1 or args.workers < 1:
        print("--scale must be in (0, 1], --layouts >= 1, --workers >= 1", file=sys.stderr)
        return 2
    if not args.table:
        run(args, [RECIPES[name] for name in args.recipes.split(",")])
    print_table(args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
