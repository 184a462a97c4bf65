"""Which proxy recipe ranks layouts most consistently from one seed to the next, at equal cost?

Each recipe trains every drawn layout twice, with two replicate seeds (weights, data order,
augmentation) on the same data slice, and is scored by the seed-to-seed Kendall tau of the
layouts' validation accuracies (`scipy.stats.kendalltau`): a ranking that another seed
reshuffles cannot pick a front. Recipes cost about the same CPU per architecture as
`default`: training images x epochs (plus scoring) are set so that, on the paper's C1 proxy,
MACs x images x epochs match the default's (see `equal_cost_train_size`).

Layouts are drawn by seed from `spaces/hybrid.yaml`, half from each family (both families
always appear; none are picked by hand). Every training appends one row to a CSV, so a run
that is stopped resumes where it was, and `--table` re-prints the table from the CSV alone.

    .venv/bin/python benchmarks/proxy_design.py [--recipes default,long,bigval,lr-high] [--layouts 10]
        [--scale 1] [--threads 1] [--csv results/proxy_design.csv] [--table]

Full scale is 4 recipes x 10 layouts x 2 seeds x ~100 CPU s (about 2.2 h of one core);
`--scale S` trains every recipe on S times its images (same epochs, same validation slice):
cheaper, and noisier than the recipe it stands for.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Sleeping OpenMP waits: on a shared machine spinning threads collapse (see proxy_fidelity.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from search.measure.data import load_dataset, make_split  # noqa: E402
from search.measure.estimate import binomial_se, replicate_seed  # noqa: E402
from search.measure.macs import analytic_macs  # noqa: E402
from search.measure.proxy import PRESETS, ProxySettings, fit, seeded_model  # noqa: E402
from search.space.space import PAPER_C1, Candidate, SearchSpace, load_space  # noqa: E402

# A training step (forward + backward + update) costs about 2.6 scoring passes per image:
# measured on the C1 proxy, 650 images/s trained vs 1,700 images/s scored (search/proxy.py).
TRAIN_TO_SCORE_COST = 2.6


@dataclass(frozen=True)
class Recipe:
    """A proxy recipe: what differs from `default`. Training images follow from the cost."""

    name: str
    epochs: int = 3
    val_size: int = 2000
    lr: float = 3e-3
    width_mult: float = 0.25  # the hybrid space's proxy width
    img_size: int = 32


RECIPES = {r.name: r for r in (
    Recipe("default"),                          # 10k images x 3 epochs, 2k scored
    Recipe("long", epochs=6),                   # fewer images, more epochs
    Recipe("bigval", val_size=5000),            # a larger validation slice, fewer training images
    Recipe("lr-high", lr=6e-3),                 # same schedule, twice the peak learning rate
    Recipe("lr-low", lr=1.5e-3),
    Recipe("wide", width_mult=0.5, epochs=2),   # twice the proxy width, fewer images x epochs
    Recipe("px64", img_size=64, epochs=2),      # 64 px inputs (the dataset upsampled)
)}


def proxy_space(space: SearchSpace, recipe: Recipe) -> SearchSpace:
    """`space` with the recipe's proxy width and input size."""
    import dataclasses
    return dataclasses.replace(space, proxy=dataclasses.replace(space.proxy, width_mult=recipe.width_mult,
                                                                img_size=recipe.img_size))


def equal_cost_train_size(space: SearchSpace, recipe: Recipe, base: ProxySettings) -> int:
    """Training images that make `recipe` cost what `base` costs on the C1 proxy:
    MACs x epochs x (TRAIN_TO_SCORE_COST x train images + scored images) held equal."""
    c1 = Candidate(PAPER_C1, tuple(choices[0] for choices in space.widths))

    def macs(s: SearchSpace) -> int:
        return analytic_macs(s.proxy_config(c1, num_classes=10))

    budget = macs(space) * base.epochs * (TRAIN_TO_SCORE_COST * base.train_size + base.val_size)
    per_epoch = budget / (macs(proxy_space(space, recipe)) * recipe.epochs)
    train = round((per_epoch - recipe.val_size) / TRAIN_TO_SCORE_COST)
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


