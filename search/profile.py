"""The profiler: params, MACs, latency and peak memory of a network, cached per machine.

    settings = LatencySettings(device="cpu", batch_size=1, img_size=224, num_threads=2)
    result = profile_config(cfg, settings, ProfileCache("results/profiles.db"))

Latency is measured in the deployment mode the settings name (device, batch size,
resolution, dtype, memory format, compile, threads, TF32), after a warm-up (lazy init,
allocator, cuDNN autotuning, compilation, the T blocks' cached position bias), one forward
pass per sample until both a minimum time and a minimum count are reached. CUDA samples are
timed with CUDA events after a synchronize. Every result carries the settings and an
environment fingerprint; the cache key is (arch hash, settings hash, fingerprint hash).

Measure alone: the caller (the search's executor) must give the profiler the device to
itself. Another process training on the same cores or GPU makes every number wrong, and
nothing here can detect it.
"""
from __future__ import annotations

import copy
import ctypes
import dataclasses
import gc
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import timm
import torch
import torch.nn as nn
from timm.utils import reparameterize_model

import ascan
from ascan import ArchConfig, build_model

from .macs import MacCount, analytic_macs, count_macs, count_params
from .profile_cache import ProfileCache, ProfileError, ProfileResult, from_known_fields, one_line, stable_hash

