"""Proxy training: a short, seeded training run that scores an architecture on held-out data.

`train_proxy(config, data, settings, on_epoch)` builds the network, trains it with AdamW,
linear warm-up + cosine decay and label smoothing, and returns a `ProxyResult`. On CPU it
sets the thread count explicitly and uses channels_last, never autocast (bf16 autocast is
about 10x slower on these AVX2 machines). On CUDA the data moves to the GPU once, and the
steps run under fp16/bf16 autocast with cudnn.benchmark.

Failure contract: a training problem (non-finite loss, out of memory) never raises; it
returns `status="failed"` with the reason. Exceptions raised by the `on_epoch` callback DO
propagate, untouched: the search engine raises from it to stop (prune) a trial. A config
that does not fit the data (classes, channels) is a caller bug and raises ValueError.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from timm.optim import param_groups_weight_decay

from ascan import ArchConfig, build_model

from search.measure.data import DataSplit, Normalizer, random_crop_flip
from search.measure.estimate import binomial_se
from search.measure.settings import PRESETS, SCORES, ProxySettings, preset  # noqa: F401 (re-exported)

EpochCallback = Callable[[int, float], None]
# TSE-EMA's time constant, as a share of the run's optimizer steps: a third, so the last third
# of the run (the default's last epoch) carries 1 - 1/e = 63% of the weight. Defined on steps,
# not epochs, so a one-epoch recipe is weighted like a three-epoch one.
TSE_EMA_SPAN = 1 / 3
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "none": None}  # settings.AMP_DTYPES
CUDA_CHECK_EVERY = 16  # on a GPU, read the loss back every few steps only: each read is a sync


@dataclass(frozen=True)
class ProxyResult:
    """What a proxy training gives the search. `val_accuracy` is top-1 in 0..1 on the split's
    whole validation slice after the last epoch (0.0 when failed): `val_correct` of `val_count`
    images (0 of 0 when failed). `head_accuracy` is the same on the slice's first `head_count`
    images (`ProxySettings.val_head`), which are also scored after every epoch: `curve` holds
    those, one per epoch. `tse` is the mean training loss over the whole run (Ru et al. 2021's
    "sum of training losses", per step), `tse_ema` its moving average weighted to the end of
    the run (`TSE_EMA_SPAN`); None when failed. `seed` is the training seed, which tells
    replicates apart (see `search.estimate`)."""

    status: str  # "ok" | "failed"
    failure_reason: str | None
    val_accuracy: float
    curve: tuple[float, ...]
    train_loss_curve: tuple[float, ...]
    images_per_sec: float  # training images per second, evaluation excluded
    wall_time_s: float  # everything: build, transfer, training, evaluation
    epochs_done: int
    device: str
    val_correct: int
    val_count: int
    seed: int
    head_accuracy: float | None = None
    head_correct: int = 0
    head_count: int = 0
    tse: float | None = None
    tse_ema: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def val_se(self) -> float:
        """The validation-sampling standard error of `val_accuracy` (binomial); NaN when failed."""
        return binomial_se(self.val_accuracy, self.val_count) if self.val_count else math.nan

    @property
    def head_se(self) -> float:
        """The same for `head_accuracy`, on the `head_count` images it scored."""
        return binomial_se(self.head_accuracy, self.head_count) if self.head_count else math.nan

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["curve"], data["train_loss_curve"] = list(self.curve), list(self.train_loss_curve)
        data["val_se"], data["head_se"] = self.val_se, self.head_se
        return data


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_proxy(config: ArchConfig, data: DataSplit, settings: ProxySettings,
                on_epoch: EpochCallback | None = None) -> ProxyResult:
    """Build `config`'s network with seeded weights and train it on `data` (see `fit`)."""
    if config.num_classes != data.num_classes:
        raise ValueError(f"ArchConfig.num_classes={config.num_classes}: the data has {data.num_classes} classes")
    if config.in_chans != data.x_train.shape[1]:
        raise ValueError(f"ArchConfig.in_chans={config.in_chans}: the data has {data.x_train.shape[1]} channels")
    return fit(seeded_model(config, settings.seed), data, settings, on_epoch)


