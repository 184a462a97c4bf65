"""An installed ascan-search works outside the repository: specs ship in the wheel, a user's
own spec folder is found, exports land in the user zoo, and timm builds them elsewhere.

The wheel test installs the built wheel into a fresh venv. The big dependencies (torch,
timm, optuna, ray) are not reinstalled: a `.pth` file adds this interpreter's site-packages
*after* the venv's own, and that folder holds only an editable-install finder for this
project, which a `.pth`-added folder never runs. So `ascan`, `search` and `run_search` can
only come from the wheel; the test checks that they do.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ascan import zoo
from search.report.tables import front_trials, open_study_dir
from search.space.space import SPACES_DIR, SPACES_ENV, SpecError, load_space, spaces_dirs
from studies import TINY_SPACE

REPO = Path(__file__).resolve().parent.parent
NOT_SHIPPED = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                     "results", ".pytest_cache", ".notes")


def test_a_user_spec_folder_is_searched_before_the_shipped_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    mine = tmp_path / "my_spaces"
    mine.mkdir()
    (mine / "tiny.yaml").write_text(TINY_SPACE)
    (mine / "paper.yaml").write_text(TINY_SPACE)  # a user's spec of a shipped name wins
    monkeypatch.setenv(SPACES_ENV, str(mine))
    assert spaces_dirs() == [mine, SPACES_DIR]
    assert load_space("tiny").count() == load_space("paper").count() == 4
    assert load_space("hybrid").count() == 125  # shipped specs still found
    with pytest.raises(SpecError, match=r"no space named 'tiy'.*available spaces: .*hybrid.*tiny"):
        load_space("tiy")


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_anywhere(study_dir: Path, tmp_path: Path):
    # Build from a copy: a build writes build/ and *.egg-info into the source folder.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_SHIPPED)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", zoo.ZOO_DIR_ENV, SPACES_ENV, "VIRTUAL_ENV")}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), RAY_USAGE_STATS_ENABLED="0", PIP_NO_INPUT="1")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q",
         str(source), "-w", str(tmp_path / "wheels")], tmp_path, env)
    (wheel,) = (tmp_path / "wheels").glob("ascan_search-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python, script = venv / "bin" / "python", venv / "bin" / "ascan-search"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         str(wheel)], tmp_path, env)
    (own,) = json.loads(run([str(python), "-c", "import json, site; print(json.dumps(site.getsitepackages()))"],
                            tmp_path, env).stdout)
    (Path(own) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"  # not the repository, not its parent
    elsewhere.mkdir()
    origin = run([str(python), "-c", "import ascan, search, run_search; "
                  "print(ascan.__file__, search.__file__, run_search.__file__)"], elsewhere, env).stdout.split()
    assert all(path.startswith(str(venv)) for path in origin), origin

    dry = run([str(script), "space=hybrid", "dry_run=true"], elsewhere, env).stdout
    assert "space hybrid" in dry and "125" in dry

    trial = front_trials(open_study_dir(study_dir))[0]
    exported = run([str(python), "-m", "search.export", str(study_dir), "--trial", str(trial.number),
                    "--name", "ascan_wheel_test"], elsewhere, env).stdout
    user_zoo = tmp_path / "data" / "ascan-search" / "zoo"
    assert f"wrote {user_zoo / 'ascan_wheel_test.yaml'}" in exported and "note:" not in exported

    built = run([str(python), "-c", "import json, timm, torch, ascan; "
                 "m = timm.create_model('ascan_wheel_test').eval(); "
                 "small = timm.create_model('ascan_wheel_test', num_classes=10).eval(); "
                 "x = torch.randn(1, *m.pretrained_cfg['input_size']); "
                 "print(json.dumps([m.config.arch_hash, list(small(x).shape)]))"], elsewhere, env).stdout
    assert json.loads(built) == [trial.user_attrs["arch_hash"], [1, 10]]
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # nothing written where it ran
