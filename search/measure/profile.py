"""The profiler: params, MACs, latency and peak memory of a network, cached per machine.

    settings = LatencySettings(device="cpu", batch_size=1, img_size=224, num_threads=2)
    results = profile_window(candidates, reference_c1, settings, ProfileCache("results/profiles.db"))
    result = profile_config(cfg, settings, cache)          # one network alone, raw (no anchor)

A window times its candidates in interleaved rounds (R A B C, A B C R, ...) with a fixed
reference network in every round. A candidate's latency is the median over rounds of its
time divided by the reference's time in the same round, times the reference's latency on
this machine (its "anchor", measured once and then kept in the cache). Slow drift of the
machine (neighbours on a VM host, thermal state) hits both in a round alike and cancels, and
windows measured hours apart share one scale. Rounds go on until every candidate's 95%
bootstrap interval is narrower than `target_rel_ci` (or `max_time_s`). A window run while
other processes used the cores (from /proc/stat), or whose ratios spread too widely, is
measured again, once the machine has been quiet for a moment (`wait_for_quiet`), and, if
still bad, returned with `contaminated=True` and never cached.

Latency is measured in the deployment mode the settings name (device, batch size,
resolution, dtype, memory format, compile, threads, TF32), after a warm-up (lazy init,
allocator, cuDNN autotuning, compilation, the T blocks' cached position bias), one forward
pass per sample until both a minimum time and a minimum count are reached. CUDA samples are
timed with CUDA events after a synchronize. Every result carries the settings and an
environment fingerprint; the cache key is (arch hash, settings hash, fingerprint hash).

Measure alone: the caller (the search's executor) must give the profiler the device to
itself. Another process on the same cores makes every number wrong; the load check flags it
(CPU only: other work on a GPU is not seen).
"""
from __future__ import annotations

import copy
import ctypes
import dataclasses
import gc
import math
import os
import platform
import time
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import scipy.stats
import timm
import torch
import torch.nn as nn
from timm.utils import reparameterize_model

import ascan
from ascan import ArchConfig, build_model

from search.measure.macs import MacCount, analytic_macs, count_macs, count_params
from search.measure.profile_cache import (ProfileCache, ProfileError, ProfileResult, one_line, reference_hash,
                            stable_hash)
from search.measure.settings import LatencySettings
from search.space.settings import DTYPES

__all__ = [
    "LatencySettings", "LatencyResult", "measure_latency", "environment_fingerprint", "fingerprint_hash",
    "profile_config", "lookup_profile", "profile_window", "measure_window", "WindowTimes", "ProfileError", "ProfileResult", "ProfileCache", "MacCount", "count_macs",
    "count_params", "analytic_macs",
]

TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 1000, 0


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
    foreign_cpu: float | None = None  # cores other processes used while sampling
    steal: float | None = None  # share of CPU time the hypervisor stole while sampling


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
        # cuda:N: make it the current device, so CUDA events and streams time that GPU
        with torch.cuda.device(torch.device(settings.device)) if cuda else contextlib.nullcontext():
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


