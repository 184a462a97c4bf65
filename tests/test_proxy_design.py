"""The proxy-design benchmark's pieces that need no training: the layout draw, equal cost, the table."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import proxy_design  # noqa: E402

from search.measure.macs import analytic_macs  # noqa: E402
from search.measure.proxy import PRESETS  # noqa: E402
from search.space.space import PAPER_C1, Candidate, load_space  # noqa: E402


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


# The C1 proxy's MACs per image at each recipe's width and input size (test_t_blocks checks
# analytic_macs against traced counts), and, worked out by hand, the training images that keep
# MACs x epochs x (2.6 x training images + scored images) at the default's 21951872 x 3 x 28000.
C1_PROXY_MACS = {(0.25, 32): 21_951_872, (0.5, 32): 86_681_344, (0.25, 64): 91_809_152}
EQUAL_COST_TRAIN = {
    "default": 10000, "lr-high": 10000, "lr-low": 10000,  # nothing that costs differs
    "long": 4615,    # (28000 * 3 / 6 - 2000) / 2.6
    "bigval": 8846,  # (28000 - 5000) / 2.6
    "wide": 3322,    # (28000 * 3 / 2 * 21951872 / 86681344 - 2000) / 2.6
    "px64": 3093,    # (28000 * 3 / 2 * 21951872 / 91809152 - 2000) / 2.6
}


def test_recipes_cost_what_the_default_costs(hybrid):
    base = PRESETS["default"]
    c1 = Candidate(PAPER_C1, tuple(choices[0] for choices in hybrid.widths))
    assert {name: proxy_design.equal_cost_train_size(hybrid, recipe, base)
            for name, recipe in proxy_design.RECIPES.items()} == EQUAL_COST_TRAIN
    for recipe in proxy_design.RECIPES.values():
        space = proxy_design.proxy_space(hybrid, recipe)
        assert analytic_macs(space.proxy_config(c1, num_classes=10)) == C1_PROXY_MACS[
            recipe.width_mult, recipe.img_size], recipe.name


def test_table_scores_seed_agreement_with_kendall_tau(tmp_path):
    csv = tmp_path / "rows.csv"
    agree = [0.30, 0.35, 0.40, 0.45]
    for recipe, second in (("default", [a + 0.01 for a in agree]), ("long", agree[::-1])):
        for layout, (a, b) in enumerate(zip(agree, second)):
            for seed, acc in ((0, a), (1, b)):
                proxy_design.append_row(csv, {"recipe": recipe, "scale": 0.5, "layout": f"L{layout}",
                                              "seed": seed, "train_size": 5000, "epochs": 3, "val_size": 2000,
                                              "status": "ok", "val_accuracy": acc, "val_count": 2000,
                                              "cpu_s": 10.0, "wall_s": 12.0, "device": "cpu"})
    table = proxy_design.table(proxy_design.read_rows(csv)).set_index("recipe")
    assert table.loc["default", "tau"] == pytest.approx(1.0) and table.loc["long", "tau"] == pytest.approx(-1.0)
    assert table.loc["default", "seed SD"] == pytest.approx(0.01 / 2**0.5)
    assert table.loc["default", "layouts"] == 4 and table.loc["default", "images"] == 5000