def train_one(space: SearchSpace, recipe: Recipe, candidate: Candidate, seed: int, scale: float,
              threads: int, device: str) -> dict:
    base = PRESETS["default"]
    train_size = max(base.batch_size, round(equal_cost_train_size(space, recipe, base) * scale))
    settings = base.replace(epochs=recipe.epochs, val_size=recipe.val_size, lr=recipe.lr, train_size=train_size,
                            seed=seed, num_threads=threads, device=device)
    dataset = load_dataset("cifar10", img_size=None if recipe.img_size == 32 else recipe.img_size)
    split = make_split(dataset, train_size=train_size, val_size=recipe.val_size, seed=settings.data_seed)
    config = proxy_space(space, recipe).proxy_config(candidate, num_classes=dataset.num_classes)
    cpu, wall = time.process_time(), time.perf_counter()
    result = fit(seeded_model(config, seed), split, settings)
    return {"recipe": recipe.name, "scale": scale, "layout": candidate.layout, "family": space.family(candidate),
            "seed": seed, "train_size": train_size, "epochs": recipe.epochs, "val_size": recipe.val_size,
            "lr": recipe.lr, "width_mult": recipe.width_mult, "img_size": recipe.img_size, "status": result.status,
            "val_accuracy": result.val_accuracy, "val_correct": result.val_correct, "val_count": result.val_count,
            "cpu_s": round(time.process_time() - cpu, 1), "wall_s": round(time.perf_counter() - wall, 1),
            "threads": threads, "load1": round(os.getloadavg()[0], 2), "device": result.device}


def table(rows: list[dict]) -> pd.DataFrame:
    """One line per recipe (and scale): cost, accuracy, seed spread and seed-to-seed tau."""
    frame = pd.DataFrame(rows)
    frame = frame[frame["status"] == "ok"].astype({"val_accuracy": float, "val_count": int, "cpu_s": float,
                                                   "seed": int, "scale": float, "train_size": int})
    lines = []
    for (recipe, scale), group in frame.groupby(["recipe", "scale"], sort=False):
        pairs = group.pivot_table(index="layout", columns="seed", values="val_accuracy").dropna()
        if pairs.shape[1] < 2 or len(pairs) < 2:
            continue
        a, b = pairs.iloc[:, 0], pairs.iloc[:, 1]
        tau = kendalltau(a, b)
        first = group.iloc[0]
        lines.append({
            "recipe": recipe, "scale": scale, "images": int(first["train_size"]), "epochs": int(first["epochs"]),
            "val size": int(first["val_size"]), "device": first["device"], "CPU s/arch": group["cpu_s"].mean(),
            "wall s/arch": group["wall_s"].astype(float).mean(),
            "mean acc": pairs.to_numpy().mean(),
            "seed SD": math.sqrt(pairs.var(axis=1, ddof=1).mean()),  # pooled over layouts
            "val SE": binomial_se(float(pairs.to_numpy().mean()), int(first["val_count"])),
            "tau": tau.statistic, "p": tau.pvalue, "layouts": len(pairs)})
    return pd.DataFrame(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="default,long,bigval,lr-high",
                        help=f"comma-separated, from: {', '.join(RECIPES)}")
    parser.add_argument("--layouts", type=int, default=10, help="layouts drawn from the space")
    parser.add_argument("--layout-seed", type=int, default=0, help="seed of the layout draw")
    parser.add_argument("--seed", type=int, default=0, help="base training seed; replicates 0 and 1 are used")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each recipe's training images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu | cuda: where the proxies train")
    parser.add_argument("--space", default="hybrid")
    parser.add_argument("--csv", type=Path, default=Path("results/proxy_design.csv"))
    parser.add_argument("--table", action="store_true", help="only print the table from the CSV")
    args = parser.parse_args(argv)
    unknown = [name for name in args.recipes.split(",") if name not in RECIPES]
    if unknown:
        print(f"--recipes: unknown {', '.join(unknown)} (choose from {', '.join(RECIPES)})", file=sys.stderr)
        return 2
    if not 0 < args.scale <= 1 or args.layouts < 1 or args.threads < 1:
        print("--scale must be in (0, 1], --layouts >= 1, --threads >= 1", file=sys.stderr)
        return 2

    if not args.table:
        space = load_space(args.space)
        recipes = [RECIPES[name] for name in args.recipes.split(",")]
        done = {(r["recipe"], float(r["scale"]), r["layout"], int(r["seed"])) for r in read_rows(args.csv)}
        seeds = [replicate_seed(args.seed, k) for k in range(2)]
        # Layouts outermost, recipes innermost: a stopped run leaves every recipe on the same layouts,
        # and slow drift in the machine's load hits all recipes alike.
        for candidate in draw_layouts(space, args.layouts, args.layout_seed):
            for seed in seeds:
                for recipe in recipes:
                    if (recipe.name, args.scale, candidate.layout, seed) in done:
                        continue
                    row = train_one(space, recipe, candidate, seed, args.scale, args.threads, args.device)
                    append_row(args.csv, row)
                    print(f"{recipe.name:8s} {candidate.layout:20s} seed {seed}: {row['val_accuracy']:.3f} "
                          f"({row['status']}, {row['cpu_s']:.0f} CPU s, load {row['load1']})", flush=True)

    result = table(read_rows(args.csv))
    pd.set_option("display.width", 200)
    print(result.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\nKendall tau (scipy.stats.kendalltau) of seed-A vs seed-B accuracies over the layouts; seed SD pooled "
          f"over layouts; val SE binomial at the mean. CSV: {args.csv}. {os.cpu_count()} CPUs, "
          f"load average now {os.getloadavg()[0]:.2f}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
