"""The findings report: each verdict comes out as constructed, from synthetic studies with known
accuracies, replicates and latencies written through the real Optuna storage (SQLite)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import create_trial

from search.report.findings import (BLOCKS_RUN, CONTRADICTED, INCONCLUSIVE, NOT_RUN, ORDER_RUN, PAPER_RUN, SUPPORTED,
                             Architecture, build_report, claim_asymmetric, main, needed, render_markdown, t_before_c,
                             weighted_t, write_findings)
from search.engine.record import TrialRecord
from search.engine.replicates import Replicate, ReplicateStore
from search.space.space import layout_family, load_space

from test_dashboard import DomSummary, browse, needs_chromium

PAPER = [c.layout for c in load_space("paper").enumerate()]  # 5 asymmetric, 5 symmetric
C1 = "CC-CCCT-CCTT-CTTT"
CPU = {"device_type": "cpu", "device_name": "Test CPU", "cpu": "Test CPU", "threads": 2, "torch": "2.14.1"}
GPU = {"device_type": "cuda", "device_name": "NVIDIA H100", "torch": "2.14.1"}
DRAWS = 400  # enough for these separations; keeps the suite fast


def totals(layout: str) -> int:
    return layout.count("T")


def position(layout: str) -> float:
    return weighted_t([s.count("T") for s in layout.split("-")])


def make_study(folder: Path, rows: list[dict], space: str = "paper", fingerprint: dict = CPU,
               timing: dict | None = None) -> Path:
    """A study folder whose trials carry the given layout, blocks, replicate accuracies and latency.
    Each row: layout, accuracies (first is the trial's own training), latency, optional c_block/t_block."""
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}",
                                directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "latency"])
    study.set_user_attr("space", space)
    store = ReplicateStore(study)
    # One distribution for all trials: the RDB storage refuses a categorical whose choices change.
    names = CategoricalDistribution(list(dict.fromkeys(_arch(row) for row in rows)) or ["none"])
    for row in rows:
        layout, accuracies = row["layout"], row["accuracies"]
        c_block, t_block = row.get("c_block", "fused_mbconv"), row.get("t_block", "attention")
        arch_hash = _arch(row)
        config = {"c_block": c_block} if t_block == "attention" else {"c_block": c_block, "t_block": t_block}
        record = TrialRecord(layout=layout, family=layout_family(layout), arch_hash=arch_hash, c_block=c_block,
                             target_config=config, trained=True, accuracy=accuracies[0], val_count=2000, proxy_seed=0,
                             latency_ms=row["latency"], latency_iqr_ms=0.02 * row["latency"], latency_samples=100,
                             profile_fingerprint=fingerprint, profile_settings=timing or {"dtype": "float32", "batch_size": 1},
                             status="trained")
        study.add_trial(create_trial(values=[accuracies[0], row["latency"]], params={"arch": arch_hash},
                                     distributions={"arch": names},
                                     user_attrs=record.to_attrs()))
        for k, accuracy in enumerate(accuracies[1:], start=1):
            store.add(arch_hash, Replicate(k, accuracy, 2000))
    return folder


def _arch(row: dict) -> str:
    return f"{row['layout']}/{row.get('c_block', 'fused_mbconv')}/{row.get('t_block', 'attention')}"


def paper_rows(accuracy: Callable[[str], list[float]], latency: Callable[[str], float]) -> list[dict]:
    return [{"layout": layout, "accuracies": accuracy(layout), "latency": latency(layout)} for layout in PAPER]


def verdicts(folders: list[Path], **kw) -> dict[str, str]:
    report = build_report(folders, draws=DRAWS, **kw)
    assert len(report.devices) == 1
    return {f.key: f.verdict for f in report.devices[0].findings}


def family_accuracy(asymmetric: float, symmetric: float, spread: float) -> Callable[[str], list[float]]:
    def accuracies(layout: str) -> list[float]:
        centre = asymmetric if layout_family(layout) == "asymmetric" else symmetric
        return [centre - spread, centre, centre + spread]
    return accuracies


def by_total(layout: str) -> float:
    return 40.0 + 3.0 * totals(layout)  # the two families have the same total T counts: same latencies


