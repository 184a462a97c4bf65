"""Search spaces: exact counts, enumeration, Optuna sampling, the family rule, bad specs."""
from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from ascan.config import ArchConfig
from search.space.space import SPACES_DIR, Candidate, SpecError, describe, layout_family, load_space, main
from search.space.spec import display_path

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
optuna.logging.set_verbosity(optuna.logging.WARNING)

SHIPPED = {"hybrid": 125, "symmetric": 27, "asymmetric": 98, "paper": 10, "blocks": 9, "order": 4}
C1 = ("CC", "CCCT", "CCTT", "CTTT")
SYMMETRIC_EXAMPLE = ("CC", "CCCC", "CCTT", "TTTT")


def hybrid_spec() -> dict:
    return yaml.safe_load((SPACES_DIR / "hybrid.yaml").read_text())


def write(tmp_path: Path, spec: dict | str, name: str = "custom") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


def with_changes(**stage_rules_and_constraints) -> dict:
    """hybrid.yaml with some stages and constraints replaced."""
    spec = hybrid_spec()
    for i, rule in stage_rules_and_constraints.pop("stages", {}).items():
        spec["stages"][i] = rule
    spec["constraints"].update(stage_rules_and_constraints)
    return spec


def reference_layouts(spec: dict) -> set[tuple[str, ...]]:
    """The valid layouts by brute force, written independently of search.space."""
    per_stage = []
    for rule in spec["stages"]:
        depths = rule["depth"] if isinstance(rule["depth"], list) else [rule["depth"]]
        allowed = rule.get("t_blocks", "any")
        allowed = allowed if allowed == "any" or isinstance(allowed, list) else [allowed]
        per_stage.append(["C" * (d - t) + "T" * t for d in depths for t in range(d + 1) if allowed == "any" or t in allowed])
    c = spec["constraints"]
    keep = set()
    for layout in itertools.product(*per_stage):
        ts = [s.count("T") for s in layout]
        symmetric = all(s.count("C") in (0, len(s)) or 2 * s.count("C") == len(s) for s in layout)
        if c.get("t_non_decreasing") and ts != sorted(ts):
            continue
        if c.get("min_total_t") is not None and sum(ts) < c["min_total_t"]:
            continue
        if c.get("max_total_t") is not None and sum(ts) > c["max_total_t"]:
            continue
        if ("symmetric" if symmetric else "asymmetric") not in c.get("families", ["symmetric", "asymmetric"]):
            continue
        keep.add(layout)
    return keep


# A space with varying depths, width choices, two C blocks, cross-stage constraints and a
# hole in its T counts (t_blocks [0, 1, 4] on depth 4): the hardest case for sampling.
def tricky_spec() -> dict:
    spec = with_changes(stages={1: {"depth": [2, 3, 4], "width": [128, 192]}, 2: {"depth": 4, "t_blocks": [0, 1, 4]}},
                        t_non_decreasing=True, min_total_t=2)
    spec["blocks"]["c"] = ["fused_mbconv", "mbconv"]
    return spec


# ----------------------------------------------------------------- counts and enumeration
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_counts_exactly_and_enumerates_without_duplicates(name):
    space = load_space(name)
    candidates = space.enumerate()
    assert space.count() == SHIPPED[name] == len(candidates) == len(set(candidates))
    assert candidates == space.enumerate()  # deterministic order
    assert sum(space.count_by_family().values()) == space.count_layouts()
    assert all(candidate in space for candidate in candidates)


def test_hybrid_is_125_layouts_of_both_families_before_optional_constraints(tmp_path):
    space = load_space("hybrid")
    assert space.count_by_family() == {"symmetric": 27, "asymmetric": 98}
    assert {c.layouts for c in space.enumerate()} == reference_layouts(hybrid_spec())
    assert all(c.layouts[0] == "CC" for c in space.enumerate())  # stage 1 convolution-only
    assert load_space(write(tmp_path, with_changes(t_non_decreasing=True))).count() == 35


