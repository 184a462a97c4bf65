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
        if key != "search.objectives":  # its help comes with the objective table
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


def _help_defaults() -> dict[str, str]:
    """`run_search.py help`'s shown default of every key."""
    lines = [line.strip() for line in help_text().splitlines() if line.startswith("  ")]
    return {line.split()[0]: line.split(None, 1)[1].split(";")[0] for line in lines}


@pytest.mark.parametrize("prefix, wing", [
    ("profile", "search.measure.settings:LatencySettings"), ("proxy", "search.measure.settings:ProxySettings"),
    ("refine", "search.engine.settings:RefineSettings"), ("budget", "search.space.settings:Budget")])
def test_each_default_is_the_wings_own(prefix, wing):
    """A key that is a wing's setting shows the wing's default and help, or (an override)
    None with the wing's help: the CLI declares no default of its own."""
    import importlib

    module, name = wing.split(":")
    wing_fields = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    shown, fields = _help_defaults(), settings_mod._fields()
    keys = [k for k in all_keys() if k.startswith(prefix + ".") and k.split(".", 1)[1] in wing_fields]
    assert len(keys) >= 3
    for key in keys:
        wing_field = wing_fields[key.split(".", 1)[1]]
        assert fields[key].metadata["help"].startswith(wing_field.metadata["help"]), key
        if shown[key] != "None":
            assert shown[key] == repr(wing_field.default), key


def test_cli_latency_defaults_are_what_the_profiler_uses_alone():
    from search.measure.settings import LatencySettings

    profile = parse_args(["space=paper"]).profile
    alone = LatencySettings()
    assert (profile.min_time_s, profile.min_iters) == (alone.min_time_s, alone.min_iters) == (1.0, 10)


def test_cuda_n_is_one_rule_for_the_command_line_and_the_profiler():
    """profile.device=cuda:1 passes the command line's check only because the profiler takes it too."""
    from search.measure.profile_cache import ProfileError
    from search.measure.settings import LatencySettings

    assert parse_args(["space=paper", "profile.device=cuda:1"]).profile.device == "cuda:1"
    assert LatencySettings(device="cuda:1").device == "cuda:1"
    with pytest.raises(SettingsError, match="profile.device='cuda1': choose auto, cpu, cuda or cuda:N"):
        parse_args(["space=paper", "profile.device=cuda1"])
    with pytest.raises(ProfileError, match="choose auto, cpu, cuda or cuda:N"):
        LatencySettings(device="cuda1")


def test_the_schema_is_read_without_torch():
    """`run_search.py help` and every bad-input message come before any heavy import."""
    import subprocess
    import sys

    code = "import sys, search.app.settings as s; s.help_text(); print(sorted({'torch', 'optuna', 'ascan'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(("text", "seconds"), [("1200", 1200.0), ("90s", 90.0), ("20m", 1200.0), ("20min", 1200.0),
                                               ("1.5h", 5400.0), (None, None)])
def test_a_time_budget_is_read_as_a_duration(text, seconds):
    assert settings_mod.duration_s(text) == seconds


@pytest.mark.parametrize("text", ["abc", "0", "-5m", "20 minutes", "40d"])
def test_a_bad_time_budget_is_one_line_naming_the_key(text):
    with pytest.raises(SettingsError, match=r"^search\.time_budget=.*expected a duration"):
        parse_args(["space=paper", f"search.time_budget={text}"])
