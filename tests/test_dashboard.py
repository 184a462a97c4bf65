"""The dashboard of a real tiny study, rendered by headless Chromium.

The study is made once per test session by the real engine (inline executor, real CIFAR-10
slices, real profiling): four trials over four layouts, with a MACs ceiling that the larger two
exceed. With seed 0 the random sampler repeats a layout (a reused result) and draws one
over-budget layout (never profiled nor trained). `test_export.py` shares the study.
"""
from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.report.dashboard import finished_frame, reference_for, write_dashboard
from search.report.dashboard import main as dashboard_main
from search.report.tables import ReferencePoint, StudyFolderError, front_trials, hypervolume_history, open_study_dir

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def page(study: optuna.Study, study_dir: Path) -> Path:
    return write_dashboard(study, study_dir / "dashboard.html", ReferencePoint(latency_ms=50.0))


def browse(url: str, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message, from headless Chromium."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
         "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Chromium logs console.log, console.error and uncaught exceptions alike as "CONSOLE" lines.
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


class DomSummary(html.parser.HTMLParser):
    """The <body> attributes, the Plotly plots, and the markers drawn inside each plot."""

    def __init__(self, dom: str):
        super().__init__()
        self.body: dict[str, str] = {}
        self.plots: list[str] = []
        self.points: dict[str, int] = {}
        self.errorbars: dict[str, int] = {}
        self.current_plot = ""
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "body":
            self.body = attrs
        if "js-plotly-plot" in classes:  # the class Plotly gives a div it has drawn into
            self.plots.append(attrs.get("id", ""))
            self.current_plot = attrs.get("id", "")
        if tag == "path" and "point" in classes:
            self.points[self.current_plot] = self.points.get(self.current_plot, 0) + 1
        if tag == "path" and {"xerror", "yerror"} & set(classes):
            self.errorbars[self.current_plot] = self.errorbars.get(self.current_plot, 0) + 1


@needs_chromium
def test_browser_plots_every_finished_trial_without_console_errors(study, page: Path, tmp_path: Path):
    dom, console = browse(page.as_uri(), tmp_path / "chromium")
    assert console == []
    summary = DomSummary(dom)
    assert summary.plots == ["pareto", "hypervolume", "macs-latency", "t-placement"]
    finished = len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert finished == 4
    # The page's own count after Plotly rendered, and the markers actually in the SVG.
    assert summary.body["data-plots-rendered"] == "4"
    assert int(summary.body["data-plotted-trials"]) == finished == summary.points["pareto"]
    # Error bars on both axes (accuracy SE, latency spread) and the paper's reference points.
    assert summary.errorbars.get("pareto", 0) >= finished
    assert "paper's C1" in dom and "paper's symmetric example" in dom
    front = front_trials(study)
    assert front and dom.count('<tr><td data-value="') == len(front)
    for trial in front:
        assert f"<code class=\"copy\" title=\"click to copy\">{trial.user_attrs['layout']}</code>" in dom


@needs_chromium
def test_browser_check_reports_console_errors(tmp_path: Path):
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>console.error('boom'); undefinedFunction();</script></body></html>")
    _, console = browse(broken.as_uri(), tmp_path / "chromium")
    assert any("boom" in line for line in console) and any("undefinedFunction" in line for line in console)


def test_page_is_self_contained(page: Path):
    text = page.read_text()
    assert "Plotly" in text and len(text) > 3_000_000  # plotly.js itself is inlined
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text), "no external assets: it must work offline"


def test_every_finished_trial_is_in_exactly_one_plot_group(study):
    frame = finished_frame(study)
    assert sorted(frame["number"]) == [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))]
    # The front is judged on refined accuracy and re-profiled latency (report.front_trials), so it
    # can differ from Optuna's best_trials; reused duplicates of a front architecture join it.
    front_archs = {t.user_attrs["arch_hash"] for t in front_trials(study)}
    assert set(frame.loc[frame["group"] == "front", "number"]) == \
        {t.number for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.user_attrs.get("arch_hash") in front_archs}
    untrained = frame[frame["trained"] == False]  # noqa: E712 (a column of booleans)
    assert len(untrained) >= 1 and set(untrained["group"]) <= {"infeasible", "not timed"}


def test_hypervolume_reference_comes_from_the_study(study, study_dir: Path):
    # The study's own reference: twice the latency of the paper's C1 as timed in the study.
    c1 = next(t for t in study.trials if t.user_attrs.get("layout") == "CC-CCCT-CCTT-CTTT")
    assert reference_for(study_dir, study) == ReferencePoint(latency_ms=2 * c1.user_attrs["latency_ms"])
    assert reference_for(study_dir, study, latency_ms=7.0) == ReferencePoint(latency_ms=7.0)
    # Measured latencies depend on the machine's load: a reference beyond the slowest trial
    # makes every trained trial count.
    slowest = max(t.values[1] for t in study.best_trials)
    history = hypervolume_history(study, ReferencePoint(latency_ms=2 * slowest))
    assert list(history["number"]) == [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert history["hypervolume"].is_monotonic_increasing and 0.0 < history["hypervolume"].iloc[-1] < 1.0


def test_a_folder_without_its_own_reference_reads_the_space_from_config_yaml(tiny_space: Path, tmp_path: Path):
    study = optuna.create_study(directions=["maximize", "minimize"])  # no trials, no recorded reference
    (tmp_path / "config.yaml").write_text(f"space: {tiny_space}\n")
    assert reference_for(tmp_path, study) == ReferencePoint(latency_ms=50.0)  # the tiny spec's report section
    (tmp_path / "config.yaml").write_text("space: &s paper\nother: *s\n")  # read as strictly as any spec
    with pytest.raises(StudyFolderError, match=r"config.yaml: line 1, column 8: YAML anchors"):
        reference_for(tmp_path, study)


def test_command_line_rerenders_from_storage(study_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "again.html"
    proc = subprocess.run([sys.executable, "-m", "search.dashboard", str(study_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = reference_for(study_dir, open_study_dir(study_dir))  # the study's own: 2 x its C1's latency
    assert out.stat().st_size > 3_000_000 and f"latency {reference.latency_ms:g} ms" in out.read_text()
    assert dashboard_main([str(tmp_path / "no_such_study")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'no_such_study'}: no study.db here (not a study folder, " \
                                      "or give --storage)\n"