def test_counts_match_brute_force_on_random_specs(tmp_path):
    rng = random.Random(0)
    for trial in range(40):
        stages = {}
        for i in range(4):
            depths = sorted(rng.sample(range(1, 5), rng.randint(1, 2)))
            t_blocks = "any" if rng.random() < 0.5 else sorted({0, *rng.sample(range(max(depths) + 1), 2)})
            stages[i] = {"depth": depths, "t_blocks": t_blocks}
        constraints = {"t_non_decreasing": rng.random() < 0.5,
                       "min_total_t": rng.choice([None, 2, 5]), "max_total_t": rng.choice([None, 6, 9]),
                       "families": rng.choice([["symmetric"], ["asymmetric"], ["symmetric", "asymmetric"]])}
        spec = with_changes(stages=stages, **constraints)
        expected = reference_layouts(spec)
        if not expected:
            with pytest.raises(SpecError, match="no layout satisfies them"):
                load_space(write(tmp_path, spec))
            continue
        space = load_space(write(tmp_path, spec))
        layouts = [c.layouts for c in space.enumerate()]
        assert space.count() == len(layouts) == len(set(layouts)) == len(expected), spec
        assert set(layouts) == expected, spec


def test_large_space_is_counted_exactly_without_enumerating(tmp_path):
    spec = with_changes(stages={i: {"depth": list(range(1, 9)), "t_blocks": "any"} for i in range(4)})
    space = load_space(write(tmp_path, spec))
    assert space.count() == 44 ** 4  # each stage: sum of (d + 1) for d = 1..8
    with pytest.raises(ValueError, match="enumeration limit"):
        space.enumerate()
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    assert space.sample(trial) in space
    assert "3748096 candidates" in describe(space)


# ----------------------------------------------------------------- sampling
def objectives(candidate: Candidate) -> tuple[float, float]:
    return float(sum(s.count("T") for s in candidate.layouts)), float(-sum(map(len, candidate.layouts)))


@pytest.mark.parametrize("sampler_cls", [optuna.samplers.RandomSampler, optuna.samplers.TPESampler,
                                         optuna.samplers.NSGAIISampler])
def test_optuna_samples_always_land_inside_the_space(tmp_path, sampler_cls):
    spaces = [load_space("hybrid"), load_space("asymmetric"), load_space("paper"),
              load_space(write(tmp_path, tricky_spec()))]
    for space in spaces:
        valid = set(space.enumerate())
        for seed in range(6):
            kwargs = {"population_size": 8} if sampler_cls is optuna.samplers.NSGAIISampler else {}
            study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler_cls(seed=seed, **kwargs))
            for _ in range(40):
                trial = study.ask()
                try:
                    candidate = space.sample(trial)
                except optuna.TrialPruned:  # only a T count in a hole of t_blocks [0, 1, 4]
                    assert space.name == "custom" and trial.params["s3_t"] in (2, 3)
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    continue
                assert candidate in valid, (space.name, seed, trial.params)
                assert trial.params == space.params_for(candidate)
                study.tell(trial, objectives(candidate))


