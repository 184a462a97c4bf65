"""The measure wing's settings: how a proxy trains (`ProxySettings`, `PRESETS`) and how
latency is timed (`LatencySettings`).

They live apart from `proxy.py` and `profile.py` so that reading them needs no torch: the
command line's schema (`search/app/settings.py`) is built from these fields, whose defaults
and help are written only here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from search.measure.profile_cache import ProfileError, from_known_fields, stable_hash
from search.space.settings import DEVICE_CHOICES, DEVICE_HELP, DTYPES, is_device, setting

CLOCKS = ("wall", "cpu")
AMP_DTYPES = ("bfloat16", "float16", "none")  # autocast dtypes of a CUDA training ("none": off)
# The scores every training gives (`search.measure.proxy.ProxyResult`): accuracy on the whole
# validation slice, on its first `val_head` images, and the training loss over the whole run
# (TSE: its mean; TSE-EMA: an exponential moving average that weights the end of the run most).
# `ProxySettings.score` names the one the search optimises; `search.engine.objectives.PROXY_SCORES`
# says where each is kept in the trial record and which way is better.
SCORES = ("accuracy", "head_accuracy", "tse", "tse_ema")


@dataclass(frozen=True)
class ProxySettings:
    """How one proxy training runs. `warmup_fraction` is a share of all optimizer steps."""

    epochs: int = setting(3, "training epochs (>= 1)")
    batch_size: int = setting(128, "training batch size (>= 1)")
    lr: float = setting(3e-3, "peak learning rate (> 0)")
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.1
    train_size: int = setting(10000, "training images (>= 1)")
    val_size: int = setting(10000, "validation images, scored once after the last epoch (>= 1)")
    val_head: int = setting(2000, "the slice's first images, also scored after every epoch: the curve, and a score "
                            "of their own (>= 1)")
    seed: int = 0  # weights, data order and augmentation: what a replicate varies (estimate.replicate_seed)
    data_seed: int = 0  # which images form the train subset and the validation slice: fixed across replicates
    num_threads: int = 2
    device: str = setting("auto", "device of proxy training (auto: cuda when present, else cpu)", DEVICE_CHOICES)
    amp_dtype: str = "bfloat16"  # CUDA only: bfloat16 | float16 | none
    channels_last: bool = True
    max_grad_norm: float | None = 1.0
    augment: bool = True
    eval_batch_size: int = 500
    score: str = setting("accuracy", "the training's score the search optimises (all are recorded; a loss is told "
                         "negated)", SCORES)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"ProxySettings.{name}={getattr(self, name)!r}: {why}")

        for name in ("epochs", "batch_size", "train_size", "val_size", "val_head", "num_threads", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "must be a positive integer")
        for name in ("lr", "weight_decay", "label_smoothing", "warmup_fraction"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "must be a finite number >= 0")
        if self.lr == 0:
            raise bad("lr", "must be > 0")
        if self.label_smoothing >= 1 or self.warmup_fraction >= 1:
            raise bad("label_smoothing" if self.label_smoothing >= 1 else "warmup_fraction", "must be < 1")
        if self.amp_dtype not in AMP_DTYPES:
            raise bad("amp_dtype", f"choose one of {', '.join(AMP_DTYPES)}")
        if not is_device(self.device):
            raise bad("device", f"choose {DEVICE_HELP}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise bad("max_grad_norm", "must be > 0, or None for no clipping")
        if self.score not in SCORES:
            raise bad("score", f"choose one of {', '.join(SCORES)}")

    def replace(self, **changes: Any) -> "ProxySettings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Sized on 2 CPU cores (AVX2, torch 2.14, channels_last) for the space's proxy of the paper's
# C1 layout (CC-CCCT-CCTT-CTTT, widths 16-32-64-128, stem stride 1, 32 px, 21.9 M MACs per
# image): it trains at about 650 images/s on idle cores and scores at about 1,700 images/s, so
# `default` (30k training images; 2 x 2k + 10k scored) takes about a minute and reaches about
# 0.5 validation accuracy; `thorough` trains on 5x the images (150k). The 10k slice halves the
# validation-sampling SE of a 2k one (0.5 points instead of 1.1 at p = 0.5) for about 10% more
# CPU time per trial.
# benchmarks/proxy_fidelity.py compares the rankings of the two. `smoke` is for tests only.
PRESETS: dict[str, ProxySettings] = {
    "smoke": ProxySettings(epochs=2, batch_size=64, train_size=640, val_size=200, val_head=100, lr=3e-3,
                           eval_batch_size=200),
    "default": ProxySettings(epochs=3, batch_size=128, train_size=10000, val_size=10000, val_head=2000, lr=3e-3),
    "thorough": ProxySettings(epochs=6, batch_size=128, train_size=25000, val_size=10000, val_head=2000, lr=3e-3),
}


def preset(name: str, **overrides: Any) -> ProxySettings:
    """A named preset with some fields changed: `preset("default", epochs=2)`."""
    if name not in PRESETS:
        raise ValueError(f"proxy preset {name!r}: unknown (choose one of {', '.join(PRESETS)})")
    return PRESETS[name].replace(**overrides)


@dataclass(frozen=True)
class LatencySettings:
    """How to measure latency. Every field is part of the cache key.

    `device="auto"` means CUDA when available; `num_threads=None` means torch's current
    thread count. Both are resolved (and recorded) before measuring. `tf32` only matters for
    float32 on CUDA. A single network (`measure_latency`) is sampled until `min_iters` samples
    and `min_time_s` seconds are both reached, or `max_time_s` (None: no cap).

    A window (`profile_window`) runs `iters_per_round` passes of each network per round (the
    round's time is their median) and stops once `min_rounds` rounds and `min_time_s` are done
    and every candidate's 95% interval half-width is under `target_rel_ci` of its value, or
    at `max_time_s`. `clock="cpu"` times with the process's CPU time instead of the wall
    clock (CPU only; see the README for when). A measurement is contaminated when the
    per-round ratios' IQR exceeds `max_spread` of their median, or (wall clock) other
    processes used more than `max_foreign_cpu` cores beyond those our threads leave free,
    or the hypervisor stole more than `max_steal` of the CPU time; it is measured again up
    to `max_retries` times.
    """

    device: str = setting("auto", "device latency is measured on", DEVICE_CHOICES)
    batch_size: int = setting(1, "batch size of latency timing (>= 1)")
    img_size: int = setting(224, "image size (pixels per side) of latency timing (>= 8)")
    in_chans: int = 3
    dtype: str = setting("float32", "dtype of latency timing (the paper times GPUs at float16)", DTYPES)
    channels_last: bool = False
    compile: bool = setting(False, "torch.compile each network before timing")
    num_threads: int | None = None
    tf32: bool = False
    warmup_iters: int = 10
    min_iters: int = setting(10, "and at least this many forward passes (>= 1)")
    min_time_s: float = setting(1.0, "time each candidate for at least this long (> 0, at most 3600)")
    max_time_s: float | None = setting(60.0, "at most this long per profiling window (> 0)")
    clock: str = setting("wall", "wall: what a user waits for; cpu: process CPU time, for machines shared with "
                                 "other work", CLOCKS)
    iters_per_round: int = 3
    min_rounds: int = 10
    target_rel_ci: float = setting(0.015, "time a window until each latency's 95% interval is within this "
                                         "fraction (> 0)")
    max_spread: float = 0.15
    max_foreign_cpu: float = 0.5
    max_steal: float = 0.1
    max_retries: int = 2

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ProfileError:
            return ProfileError(f"LatencySettings.{name}={getattr(self, name)!r}: {why}")

        if not is_device(self.device):
            raise bad("device", f"choose {DEVICE_HELP}")
        if self.clock not in CLOCKS:
            raise bad("clock", f"choose one of {', '.join(CLOCKS)}")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"unknown dtype, choose one of {', '.join(DTYPES)}")
        for name in ("batch_size", "img_size", "in_chans", "warmup_iters", "min_iters", "iters_per_round",
                     "min_rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "must be a positive integer")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise bad("num_threads", "must be a positive integer or None")
        for name in ("channels_last", "compile", "tf32"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool) or self.max_retries < 0:
            raise bad("max_retries", "must be an integer >= 0")
        for name in ("min_time_s", "target_rel_ci", "max_spread", "max_foreign_cpu", "max_steal"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "must be a number >= 0")
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.max_time_s is not None and (not _is_number(self.max_time_s) or self.max_time_s <= 0):
            raise bad("max_time_s", "must be a number > 0, or None")
        # 2 and 2.0 must hash alike, or one setting would be measured twice (floats: above).
        if self.max_time_s is not None:
            object.__setattr__(self, "max_time_s", float(self.max_time_s))

    def resolved(self) -> "LatencySettings":
        """The same settings with `device` and `num_threads` made concrete for this machine."""
        import torch

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ProfileError(f"LatencySettings.device={device!r}: CUDA is not available on this machine")
        elif device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
            raise ProfileError(f"LatencySettings.device={device!r}: this machine has {torch.cuda.device_count()} "
                               "CUDA device(s)")
        if device.startswith("cuda") and self.clock == "cpu":
            raise ProfileError("LatencySettings.clock='cpu': CPU time does not measure a GPU; use clock='wall'")
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
