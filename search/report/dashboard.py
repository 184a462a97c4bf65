"""The study dashboard: one self-contained HTML page for choosing a network from the front.

Four Plotly figures and a sortable table of the front, all read back from the Optuna storage
through `search.report`, so `python -m search.dashboard results/<study>` makes the page again
at any time. Plotly's JavaScript is inlined: the page works offline and can be mailed.

Every finished trial is one marker on the accuracy-latency plot, in exactly one group: on the
front, dominated, infeasible (over budget, so never trained: accuracy 0), or not timed (over
budget before profiling: its latency is unknown, so it sits on a marked edge of the plot).
Once Plotly has drawn, the page writes the number of markers into `<body data-plotted-trials>`
so a headless browser can check it against the storage.
"""
from __future__ import annotations

import argparse
import html
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import optuna
import pandas as pd
import plotly.graph_objects as go

from search.engine.objectives import OBJECTIVES, Objective
from search.engine.record import TrialRecord
from search.report import page
from search.report.files import write_atomically
from search.report.tables import (ReferencePoint, StudyFolderError, c1_reference, front_frame, front_trials, hypervolume_history,
                     latency_warning, objective_names, open_study_dir, study_reference, trials_frame)
from search.space.space import PAPER_C1, PAPER_SYMMETRIC

FAMILY_COLOURS = {"asymmetric": "#d1495b", "symmetric": "#2e86ab"}
OTHER_COLOUR = "#7a7a7a"
MUTED_GREY = "#b0b0b0"
GROUPS = ("front", "dominated", "infeasible", "not timed")
PLOT_IDS = ("pareto", "hypervolume", "macs-latency", "t-placement")
REFERENCE_NAMES = {"-".join(PAPER_C1): "paper's C1", "-".join(PAPER_SYMMETRIC): "paper's symmetric example"}
P90 = Objective("latency_p90", "minimize", "latency_p90_ms", "p90 (ms)")  # a column, not an objective
# What the plots read; a study made by hand may lack some (then they are blank, not errors).
NEEDED_COLUMNS = ["accuracy", "accuracy_mean", "accuracy_se", "replicates", "latency_ms", "latency_p90_ms",
                  "latency_contamination",
                  "latency_iqr_ms", "latency_ci_low_ms", "latency_ci_high_ms", "macs", "params", "layout", "family",
                  "t_per_stage", "arch_hash", "feasible", "reference"]


# ----------------------------------------------------------------- data
def finished_frame(study: optuna.Study) -> pd.DataFrame:
    """Finished trials, each tagged with its plot group and a hover text."""
    frame = trials_frame(study)
    if frame.empty:
        return frame
    frame = frame[frame["state"] == "COMPLETE"].reindex(columns=list(dict.fromkeys([*frame, *NEEDED_COLUMNS])))
    if frame.empty:
        return frame
    front_archs = {TrialRecord.load(t).arch_hash for t in front_trials(study)}
    on_front = set(frame.loc[frame["arch_hash"].isin(front_archs), "number"])  # reused duplicates too
    frame["family"] = frame["family"].fillna("unknown")
    frame["group"] = [
        "front" if number in on_front else "not timed" if not math.isfinite(latency)
        else "infeasible" if feasible is False else "dominated"
        for number, latency, feasible in zip(frame["number"], frame["latency_ms"], frame["feasible"])]
    # Never trained, so no accuracy: drawn at 0, the value the sampler was told.
    untrained = frame["group"].isin(["infeasible", "not timed"])
    frame.loc[untrained, "accuracy"] = frame.loc[untrained, "accuracy"].fillna(0.0)
    # Plotted: the refined accuracy (mean over replicates) with its standard error, and the
    # latency with its confidence interval (or, for older measurements, the IQR as a spread).
    frame["y"] = frame["accuracy_mean"].fillna(frame["accuracy"])
    frame["y_err"] = frame["accuracy_se"].fillna(0.0)
    low, high = frame["latency_ci_low_ms"], frame["latency_ci_high_ms"]
    spread = frame["latency_iqr_ms"].fillna(0.0) / 2
    frame["x_err_minus"] = (frame["latency_ms"] - low).fillna(spread).clip(lower=0)
    frame["x_err_plus"] = (high - frame["latency_ms"]).fillna(spread).clip(lower=0)
    frame["hover"] = [_hover(row) for row in frame.to_dict("records")]
    return frame


