"""HybridBench: every layout of the `hybrid` space measured by this tool, as a `Table`.

`benchmarks/hybridbench.py` writes the CSV (one row per layout and training seed, with the
recipe's hash and the machine's fingerprint); this module reads it. Candidates are sampled
by the real `hybrid` `SearchSpace`, so a replay asks Optuna exactly what a real search asks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from search.measure.tables import Table
from search.space.space import PAPER_C1, SearchSpace, load_space

SPACE = "hybrid"


def read_rows(path: Path, recipe_hash: str | None = None) -> pd.DataFrame:
    """The table's rows, all of one recipe (`recipe_hash`, or the only one the file holds)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no HybridBench table here (benchmarks/hybridbench.py measures one)")
    rows = pd.read_csv(path)
    missing = {"arch_hash", "layout", "seed", "accuracy", "latency_ms", "recipe_hash"} - set(rows.columns)
    if missing:
        raise ValueError(f"{path}: not a HybridBench table (no column {', '.join(sorted(missing))})")
    recipes = sorted(rows["recipe_hash"].unique())
    if recipe_hash is None and len(recipes) > 1:
        raise ValueError(f"{path}: rows of {len(recipes)} recipes ({', '.join(recipes)}); name one")
    return rows[rows["recipe_hash"] == (recipe_hash or recipes[0])] if recipes else rows


def hybridbench_table(path: Path, c1_multiple: float, recipe_hash: str | None = None,
                      name: str = "hybridbench") -> Table:
    """The rows as a `Table`: one row per layout, its seeds' accuracies side by side. The
    hypervolume reference's latency is `c1_multiple` times the paper's C1, as in a study."""
    rows = read_rows(path, recipe_hash)
    by_arch = list(rows.groupby("arch_hash", sort=False))
    width = max(len(group) for _, group in by_arch)
    accuracy = np.full((len(by_arch), width), np.nan)
    seeds = np.full((len(by_arch), width), -1)
    for i, (_, group) in enumerate(by_arch):
        group = group.sort_values("seed")
        accuracy[i, : len(group)], seeds[i, : len(group)] = group["accuracy"], group["seed"]
    first = rows.drop_duplicates("arch_hash").set_index("arch_hash").loc[[key for key, _ in by_arch]]
    c1 = first[first["layout"] == "-".join(PAPER_C1)]
    if not len(c1):
        raise ValueError(f"{path}: no row for the paper's C1 ({'-'.join(PAPER_C1)}), the hypervolume reference")
    reference_latency_ms = c1_multiple * float(c1["latency_ms"].iloc[0])
    column = lambda name: first[name].to_numpy(dtype=float) if name in first else None  # noqa: E731
    return Table(name=name, keys=tuple(first.index), accuracy=accuracy, latency_ms=column("latency_ms"),
                 params=column("params"), macs=column("macs"),
                 train_s=rows.groupby("arch_hash")["proxy_wall_time_s"].mean().loc[list(first.index)].to_numpy(),
                 val_count=int(rows["val_count"].iloc[0]), reference_latency_ms=reference_latency_ms,
                 latency_ci_low_ms=column("latency_ci_low_ms"), latency_ci_high_ms=column("latency_ci_high_ms"),
                 profile_s=float(rows["profile_s"].mean()) if "profile_s" in rows else 0.0, seeds=seeds)


class HybridSpace:
    """The `hybrid` space's own parameterisation; a candidate's row is its target's arch hash."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self._hash: dict[Any, str] = {}

    @classmethod
    def for_table(cls, table: Table) -> "HybridSpace":
        """The space, checked to be the table's: every layout of it has a row."""
        space = cls(load_space(SPACE))
        missing = [c.layout for c in space.space.enumerate() if space.arch_hash(c) not in table.row]
        if missing:
            raise ValueError(f"table {table.name} lacks {len(missing)} of the {space.space.count()} layouts of space "
                             f"{SPACE} (e.g. {missing[0]}): measure them first (benchmarks/hybridbench.py)")
        return space

    def arch_hash(self, candidate) -> str:
        if candidate not in self._hash:
            self._hash[candidate] = self.space.target_config(candidate).arch_hash
        return self._hash[candidate]

    def describe(self, candidate) -> dict[str, Any]:
        return {"layout": candidate.layout, "family": self.space.family(candidate), "arch_hash": self.arch_hash(candidate)}

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        return self.describe(self.space.sample(trial))

    def reference_params(self) -> list[dict[str, Any]]:
        return [self.space.params_for(candidate) for candidate in self.space.reference_candidates()]
