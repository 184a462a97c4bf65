"""Our profiler next to timm's benchmark loop and torch's FlopCounterMode, on one machine in one run.

    python benchmarks/profiler_vs_timm.py --device cpu --batch-size 1 --threads 2

Table 1, for two AsCAN models and four timm models (pretrained=False, 224 px):
  params; MACs by our counter (fvcore + attention handle), by the analytic per-block formula
  (AsCAN only), by FlopCounterMode with our attention mapping, and by plain fvcore (which
  misses attention and adds norms); latency by our profiler (median, p90) and by the
  "timm loop": timm's benchmark.py inference loop (10 warm-up steps, 40 timed steps, a
  synchronize after each, torch.no_grad) on the same model with the same settings.
Table 2, repeatability: two full passes over 12 AsCAN architectures; Spearman rank
  correlation of their median latencies across the passes.
Targets: MACs within 1% of the analytic count; our median within 5% of the timm loop's;
Spearman >= 0.95. Numbers only mean something on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd
import timm
import torch

from ascan import ArchConfig, build_model  # importing ascan registers its zoo with timm
from ascan.zoo import ZOO_CONFIGS
from search.macs import analytic_macs, count_macs, count_params, flop_counter_macs
from search.profile import (DTYPES, LatencySettings, environment_fingerprint, measure_latency,
                            measurement_environment)

MODELS = ("ascan_tiny", "ascan_tiny_sym", "maxvit_tiny_tf_224", "coatnet_0_rw_224", "convnext_tiny",
          "efficientnetv2_rw_t")
TIMM_WARMUP_STEPS, TIMM_BENCH_STEPS = 10, 40  # timm benchmark.py defaults


def timm_loop(model: torch.nn.Module, settings: LatencySettings) -> list[float]:
    """timm benchmark.py's InferenceBenchmarkRunner.run, step for step: per-step times in ms."""
    device, dtype = torch.device(settings.device), DTYPES[settings.dtype]
    memory_format = torch.channels_last if settings.channels_last else None
    model = copy.deepcopy(model).to(device=device, dtype=dtype, memory_format=memory_format).eval()
    if settings.compile:
        model = torch.compile(model)

    def time_fn(sync: bool = False) -> float:
        if sync and device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def step() -> float:
        start = time_fn()
        model(inputs)
        return time_fn(True) - start

    with measurement_environment(settings), torch.no_grad():
        inputs = torch.randn((settings.batch_size, 3, settings.img_size, settings.img_size), device=device,
                             dtype=dtype)
        if settings.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        for _ in range(TIMM_WARMUP_STEPS):
            step()
        return [1000.0 * step() for _ in range(TIMM_BENCH_STEPS)]


def plain_fvcore_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    from fvcore.nn import FlopCountAnalysis  # imported after search.macs, which silences its import warning

    analysis = FlopCountAnalysis(model.eval(), torch.zeros(shape))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    with torch.no_grad():
        return int(analysis.total())


def compare_with_timm(models: list[str], settings: LatencySettings, rounds: int) -> pd.DataFrame:
    """One row per model. With rounds > 1 the two loops alternate and their samples are pooled,
    so a load change on a shared machine hits both alike."""
    rows = []
    shape = (1, 3, settings.img_size, settings.img_size)
    for name in models:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False).eval()
        macs = count_macs(model, shape).total
        analytic = analytic_macs(ZOO_CONFIGS[name], settings.img_size) if name in ZOO_CONFIGS else np.nan
        ours, timm_ms = [], []
        for _ in range(rounds):
            ours.extend(measure_latency(model, settings).samples_ms)
            timm_ms.extend(timm_loop(model, settings))
        rows.append({
            "model": name,
            "params (M)": count_params(model) / 1e6,
            "MACs ours (G)": macs / 1e9,
            "MACs analytic (G)": analytic / 1e9,
            "ours vs analytic": macs / analytic - 1,
            "MACs FlopCounterMode+attn (G)": flop_counter_macs(model, shape) / 1e9,
            "fvcore plain (G)": plain_fvcore_macs(model, shape) / 1e9,
            "ours median (ms)": float(np.median(ours)),
            "ours p90 (ms)": float(np.percentile(ours, 90)),
            "ours n": len(ours),
            "timm loop mean (ms)": float(np.mean(timm_ms)),
            "timm loop median (ms)": float(np.median(timm_ms)),
            "median vs timm": float(np.median(ours) / np.median(timm_ms)) - 1,
        })
        print(f"  {name}: {np.median(ours):.2f} ms (ours) vs {np.median(timm_ms):.2f} ms (timm loop)", flush=True)
    return pd.DataFrame(rows)


