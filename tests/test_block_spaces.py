"""The paper's block ablation (spaces/blocks.yaml, Table 1) and block-order ablation
(spaces/order.yaml, Table 9): counts, the `c_before_t: false` rule, and smoke studies."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import run_search
from search.space.space import load_space
from search.space.spec import SpecError

from studies import FAST, REPO, complete, load

SPACES = REPO / "spaces"


def test_blocks_space_is_c1_with_three_c_by_three_t_blocks():
    space = load_space("blocks")
    assert space.count() == 9
    assert {(c.c_block, c.t_block) for c in space.enumerate()} == {
        (c, t) for c in ("fused_mbconv", "mbconv", "convnext") for t in ("attention", "multi_axis", "hierarchical")}
    assert {c.layout for c in space.enumerate()} == {"CC-CCCT-CCTT-CTTT"}


def test_order_space_is_c1_and_symmetric_in_both_orders():
    space = load_space("order")
    assert space.count() == 4
    assert space.count_by_family() == {"symmetric": 2, "asymmetric": 2}  # order never changes the family
    configs = [space.target_config(c) for c in space.enumerate()]
    assert [c.layout for c in configs] == ["CC-CCCT-CCTT-CTTT", "CC-TCCC-TTCC-TTTC", "CC-CCCC-CCTT-TTTT",
                                           "CC-CCCC-TTCC-TTTT"]
    assert len({c.arch_hash for c in configs}) == 4


def _spec(tmp_path: Path, name: str, **changes) -> Path:
    data = yaml.safe_load((SPACES / f"{name}.yaml").read_text())
    data.update(changes)
    data = {key: value for key, value in data.items() if value is not None}  # None: drop the key
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, key, message", [
    (dict(layouts=["CC-TCCC-CCTT-CTTT"], constraints={}), "layouts[0]", "puts a T block before a C block"),
    (dict(layouts=["CC-TCTC-CCTT-CTTT"]), "layouts[0]", "mixes C and T blocks inside a stage"),
    (dict(layouts=None, stages=[{"depth": 2}, {"depth": 4}, {"depth": 4}, {"depth": 4}]), "constraints.c_before_t",
     "needs a `layouts:` list"),
    (dict(constraints={"c_before_t": "no"}), "constraints.c_before_t", "expected true or false"),
])
def test_order_rules_are_one_line_errors(tmp_path: Path, changes: dict, key: str, message: str):
    path = _spec(tmp_path, "order", **changes)
    with pytest.raises(SpecError) as error:
        load_space(path)
    assert key in str(error.value) and message in str(error.value) and "\n" not in str(error.value)


# The spaces' layouts, blocks and constraints on small networks, so a smoke study takes seconds.
SMALL = dict(stages=[{"width": 32}, {"width": 64}, {"width": 64}, {"width": 128}],
             network={"stem_width": 32, "head_width": 128, "head_dim": 32},
             target={"img_size": 64, "batch_size": 1, "dtype": "float32", "device": "cpu", "channels_last": True,
                     "compile": False})


@pytest.mark.slow  # a whole in-process search: minutes on a loaded 2-core machine
@pytest.mark.parametrize("name, n_trials", [("order", 4), ("blocks", 2)])
def test_smoke_study_runs_inline(tmp_path: Path, monkeypatch, name: str, n_trials: int):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    spec = _spec(tmp_path, name, **SMALL)
    results = tmp_path / "results"
    assert run_search.main([f"space={spec}", "executor=inline", "search.sampler=grid", f"search.n_trials={n_trials}",
                            f"results_dir={results}", *FAST, "proxy.epochs=1", "proxy.train_size=128",
                            "proxy.val_size=100"]) == 0
    done = complete(load(results, name))
    assert len(done) == n_trials
    assert all(t.user_attrs["macs"] > 0 and t.user_attrs["latency_ms"] > 0 for t in done)
    if name == "order":  # every order ran, T-first included
        assert {t.user_attrs["layout"] for t in done} == {c.layout for c in load_space(spec).enumerate()}
