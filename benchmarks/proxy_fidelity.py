"""Does the cheap proxy rank layouts like a longer training does?

Trains 8 layouts (4 asymmetric, 4 symmetric; our picks around the paper's C1, which the paper
does not list in full) with the `default` preset and with `thorough`, ranks them by validation
accuracy under each, and prints Kendall's tau-b between the two rankings (target >= 0.6)
with every model's test accuracy. Validation is a held-out slice of the TRAIN split; the test
split is only scored here, for the report, never used to choose.

    .venv/bin/python benchmarks/proxy_fidelity.py [--layouts 8] [--presets default,thorough] [--train-scale 1]

On 2 idle CPU cores the full run takes about 5 minutes per layout (40 in all). To fit less
time, `--layouts N` runs the first N, and `--train-scale S` trains both presets on S times
their images (same epochs, same 5x ratio, same validation slice): a cheaper, noisier check.
"""
from __future__ import annotations

import argparse
import itertools
import os
import time

# OpenMP threads that spin while waiting collapse when other work shares the 2 cores (measured:
# 43 vs 314 images/s), and sleeping waits cost ~25% on an idle machine (700 vs 512): on a shared
# machine, sleep. Set OMP_WAIT_POLICY=ACTIVE to override. Read once, so before torch's import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402

from ascan import ArchConfig  # noqa: E402
from search.data import load_dataset, make_split  # noqa: E402
from search.proxy import PRESETS, evaluate, fit, seeded_model  # noqa: E402

PROXY = dict(widths=(16, 32, 64, 128), stem_width=16, stem_stride=1, head_width=256, head_dim=16, img_size=32,
             num_classes=10)
LAYOUTS = {  # family, layout: asymmetric = more C early and more T late; symmetric = equal C and T per stage
    "A1 (paper C1)": ("asymmetric", "CC-CCCT-CCTT-CTTT"),
    "S1": ("symmetric", "CC-CCTT-CCTT-CCTT"),
    "A2": ("asymmetric", "CC-CCCC-CCCT-CCTT"),
    "S2": ("symmetric", "CT-CCTT-CCTT-CCTT"),
    "A3": ("asymmetric", "CC-CCCT-CCCT-CTTT"),
    "S3": ("symmetric", "CT-CT-CT-CT"),
    "A4": ("asymmetric", "CC-CCTT-CTTT-TTTT"),
    "S4": ("symmetric", "CC-CT-CCTT-CCTT"),
}


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties counted as in scipy.stats.kendalltau)."""
    concordant = discordant = ties_x = ties_y = 0
    for (x1, y1), (x2, y2) in itertools.combinations(zip(x, y), 2):
        dx, dy = x1 - x2, y1 - y2
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx * dy > 0:
            concordant += 1
        else:
            discordant += 1
    pairs = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    return (concordant - discordant) / pairs if pairs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", type=int, default=len(LAYOUTS), help="train the first N layouts")
    parser.add_argument("--presets", default="default,thorough", help="two presets to compare")
    parser.add_argument("--train-scale", type=float, default=1.0, help="multiply both presets' train_size")
    args = parser.parse_args()
    fast, slow = args.presets.split(",")

    dataset = load_dataset("cifar10")
    rows = []
    started = time.perf_counter()
    for label, (family, layout) in list(LAYOUTS.items())[:args.layouts]:
        config = ArchConfig(layouts=tuple(layout.split("-")), **PROXY)
        row = {"name": label, "family": family, "layout": layout}
        for preset_name in (fast, slow):
            settings = PRESETS[preset_name]
            settings = settings.replace(train_size=max(settings.batch_size, round(settings.train_size * args.train_scale)))
            split = make_split(dataset, train_size=settings.train_size, val_size=settings.val_size,
                               seed=settings.data_seed)
            model = seeded_model(config, settings.seed)
            result = fit(model, split, settings)
            row[f"val {preset_name}"] = result.val_accuracy
            row[f"test {preset_name}"] = evaluate(model, dataset.x_test, dataset.y_test, split, settings)
            row[f"s {preset_name}"] = round(result.wall_time_s)
            if not result.ok:
                row[f"val {preset_name}"] = float("nan")
                print(f"{label} {preset_name}: FAILED {result.failure_reason}")
        print(f"{label:14s} {layout:20s} " + " ".join(f"{k}={v:.3f}" for k, v in row.items() if k.startswith("val")),
              flush=True)
        rows.append(row)

    table = pd.DataFrame(rows)
    for preset_name in (fast, slow):
        table[f"rank {preset_name}"] = table[f"val {preset_name}"].rank(ascending=False).astype(int)
    tau = kendall_tau_b(table[f"val {fast}"].tolist(), table[f"val {slow}"].tolist())
    columns = ["name", "family", "layout", f"val {fast}", f"rank {fast}", f"val {slow}", f"rank {slow}",
               f"test {fast}", f"test {slow}", f"s {fast}", f"s {slow}"]
    print()
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nKendall tau-b between the {fast} and {slow} rankings ({len(table)} layouts): {tau:.2f} (target >= 0.6)")
    print(f"train scale {args.train_scale}; total {time.perf_counter() - started:.0f} s on {os.cpu_count()} CPUs, "
          f"threads {PRESETS[fast].num_threads}, load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