__all__ = [
    "LatencySettings", "LatencyResult", "measure_latency", "environment_fingerprint", "fingerprint_hash",
    "profile_config", "lookup_profile", "ProfileError", "ProfileResult", "ProfileCache", "MacCount", "count_macs",
    "count_params", "analytic_macs",
]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class LatencySettings:
    """How to measure latency. Every field is part of the cache key.

    `device="auto"` means CUDA when available; `num_threads=None` means torch's current
    thread count. Both are resolved (and recorded) before measuring. `tf32` only matters for
    float32 on CUDA. Sampling stops once `min_iters` samples and `min_time_s` seconds are both
    reached, or at `max_time_s` (None: no cap) whichever comes first.
    """

    device: str = "auto"
    batch_size: int = 1
    img_size: int = 224
    in_chans: int = 3
    dtype: str = "float32"
    channels_last: bool = False
    compile: bool = False
    num_threads: int | None = None
    tf32: bool = False
    warmup_iters: int = 10
    min_iters: int = 20
    min_time_s: float = 2.0
    max_time_s: float | None = 60.0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ProfileError:
            return ProfileError(f"LatencySettings.{name}={getattr(self, name)!r}: {why}")

        if self.device not in DEVICES:
            raise bad("device", f"choose one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"unknown dtype, choose one of {', '.join(DTYPES)}")
        for name in ("batch_size", "img_size", "in_chans", "warmup_iters", "min_iters"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "must be a positive integer")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise bad("num_threads", "must be a positive integer or None")
        for name in ("channels_last", "compile", "tf32"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if not _is_number(self.min_time_s) or self.min_time_s < 0:
            raise bad("min_time_s", "must be a number >= 0")
        if self.max_time_s is not None and (not _is_number(self.max_time_s) or self.max_time_s <= 0):
            raise bad("max_time_s", "must be a number > 0, or None")
        # 2 and 2.0 must hash alike, or one setting would be measured twice.
        object.__setattr__(self, "min_time_s", float(self.min_time_s))
        if self.max_time_s is not None:
            object.__setattr__(self, "max_time_s", float(self.max_time_s))

    def resolved(self) -> "LatencySettings":
        """The same settings with `device` and `num_threads` made concrete for this machine."""
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ProfileError("LatencySettings.device='cuda': CUDA is not available on this machine")
        threads = torch.get_num_threads() if self.num_threads is None else self.num_threads
        return dataclasses.replace(self, device=device, num_threads=threads)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencySettings":
        return from_known_fields(cls, data)

    @property
    def settings_hash(self) -> str:
        return stable_hash(self.to_dict())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class LatencyResult:
    """Latency statistics of one forward pass of `settings.batch_size` images (milliseconds)."""

    median_ms: float
    p90_ms: float
    iqr_ms: float
    mean_ms: float
    n_samples: int
    throughput: float  # images per second at the median latency
    peak_memory_bytes: int | None
    settings: LatencySettings
    fingerprint: dict[str, Any]
    samples_ms: tuple[float, ...]


# ---------------------------------------------------------------------- environment
def environment_fingerprint(device: str, num_threads: int) -> dict[str, Any]:
    """What makes a latency number specific to this machine and software stack.

    Taken inside a measurement, it also records the flags the measurement ran with.
    """
    fp: dict[str, Any] = {
        "device_type": torch.device(device).type,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "ascan_code": _ascan_code_hash(),
        "threads": num_threads,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if fp["device_type"] == "cuda":
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        fp.update(
            device_name=torch.cuda.get_device_name(index),
            capability=".".join(map(str, torch.cuda.get_device_capability(index))),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    else:
        fp["device_name"] = fp["cpu"]
    return fp


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    return stable_hash(fingerprint)


def _ascan_code_hash(package: Path | None = None) -> str:
    """Hash of the code that builds and runs a model: every .py file of the `ascan` package
    (`package`, default the imported one), zoo YAMLs excluded. A change to a block or to the
    inference conversion (ascan/fused.py) makes old latencies stale, so it is in the fingerprint."""
    package = Path(ascan.__file__).parent if package is None else package
    return stable_hash({path.relative_to(package).as_posix(): path.read_text()
                        for path in sorted(package.rglob("*.py"))})


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@contextmanager
def measurement_environment(settings: LatencySettings) -> Iterator[None]:
    """Set threads (and on CUDA cudnn.benchmark and TF32) for a measurement, restore them after."""
    saved_threads = torch.get_num_threads()
    cuda = settings.device.startswith("cuda")
    if cuda:
        saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
                 torch.backends.cudnn.allow_tf32)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = settings.tf32
    torch.set_num_threads(settings.num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        if cuda:
            (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32) = saved


# ---------------------------------------------------------------------- memory
class _PeakMemory:
    """Peak memory a measurement allocates: CUDA allocator peak, or CPU resident-set growth.

    On Linux writing 5 to /proc/self/clear_refs resets the process's peak RSS (VmHWM), so the
    CPU number is the peak during this measurement minus the resident size before it (best
    effort: the allocator may reuse memory freed earlier). None where that is unavailable.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.baseline: int | None = None

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            return
        _release_free_heap()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.baseline = _proc_status_bytes("VmRSS")
        except OSError:
            self.baseline = None

    def peak_bytes(self) -> int | None:
        if self.baseline is None:
            return None
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.baseline
        peak = _proc_status_bytes("VmHWM")
        return None if peak is None else max(0, peak - self.baseline)


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc), so the next allocations show up in RSS again."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _proc_status_bytes(key: str) -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    return None


# ---------------------------------------------------------------------- latency
def measure_latency(model: nn.Module, settings: LatencySettings) -> LatencyResult:
    """Time inference of a copy of `model` (eval, inference mode) under `settings`.

    The caller's model is left untouched. Raises `ProfileError` (one line naming the
    setting) when the model cannot run at the requested shape, dtype, device or compile mode.
    """
    settings = settings.resolved()
    device = torch.device(settings.device)
    dtype = DTYPES[settings.dtype]
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    shape = (settings.batch_size, settings.in_chans, settings.img_size, settings.img_size)
    where = f"input {shape} {settings.dtype} on {settings.device}"

    with measurement_environment(settings):
        fingerprint = environment_fingerprint(settings.device, settings.num_threads)
        memory = _PeakMemory(device)
        memory.start()
        try:
            # Copied outside inference mode: parameters copied inside it become inference
            # tensors, which is not how a deployed model holds its weights. Timed as deployed:
            # converted once to its inference form (folded BN, fused kernels), except under
            # torch.compile, which makes its own fusions from the plain modules.
            eager = getattr(model, "_orig_mod", model)
            runner = (copy.deepcopy(eager) if settings.compile else reparameterize_model(eager)).eval()
            runner.to(device=device, dtype=dtype, memory_format=memory_format)
            generator = torch.Generator().manual_seed(0)  # fixed input: values can matter (denormals)
            x = torch.randn(shape, generator=generator).to(device=device, dtype=dtype, memory_format=memory_format)
            with torch.inference_mode():
                runner(x)  # eager first, so a shape or dtype failure is not blamed on compile
        except torch.OutOfMemoryError as error:
            raise ProfileError(f"LatencySettings.batch_size={settings.batch_size}: out of memory for {where}") from error
        except Exception as error:
            raise ProfileError(f"model failed at {where} ({one_line(error)})") from error
        if settings.compile:
            runner = torch.compile(runner)
        step = _cuda_step if device.type == "cuda" else _cpu_step
        with torch.inference_mode():
            try:
                for _ in range(settings.warmup_iters):
                    step(runner, x)
            except Exception as error:
                culprit = "LatencySettings.compile=True: torch.compile" if settings.compile else "warm-up"
                raise ProfileError(f"{culprit} failed at {where} ({one_line(error)})") from error
            samples = _sample(step, runner, x, settings)
        peak = memory.peak_bytes()

    ms = np.asarray(samples)
    p25, median, p75, p90 = np.percentile(ms, [25, 50, 75, 90])
    return LatencyResult(
        median_ms=float(median), p90_ms=float(p90), iqr_ms=float(p75 - p25), mean_ms=float(ms.mean()),
        n_samples=len(samples), throughput=settings.batch_size * 1000.0 / float(median),
        peak_memory_bytes=peak, settings=settings, fingerprint=fingerprint, samples_ms=tuple(samples))


def _sample(step: Callable[[nn.Module, torch.Tensor], float], runner: nn.Module, x: torch.Tensor,
            settings: LatencySettings) -> list[float]:
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        samples.append(step(runner, x))
        elapsed = time.perf_counter() - start
        if len(samples) >= settings.min_iters and elapsed >= settings.min_time_s:
            return samples
        if settings.max_time_s is not None and elapsed >= settings.max_time_s:
            return samples


def _cpu_step(runner: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    runner(x)
    return (time.perf_counter() - start) * 1000.0


def _cuda_step(runner: nn.Module, x: torch.Tensor) -> float:
    # Synchronize first so the start event is not queued behind earlier work.
    torch.cuda.synchronize(x.device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    runner(x)
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


# ---------------------------------------------------------------------- one config, cached
def profile_config(cfg: ArchConfig, settings: LatencySettings, cache: ProfileCache | None = None) -> ProfileResult:
    """Params, MACs (per image at `settings.img_size`) and latency of `build_model(cfg)`.

    A result already in `cache` for this (architecture, settings, machine) is returned
    without measuring; a new one is stored only after a successful measurement.
    """
    settings = dataclasses.replace(settings, in_chans=cfg.in_chans).resolved()
    if cache is not None and (hit := lookup_profile(cfg, settings, cache)) is not None:
        return hit
    model = build_model(cfg)
    macs = count_macs(model, (1, cfg.in_chans, settings.img_size, settings.img_size)).total
    latency = measure_latency(model, settings)
    result = ProfileResult(
        arch_hash=cfg.arch_hash, params=count_params(model), macs=macs, median_ms=latency.median_ms,
        p90_ms=latency.p90_ms, iqr_ms=latency.iqr_ms, mean_ms=latency.mean_ms, n_samples=latency.n_samples,
        throughput=latency.throughput, peak_memory_bytes=latency.peak_memory_bytes,
        settings=latency.settings.to_dict(), fingerprint=latency.fingerprint, arch=cfg.to_dict())
    if cache is not None:
        cache.put(result)
    return result


def lookup_profile(cfg: ArchConfig, settings: LatencySettings, cache: ProfileCache) -> ProfileResult | None:
    """The cached result for `cfg` measured with `settings` on this machine, or None.

    Cheap (no model is built), so a search can skip scheduling a measurement it already has.
    """
    settings = dataclasses.replace(settings, in_chans=cfg.in_chans).resolved()
    with measurement_environment(settings):
        fingerprint = environment_fingerprint(settings.device, settings.num_threads)
    return cache.get(cfg.arch_hash, settings.settings_hash, fingerprint_hash(fingerprint))