def seeded_model(config: ArchConfig, seed: int) -> nn.Module:
    """`config`'s network with weights drawn from `seed`, leaving the caller's RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(config)


def fit(model: nn.Module, data: DataSplit, settings: ProxySettings,
        on_epoch: EpochCallback | None = None) -> ProxyResult:
    """Train `model` in place and score it after every epoch on the first `val_head` scoring
    images, and after the last on all of them; `on_epoch(epoch, accuracy)` gets the 1-based
    epoch number and the accuracy on those first images (the same images every epoch)."""
    started = time.perf_counter()
    device = resolve_device(settings.device)
    curve: list[float] = []
    losses: list[float] = []
    train_seconds, train_images, correct, head_correct = 0.0, 0, 0, 0
    val_count = len(data.y_val)
    head_count = min(settings.val_head, val_count)
    loop: TrainLoop | None = None

    def result(reason: str | None = None) -> ProxyResult:
        ok = reason is None
        return ProxyResult("failed" if reason else "ok", reason, correct / val_count if ok else 0.0, tuple(curve),
                           tuple(losses), train_images / max(train_seconds, 1e-9), time.perf_counter() - started,
                           len(curve), str(device), correct if ok else 0, val_count if ok else 0, settings.seed,
                           head_correct / head_count if ok else None, head_correct if ok else 0,
                           head_count if ok else 0, sum(losses) / len(losses) if ok else None,
                           loop.loss_ema() if ok and loop is not None else None)

    with _runtime(settings, device):
        try:
            loop = TrainLoop(model, data, settings, device)
        except Exception as err:  # only out-of-memory is a training problem; the rest are bugs
            if not _is_out_of_memory(err):
                raise
            return result(f"out of memory moving the model and data to {device}")
        for epoch in range(1, settings.epochs + 1):
            try:
                mean_loss, seconds, images = loop.train_epoch(epoch)
                head_correct = loop.count_correct(0, head_count)
                if epoch == settings.epochs:
                    correct = head_correct + loop.count_correct(head_count, val_count)
            except NonFiniteLoss as err:
                return result(str(err))
            except Exception as err:
                if not _is_out_of_memory(err):
                    raise
                loop.release()
                return result(f"out of memory in epoch {epoch} at batch size {settings.batch_size} on {device}")
            losses.append(mean_loss)
            train_seconds, train_images = train_seconds + seconds, train_images + images
            curve.append(head_correct / max(head_count, 1))
            if on_epoch is not None:
                on_epoch(epoch, curve[-1])  # may raise to stop the trial: let it through
    return result()


class TrainLoop:
    """The model, optimizer, schedule and data of one training run, stepped epoch by epoch."""

    def __init__(self, model: nn.Module, data: DataSplit, settings: ProxySettings, device: torch.device):
        self.settings, self.device = settings, device
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.data = data.to(device) if data.x_train.device != device else data
        self.model = model.to(device=device, memory_format=self.memory_format)
        self.normalize = Normalizer(data.mean, data.std, device)
        self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        no_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
        self.optimizer = torch.optim.AdamW(
            param_groups_weight_decay(model, settings.weight_decay, no_weight_decay_list=no_decay), lr=settings.lr)
        n_train = len(self.data.y_train)
        self.batch_size = min(settings.batch_size, n_train)
        self.steps_per_epoch = n_train // self.batch_size  # full batches only: steady shapes and BN statistics
        total = settings.epochs * self.steps_per_epoch
        warmup = max(1, round(settings.warmup_fraction * total)) if settings.warmup_fraction else 0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: warmup_cosine(s, warmup, total))
        self.ema_decay = max(0.0, 1.0 - 1.0 / (TSE_EMA_SPAN * total))
        self.ema = torch.zeros((), device=device)  # of the step losses, from 0: `loss_ema` corrects the bias
        self.steps_done = 0
        self.autocast = _autocast_for(device, settings)
        self.scaler = torch.amp.GradScaler("cuda") if _amp_dtype(device, settings) == torch.float16 else None

    def train_epoch(self, epoch: int) -> tuple[float, float, int]:
        """One pass over the train subset; returns (mean loss, seconds, images)."""
        self.model.train()
        start = time.perf_counter()
        order = torch.randperm(len(self.data.y_train), generator=self.generator, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        check_every = 1 if self.device.type == "cpu" else CUDA_CHECK_EVERY
        for step in range(self.steps_per_epoch):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            images = self.data.x_train[index]
            if self.settings.augment:
                images = random_crop_flip(images, self.generator)
            loss = self._step(self.normalize(images, self.memory_format), self.data.y_train[index])
            loss_sum += loss
            self.ema.mul_(self.ema_decay).add_(loss, alpha=1.0 - self.ema_decay)
            self.steps_done += 1
            if (step + 1) % check_every == 0 or step + 1 == self.steps_per_epoch:
                if not torch.isfinite(loss_sum):
                    raise NonFiniteLoss(f"non-finite training loss ({loss_sum.item()}) in epoch {epoch} "
                                        f"by step {step + 1} (lr={self.settings.lr:g})")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return loss_sum.item() / self.steps_per_epoch, time.perf_counter() - start, self.steps_per_epoch * self.batch_size

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            loss = self.loss_fn(self.model(images).float(), labels)
        if self.device.type == "cpu" and not torch.isfinite(loss):
            return loss.detach()  # skip the update: the caller stops the run before the next step
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.settings.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def loss_ema(self) -> float:
        """The moving average of the step losses so far, corrected for its start at 0 (as Adam's moments are)."""
        return self.ema.item() / (1.0 - self.ema_decay ** self.steps_done) if self.steps_done else math.nan

    def count_correct(self, start: int, stop: int) -> int:
        """Top-1 hits on the split's scoring images start..stop-1, in eval mode."""
        return _count_correct(self.model, self.data.x_val[start:stop], self.data.y_val[start:stop], self.normalize,
                              self.settings, self.autocast, self.memory_format)

    def release(self) -> None:
        """Drop optimizer state and cached GPU blocks after an out-of-memory failure."""
        self.optimizer.state.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, data: DataSplit,
             settings: ProxySettings) -> float:
    """Top-1 accuracy of a trained `model` on other images (e.g. the test split, for final
    reports), normalised with `data`'s training statistics, on the model's current device."""
    device = next(model.parameters()).device
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    correct = _count_correct(model, images.to(device), labels.to(device), Normalizer(data.mean, data.std, device),
                             settings, _autocast_for(device, settings), memory_format)
    return correct / max(len(labels), 1)