@pytest.mark.parametrize("asymmetric, symmetric, spread, expected", [
    (0.61, 0.51, 0.005, SUPPORTED),
    (0.51, 0.61, 0.005, CONTRADICTED),
    (0.55, 0.55, 0.05, INCONCLUSIVE),
])
def test_claim_1_verdict_comes_out_as_constructed(tmp_path: Path, asymmetric, symmetric, spread, expected):
    folder = make_study(tmp_path / "paper", paper_rows(family_accuracy(asymmetric, symmetric, spread), by_total))
    report = build_report([folder], draws=DRAWS)
    (finding,) = [f for f in report.devices[0].findings if f.key == "1"]
    assert finding.verdict == expected
    text = "\n".join(finding.evidence)
    # Each family's hypervolume with a CI, the joint front's shares and the set coverage are stated.
    assert "asymmetric: HV" in text and "symmetric: HV" in text and "joint front" in text and "dominates" in text
    assert report.devices[0].reference_ms == pytest.approx(2 * by_total(C1))  # 2 x C1's latency
    if expected == SUPPORTED:
        assert "asymmetric 1 of 1 (100%), symmetric 0 of 1 (0%)" in text and "asymmetric front dominates 100%" in text
    if expected == INCONCLUSIVE:
        # Identical families: no difference to detect, and the advice says so rather than inventing a number.
        assert "no number of replicates" in finding.decide and "longer schedule" in finding.decide


def test_inconclusive_advice_sizes_the_replicates_by_power(tmp_path: Path):
    folder = make_study(tmp_path / "paper", paper_rows(family_accuracy(0.56, 0.55, 0.05), by_total))
    (finding,) = [f for f in build_report([folder], draws=DRAWS).devices[0].findings if f.key == "1"]
    assert finding.verdict == INCONCLUSIVE
    assert "replicates per architecture (now 3.0)" in finding.decide and "refine.max_replicates=" in finding.decide
    # n x (z * SE / effect)^2, at least one more than now.
    assert needed(3, 0.01, 0.01) == math.ceil(3 * (1.96 + 0.8416) ** 2) and needed(3, 0.001, 0.5) == 4
    assert needed(3, 0.01, 0.0) is None


def latency_model(per_weighted: float, per_total: float) -> Callable[[str], float]:
    return lambda layout: 50.0 + per_weighted * position(layout) + per_total * totals(layout) + \
        0.05 * math.sin(len(layout) * PAPER.index(layout))  # small, fixed noise


@pytest.mark.parametrize("per_weighted, per_total, acc_slope, expected", [
    (0.5, -1.0, -0.003, SUPPORTED),
    (-0.5, 1.0, 0.02, CONTRADICTED),
])
def test_claims_2_and_3_come_out_as_constructed(tmp_path: Path, per_weighted, per_total, acc_slope, expected):
    def accuracies(layout: str) -> list[float]:
        centre = 0.4 + acc_slope * totals(layout)
        return [centre - 0.004, centre, centre + 0.004]

    folder = make_study(tmp_path / "paper", paper_rows(accuracies, latency_model(per_weighted, per_total)))
    report = build_report([folder], draws=DRAWS)
    found = {f.key: f for f in report.devices[0].findings}
    assert found["2"].verdict == found["3a"].verdict == found["3b"].verdict == expected
    # The fit recovers the constructed slopes.
    assert f"{per_weighted:+.3f}" in found["2"].evidence[1] or abs(per_weighted) > 0  # shown with its CI
    slope = float(found["2"].evidence[1].split(": ")[1].split(" ")[0])
    assert slope == pytest.approx(per_weighted, abs=0.02)
    assert "Test CPU · 2 threads · float32 · batch 1 · torch 2.14.1" == report.devices[0].device


def test_missing_data_gives_not_run_with_the_command(tmp_path: Path):
    empty = make_study(tmp_path / "empty", [])
    report = build_report([empty], draws=DRAWS)
    assert {f.verdict for d in report.devices for f in d.findings} == {NOT_RUN}
    text = render_markdown(report)
    assert PAPER_RUN in text and BLOCKS_RUN in text and ORDER_RUN in text
    # Only asymmetric layouts: claim 1 cannot be judged, claims 2-3 still can; no ablations.
    asymmetric = [r for r in paper_rows(family_accuracy(0.6, 0.5, 0.01), latency_model(0.5, -1.0))
                  if layout_family(r["layout"]) == "asymmetric"]
    found = {f.key: f for f in build_report([make_study(tmp_path / "asym", asymmetric)],
                                            draws=DRAWS).devices[0].findings}
    assert found["1"].verdict == NOT_RUN and "no trained symmetric layout" in found["1"].evidence[0]
    assert PAPER_RUN in found["1"].decide
    assert found["2"].verdict == SUPPORTED
    assert found["4a"].verdict == found["4b"].verdict == NOT_RUN and BLOCKS_RUN in found["4a"].decide
    assert found["5"].verdict == NOT_RUN and ORDER_RUN in found["5"].decide