def _number(value: object, scale: float = 1.0, fmt: str = "{:.2f}", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "?"
    return fmt.format(float(value) / scale) + unit


def _hover(row: dict) -> str:
    lines = [f"<b>trial {row['number']}</b> · {row.get('layout', '?')} ({row['family']})",
             f"accuracy {_number(row.get('accuracy'), fmt='{:.3f}')} · latency {_number(row.get('latency_ms'))} ms"
             f" (p90 {_number(row.get('latency_p90_ms'))} ms)",
             f"MACs {_number(row.get('macs'), 1e6, '{:.1f}', ' M')}"
             f" · params {_number(row.get('params'), 1e6, unit=' M')}"
             f" · T per stage {row.get('t_per_stage', '?')}"]
    if row.get("reference") is True:
        lines.append("the paper's reference layout")
    if isinstance(row.get("reused_from"), (int, float)) and math.isfinite(row["reused_from"]):
        lines.append(f"same architecture as trial {int(row['reused_from'])}: result reused")
    if isinstance(row.get("infeasible_reason"), str):
        lines.append(f"not trained: {html.escape(row['infeasible_reason'])}")
    low, high = row.get("latency_ci_low_ms"), row.get("latency_ci_high_ms")
    if isinstance(low, float) and isinstance(high, float) and math.isfinite(low) and math.isfinite(high):
        lines.append(f"latency 95% interval {low:.2f}–{high:.2f} ms")
    if isinstance(row.get("latency_contamination"), str):
        lines.append(f"latency suspect, the machine was busy: {html.escape(row['latency_contamination'])}")
    return "<br>".join(lines)


def _marker_sizes(params: pd.Series, largest: float) -> list[float]:
    """Area grows with parameters; trials without a count get the smallest marker."""
    return [7 + 17 * math.sqrt(p / largest) if largest > 0 and p == p else 7 for p in params]


# ----------------------------------------------------------------- figures
def pareto_figure(frame: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    timed = frame["latency_ms"].replace(math.inf, math.nan)
    edge = (timed.max() if timed.notna().any() else 1.0) * 1.08  # where untimed trials are drawn
    largest = float(frame["params"].max()) if frame["params"].notna().any() else 0.0
    front = frame[frame["group"] == "front"].sort_values("latency_ms")
    if len(front):
        fig.add_trace(go.Scatter(x=front["latency_ms"], y=front["y"], mode="lines", line_shape="hv",
                                 line=dict(color="#333", width=1, dash="dot"), hoverinfo="skip", name="front line"))
    for group in GROUPS:
        for family, part in frame[frame["group"] == group].groupby("family", sort=True):
            muted = group != "front"
            timed = group != "not timed"
            x = part["latency_ms"] if timed else [edge] * len(part)
            colour = FAMILY_COLOURS.get(family, OTHER_COLOUR)
            fig.add_trace(go.Scatter(
                x=x, y=part["y"], mode="markers", name=f"{group} · {family} ({len(part)})",
                text=part["hover"], hovertemplate="%{text}<extra></extra>",
                error_y=dict(type="data", array=part["y_err"], visible=True, thickness=1, width=3, color=colour),
                error_x=dict(type="data", array=part["x_err_plus"], arrayminus=part["x_err_minus"],
                             visible=timed, thickness=1, width=3, color=colour),
                marker=dict(size=_marker_sizes(part["params"], largest),
                            color=colour, opacity=0.35 if muted else 0.95,
                            symbol={"infeasible": "diamond-open", "not timed": "x"}.get(group, "circle"),
                            line=dict(width=0 if muted else 1.5, color="#222"))))
    if (frame["group"] == "not timed").any():
        fig.add_vline(x=edge, line=dict(color=MUTED_GREY, dash="dash"), annotation_text="not timed",
                      annotation_position="top left")
    # The paper's reference layouts, as annotations (they are markers of their groups already).
    references = frame[(frame["reference"] == True) & frame["latency_ms"].map(math.isfinite)]  # noqa: E712
    for row in references.drop_duplicates("arch_hash").to_dict("records"):
        name = REFERENCE_NAMES.get(row["layout"], "paper's reference")
        fig.add_annotation(x=row["latency_ms"], y=row["y"], text=f"{name}<br>{row['layout']}", showarrow=True,
                           arrowhead=2, ax=40, ay=-40, font=dict(size=11), bgcolor="rgba(255,255,255,0.8)")
    fig.update_layout(title="Accuracy vs latency: every finished trial (marker area ~ params; bars: accuracy ± SE, "
                            "latency CI)",
                      xaxis_title="latency, median (ms)", yaxis_title="proxy accuracy (mean of replicates)",
                      legend_title="group · family")
    return fig


def hypervolume_figure(history: pd.DataFrame, reference: ReferencePoint) -> go.Figure:
    fig = go.Figure(go.Scatter(x=history["number"], y=history["hypervolume"], mode="lines+markers", line_shape="hv",
                               hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>"))
    fig.update_layout(
        title=f"Hypervolume after each finished trial (reference: accuracy 0, latency {reference.latency_ms:g} ms)",
        xaxis_title="trial", yaxis_title="hypervolume (normalised error x latency)", yaxis_rangemode="tozero")
    return fig


def macs_latency_figure(frame: pd.DataFrame) -> go.Figure:
    timed = frame[frame["latency_ms"].map(math.isfinite) & frame["macs"].notna()]
    fig = go.Figure()
    for family, part in timed.groupby("family", sort=True):
        on_front = part["group"] == "front"
        fig.add_trace(go.Scatter(
            x=part["macs"] / 1e6, y=part["latency_ms"], mode="markers", name=family, text=part["hover"],
            hovertemplate="%{text}<extra></extra>",
            marker=dict(size=10, color=FAMILY_COLOURS.get(family, OTHER_COLOUR), opacity=0.8,
                        line=dict(width=[2 if f else 0 for f in on_front], color="#222"))))
    # Spearman's rho is Pearson's on ranks (pandas' own method would need scipy).
    rho = timed["macs"].rank().corr(timed["latency_ms"].rank()) if len(timed) > 2 else math.nan
    note = f" (Spearman rank correlation {rho:.2f})" if rho == rho else ""
    fig.update_layout(title=f"MACs are not latency: MACs vs measured latency{note}; outlined: front",
                      xaxis_title="MACs (millions)", yaxis_title="latency, median (ms)", legend_title="family")
    return fig


def t_counts_by_group(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per-stage T counts, one row per architecture: front members, and all the others."""
    stages = [f"stage {i + 1}" for i in range(4)]
    known = frame.dropna(subset=["t_per_stage"])
    arch = known["arch_hash"].fillna(known["number"].astype(str))
    on_front = arch.isin(set(arch[known["group"] == "front"]))
    known, on_front = known[~arch.duplicated()], on_front[~arch.duplicated()]  # an architecture counts once
    return {name: pd.DataFrame([[int(t) for t in s.split("-")] for s in part["t_per_stage"]], columns=stages,
                               dtype=float)
            for name, part in (("front", known[on_front]), ("rest", known[~on_front]))}


def t_placement_figure(frame: pd.DataFrame) -> go.Figure:
    fig, groups = go.Figure(), t_counts_by_group(frame)
    for name, colour in (("front", "#222222"), ("rest", MUTED_GREY)):
        counts = groups[name]
        hover = [f"{stage}: mean {counts[stage].mean():.2f} T over {len(counts)} architectures<br>"
                 + ", ".join(f"{t} T: {n}" for t, n in counts[stage].value_counts().sort_index().items())
                 for stage in counts.columns]
        fig.add_trace(go.Bar(x=list(counts.columns), y=counts.mean().fillna(0).tolist(), marker_color=colour,
                             name=f"{name} ({len(counts)} architectures)", hovertext=hover, hoverinfo="text"))
    fig.update_layout(title="Where the T blocks sit: mean T blocks per stage, front vs the rest",
                      barmode="group", yaxis_title="T blocks per stage (mean)")
    return fig


# ----------------------------------------------------------------- page
def front_table(front: pd.DataFrame, objectives: list[str], export_hint: str) -> str:
    """The front as an HTML table: sortable by any column, layouts and export commands copyable.
    One column per objective of the study (formatted by `search.objectives`), then the costs
    that are not objectives."""
    if front.empty:
        return "<p>No feasible finished trial yet: the front is empty.</p>"
    shown = [OBJECTIVES[name] for name in objectives]
    shown += [o for o in (P90, OBJECTIVES["macs"], OBJECTIVES["params"]) if o not in shown]
    columns = ["trial", "layout", "family", *(o.label for o in shown), "tied with", "T per stage", "export"]
    head = "".join(f'<th data-col="{i}">{html.escape(c)}</th>' for i, c in enumerate(columns))
    rows = []
    for row in front.to_dict("records"):
        command = export_hint.format(trial=row["number"])
        cells = [(row["number"], str(row["number"])), (row["layout"], _copyable(row["layout"])),
                 (row["family"], html.escape(str(row["family"]))),
                 *(_cell(row, o) for o in shown), (row.get("tied_with") or "", html.escape(row.get("tied_with") or "")),
                 (row["t_per_stage"], html.escape(str(row["t_per_stage"]))), (command, _copyable(command))]
        rows.append("<tr>" + "".join(f'<td data-value="{html.escape(str(v))}">{shown}</td>' for v, shown in cells)
                    + "</tr>")
    return (f'<table id="front-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            '<p class="hint">Click a column to sort; click a layout or command to copy it.</p>')


def _cell(row: dict, objective: Objective) -> tuple[object, str]:
    """An objective's (sort value, shown text); accuracy as the refined mean ± SE (n)."""
    mean = row.get("accuracy_mean")
    if objective.field == "accuracy" and isinstance(mean, float) and math.isfinite(mean):
        mean, se, n = row["accuracy_mean"], row["accuracy_se"], int(row["replicates"])
        return mean, f"{mean:.4f} ± {se:.4f} (n={n})"
    return row.get(objective.field), objective.format(row.get(objective.field))


def _copyable(text: str) -> str:
    return f'<code class="copy" title="click to copy">{html.escape(str(text))}</code>'


def _summary(study: optuna.Study, frame: pd.DataFrame, history: pd.DataFrame, reference: ReferencePoint) -> str:
    states = trials_frame(study)["state"].value_counts() if study.trials else pd.Series(dtype=int)
    machines = sorted({" · ".join(text.format(fp[key]) for key, text in
                                  (("device_name", "{}"), ("torch", "torch {}"), ("threads", "{} threads"))
                                  if key in fp)
                       for fp in frame.get("profile_fingerprint", []) if isinstance(fp, dict)})
    device = " | ".join(machines) + (f" ({len(machines)} environments: their latencies do not compare)"
                                     if len(machines) > 1 else "")
    facts = {
        "study": study.study_name, "space": study.user_attrs.get("space", "?"),
        "objectives": ", ".join(study.user_attrs.get("objectives", [])),
        "finished": len(frame),
        "on the front": frame.loc[frame["group"] == "front", "arch_hash"].nunique() if len(frame) else 0,
        "infeasible": int(frame["group"].isin(["infeasible", "not timed"]).sum()) if len(frame) else 0,
        "failed": int(states.get("FAIL", 0)), "running": int(states.get("RUNNING", 0)),
        "hypervolume": f"{history['hypervolume'].iloc[-1]:.4f}" if len(history) else "0",
        "HV reference latency": f"{reference.latency_ms:.1f} ms ({study.user_attrs.get('hv_reference', 'as given')})",
        "latency measured on": device or "?",
        **({"latency warning": warning} if (warning := latency_warning(study)) else {}),
        "rendered": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return "".join(f"<div><span>{html.escape(k)}</span><b>{html.escape(str(v))}</b></div>" for k, v in facts.items())


def render_dashboard(study: optuna.Study, reference: ReferencePoint, study_dir: Path | None = None) -> str:
    frame = finished_frame(study)
    history = hypervolume_history(study, reference)
    figures = [pareto_figure(frame), hypervolume_figure(history, reference), macs_latency_figure(frame),
               t_placement_figure(frame)] if len(frame) else []
    plots = "".join(f'<section class="plot">{page.plot(fig, div_id, height=520)}</section>'
                    for div_id, fig in zip(PLOT_IDS, figures))
    space = "".join(c if c.isalnum() else "_" for c in str(study.user_attrs.get("space", "net"))).lower()
    folder = study_dir or f"results/{study.study_name}"
    hint = f"python -m search.export {folder} --trial {{trial}} --name ascan_{space}_t{{trial}}"
    title = html.escape(f"AsCAN search: {study.study_name}")
    return PAGE.format(
        head=page.head(title, len(figures), STYLE, when_all_rendered=WHEN_ALL_RENDERED), title=title,
        n_plots=len(figures), finished=len(frame), summary=_summary(study, frame, history, reference),
        plots=plots or "<p>No finished trial yet.</p>",
        table=front_table(_front_rows(study, frame), objective_names(study), hint))


def _front_rows(study: optuna.Study, frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    front = front_frame(study).set_index("number", drop=False)
    return frame.loc[list(front.index)].assign(tied_with=front["tied_with"])


def write_dashboard(study: optuna.Study, path: Path, reference: ReferencePoint) -> Path:
    """Write the dashboard of `study` to `path` (atomically: a reader never sees half a page)."""
    path = Path(path)
    return write_atomically(path, render_dashboard(study, reference, study_dir=path.parent))


# ----------------------------------------------------------------- reading a study folder
def reference_for(folder: Path, study: optuna.Study, latency_ms: float | None = None) -> ReferencePoint:
    """The hypervolume reference: as given, else the study's own (recorded, or 2 x its C1's
    latency: `report.study_reference`), else the study's space's `report: reference_latency_ms`
    (the space is found from `config.yaml` in the folder, else the study's `space` attribute)."""
    if latency_ms is not None:
        return ReferencePoint(latency_ms=latency_ms)
    if "hv_reference_latency_ms" in study.user_attrs or c1_reference(study) is not None:
        return study_reference(study, ReferencePoint(latency_ms=math.inf))
    from search.space import safe_yaml  # only the command line needs to read specs
    from search.space.space import SpecError, load_space

    config = Path(folder) / "config.yaml"
    try:
        settings = safe_yaml.load(config.read_bytes()) if config.is_file() else None
    except safe_yaml.YamlError as err:
        raise StudyFolderError(f"{config}: {err}") from None
    recorded = settings.get("space") if isinstance(settings, dict) else None
    for name in filter(None, (recorded, study.user_attrs.get("space"))):
        try:
            return ReferencePoint(latency_ms=load_space(name).reference_latency_ms)
        except SpecError:
            continue
    raise StudyFolderError(f"{folder}: cannot find this study's space for the hypervolume reference; "
                         "give --reference-latency-ms")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path, help="results/<study>")
    parser.add_argument("--storage", help="Optuna storage URL, when the study is not in <study_dir>/study.db")
    parser.add_argument("--reference-latency-ms", type=float, help="hypervolume reference (default: the space's)")
    parser.add_argument("--out", type=Path, help="default: <study_dir>/dashboard.html")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_study_dir(args.study_dir, args.storage)
        reference = reference_for(args.study_dir, study, args.reference_latency_ms)
    except StudyFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(write_dashboard(study, args.out or args.study_dir / "dashboard.html", reference))
    return 0


STYLE = """#summary { display: flex; flex-wrap: wrap; gap: .4em 1.6em; margin-bottom: 1em; }
#summary div { display: flex; flex-direction: column; } #summary span { font-size: .75em; color: #666; }
.plot { margin: 1em 0; border-top: 1px solid #eee; }
table { border-collapse: collapse; width: 100%; font-size: .9em; }
th, td { padding: .3em .6em; border-bottom: 1px solid #ddd; text-align: left; }
th { cursor: pointer; background: #f5f5f5; user-select: none; } th.asc::after { content: " \\25B2"; }
th.desc::after { content: " \\25BC"; } code.copy { cursor: copy; background: #f3f3f3; padding: .1em .3em; }
code.copied { background: #cde8cd; } td:nth-child(2) code { white-space: nowrap; }"""
WHEN_ALL_RENDERED = """  document.body.setAttribute('data-plotted-trials',
                             document.querySelectorAll('#pareto .scatterlayer path.point').length);"""
PAGE = """{head}
<body data-finished-trials="{finished}" data-plots-expected="{n_plots}">
<h1>{title}</h1>
<div id="summary">{summary}</div>
<h2>Front</h2>
{table}
<h2>Plots</h2>
{plots}
<script>
document.querySelectorAll('#front-table th').forEach(function (th) {{
  th.addEventListener('click', function () {{
    var tbody = th.closest('table').tBodies[0], col = +th.dataset.col, asc = !th.classList.contains('asc');
    th.parentNode.querySelectorAll('th').forEach(function (h) {{ h.classList.remove('asc', 'desc'); }});
    th.classList.add(asc ? 'asc' : 'desc');
    var key = function (row) {{ var v = row.cells[col].dataset.value, n = parseFloat(v); return isNaN(n) ? v : n; }};
    Array.from(tbody.rows).sort(function (a, b) {{
      var x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    }}).forEach(function (row) {{ tbody.appendChild(row); }});
  }});
}});
document.querySelectorAll('code.copy').forEach(function (code) {{
  code.addEventListener('click', function () {{
    var done = function () {{
      code.classList.add('copied'); setTimeout(function () {{ code.classList.remove('copied'); }}, 800);
    }};
    var range = document.createRange(); range.selectNodeContents(code);
    var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    if (navigator.clipboard) navigator.clipboard.writeText(code.textContent).then(done, done); else done();
  }});
}});
</script>
</body></html>
"""

if __name__ == "__main__":
    sys.exit(main())
