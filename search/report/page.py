"""The shell of a self-contained HTML report (the dashboard, the findings page): Plotly inlined,
the shared styles, and a counter that marks <body data-plots-rendered> as each plot draws, so a
headless browser (and the tests) can tell a finished page from a half-drawn one."""
from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
STYLE = """body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
.hint { color: #666; font-size: .8em; }"""


def head(title: str, n_plots: int, style: str, when_all_rendered: str = "") -> str:
    """The page from `<!DOCTYPE html>` to `</head>`: `title` (already escaped), the shared
    styles then `style`, Plotly, and the counter of `n_plots`; `when_all_rendered` is JavaScript
    run once, after the last plot has drawn."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
{STYLE}
{style}
</style>
<script>{get_plotlyjs()}</script>
<script>
var ascanPlots = {{expected: {n_plots}, rendered: 0}};
function ascanRendered(id) {{
  ascanPlots.rendered += 1;
  document.body.setAttribute('data-plots-rendered', ascanPlots.rendered);
  if (ascanPlots.rendered === ascanPlots.expected) {{
{when_all_rendered}
  }}
}}
</script></head>"""


def plot(fig: go.Figure, div_id: str, height: int) -> str:
    """`fig` as a <div> for a page made with `head`: it counts itself once drawn."""
    return pio.to_html(fig.update_layout(template="plotly_white", height=height), full_html=False,
                       include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG,
                       post_script="ascanRendered('{plot_id}');")
