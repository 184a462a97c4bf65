"""The proxy-design benchmark's pieces that need no training: the layout draw, equal cost, the table."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import proxy_design  # noqa: E402

from search.measure.proxy import PRESETS  # noqa: E402
from search.space.space import load_space  # noqa: E402


@pytest.fixture(scope="module")
def hybrid():
    return load_space("hybrid")


def test_layouts_are_drawn_by_seed_from_both_families(hybrid):
    drawn = proxy_design.draw_layouts(hybrid, 10, seed=0)
    assert drawn == proxy_design.draw_layouts(hybrid, 10, seed=0)  # reproducible
    assert drawn != proxy_design.draw_layouts(hybrid, 10, seed=1)
    assert len({c.layout for c in drawn}) == 10 and all(c in hybrid for c in drawn)
    assert sorted(hybrid.family(c) for c in drawn) == ["asymmetric"] * 5 + ["symmetric"] * 5
    with pytest.raises(ValueError, match="--layouts 200: space hybrid has only 125"):
        proxy_design.draw_layouts(hybrid, 200, seed=0)


def test_recipes_cost_what_the_default_costs(hybrid):
    base = PRESETS["default"]

    def cost(recipe: proxy_design.Recipe) -> float:
        return proxy_design.recipe_cost(hybrid, recipe, proxy_design.equal_cost_train_size(hybrid, recipe, base))

    assert proxy_design.equal_cost_train_size(hybrid, proxy_design.RECIPES["default"], base) == base.train_size
    for recipe in proxy_design.RECIPES.values():
        assert cost(recipe) == pytest.approx(cost(proxy_design.RECIPES["default"]), rel=1e-3), recipe.name
    # Scoring counts: the 2k head after each epoch and the rest of the 10k slice once.
    assert proxy_design.scored_images(3, 10_000, 2_000) == 14_000
    sizes = {name: proxy_design.equal_cost_train_size(hybrid, r, base) for name, r in proxy_design.RECIPES.items()}
    assert 30_000 < sizes["one-epoch"] < 33_000 and 15_000 < sizes["two-epochs"] < 16_000
    assert sizes["px64"] < sizes["default"] / 2  # four times the pixels per image


def _rows(csv, recipe, first, second, score="accuracy"):
    for layout, (a, b) in enumerate(zip(first, second)):
        for seed, value in ((0, a), (1, b)):
            proxy_design.append_row(csv, {"recipe": recipe, "scale": 1.0, "layout": f"L{layout}", "seed": seed,
                                          "train_size": 5000, "epochs": 3, "img_size": 32, "status": "ok",
                                          score: value, "cpu_s": 10.0, "wall_s": 12.0})


def test_table_scores_seed_agreement_with_kendall_tau_and_its_interval(tmp_path):
    csv = tmp_path / "rows.csv"
    agree = [0.30, 0.35, 0.40, 0.45, 0.50, 0.55]
    _rows(csv, "default", agree, [a + 0.01 for a in agree])
    _rows(csv, "long", agree, agree[::-1])
    table = proxy_design.table(proxy_design.read_rows(csv)).set_index("recipe")
    assert table.loc["default", "tau"] == pytest.approx(1.0) and table.loc["long", "tau"] == pytest.approx(-1.0)
    assert table.loc["default", "tau low"] == pytest.approx(1.0)  # every resample agrees perfectly
    assert table.loc["long", "tau low"] <= table.loc["long", "tau"] <= table.loc["long", "tau high"]
    assert table.loc["default", "seed SD"] == pytest.approx(0.01 / 2**0.5)
    assert table.loc["default", "layouts"] == 6 and table.loc["default", "images"] == 5000
    assert 0.95 < table.loc["default", "ICC"] <= 1 and table.loc["long", "ICC"] < 0  # layouts explain none of it
    assert table.loc["default", "tau pred mean2"] >= table.loc["default", "tau pred 1"]
    _rows(csv, "short", [0.3, 0.4], [0.31, 0.42])  # two layouts: a seed SD, but no tau
    short = proxy_design.table(proxy_design.read_rows(csv)).set_index("recipe").loc["short"]
    assert short["seed SD"] > 0 and math.isnan(short["tau"]) and math.isnan(short["tau low"])


def test_icc_is_the_layouts_share_of_the_variance():
    rng = np.random.default_rng(0)
    layouts = rng.normal(0, 1.0, 4000)[:, None]  # layout variance 1, seed variance 1: ICC 0.5
    pairs = layouts + rng.normal(0, 1.0, (4000, 2))
    assert proxy_design.icc(pairs) == pytest.approx(0.5, abs=0.05)
    assert proxy_design.predicted_tau(1.0) == pytest.approx(1.0) and proxy_design.predicted_tau(0.0) == 0.0


def test_the_plan_interleaves_recipes_layout_by_layout(hybrid):
    recipes = list(proxy_design.RECIPES.values())
    order = proxy_design.plan(hybrid, recipes, layouts=3, layout_seed=0, base_seed=0, scale=1.0)
    assert len(order) == 3 * 2 * len(recipes)
    first_layout = order[: 2 * len(recipes)]
    assert len({layout for _, layout, _ in first_layout}) == 1  # one layout's both seeds, every recipe, first
    assert {r.name for r, _, _ in first_layout} == set(proxy_design.RECIPES)
