"""Export a trial of a real tiny study into a zoo folder, then build it with timm elsewhere.

The study is the one `test_dashboard.py` makes (shared through the session's temp folder).
Exports go to a temporary zoo folder, read through `$ASCAN_ZOO_DIR`, never into `ascan/zoo/`
or the user's zoo (`$XDG_DATA_HOME` points into the test's temporary folder).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import timm
import torch
import yaml
from optuna.trial import TrialState, create_trial

from ascan import ArchConfig, zoo
from search.engine.record import TrialRecord
from search.engine.replicates import LatencyHistory
from search.report.export import ExportError, export_trial
from search.report.export import main as export_main
from search.report.tables import front_trials, open_study_dir

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_user_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real user zoo and from a zoo folder set outside."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)


def python(code: str, zoo_dir: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # XDG_DATA_HOME from `no_user_zoo`
    env.pop(zoo.ZOO_DIR_ENV, None)
    if zoo_dir is not None:
        env[zoo.ZOO_DIR_ENV] = str(zoo_dir)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def test_exported_trial_builds_the_same_network_in_a_fresh_process(study, study_dir: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture):
    chosen = max(front_trials(study), key=lambda t: t.values[0])
    zoo_dir = tmp_path / "zoo"
    status = export_main([str(study_dir), "--trial", str(chosen.number), "--name", "ascan_test_chosen",
                          "--zoo-dir", str(zoo_dir)])
    assert status == 0 and f"wrote {zoo_dir / 'ascan_test_chosen.yaml'}" in capsys.readouterr().out
    record = yaml.safe_load((zoo_dir / "ascan_test_chosen.yaml").read_text())
    provenance = record["provenance"]
    assert (provenance["study"], provenance["trial"], provenance["space"]) == (study.study_name, chosen.number, "tiny")
    assert provenance["metrics"]["accuracy"] == chosen.values[0]
    # The latency every report shows: the latest clean measurement (here the closing re-profile's).
    shown = LatencyHistory(study).preferred(TrialRecord.load(chosen))
    assert provenance["metrics"]["latency_ms"] == shown.latency_ms
    assert provenance["device"] == chosen.user_attrs["profile_fingerprint"]

    proc = python("""
        import json, timm, torch, ascan
        model = timm.create_model("ascan_test_chosen")
        small = timm.create_model("ascan_test_chosen", num_classes=10).eval()
        size = model.pretrained_cfg["input_size"]
        print(json.dumps({
            "listed": timm.list_models("ascan*"), "hash": model.config.arch_hash,
            "params": sum(p.numel() for p in model.parameters()), "input_size": list(size),
            "logits": list(small(torch.randn(1, *size)).shape)}))
    """, zoo_dir=zoo_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    built = json.loads(proc.stdout)
    target = ArchConfig.from_dict(chosen.user_attrs["target_config"])
    assert "ascan_test_chosen" in built["listed"] and "ascan_tiny" in built["listed"]
    assert built["hash"] == chosen.user_attrs["arch_hash"] == target.arch_hash
    assert built["params"] == chosen.user_attrs["params"]
    assert built["input_size"] == [target.in_chans, target.img_size, target.img_size]
    assert built["logits"] == [1, 10]


def test_refusals_are_one_line_errors(study, study_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    zoo_dir = tmp_path / "zoo"
    feasible = front_trials(study)[0].number
    untrained = next(t.number for t in study.trials if t.user_attrs.get("trained") is False)
    first = export_trial(study_dir, feasible, "ascan_test_refusals", zoo_dir=zoo_dir)
    refusals = [
        (dict(trial_number=feasible, name="ascan_test_refusals"), "exists; use --force"),
        (dict(trial_number=feasible, name="ascan_tiny", force=True), "built-in"),
        (dict(trial_number=feasible, name="mynet"), "must be 'ascan_'"),
        (dict(trial_number=feasible, name="ascan_my-net"), "must be 'ascan_'"),
        (dict(trial_number=len(study.trials), name="ascan_test_x"), "no such trial"),
        (dict(trial_number=-1, name="ascan_test_x"), "no such trial"),
        (dict(trial_number=untrained, name="ascan_test_x"), "infeasible"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(ExportError, match=message) as err:
            export_trial(study_dir, zoo_dir=zoo_dir, **kwargs)
        assert "\n" not in str(err.value)
    before = first.read_text()
    export_trial(study_dir, untrained, "ascan_test_refusals", force=True, zoo_dir=zoo_dir)
    assert first.read_text() != before  # --force replaced it
    assert yaml.safe_load(first.read_text())["provenance"]["trial"] == untrained

    # A failed trial: the engine records one when proxy training crashes; add one to a copy.
    copy = tmp_path / study_dir.name
    shutil.copytree(study_dir, copy, ignore=shutil.ignore_patterns("*.html"))
    broken = open_study_dir(copy)
    broken.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"failure_reason": "proxy training raised OOM"}))
    status = export_main([str(copy), "--trial", str(len(study.trials)), "--name", "ascan_test_x",
                          "--zoo-dir", str(zoo_dir)])
    assert status == 2
    assert capsys.readouterr().err == (f"error: --trial {len(study.trials)}: the trial failed (proxy training raised "
                                       "OOM); pick a finished trial\n")


def test_corrupt_zoo_file_is_skipped_with_one_warning(study, study_dir: Path, tmp_path: Path):
    zoo_dir = tmp_path / "zoo"
    export_trial(study_dir, front_trials(study)[0].number, "ascan_test_good", zoo_dir=zoo_dir)
    (zoo_dir / "ascan_test_corrupt.yaml").write_text("config: [unclosed\n")
    (zoo_dir / "ascan_test_badfield.yaml").write_text("config: {layouts: [CC, CCTC, CCTT, CTTT]}\n")
    proc = python("""
        import timm, ascan
        print(" ".join(timm.list_models("ascan_test*")))
    """, zoo_dir=zoo_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["ascan_test_good"]
    warnings = [line for line in proc.stderr.splitlines() if "ascan zoo: skipping" in line]
    assert len(warnings) == 2
    assert any("ascan_test_corrupt.yaml: unreadable YAML" in w for w in warnings)
    assert any("ascan_test_badfield.yaml: config: ArchConfig.layouts[1]='CCTC'" in w for w in warnings)


def test_safetensors_beside_a_zoo_file_are_its_pretrained_weights(study, study_dir: Path, tmp_path: Path):
    from safetensors.torch import save_file

    zoo_dir = tmp_path / "zoo"
    path = export_trial(study_dir, front_trials(study)[0].number, "ascan_test_weights", zoo_dir=zoo_dir)
    trained = timm.create_model("ascan_test_weights")
    save_file(trained.state_dict(), path.with_suffix(".safetensors"))
    zoo.register_zoo_file(path)  # what `import ascan` does in a new process
    loaded = timm.create_model("ascan_test_weights", pretrained=True)
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in trained.state_dict().items())
    assert not all(torch.equal(value, timm.create_model("ascan_test_weights").state_dict()[key])
                   for key, value in trained.state_dict().items())  # a fresh build differs: weights were loaded


def test_export_goes_to_the_user_zoo_by_default_and_a_fresh_process_finds_it(study, study_dir: Path,
                                                                             tmp_path: Path):
    path = export_trial(study_dir, front_trials(study)[0].number, "ascan_test_user")
    assert path == tmp_path / "xdg-data" / "ascan-search" / "zoo" / "ascan_test_user.yaml"
    proc = python('import ascan, timm; print(timm.create_model("ascan_test_user").config.arch_hash)')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == front_trials(study)[0].user_attrs["arch_hash"]


def test_existing_weights_are_never_deleted_without_force(study, study_dir: Path, tmp_path: Path):
    zoo_dir, trial = tmp_path / "zoo", front_trials(study)[0].number
    zoo_dir.mkdir()
    orphan = zoo_dir / "ascan_test_orphan.safetensors"  # weights whose YAML was removed by hand
    orphan.write_bytes(b"weights")
    with pytest.raises(ExportError, match="ascan_test_orphan.safetensors exists .*use --force"):
        export_trial(study_dir, trial, "ascan_test_orphan", zoo_dir=zoo_dir)
    assert orphan.read_bytes() == b"weights" and not (zoo_dir / "ascan_test_orphan.yaml").exists()

    path = export_trial(study_dir, trial, "ascan_test_weighted", zoo_dir=zoo_dir)
    path.with_suffix(".safetensors").write_bytes(b"weights")
    with pytest.raises(ExportError, match="exists; use --force"):
        export_trial(study_dir, trial, "ascan_test_weighted", zoo_dir=zoo_dir)
    assert path.with_suffix(".safetensors").read_bytes() == b"weights"
    export_trial(study_dir, trial, "ascan_test_weighted", force=True, zoo_dir=zoo_dir)
    assert not path.with_suffix(".safetensors").exists()  # they fit the replaced architecture, not this one
    assert sorted(p.name for p in zoo_dir.iterdir()) == ["ascan_test_orphan.safetensors", "ascan_test_weighted.yaml"]


def test_export_never_writes_through_a_planted_symlink(study, study_dir: Path, tmp_path: Path):
    zoo_dir, trial = tmp_path / "zoo", front_trials(study)[0].number
    zoo_dir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (zoo_dir / "ascan_test_link.yaml.tmp").symlink_to(victim)  # where the old export wrote first
    path = export_trial(study_dir, trial, "ascan_test_link", zoo_dir=zoo_dir)
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and yaml.safe_load(path.read_text())["name"] == "ascan_test_link"

    (zoo_dir / "ascan_test_target.yaml").symlink_to(victim)  # the target itself, replaced with --force
    path = export_trial(study_dir, trial, "ascan_test_target", force=True, zoo_dir=zoo_dir)
    assert victim.read_text() == "precious" and not path.is_symlink()
    assert sorted(p.name for p in zoo_dir.iterdir()) == ["ascan_test_link.yaml", "ascan_test_link.yaml.tmp",
                                                         "ascan_test_target.yaml"]  # no temporary file left


def export_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != zoo.ZOO_DIR_ENV}
    return subprocess.run([sys.executable, "-m", "search.export", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def test_bad_storage_and_corrupt_study_are_one_line_and_exit_2(study, study_dir: Path, tmp_path: Path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "study.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    zoo_dir = tmp_path / "zoo"
    cases = [
        ([str(study_dir), "--storage", "garbage"], "error: --storage garbage: cannot read the study (ArgumentError"),
        ([str(study_dir), "--storage", "nosuchdb://x"], "error: --storage nosuchdb://x: cannot read the study"),
        ([str(corrupt)], f"error: {corrupt / 'study.db'}: cannot read the study (DatabaseError"),
    ]
    for args, message in cases:
        proc = export_cli(*args, "--trial", "0", "--name", "ascan_test_x", "--zoo-dir", str(zoo_dir))
        assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
        assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert not zoo_dir.exists()


def test_zoo_dir_that_is_a_file_and_an_overlong_name_are_one_line_and_exit_2(study, study_dir: Path, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture):
    trial = str(front_trials(study)[0].number)
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    cases = [
        (["--name", "ascan_test_x", "--zoo-dir", str(a_file)], f"error: --zoo-dir {a_file}: not a folder\n"),
        (["--name", "ascan_test_x", "--zoo-dir", str(a_file / "below")],
         f"error: {a_file / 'below'}: cannot write the export (Not a directory)\n"),
        (["--name", "ascan_" + "x" * 300, "--zoo-dir", str(tmp_path / "zoo")],
         "error: --name ascan_xxxxxxxxxxxxxx...: 306 characters; at most 100\n"),
    ]
    for args, message in cases:
        assert export_main([str(study_dir), "--trial", trial, *args]) == 2
        captured = capsys.readouterr()
        assert (captured.out, captured.err) == ("", message)
    assert a_file.read_text() == "x" and not (tmp_path / "zoo").exists()
