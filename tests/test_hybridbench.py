"""HybridBench: the table's rows re-train to the same accuracy, a rerun resumes, and the
report reads tau, the true front, the paper's claims and the replayed recall from a table."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import hybridbench  # noqa: E402

from search.measure.tables.hybridbench import HybridSpace, hybridbench_table  # noqa: E402
from search.space.space import PAPER_C1, load_space  # noqa: E402


@pytest.mark.slow
def test_a_smoke_row_retrains_to_its_recorded_accuracy_and_a_rerun_resumes(tmp_path):
    csv = tmp_path / "hb.csv"
    cache = tmp_path / "profile_cache.sqlite"
    assert hybridbench.measure(csv, "smoke", seeds=(1,), limit=1, profile_cache=cache, say=lambda line: None) == 1
    row = pd.read_csv(csv).iloc[0].to_dict()
    assert row["layout"] == load_space("hybrid").enumerate()[0].layout and row["seed"] == 1
    assert row["recipe_hash"] == hybridbench.recipe_hash("smoke") and row["fingerprint_hash"]
    assert row["latency_ci_low_ms"] <= row["latency_ms"] <= row["latency_ci_high_ms"]
    assert row["params"] > 0 and row["macs"] > 0 and row["proxy_wall_time_s"] > 0 and row["val_count"] == 200
    assert hybridbench.measure(csv, "smoke", seeds=(1,), limit=1, profile_cache=cache, say=lambda line: None) == 0  # resumed: nothing to do
    assert abs(hybridbench.retrain(row) - row["accuracy"]) <= 0.005  # seeded training: the same accuracy


def synthetic_table(path: Path) -> Path:
    """Every layout of `hybrid` with two seeds: accuracy and latency grow with the T blocks."""
    space, rng, rows = load_space("hybrid"), np.random.default_rng(0), []
    hashes = HybridSpace(space)
    for candidate in space.enumerate():
        t = candidate.layout.count("T")
        for seed in (0, 1):
            rows.append({"layout": candidate.layout, "family": space.family(candidate),
                         "arch_hash": hashes.arch_hash(candidate), "seed": seed, "recipe": "smoke",
                         "recipe_hash": "abc", "accuracy": 0.4 + 0.02 * t + rng.normal(0, 0.005),
                         "val_count": 2000, "proxy_wall_time_s": 90.0, "latency_ms": 10.0 + t + 0.1 * len(candidate.layout),
                         "latency_ci_low_ms": 9.0 + t, "latency_ci_high_ms": 11.0 + t + 0.2 * len(candidate.layout),
                         "params": 1e6, "macs": 1e9, "profile_s": 5.0})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_the_report_reads_tau_the_true_front_and_recall(tmp_path):
    csv = synthetic_table(tmp_path / "hb.csv")
    table = hybridbench_table(csv, c1_multiple=2.0)
    assert len(table.keys) == 125 and table.accuracy.shape == (125, 2)
    c1 = "-".join(PAPER_C1)
    assert table.reference_latency_ms == pytest.approx(2 * (10.0 + c1.count("T") + 0.1 * len(c1)))
    lines = []
    result = hybridbench.report(csv, seeds=2, budgets=(16,), say=lines.append)
    assert 0.5 < result["tau"] <= 1 and result["tau_ci"][0] <= result["tau"] <= result["tau_ci"][1]
    assert result["front"] and any("true front" in line for line in lines)
    assert all(0 <= r <= 1 for r in result["recall_default"]) and len(result["recall_random"]) == 2
    assert not math.isnan(result["recall_default"].mean())
    # the table was made with accuracy and latency both rising with the T count
    assert result["verdicts"]["3a"] == result["verdicts"]["3b"] == "contradicted"
    assert any("claim 3b, More T blocks overall do not raise accuracy: CONTRADICTED" in line for line in lines)


def test_a_table_missing_layouts_cannot_be_replayed(tmp_path):
    csv = synthetic_table(tmp_path / "hb.csv")
    rows = pd.read_csv(csv)
    rows[rows["layout"] != "CC-CCCC-CCCC-CCCC"].to_csv(csv, index=False)
    with pytest.raises(ValueError, match="lacks 1 of the 125 layouts"):
        HybridSpace.for_table(hybridbench_table(csv, c1_multiple=2.0))