# ---------------------------------------------------------------------- machine load
class _LoadMeter:
    """CPU that other processes used, and that the hypervisor stole, between start() and stop().

    From /proc/stat (all CPUs' busy and steal time) minus /proc/self/stat (this process's own
    threads); (None, None) where /proc is unavailable. Child processes count as others.
    """

    def start(self) -> "_LoadMeter":
        self._first = self._read()
        return self

    def stop(self) -> tuple[float | None, float | None]:
        last = self._read()
        if self._first is None or last is None:
            return None, None
        (wall0, busy0, steal0, total0, own0), (wall1, busy1, steal1, total1, own1) = self._first, last
        hz = os.sysconf("SC_CLK_TCK")
        foreign = max(0.0, ((busy1 - busy0) - (own1 - own0)) / hz / max(wall1 - wall0, 1e-9))
        steal = (steal1 - steal0) / max(total1 - total0, 1)
        return foreign, steal

    @staticmethod
    def _read() -> tuple[float, int, int, int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
        except (OSError, ValueError, IndexError):
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = fields
        return (time.perf_counter(), user + nice + system + irq + softirq, steal, sum(fields),
                int(own[11]) + int(own[12]))  # utime + stime, all our threads


def _load_problems(foreign_cpu: float | None, steal: float | None, settings: LatencySettings) -> list[str]:
    """Why the machine was too busy for a wall-clock measurement ([] when it was not).

    Other processes may use the cores our threads leave free, plus `max_foreign_cpu`. The CPU
    clock does not count time we were descheduled, so only the spread check applies to it.
    """
    if settings.clock == "cpu" or settings.device != "cpu":
        return []
    problems = []
    allowed = max(0, (os.cpu_count() or 1) - settings.num_threads) + settings.max_foreign_cpu
    if foreign_cpu is not None and foreign_cpu > allowed:
        problems.append(f"other processes used {foreign_cpu:.2f} CPU cores (allowed {allowed:.2f})")
    if steal is not None and steal > settings.max_steal:
        problems.append(f"steal time {steal:.1%} (allowed {settings.max_steal:.1%})")
    return problems


# A burst of other work (a compile, a test, a shell command) usually ends within seconds:
# timing again at once would measure the same burst, and time spent re-timing holds every
# training back. So a retry waits for a quiet second first, but never longer than this, nor
# longer than a window may last (`max_time_s`).
QUIET_WAIT_S = 20.0


def wait_for_quiet(settings: LatencySettings, max_wait_s: float = QUIET_WAIT_S, probe_s: float = 1.0) -> float:
    """Sleep until other processes leave the cores a measurement needs (by `_load_problems`
    over one `probe_s` probe), or `max_wait_s` (at most `settings.max_time_s`) passed;
    returns the seconds waited."""
    if settings.max_time_s is not None:
        max_wait_s = min(max_wait_s, settings.max_time_s)
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait_s:
        meter = _LoadMeter().start()
        time.sleep(probe_s)
        if not _load_problems(*meter.stop(), settings):
            break
    return time.perf_counter() - started


def _spread(values: np.ndarray) -> float:
    """IQR over median."""
    p25, median, p75 = np.percentile(values, [25, 50, 75])
    return float((p75 - p25) / median)


def _median_ci(values: np.ndarray) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median of `values` (seeded, so reproducible).
    Under 3 values a bootstrap only ever draws the values themselves: the interval is unknown
    (NaN), never the zero width it would print (a window stopped on its time cap after one
    round on a busy machine reported [709.6, 709.6])."""
    if len(values) < 3:
        return math.nan, math.nan
    if np.ptp(values) == 0:
        median = float(np.median(values))
        return median, median
    ci = scipy.stats.bootstrap((values,), np.median, confidence_level=0.95, n_resamples=BOOTSTRAP_RESAMPLES,
                               method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    return float(ci.low), float(ci.high)


def _rel_half_width(values: np.ndarray) -> float:
    low, high = _median_ci(values)
    return (high - low) / 2 / float(np.median(values)) if math.isfinite(low) else math.inf


# ---------------------------------------------------------------------- latency
def _prepare(model: nn.Module, settings: LatencySettings, copy_model: bool) -> tuple[nn.Module, torch.Tensor]:
    """The model in deployment mode on the device, run once eagerly, compiled if asked, warmed up.

    Raises `ProfileError` (one line naming the setting) when it cannot run there.
    """
    device, dtype = torch.device(settings.device), TORCH_DTYPES[settings.dtype]
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    shape = (settings.batch_size, settings.in_chans, settings.img_size, settings.img_size)
    where = f"input {shape} {settings.dtype} on {settings.device}"
    try:
        # Copied outside inference mode: parameters copied inside it become inference
        # tensors, which is not how a deployed model holds its weights.
        # Timed as deployed: converted once to its inference form (folded BN, fused kernels),
        # except under torch.compile, which makes its own fusions from the plain modules.
        runner = getattr(model, "_orig_mod", model)
        if settings.compile:
            runner = copy.deepcopy(runner) if copy_model else runner
        else:
            runner = reparameterize_model(runner, inplace=not copy_model)
        runner = runner.eval()
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
    step = _stepper(settings)
    with torch.inference_mode():
        try:
            for _ in range(settings.warmup_iters):
                step(runner, x)
        except Exception as error:
            culprit = "LatencySettings.compile=True: torch.compile" if settings.compile else "warm-up"
            raise ProfileError(f"{culprit} failed at {where} ({one_line(error)})") from error
    return runner, x


def measure_latency(model: nn.Module, settings: LatencySettings) -> LatencyResult:
    """Time inference of a copy of `model` (eval, inference mode) under `settings`, alone.

    The caller's model is left untouched. Raises `ProfileError` (one line naming the
    setting) when the model cannot run at the requested shape, dtype, device or compile mode.
    """
    settings = settings.resolved()
    with measurement_environment(settings):
        fingerprint = environment_fingerprint(settings.device, settings.num_threads)
        memory = _PeakMemory(torch.device(settings.device))
        memory.start()
        runner, x = _prepare(model, settings, copy_model=True)
        meter = _LoadMeter().start()
        with torch.inference_mode():
            samples = _sample(_stepper(settings), runner, x, settings)
        foreign_cpu, steal = meter.stop()
        peak = memory.peak_bytes()

    ms = np.asarray(samples)
    p25, median, p75, p90 = np.percentile(ms, [25, 50, 75, 90])
    return LatencyResult(
        median_ms=float(median), p90_ms=float(p90), iqr_ms=float(p75 - p25), mean_ms=float(ms.mean()),
        n_samples=len(samples), throughput=settings.batch_size * 1000.0 / float(median),
        peak_memory_bytes=peak, settings=settings, fingerprint=fingerprint, samples_ms=tuple(samples),
        foreign_cpu=foreign_cpu, steal=steal)


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


def _stepper(settings: LatencySettings) -> Callable[[nn.Module, torch.Tensor], float]:
    """One timed forward pass (ms) with the settings' clock."""
    if settings.device.startswith("cuda"):
        return _cuda_step
    # process_time: CPU seconds of all our threads; it does not run while we are descheduled.
    clock = time.process_time if settings.clock == "cpu" else time.perf_counter

    def cpu_step(runner: nn.Module, x: torch.Tensor) -> float:
        start = clock()
        runner(x)
        return (clock() - start) * 1000.0

    return cpu_step