def repeatability_configs() -> list[ArchConfig]:
    """12 architectures spread over widths and C/T layouts."""
    layouts = [("CC", "CCCT", "CCTT", "CTTT"), ("CC", "CCCC", "CCCC", "CCCC"), ("CC", "CCCC", "CCTT", "TTTT"),
               ("C", "CT", "CT", "T")]
    widths = [(32, 64, 128, 256), (48, 96, 192, 384), (64, 128, 256, 512)]
    return [ArchConfig(layouts=layout, widths=w, stem_width=w[0], head_width=2 * w[-1]) for w in widths
            for layout in layouts]


def repeatability(settings: LatencySettings) -> tuple[pd.DataFrame, float]:
    configs = repeatability_configs()
    passes = []
    for _ in range(2):  # two full passes, so drift over time shows up as rank changes
        medians = []
        for cfg in configs:
            torch.manual_seed(0)
            medians.append(measure_latency(build_model(cfg), settings).median_ms)
        passes.append(medians)
    table = pd.DataFrame({"architecture": [c.short_name() for c in configs], "pass 1 median (ms)": passes[0],
                          "pass 2 median (ms)": passes[1]})
    table["change"] = table["pass 2 median (ms)"] / table["pass 1 median (ms)"] - 1
    # Spearman = Pearson correlation of ranks (no SciPy needed).
    spearman = float(table["pass 1 median (ms)"].rank().corr(table["pass 2 median (ms)"].rank()))
    return table, spearman


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_format(col, row[col]) for col in table.columns) + " |")
    return "\n".join(lines)


def _format(column: str, value) -> str:
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "-"
        if column in ("ours vs analytic", "median vs timm", "change"):
            return f"{value:+.2%}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="timm model names (default: the six)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's current count)")
    parser.add_argument("--min-time", type=float, default=2.0, help="our minimum measuring time per model (s)")
    parser.add_argument("--repeat-min-time", type=float, default=1.0, help="the same, for the repeatability passes")
    parser.add_argument("--rounds", type=int, default=1, help="alternate our loop and timm's this many times")
    parser.add_argument("--skip-repeatability", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)

    settings = LatencySettings(device=args.device, batch_size=args.batch_size, img_size=args.img_size,
                               dtype=args.dtype, channels_last=args.channels_last, num_threads=args.threads,
                               warmup_iters=TIMM_WARMUP_STEPS, min_iters=TIMM_BENCH_STEPS,
                               min_time_s=args.min_time).resolved()
    with measurement_environment(settings):
        fp = environment_fingerprint(settings.device, settings.num_threads)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {fp['device_name']} ({fp['cpu_count']} logical CPUs), torch {fp['torch']}, timm {fp['timm']}, "
          f"threads {settings.num_threads}, load average {os.getloadavg()[0]:.1f}")
    print(f"settings: {settings.to_dict()}\n", flush=True)

    start = time.perf_counter()
    table = compare_with_timm(args.models, settings, args.rounds)
    print("\n" + markdown(table) + "\n")
    worst_mac = table["ours vs analytic"].abs().max()
    worst_latency = table["median vs timm"].abs().max()
    print(f"MACs vs analytic: worst {worst_mac:.3%} (target <= 1%): {'PASS' if worst_mac <= 0.01 else 'FAIL'}")
    print(f"median vs timm loop: worst {worst_latency:.2%} (target <= 5%): {'PASS' if worst_latency <= 0.05 else 'FAIL'}")
    print(f"[table 1: {time.perf_counter() - start:.0f} s]\n", flush=True)

    if not args.skip_repeatability:
        start = time.perf_counter()
        repeat_settings = LatencySettings(**{**settings.to_dict(), "warmup_iters": 5, "min_iters": 10,
                                             "min_time_s": args.repeat_min_time})
        table, spearman = repeatability(repeat_settings)
        print(markdown(table) + "\n")
        print(f"Spearman rank correlation across passes: {spearman:.3f} (target >= 0.95): "
              f"{'PASS' if spearman >= 0.95 else 'FAIL'}")
        print(f"[table 2: {time.perf_counter() - start:.0f} s]")


if __name__ == "__main__":
    main()