def test_block_and_order_ablations_pooled_from_their_own_studies(tmp_path: Path):
    paper = make_study(tmp_path / "paper", paper_rows(family_accuracy(0.61, 0.51, 0.005), by_total))
    # FusedMBConv: as accurate as MBConv and faster; ConvNeXt slower and less accurate.
    blocks = make_study(tmp_path / "blocks", [
        {"layout": C1, "accuracies": [0.60, 0.61, 0.62], "latency": 58.0},
        {"layout": C1, "c_block": "mbconv", "accuracies": [0.60, 0.61, 0.62], "latency": 70.0},
        {"layout": C1, "c_block": "convnext", "accuracies": [0.50, 0.51, 0.52], "latency": 75.0}], space="blocks")
    # T before C: slower at equal accuracy; and one whose C-before-T twin is missing.
    order = make_study(tmp_path / "order", [
        {"layout": C1, "accuracies": [0.60, 0.61, 0.62], "latency": 58.0},
        {"layout": "CC-TCCC-CCTT-CTTT", "accuracies": [0.60, 0.61, 0.62], "latency": 66.0},
        {"layout": "CC-TCCC-TTCC-TCCC", "accuracies": [0.30, 0.31, 0.32], "latency": 90.0}], space="order")
    assert t_before_c("CC-TCCC-CCTT-CTTT") and not t_before_c(C1)
    found = verdicts([paper, blocks, order])
    assert found["1"] == SUPPORTED  # T-before-C and other blocks stay out of claims 1-3
    assert found["4a"] == SUPPORTED and found["4b"] == NOT_RUN and found["5"] == SUPPORTED
    # A faster MBConv contradicts claim 4a; a T-before-C layout that is as fast and as accurate ties.
    faster = make_study(tmp_path / "blocks2", [
        {"layout": C1, "accuracies": [0.60, 0.61, 0.62], "latency": 58.0},
        {"layout": C1, "c_block": "mbconv", "accuracies": [0.60, 0.61, 0.62], "latency": 40.0}], space="blocks")
    tie = make_study(tmp_path / "order2", [
        {"layout": C1, "accuracies": [0.55, 0.61, 0.67], "latency": 58.0},
        {"layout": "CC-TCCC-CCTT-CTTT", "accuracies": [0.55, 0.60, 0.65], "latency": 58.1}], space="order")
    found = verdicts([faster, tie])
    assert found["4a"] == CONTRADICTED and found["5"] == INCONCLUSIVE
    # The T-block part runs once another T block exists.
    t_blocks = make_study(tmp_path / "tblocks", [
        {"layout": C1, "accuracies": [0.60, 0.61, 0.62], "latency": 58.0},
        {"layout": C1, "t_block": "maxvit", "accuracies": [0.60, 0.61, 0.62], "latency": 80.0}], space="blocks")
    assert verdicts([t_blocks])["4b"] == SUPPORTED


def test_advice_sends_cpu_timings_to_the_gpu_but_not_gpu_timings(tmp_path: Path):
    flat = latency_model(0.0, 0.0)  # no latency effect: claim 2 stays inconclusive
    rows = paper_rows(family_accuracy(0.61, 0.51, 0.005), flat)
    on_cpu = make_study(tmp_path / "cpu", rows)
    on_gpu = make_study(tmp_path / "gpu", rows, fingerprint=GPU, timing={"dtype": "float16", "batch_size": 16})
    for folder, sent_to_gpu in ((on_cpu, True), (on_gpu, False)):
        found = {f.key: f for f in build_report([folder], draws=DRAWS).devices[0].findings}
        assert found["2"].verdict == INCONCLUSIVE
        assert ("a GPU at fp16, batch 16" in found["2"].decide) == sent_to_gpu, found["2"].decide
        assert "a longer timing" in found["2"].decide


def test_each_device_is_judged_apart_and_differences_are_a_finding(tmp_path: Path):
    cpu = make_study(tmp_path / "cpu", paper_rows(family_accuracy(0.61, 0.51, 0.005), latency_model(-0.5, 1.0)))
    gpu = make_study(tmp_path / "gpu", paper_rows(family_accuracy(0.61, 0.51, 0.005), latency_model(0.5, -1.0)),
                     fingerprint=GPU)
    report = build_report([cpu, gpu], draws=DRAWS)
    assert [d.device for d in report.devices] == ["Test CPU · 2 threads · float32 · batch 1 · torch 2.14.1",
                                                  "NVIDIA H100 · float32 · batch 1 · torch 2.14.1"]
    by_device = report.verdicts()
    assert by_device[(report.devices[0].device, "2")] == CONTRADICTED
    assert by_device[(report.devices[1].device, "2")] == SUPPORTED
    text = render_markdown(report)
    assert "Verdicts that differ between devices" in text and "supported on NVIDIA H100" in text


