"""The command line's schema: help from field metadata, a saved config fed back, sweeps."""
from __future__ import annotations

import dataclasses

import pytest

from search.app import settings as settings_mod
from search.app.settings import SettingsError, all_keys, help_text, parse_args, parse_sweep, to_yaml, validate


def test_help_gives_every_key_its_default_meaning_and_choices():
    text = help_text()
    fields = settings_mod._fields()
    for key in all_keys():
        line = next(line for line in text.splitlines() if line.strip().startswith(key + " "))
        if key != "search.objectives":  # its help comes with the objective table (lead, issue #11)
            assert fields[key].metadata["help"] in line, line
    assert "proxy.preset" in text and "[smoke | default | thorough]" in text
    assert "[tpe | nsga2 | gp | random | grid]" in text


def test_choices_in_help_are_the_ones_the_code_accepts():
    from search.measure.data import DATASETS
    from search.measure.proxy import PRESETS

    fields = settings_mod._fields()
    assert fields["data.name"].metadata["choices"] == DATASETS
    assert fields["proxy.preset"].metadata["choices"] == tuple(PRESETS)
    assert fields["search.sampler"].metadata["choices"] == settings_mod.SAMPLERS


def test_proxy_score_choices_are_the_scores_a_training_gives():
    from search.engine.objectives import PROXY_SCORES
    from search.measure.proxy import SCORES, ProxySettings

    assert settings_mod._fields()["proxy.score"].metadata["choices"] == tuple(PROXY_SCORES) == SCORES
    assert ProxySettings().score == "accuracy" and parse_args(["space=paper"]).proxy.score is None  # the preset's
    assert parse_args(["space=paper", "proxy.score=tse"]).proxy.score == "tse"
    with pytest.raises(SettingsError, match=r"^proxy.score='tse_em': choose one of .* \(did you mean 'tse_ema'\?\)$"):
        parse_args(["space=paper", "proxy.score=tse_em"])


def test_saved_config_reruns_with_overrides(tmp_path):
    original = parse_args(["space=paper", "search.n_trials=7", "proxy.preset=smoke", "ray.num_cpus=2",
                           "budget.max_macs=1e9", "search.objectives=[accuracy,latency,macs]"])
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(original))
    assert parse_args([f"config={saved}"]) == original
    rerun = parse_args([f"config={saved}", "search.n_trials=9"])
    assert rerun == dataclasses.replace(original, search=dataclasses.replace(original.search, n_trials=9))


def test_sweep_gives_one_run_per_value_and_lists_stay_lists():
    runs = parse_sweep(["space=hybrid,paper", "search.objectives=[accuracy,latency,macs]", "search.seed=0,1"])
    assert [(r.space, r.search.seed) for r in runs] == [("hybrid", 0), ("hybrid", 1), ("paper", 0), ("paper", 1)]
    assert all(r.search.objectives == ["accuracy", "latency", "macs"] for r in runs)
    assert len(parse_sweep(["space=paper"])) == 1


def test_sweep_over_study_names_is_allowed_but_one_shared_name_is_not():
    runs = parse_sweep(["space=hybrid,paper", "search.study_name=a,b"])
    assert {r.search.study_name for r in runs} == {"a", "b"}
    with pytest.raises(SettingsError, match="one name for the 2 runs"):
        parse_sweep(["space=hybrid,paper", "search.study_name=a"])


@pytest.mark.parametrize("name", ["hybrid-cifar10-default-s0", "run_1.v2", "a+b=c"])
def test_safe_study_names_pass(name):
    settings_mod.check_study_name(name)


def test_validate_accepts_good_settings_and_creates_nothing(tmp_path):
    results = tmp_path / "deep" / "results"
    s = parse_args(["space=paper", f"results_dir={results}", f"profile.cache={results}/cache/p.sqlite",
                    f"search.storage=sqlite:///{tmp_path}/study.db", "proxy.device=cpu", "profile.device=auto"])
    validate(s)
    assert list(tmp_path.iterdir()) == []


def test_profile_overrides_reach_the_latency_settings():
    from search.app.campaign import Campaign

    campaign = Campaign.from_settings(parse_args(["space=paper", "dry_run=true", "profile.dtype=float16",
                                         "profile.compile=true", "profile.batch_size=16"]))
    latency = campaign.latency_settings(threads=2)
    assert (latency["dtype"], latency["compile"], latency["batch_size"]) == ("float16", True, 16)
    plain = Campaign.from_settings(parse_args(["space=paper", "dry_run=true"])).latency_settings(threads=2)
    assert (plain["dtype"], plain["compile"], plain["batch_size"]) == ("float32", False, 1)
