"""AsCAN zoo vs timm's hybrid and convolutional references, measured side by side.

    .venv/bin/python benchmarks/zoo_vs_timm.py                     # CPU (2 threads); CUDA too when present
    .venv/bin/python benchmarks/zoo_vs_timm.py --device cpu --batches 16 --rounds 5

For every setting (device, precision, batch, memory format, compile) all models are built
(random init, 224 px, eval mode, converted by `timm.utils.reparameterize_model` unless
compiled), warmed up, then timed in interleaved rounds (A B C A B C ...)
so that drift of a shared machine hits every model alike. The table gives params, MACs
(attention included), median and p90 latency per batch, throughput, achieved GFLOP/s
(2 x MACs x img/s) and each model's throughput relative to `ascan_tiny`.

CPU: fp32, batch 1 and 16, `--threads` threads. CUDA (when present): fp16 weights and
inputs, batch 16 and 64, eager and `torch.compile`, timed with CUDA events.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import timm
import torch
import torch.nn as nn
from timm.utils import reparameterize_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ascan  # noqa: E402,F401  (registers the zoo with timm)
from ascan import build_model  # noqa: E402
from ascan.zoo import ZOO_CONFIGS  # noqa: E402

MODELS = ("ascan_tiny", "ascan_tiny_multi_axis", "ascan_tiny_hierarchical", "ascan_tiny_sym", "maxvit_tiny_tf_224", "coatnet_0_rw_224", "convnext_tiny",
          "efficientnetv2_rw_t")
REFERENCE = "ascan_tiny"
IMG_SIZE = 224
# C1 (ascan_tiny) with each T block the paper ablated; ascan_tiny itself has vanilla attention.
T_BLOCK_VARIANTS = {f"ascan_tiny_{kind}": ZOO_CONFIGS["ascan_tiny"].replace(t_block=kind)
                    for kind in ("multi_axis", "hierarchical")}


def create_model(name: str) -> nn.Module:
    """A timm model by name, or one of `T_BLOCK_VARIANTS`."""
    return build_model(T_BLOCK_VARIANTS[name]) if name in T_BLOCK_VARIANTS else timm.create_model(name)


@dataclass(frozen=True)
class Setting:
    """Everything that changes a latency ranking; printed above each table."""

    device: str
    dtype: torch.dtype
    batch: int
    channels_last: bool
    compile: bool

    def describe(self) -> str:
        fmt = "channels_last" if self.channels_last else "contiguous"
        mode = "torch.compile" if self.compile else "eager"
        return f"{self.device}, {str(self.dtype).removeprefix('torch.')}, batch {self.batch}, {fmt}, {mode}"


# ------------------------------------------------------------------------------ cost counting
def count_macs(model: nn.Module) -> tuple[int, str]:
    """MACs of one 224 px image, and which counter gave them.

    The project's counter (`search.macs.count_macs`: fvcore plus an SDPA handle, refusing
    uncounted heavy ops) when it is importable; otherwise the same idea, inline.
    """
    try:
        from search.measure.macs import count_macs as project_count_macs
    except ImportError:
        return _fvcore_macs(model), "fvcore + local SDPA handle"
    return project_count_macs(model, (1, 3, IMG_SIZE, IMG_SIZE)).total, "search.macs.count_macs"


def _fvcore_macs(model: nn.Module) -> int:
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

    def sdpa(inputs, outputs):
        q, k, v = (get_shape(t) for t in inputs[:3])
        return q[0] * q[1] * q[2] * k[2] * (q[3] + v[3])

    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, 3, IMG_SIZE, IMG_SIZE))
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with torch.no_grad():
        return int(analysis.total())


# ------------------------------------------------------------------------------ timing
class Runner:
    """One model prepared for one setting: `step()` runs a batch and returns its seconds."""

    def __init__(self, name: str, setting: Setting, seed: int, clock: str = "wall"):
        torch.manual_seed(seed)
        model = create_model(name).eval()
        if not setting.compile:  # deployed form (timm's convention; torch.compile makes its own fusions)
            model = reparameterize_model(model, inplace=True)
        model = model.to(device=setting.device, dtype=setting.dtype)
        x = torch.randn(setting.batch, 3, IMG_SIZE, IMG_SIZE, device=setting.device, dtype=setting.dtype)
        if setting.channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.model = torch.compile(model) if setting.compile else model
        self.x = x
        self.cuda = setting.device.startswith("cuda")
        # "cpu": this process's CPU time, which other load on a shared machine barely changes
        # (meaningful with one thread; with more it also counts threads' spin-waiting).
        self.clock = time.process_time if clock == "cpu" else time.perf_counter
        self.times: list[float] = []

    @torch.inference_mode()
    def step(self) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.model(self.x)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        start_s = self.clock()
        self.model(self.x)
        return self.clock() - start_s


def measure(names: list[str], setting: Setting, rounds: int, iters: int, warmup: int, seed: int,
            clock: str = "wall") -> dict[str, list[float]]:
    """Per-batch seconds of every model, from interleaved rounds."""
    runners = {name: Runner(name, setting, seed, clock) for name in names}
    for runner in runners.values():
        for _ in range(warmup):
            runner.step()
    for _ in range(rounds):
        for runner in runners.values():
            runner.times.extend(runner.step() for _ in range(iters))
    times = {name: runner.times for name, runner in runners.items()}
    del runners
    if setting.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return times


def table(times: dict[str, list[float]], costs: dict[str, tuple[int, int]], batch: int) -> pd.DataFrame:
    rows = []
    for name, samples in times.items():
        params, macs = costs[name]
        median = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else median
        img_s = batch / median
        # best_ms: on a shared machine other load only ever adds time, so the minimum is the
        # steadiest estimate of the model's own cost; throughput and ratios use the median.
        rows.append({"model": name, "params_M": params / 1e6, "GMACs": macs / 1e9, "median_ms": median * 1e3,
                     "p90_ms": p90 * 1e3, "best_ms": min(samples) * 1e3, "img_s": img_s,
                     "GFLOP_s": 2 * macs * img_s / 1e9, "n": str(len(samples))})
    df = pd.DataFrame(rows).set_index("model")
    if REFERENCE in df.index:
        df["vs_ascan_tiny"] = df["img_s"] / df.loc[REFERENCE, "img_s"]
    return df


# The targets for ascan_tiny (CPU, batch 16): (model, how ascan_tiny must compare, threshold).
TARGETS = (("maxvit_tiny_tf_224", "img_s", 2.5), ("coatnet_0_rw_224", "img_s", 1.4), ("convnext_tiny", "GFLOP_s", 0.85))


def target_lines(df: pd.DataFrame) -> list[str]:
    lines = []
    for other, column, threshold in TARGETS:
        if {REFERENCE, other} <= set(df.index):
            ratio = df.loc[REFERENCE, column] / df.loc[other, column]
            fewer_macs = df.loc[REFERENCE, "GMACs"] <= df.loc[other, "GMACs"]
            verdict = "holds" if ratio >= threshold else "MISSED"
            lines.append(f"- {REFERENCE} {column} / {other}: {ratio:.2f} (target >= {threshold}) {verdict}; "
                         f"MACs {'<=' if fewer_macs else '>'} {other}'s")
    return lines


# ------------------------------------------------------------------------------ driver
def settings_for(device: str, args: argparse.Namespace) -> list[Setting]:
    if device == "cpu":
        compiles = [c == "on" for c in args.cpu_compile]
        return [Setting("cpu", torch.float32, b, args.channels_last, c) for c in compiles for b in args.batches]
    compiles = [c == "on" for c in args.cuda_compile]
    return [Setting(device, torch.float16, b, args.channels_last, c) for c in compiles for b in args.cuda_batches]


def environment(device: str, threads: int, clock: str) -> str:
    if device == "cpu":
        where = (f"{platform.processor() or platform.machine()}, {torch.backends.cpu.get_cpu_capability()}, "
                 f"{threads} threads, {clock} clock")
    else:
        where = f"{torch.cuda.get_device_name(device)}, cudnn.benchmark={torch.backends.cudnn.benchmark}"
    return f"torch {torch.__version__}, timm {timm.__version__}, {where}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, then CUDA when present")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="CPU timing: wall clock, or process CPU time (with --threads 1: robust to other load)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="CPU batch sizes")
    parser.add_argument("--cuda-batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--cpu-compile", nargs="+", choices=("off", "on"), default=["off"])
    parser.add_argument("--cuda-compile", nargs="+", choices=("off", "on"), default=["off", "on"],
                        help="CUDA: eager and/or torch.compile (compiling every model takes minutes)")
    parser.add_argument("--contiguous", dest="channels_last", action="store_false",
                        help="NCHW inputs and weights (default: channels_last for every model)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all models")
    parser.add_argument("--iters", type=int, default=0, help="timed batches per model per round (0: by batch)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, help="also write all rows to this CSV")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    unknown = [m for m in args.models if not (timm.is_model(m) or m in T_BLOCK_VARIANTS)]
    if unknown:
        raise SystemExit(f"--models: unknown timm model {unknown[0]!r}")
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []), "cpu": ["cpu"],
               "cuda": ["cuda"]}[args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is present")

    costs, counter = {}, ""
    for name in args.models:
        model = create_model(name).eval()
        macs, counter = count_macs(model)
        costs[name] = (sum(p.numel() for p in model.parameters()), macs)
    print(f"MACs per 224 px image by {counter}; GFLOP/s = 2 x MACs x img/s.\n")

    frames = []
    for device in devices:
        print(f"## {environment(device, args.threads, args.clock)}\n")
        for setting in settings_for(device, args):
            iters = args.iters or (2 if setting.device == "cpu" and setting.batch >= 8 else 10)
            start = time.perf_counter()
            times = measure(args.models, setting, args.rounds, iters, args.warmup, args.seed, args.clock)
            df = table(times, costs, setting.batch)
            print(f"### {setting.describe()} ({args.rounds} rounds x {iters} batches, "
                  f"{time.perf_counter() - start:.0f} s)\n")
            print(df.to_markdown(floatfmt=".2f") + "\n")
            print("\n".join(target_lines(df)) + "\n", flush=True)
            frames.append(df.assign(setting=setting.describe()).reset_index())
    if args.csv:
        pd.concat(frames).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