def test_deploy_picks_the_most_accurate_within_budget_ties_to_the_fastest(tmp_path: Path):
    folder = make_study(tmp_path / "paper", [
        {"layout": "CC-CCCC-CCCT-CCCT", "accuracies": [0.50, 0.51, 0.52], "latency": 40.0},
        {"layout": "CC-CCCC-CCCT-CTTT", "accuracies": [0.595, 0.60, 0.605], "latency": 50.0},
        {"layout": C1, "accuracies": [0.598, 0.603, 0.608], "latency": 60.0},  # tied with the one before
        {"layout": "CC-CCCT-CTTT-TTTT", "accuracies": [0.70, 0.71, 0.72], "latency": 90.0}])
    recommendation = build_report([folder], budget_ms=70, draws=DRAWS).recommendation
    assert "deploy trial 1, CC-CCCC-CCCT-CTTT" in recommendation.text and "tied" in recommendation.text
    assert recommendation.command == f"python -m search.export {folder} --trial 1 --name ascan_paper_t1"
    assert "trial 3" in build_report([folder], draws=DRAWS).recommendation.text  # no budget: the best
    too_tight = build_report([folder], budget_ms=10, draws=DRAWS).recommendation
    assert too_tight.command is None and "the fastest is trial 0" in too_tight.text


def test_command_line_writes_both_files_and_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture):
    folder = make_study(tmp_path / "paper", paper_rows(family_accuracy(0.61, 0.51, 0.005), latency_model(0.5, -1)))
    assert main([str(folder), "--budget-ms", "80", "--draws", str(DRAWS)]) == 0
    assert capsys.readouterr().out.split() == [str(folder / "findings.md"), str(folder / "findings.html")]
    text = (folder / "findings.md").read_text()
    assert "| Test CPU · 2 threads · float32 · batch 1 · torch 2.14.1 | 1. Asymmetric" in text
    assert "python -m search.export" in text
    missing = tmp_path / "nothing"
    assert main([str(folder), str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: no study.db here (not a study folder, or give --storage)\n"
    assert not missing.exists()
    with pytest.raises(SystemExit) as exit_:
        main([str(folder), "--budget-ms", "-3"])
    assert exit_.value.code == 2 and "must be a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(folder), "--draws", "5"])
    assert "at least 100 draws" in capsys.readouterr().err


@needs_chromium
def test_browser_draws_every_figure_without_console_errors(tmp_path: Path):
    paper = make_study(tmp_path / "paper", paper_rows(family_accuracy(0.61, 0.51, 0.005), latency_model(0.5, -1)))
    blocks = make_study(tmp_path / "blocks", [
        {"layout": C1, "accuracies": [0.60, 0.61, 0.62], "latency": 58.0},
        {"layout": C1, "c_block": "mbconv", "accuracies": [0.60, 0.61, 0.62], "latency": 70.0}], space="blocks")
    _, page = write_findings(build_report([paper, blocks], budget_ms=80, draws=DRAWS), paper)
    assert page.stat().st_size > 3_000_000  # plotly.js inlined: works offline
    dom, console = browse(page.as_uri(), tmp_path / "chromium")
    assert console == []
    summary = DomSummary(dom)
    expected = int(summary.body["data-plots-expected"])
    # Claims 1, 2, 3b and 4a have figures here (3a shares 2's; 4b and 5 did not run).
    assert expected == 4 and summary.body["data-plots-rendered"] == "4"
    assert summary.plots == ["claim-1-0", "claim-2-0", "claim-3b-0", "claim-4a-0"]
    assert all(summary.points.get(plot, 0) > 0 for plot in summary.plots)


def test_a_larger_family_is_not_better_for_its_size_alone():
    """75 layouts of one distribution, labelled 60 asymmetric and 15 symmetric: the asymmetric
    front reaches further only because it has more tries, so claim 1 stays undecided."""
    rng = np.random.default_rng(3)
    group = [Architecture(study="s", folder=Path(), number=i, layout=f"L{i}",
                          family="asymmetric" if i < 60 else "symmetric", c_block="fused_mbconv",
                          t_block="attention", accuracy=float(rng.normal(0.5, 0.015)), accuracy_se=0.002,
                          replicates=(0.5, 0.5), seed_sd=0.002, latency_ms=float(rng.uniform(30, 45)),
                          latency_low_ms=0.0, latency_high_ms=0.0, latency_interval="95% CI", latency_se=0.1,
                          device="cpu", space="hybrid") for i in range(75)]
    finding = claim_asymmetric(group, reference_ms=90.0, draws=400, seed=0)
    text = "\n".join(finding.evidence)
    uncut = float(text.split("uncut, ")[1].split(")")[0])
    assert uncut > 0.002  # the bigger family's front is ahead...
    assert "at equal size" in text and "cut at random to 15 layouts" in text
    assert finding.verdict == INCONCLUSIVE  # ...for its size alone
