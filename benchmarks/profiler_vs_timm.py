"""Our profiler next to timm's benchmark loop and torch's FlopCounterMode, on one machine in one run.

    python benchmarks/profiler_vs_timm.py --device cpu --batch-size 1 --threads 2

For two AsCAN models and four timm models (pretrained=False, 224 px): params; MACs by our
counter (fvcore + attention handle), by the analytic per-block formula (AsCAN only), by
FlopCounterMode with our attention mapping, and by plain fvcore (which misses attention and
adds norms); latency by our profiler (`measure_latency`: median, p90) and by the "timm
loop": timm's benchmark.py inference loop (10 warm-up steps, then 40 timed steps, a
synchronize after each, torch.no_grad) on the same model with the same settings. The two
alternate in `--rounds` rounds (ours, timm, ours, timm, ...; the timm loop's 40 steps split
among them), so drift of a shared machine hits both alike.
Targets: MACs within 1% of the analytic count; our median within 5% of the timm loop's.
Repeatability (the same numbers twice) has its own benchmark: latency_repeatability.py.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from timm.utils import reparameterize_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ascan.zoo import ZOO_CONFIGS  # noqa: E402  (importing ascan registers its zoo with timm)
from search.measure.macs import analytic_macs, count_macs, count_params, flop_counter_macs  # noqa: E402
from search.measure.profile import (TORCH_DTYPES, LatencySettings, environment_fingerprint, measure_latency,  # noqa: E402
                            measurement_environment)

MODELS = ("ascan_tiny", "ascan_tiny_sym", "maxvit_tiny_tf_224", "coatnet_0_rw_224", "convnext_tiny",
          "efficientnetv2_rw_t")
TIMM_WARMUP_STEPS, TIMM_BENCH_STEPS = 10, 40  # timm benchmark.py defaults


class TimmLoop:
    """timm benchmark.py's InferenceBenchmarkRunner with `--reparam`, step for step: warmed up
    once, then `run(steps)` gives per-step times in ms (a round's share of its 40 timed steps).
    `--reparam` because our profiler times the inference form too; without it the two loops
    time different networks (on an H100 at fp16, batch 16, ascan_tiny ran 39% faster
    converted, while MaxViT-T, with nothing to fold, differed by 6%)."""

    def __init__(self, model: torch.nn.Module, settings: LatencySettings):
        self.settings, self.device, dtype = settings, torch.device(settings.device), TORCH_DTYPES[settings.dtype]
        memory_format = torch.channels_last if settings.channels_last else None
        model = copy.deepcopy(model) if settings.compile else reparameterize_model(copy.deepcopy(model))
        self.model = model.to(device=self.device, dtype=dtype, memory_format=memory_format).eval()
        if settings.compile:
            self.model = torch.compile(self.model)
        self.inputs = torch.randn((settings.batch_size, 3, settings.img_size, settings.img_size), device=self.device,
                                  dtype=dtype)
        if settings.channels_last:
            self.inputs = self.inputs.contiguous(memory_format=torch.channels_last)
        self.run(TIMM_WARMUP_STEPS)

    def _time_fn(self, sync: bool = False) -> float:
        if sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def run(self, steps: int) -> list[float]:
        times = []
        with measurement_environment(self.settings), torch.no_grad():
            for _ in range(steps):
                start = self._time_fn()
                self.model(self.inputs)
                times.append(1000.0 * (self._time_fn(True) - start))
        return times


def plain_fvcore_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    from fvcore.nn import FlopCountAnalysis  # imported after search.macs, which silences its import warning

    analysis = FlopCountAnalysis(model.eval(), torch.zeros(shape))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    with torch.no_grad():
        return int(analysis.total())


def compare_with_timm(models: list[str], settings: LatencySettings, rounds: int) -> pd.DataFrame:
    """One row per model. The two loops alternate `rounds` times, each round taking its share of
    timm's 40 timed steps (ours: as many samples, after a short warm-up of its fresh copy);
    samples are pooled, so a load change on a shared machine hits both alike."""
    rows = []
    shape = (1, 3, settings.img_size, settings.img_size)
    for name in models:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False).eval()
        macs = count_macs(model, shape).total
        analytic = analytic_macs(ZOO_CONFIGS[name], settings.img_size) if name in ZOO_CONFIGS else np.nan
        steps = max(1, TIMM_BENCH_STEPS // rounds)
        ours_round = dataclasses.replace(settings, min_iters=steps, min_time_s=0.0,
                                         warmup_iters=min(settings.warmup_iters, 3))
        loop, ours, timm_ms = TimmLoop(model, settings), [], []
        for _ in range(rounds):
            ours.extend(measure_latency(model, ours_round).samples_ms)
            timm_ms.extend(loop.run(steps))
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


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_format(col, row[col]) for col in table.columns) + " |")
    return "\n".join(lines)


def _format(column: str, value) -> str:
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "-"
        if column in ("ours vs analytic", "median vs timm"):
            return f"{value:+.2%}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="timm model names (default: the six)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--dtype", default="float32", choices=tuple(TORCH_DTYPES))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's current count)")
    parser.add_argument("--rounds", type=int, default=4, help="alternate our loop and timm's this many times")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)

    settings = LatencySettings(device=args.device, batch_size=args.batch_size, img_size=args.img_size,
                               dtype=args.dtype, channels_last=args.channels_last, num_threads=args.threads,
                               warmup_iters=TIMM_WARMUP_STEPS, min_iters=TIMM_BENCH_STEPS).resolved()
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
    print(f"[{time.perf_counter() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