def _amp_dtype(device: torch.device, settings: ProxySettings) -> torch.dtype | None:
    return AMP_DTYPES[settings.amp_dtype] if device.type == "cuda" else None  # never autocast on CPU


def _autocast_for(device: torch.device, settings: ProxySettings) -> Callable[[], contextlib.AbstractContextManager]:
    dtype = _amp_dtype(device, settings)
    return (lambda: torch.autocast("cuda", dtype=dtype)) if dtype else contextlib.nullcontext


@torch.inference_mode()
def _count_correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize: Normalizer,
                   settings: ProxySettings, autocast: Callable, memory_format: torch.memory_format) -> int:
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in range(0, len(labels), settings.eval_batch_size):
        batch = normalize(images[start:start + settings.eval_batch_size], memory_format)
        with autocast():
            logits = model(batch)
        correct += (logits.argmax(dim=1) == labels[start:start + len(batch)]).sum()
    return int(correct.item())


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(
        text in str(err) for text in ("out of memory", "can't allocate memory", "DefaultCPUAllocator"))


@contextlib.contextmanager
def _runtime(settings: ProxySettings, device: torch.device) -> Iterator[None]:
    """Threads, seeds and cuDNN flags for one run, restored afterwards: no leaked global state."""
    threads = torch.get_num_threads()
    benchmark = torch.backends.cudnn.benchmark
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(settings.seed)  # the global stream, for layers that draw from it (drop path)
        if device.type == "cpu":
            torch.set_num_threads(settings.num_threads)
        else:
            torch.backends.cudnn.benchmark = True
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.backends.cudnn.benchmark = benchmark