@pytest.mark.parametrize("name", ["hybrid", "symmetric", "asymmetric", "paper", "blocks", "order", "tricky"])
def test_brute_force_sampler_visits_exactly_the_valid_space(tmp_path, name):
    space = load_space(write(tmp_path, tricky_spec()) if name == "tricky" else name)
    study = optuna.create_study(sampler=optuna.samplers.BruteForceSampler(seed=0))
    study.optimize(lambda trial: objectives(space.sample(trial))[0], n_trials=2 * space.count() + 50)
    done = [space.sample(optuna.trial.FixedTrial(t.params)) for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == len(set(done)) == space.count()
    assert set(done) == set(space.enumerate())


def test_a_value_in_a_hole_is_pruned_with_a_reason(tmp_path):
    space = load_space(write(tmp_path, tricky_spec()))
    params = space.params_for(space.enumerate()[0]) | {"s3_t": 2}
    with pytest.raises(optuna.TrialPruned, match=r"s3_t=2 .*allowed: \[0, 1, 4\]"):
        space.sample(optuna.trial.FixedTrial(params))


def test_same_choices_give_the_same_architecture_hash():
    space = load_space("hybrid")
    hashes = set()
    for candidate in space.enumerate():
        replayed = space.sample(optuna.trial.FixedTrial(space.params_for(candidate)))
        assert replayed == candidate
        assert space.target_config(replayed).arch_hash == space.target_config(candidate).arch_hash
        hashes.add(space.target_config(candidate).arch_hash)
    assert len(hashes) == 125
    blocks = load_space("blocks")
    assert len({blocks.target_config(c).arch_hash for c in blocks.enumerate()}) == 9


def test_reference_layouts_can_be_enqueued():
    space = load_space("hybrid")
    assert [c.layouts for c in space.reference_candidates()] == [C1, SYMMETRIC_EXAMPLE]
    assert [c.layouts for c in load_space("asymmetric").reference_candidates()] == [C1]
    assert [c.layouts for c in load_space("symmetric").reference_candidates()] == [SYMMETRIC_EXAMPLE]
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for candidate in space.reference_candidates():
        study.enqueue_trial(space.params_for(candidate))
    assert [space.sample(study.ask()) for _ in range(2)] == space.reference_candidates()
    with pytest.raises(ValueError, match="outside space"):
        space.params_for(Candidate(("CT", "CCCT", "CCTT", "CTTT")))


# ----------------------------------------------------------------- families, configs, paper.yaml
def test_family_rule_on_the_papers_examples():
    assert layout_family("CCCC-CCTT-TTTT") == "symmetric"
    assert layout_family("CCCT-CCTT-CTTT") == "asymmetric"
    assert layout_family(SYMMETRIC_EXAMPLE) == "symmetric"
    assert layout_family(C1) == "asymmetric"
    assert layout_family("CC-CCC-CCT-TTT") == "asymmetric"  # an odd stage cannot be split evenly
    space = load_space("hybrid")
    assert space.family(Candidate(C1)) == space.family(ArchConfig(layouts=C1)) == "asymmetric"


def test_paper_yaml_follows_its_documented_rule():
    monotone = [c.layouts for c in load_space("hybrid").enumerate()
                if [s.count("T") for s in c.layouts] == sorted(s.count("T") for s in c.layouts)]
    expected = []
    for family, reference in (("asymmetric", C1), ("symmetric", SYMMETRIC_EXAMPLE)):
        expected.append(reference)
        for total in (2, 4, 8, 10):
            pool = [lay for lay in monotone if layout_family(lay) == family and sum(s.count("T") for s in lay) == total]
            expected.append(min(pool, key=lambda lay: [s.count("T") for s in lay]))
    assert [c.layouts for c in load_space("paper").enumerate()] == expected


def test_proxy_and_target_configs():
    space = load_space("hybrid")
    target = space.target_config(Candidate(C1))
    assert (target.widths, target.img_size, target.head_dim, target.num_classes) == ((64, 128, 256, 512), 224, 32, 1000)
    proxy = space.proxy_config(Candidate(C1), num_classes=10)
    assert proxy.layouts == C1 and proxy.widths == (16, 32, 64, 128)
    assert (proxy.stem_width, proxy.head_width, proxy.head_dim, proxy.num_classes) == (16, 192, 16, 10)
    assert proxy.stage_resolutions() == (16, 8, 4, 2)
    assert (space.target.batch_size, space.target.dtype, space.target.device) == (1, "float32", "auto")
    assert space.budget.max_latency_ms is None
    assert [space.target_config(c).c_block for c in load_space("blocks").enumerate()] == \
        [c for c in ("fused_mbconv", "mbconv", "convnext") for _ in range(3)]


def test_dry_run_text():
    text = describe(load_space("hybrid"))
    assert "125 candidates" in text and "symmetric 27, asymmetric 98" in text
    assert "CC-CCCT-CCTT-CTTT  asymmetric" in text and "CC-CCCC-CCTT-TTTT  symmetric" in text


# ----------------------------------------------------------------- bad input
def _set(path: str, value):
    def change(spec):
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[int(last) if isinstance(node, list) else last] = value
    return change


BAD = [
    (_set("proxy.widht", 0.5), "proxy.widht", "unknown key (did you mean 'width_mult'?)"),
    (_set("stagse", []), "stagse", "did you mean 'stages'?"),
    (_set("stages.1.depth", "four"), "stages[1].depth", "expected an integer or a list of them, got str 'four'"),
    (_set("stages.1.depth", [0, 4]), "stages[1].depth", "0 leaves stage 2 empty"),
    (_set("stages.2.t_blocks", [0, 5]), "stages[2].t_blocks", "5 T blocks do not fit in depth 4"),
    (_set("stages.2", {"depth": [2, 4], "t_blocks": [3, 4]}), "stages[2].t_blocks", "no allowed T count fits depth 2"),
    (_set("stages.2.width", 100), "stages[2].width", "100 is not divisible by network.head_dim=32"),
    (_set("proxy.width_mult", 0.3), "proxy.width_mult", "is not divisible by proxy.head_dim=16"),
    (_set("proxy.width_mult", 0), "proxy.width_mult", "expected a finite number > 0, got int 0"),
    (_set("constraints.min_total_t", 13), "constraints", "no layout satisfies them (125 layouts before constraints)"),
    (_set("constraints.families", ["symetric"]), "constraints.families", "did you mean 'symmetric'?"),
    (_set("constraints.c_before_t", False), "constraints.c_before_t", "needs a `layouts:` list"),
    (_set("target.dtype", "float6"), "target.dtype", "did you mean 'float16'?"),
    (_set("target.batch_size", "1"), "target.batch_size", "expected an integer >= 1, got str '1'"),
    (_set("budget.max_macs", "1.5e9"), "budget.max_macs", "write 1.5e+9"),
    (_set("blocks.c", "fusedmbconv"), "blocks.c", "did you mean 'fused_mbconv'?"),
    (_set("proxy.img_size", 8), "proxy", "ArchConfig.img_size=8"),
    (lambda spec: spec["stages"].pop(), "stages", "expected a list of 4 stages"),
    (lambda spec: spec.update(layouts=["CC-CTCT-CCTT-CTTT"], stages=None), "layouts[0]", "puts a T block before a C"),
    (_set("layouts", ["CC-CCCT-CCTT-CTTT", "CC-CCCT-CCTT-CTTT"]), "stages[0].depth", "not used when the spec lists"),
]


@pytest.mark.parametrize("change,key,problem", BAD, ids=[key for _, key, _ in BAD])
def test_bad_spec_is_one_line_naming_file_key_and_problem(tmp_path, change, key, problem):
    spec = hybrid_spec()
    change(spec)
    path = write(tmp_path, spec)
    with pytest.raises(SpecError) as caught:
        load_space(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message, message


def test_bad_explicit_layouts(tmp_path):
    for layouts, problem in ((["CC-CCCT-CCTT-CTTT", "CC-CCCT-CCTT-CTTT"], "layouts[1]: 'CC-CCCT-CCTT-CTTT' repeats layouts[0]"),
                             (["CC-CCCT-CCTT"], "has 3 stages, need 4"), (["CC-CCXT-CCTT-CTTT"], "letters other than C and T")):
        with pytest.raises(SpecError, match=problem.replace("[", r"\[").replace("]", r"\]")):
            load_space(write(tmp_path, {"layouts": layouts}))
    spec = {"layouts": ["CC-CCCC-CCTT-TTTT"], "constraints": {"families": ["asymmetric"]}}
    with pytest.raises(SpecError, match="breaks constraint families"):
        load_space(write(tmp_path, spec))


@pytest.mark.parametrize("text,problem", [("stages: [", "invalid YAML: line"), ("", "empty spec"),
                                          ("- 1\n- 2\n", "expected a mapping, got list")])
def test_unreadable_spec(tmp_path, text, problem):
    with pytest.raises(SpecError, match=problem):
        load_space(write(tmp_path, text))


def test_missing_spec_name_lists_the_available_ones():
    with pytest.raises(SpecError) as caught:
        load_space("hybird")
    message = str(caught.value)
    file = display_path(SPACES_DIR / "hybird.yaml")
    assert message.startswith(f"{file}: no space named 'hybird' (did you mean 'hybrid'?); available spaces: "), message
    assert set(SHIPPED) <= set(message.split("available spaces: ")[1].split(", "))


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path, capsys):
    assert main(["hybird"]) == 2
    assert main(["hybrid"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "did you mean 'hybrid'?" in err
    bad = write(tmp_path, hybrid_spec() | {"proxy": {"widht": 0.5}})
    run = subprocess.run([sys.executable, "-m", "search.space", str(bad)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [f"error: {bad}: proxy.widht: unknown key (did you mean 'width_mult'?)"]