def _cuda_step(runner: nn.Module, x: torch.Tensor) -> float:
    # Synchronize first so the start event is not queued behind earlier work.
    torch.cuda.synchronize(x.device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    runner(x)
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


# ---------------------------------------------------------------------- a window, interleaved
@dataclass(frozen=True)
class WindowTimes:
    """Per-round times of networks timed together: `times_ms[i, r]` is network i in round r
    (the median of its `iters_per_round` passes). Network 0 is the reference."""

    times_ms: np.ndarray
    peak_memory_bytes: tuple[int | None, ...]
    foreign_cpu: float | None
    steal: float | None
    fingerprint: dict[str, Any]
    settings: LatencySettings

    @property
    def rounds(self) -> int:
        return self.times_ms.shape[1]

    def ratios(self, i: int) -> np.ndarray:
        """Network i's per-round time over the reference's in the same round."""
        return self.times_ms[i] / self.times_ms[0]


def measure_window(models: list[nn.Module], settings: LatencySettings, precise_from: int = 1) -> WindowTimes:
    """Time `models` (the first is the reference) in interleaved rounds; the models are used
    in place (put in eval mode on the device), not copied.

    Each round times every network once (`iters_per_round` passes), starting one place later
    than the previous round so no network always follows the same one. Stops per the
    settings (see `LatencySettings`); the precision check covers networks `precise_from`
    onward as ratios to the reference, and the reference's own times when `precise_from` is 0.
    """
    settings = settings.resolved()
    if settings.max_time_s is None:  # precision may never come on a busy machine
        raise ProfileError("LatencySettings.max_time_s=None: a window needs a time cap")
    with measurement_environment(settings):
        fingerprint = environment_fingerprint(settings.device, settings.num_threads)
        runners, peaks = [], []
        for model in models:
            memory = _PeakMemory(torch.device(settings.device))
            memory.start()
            runners.append(_prepare(model, settings, copy_model=False))
            peaks.append(memory.peak_bytes())
        step = _stepper(settings)
        times: list[list[float]] = [[] for _ in runners]
        meter = _LoadMeter().start()
        start = time.perf_counter()
        with torch.inference_mode():
            while True:
                n = len(times[0])
                for k in range(len(runners)):
                    i = (n + k) % len(runners)
                    runner, x = runners[i]
                    times[i].append(float(np.median([step(runner, x) for _ in range(settings.iters_per_round)])))
                elapsed = time.perf_counter() - start
                if settings.max_time_s is not None and elapsed >= settings.max_time_s:
                    break
                if n + 1 >= settings.min_rounds and elapsed >= settings.min_time_s and _precise(times, settings,
                                                                                                precise_from):
                    break
        foreign_cpu, steal = meter.stop()
    return WindowTimes(np.asarray(times), tuple(peaks), foreign_cpu, steal, fingerprint, settings)


def _precise(times: list[list[float]], settings: LatencySettings, precise_from: int) -> bool:
    t = np.asarray(times)
    values = [t[i] / t[0] if i else t[0] for i in range(precise_from, len(t))]
    return all(_rel_half_width(v) <= settings.target_rel_ci for v in values)


def profile_window(targets: list[ArchConfig], reference: ArchConfig, settings: LatencySettings,
                   cache: ProfileCache | None = None, remeasure: bool = False) -> list[ProfileResult]:
    """Anchored latency (with a 95% interval), params and MACs of each target, in `targets` order.

    The targets are timed together in interleaved rounds with `reference` in every round
    (see the module docstring). The anchor, the reference's latency, is read from `cache`
    (its raw row under these settings on this machine) or measured in this window and
    stored, so every window on this machine shares one scale. Cached anchored results for
    the same reference are returned without measuring unless `remeasure` (e.g. to time a
    front again, together). Contaminated targets are measured again, up to
    `settings.max_retries` times, then returned flagged and not cached. Without a cache the
    anchor is this window's reference median: values are comparable within the window only.
    """
    if not targets:
        return []
    mixed = [cfg for cfg in targets if cfg.in_chans != reference.in_chans]
    if mixed:
        raise ProfileError(f"profile_window: target {mixed[0].short_name()} has in_chans={mixed[0].in_chans}, "
                           f"the reference {reference.in_chans}")
    settings = dataclasses.replace(settings, in_chans=reference.in_chans).resolved()
    anchor = _cached_anchor(reference, settings, cache)
    unique = {cfg.arch_hash: cfg for cfg in targets}
    done: dict[str, ProfileResult] = {}
    if anchor is not None and cache is not None and not remeasure:
        for arch_hash in unique:
            if (hit := cache.get(arch_hash, anchor.settings_hash, anchor.fingerprint_hash,
                                 reference_hash(_anchor_of(anchor)))) is not None:
                done[arch_hash] = hit
    pending = [cfg for arch_hash, cfg in unique.items() if arch_hash not in done]
    loaded = False
    for attempt in range(1, settings.max_retries + 2):
        if not pending:
            break
        if attempt > 1 and loaded:
            wait_for_quiet(settings)
        ref_result, results = _measure_targets(pending, reference, settings, anchor, attempt)
        loaded = bool(_load_problems(ref_result.foreign_cpu, ref_result.steal, settings))
        if anchor is None and not ref_result.contaminated:
            anchor = ref_result
            if cache is not None:
                cache.put(ref_result)
        for result in results:
            done[result.arch_hash] = result
            if cache is not None and not result.contaminated and anchor is not None:
                cache.put(result)
        pending = [unique[r.arch_hash] for r in results if r.contaminated]
    return [done[cfg.arch_hash] for cfg in targets]


def _cached_anchor(reference: ArchConfig, settings: LatencySettings, cache: ProfileCache | None) -> ProfileResult | None:
    if cache is None:
        return None
    with measurement_environment(settings):
        fingerprint = environment_fingerprint(settings.device, settings.num_threads)
    return cache.get(reference.arch_hash, settings.settings_hash, fingerprint_hash(fingerprint))


def _anchor_of(anchor: ProfileResult) -> dict[str, Any]:
    """What an anchored result records of its reference (and is keyed by)."""
    return {"arch_hash": anchor.arch_hash, "median_ms": anchor.median_ms}


def _measure_targets(cfgs: list[ArchConfig], reference: ArchConfig, settings: LatencySettings,
                     anchor: ProfileResult | None, attempt: int) -> tuple[ProfileResult, list[ProfileResult]]:
    """One window: the reference's raw result and each target's anchored one."""
    models = []
    for cfg in [reference, *cfgs]:
        torch.manual_seed(0)
        models.append(build_model(cfg))
    # The analytic formula, not a traced count: equal to the MAC (tests/test_profile.py) and
    # cheap, where tracing a window of full-size networks costs seconds each.
    counts = [(count_params(model), analytic_macs(cfg, settings.img_size)) for model, cfg in
              zip(models, [reference, *cfgs])]
    window = measure_window(models, settings, precise_from=1 if anchor is not None else 0)
    del models
    window_id = stable_hash({"archs": [cfg.arch_hash for cfg in cfgs], "at": time.time()})
    load = _load_problems(window.foreign_cpu, window.steal, settings)
    ref_times = window.times_ms[0]

    def result(i: int, cfg: ArchConfig, values: np.ndarray, scale: float, reference_info: dict | None,
               problems: list[str]) -> ProfileResult:
        raw = window.times_ms[i]
        median = float(np.median(values)) * scale
        low, high = (v * scale for v in _median_ci(values))
        spread = _spread(values)
        if spread > settings.max_spread:
            problems = [*problems, f"per-round spread (IQR/median) {spread:.1%} (allowed {settings.max_spread:.1%})"]
        if window.rounds < settings.min_rounds:  # stopped on its time cap: too few rounds to judge
            problems = [*problems, f"only {window.rounds} rounds before max_time_s={settings.max_time_s:g} s "
                                   f"(min_rounds {settings.min_rounds})"]
        if not math.isfinite(low):
            low = high = None
        return ProfileResult(
            arch_hash=cfg.arch_hash, params=counts[i][0], macs=counts[i][1], median_ms=median,
            p90_ms=float(np.percentile(raw, 90)), iqr_ms=float(np.subtract(*np.percentile(raw, [75, 25]))),
            mean_ms=float(raw.mean()), n_samples=window.rounds * settings.iters_per_round,
            throughput=settings.batch_size * 1000.0 / median, peak_memory_bytes=window.peak_memory_bytes[i],
            settings=settings.to_dict(), fingerprint=window.fingerprint, arch=cfg.to_dict(),
            reference=reference_info, raw_median_ms=float(np.median(raw)), ci_low_ms=low, ci_high_ms=high,
            ci_rel_half_width=None if low is None else (high - low) / 2 / median, rounds=window.rounds,
            ratio_spread=spread,
            foreign_cpu=window.foreign_cpu, steal=window.steal, contaminated=bool(problems),
            contamination="; ".join(problems), attempts=attempt, window=window_id)

    ref_result = result(0, reference, ref_times, 1.0, None, load)
    anchor = anchor if anchor is not None else ref_result
    # An anchor measured under load would put every value of this window on a wrong scale.
    ref_problems = [f"reference contaminated: {ref_result.contamination}"] if anchor is ref_result and \
        ref_result.contaminated else []
    targets = [result(i, cfg, window.ratios(i), anchor.median_ms, _anchor_of(anchor), load or ref_problems)
               for i, cfg in enumerate(cfgs, start=1)]
    return ref_result, targets


# ---------------------------------------------------------------------- one config, cached
def profile_config(cfg: ArchConfig, settings: LatencySettings, cache: ProfileCache | None = None) -> ProfileResult:
    """Params, MACs (per image at `settings.img_size`) and raw latency of `build_model(cfg)`, alone.

    A result already in `cache` for this (architecture, settings, machine) is returned
    without measuring; a new one is stored only after a clean measurement. One whose
    samples spread too widely or that ran under load is measured again (up to
    `max_retries` times) and, if still bad, returned flagged as contaminated.
    """
    settings = dataclasses.replace(settings, in_chans=cfg.in_chans).resolved()
    if cache is not None and (hit := lookup_profile(cfg, settings, cache)) is not None:
        return hit
    model = build_model(cfg)
    macs = count_macs(model, (1, cfg.in_chans, settings.img_size, settings.img_size)).total
    for attempt in range(1, settings.max_retries + 2):
        if attempt > 1 and _load_problems(latency.foreign_cpu, latency.steal, settings):
            wait_for_quiet(settings)
        latency = measure_latency(model, settings)
        problems = _load_problems(latency.foreign_cpu, latency.steal, settings)
        spread = latency.iqr_ms / latency.median_ms
        if spread > settings.max_spread:
            problems.append(f"sample spread (IQR/median) {spread:.1%} (allowed {settings.max_spread:.1%})")
        if not problems:
            break
    result = ProfileResult(
        arch_hash=cfg.arch_hash, params=count_params(model), macs=macs, median_ms=latency.median_ms,
        p90_ms=latency.p90_ms, iqr_ms=latency.iqr_ms, mean_ms=latency.mean_ms, n_samples=latency.n_samples,
        throughput=latency.throughput, peak_memory_bytes=latency.peak_memory_bytes,
        settings=latency.settings.to_dict(), fingerprint=latency.fingerprint, arch=cfg.to_dict(),
        raw_median_ms=latency.median_ms, foreign_cpu=latency.foreign_cpu, steal=latency.steal,
        contaminated=bool(problems), contamination="; ".join(problems), attempts=attempt)
    if cache is not None and not result.contaminated:
        cache.put(result)
    return result


def lookup_profile(cfg: ArchConfig, settings: LatencySettings, cache: ProfileCache,
                   reference: ArchConfig | None = None) -> ProfileResult | None:
    """The cached result for `cfg` measured with `settings` on this machine, or None.

    With `reference`, the anchored result of `profile_window` for that reference and its
    current anchor (never one anchored to another reference); without, the raw one of
    `profile_config`. Cheap (no model is built), so a search can skip scheduling a
    measurement it already has.
    """
    settings = dataclasses.replace(settings, in_chans=cfg.in_chans).resolved()
    with measurement_environment(settings):
        fingerprint = environment_fingerprint(settings.device, settings.num_threads)
    if reference is None:
        return cache.get(cfg.arch_hash, settings.settings_hash, fingerprint_hash(fingerprint))
    anchor = _cached_anchor(reference, dataclasses.replace(settings, in_chans=reference.in_chans), cache)
    if anchor is None:
        return None
    return cache.get(cfg.arch_hash, anchor.settings_hash, anchor.fingerprint_hash, reference_hash(_anchor_of(anchor)))
