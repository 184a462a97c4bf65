"""Zoo folders: where `import ascan` looks, and how it survives a hostile file in one.

Every case writes one bad file next to a good one in a temporary zoo folder; `import ascan`
in a fresh process must still work, register the good model, and skip the bad file with one
warning line naming it and the reason, in well under a second per file.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from ascan import ArchConfig, zoo

REPO = Path(__file__).resolve().parent.parent
GOOD = {"name": "ascan_zoo_good", "config": ArchConfig(layouts=zoo.PAPER_LAYOUT, widths=(16, 32, 64, 64),
                                                        stem_width=16, head_width=64, head_dim=16).to_dict()}
LAYOUTS = "[CC, CCCT, CCTT, CTTT]"


def alias_bomb() -> str:
    """The "billion laughs": nine levels of nine aliases, 9**9 strings once expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join([*lines, "config: {layouts: *l8}"]) + "\n"


BAD_FILES = {  # file stem -> (content, words the warning must contain)
    "ascan_zoo_nested": ("config: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested deeper than"),
    "ascan_zoo_inf": (f"config: {{layouts: {LAYOUTS}, widths: [.inf, 64, 128, 256]}}\n",
                      "cannot convert float infinity"),
    "ascan_zoo_bomb": (alias_bomb(), "aliases (*name) are not allowed"),
    "ascan_zoo_list": ("- config\n- 3\n", "expected a mapping with a 'config:' section"),
    "ascan_zoo_field": (f"config: {{layouts: {LAYOUTS}, widths: [64, 128, 256, 512], wings: 2}}\n",
                        "config: ArchConfig.wings: unknown field"),
    "ascan_zoo_layout": ("config: {layouts: [CC, CCTC, CCTT, CTTT]}\n", "ArchConfig.layouts[1]='CCTC'"),
    "ascan_zoo_type": (f"config: {{layouts: {LAYOUTS}, widths: {{a: 1}}}}\n", "config: invalid literal for int()"),
    "ascan_zoo_huge": ("# padding\n" * 10_000, "larger than 64 KiB"),
    "ascan_zoo_binary": ("\udcff", "not UTF-8 text"),  # written with surrogateescape: one 0xff byte
    "ascan_zoo_yaml": ("config: [unclosed\n", "unreadable YAML: line"),
    "ascan_zoo_name": ("name: ascan_other\nconfig: {layouts: [CC, CCCT, CCTT, CTTT]}\n", "does not match"),
    # The bounds a search spec is read with (`ascan.bounds`), checked before anything is built.
    "ascan_zoo_wide": (f"config: {{layouts: {LAYOUTS}, widths: [1000000000, 64, 128, 256]}}\n",
                       "config: widths[0]: 1000000000 is above the limit of 8192"),
    "ascan_zoo_deep": ("config: {layouts: [CC, CCCT, CCTT, " + "C" * 17 + "]}\n",
                       "config: layouts[3]: 17 blocks above the limit of 16"),
    "ascan_zoo_heads": (f"config: {{layouts: {LAYOUTS}, head_dim: 4096, widths: [4096, 4096, 4096, 4096]}}\n",
                        "config: head_dim: 4096 is above the limit of 1024"),
    "ascan_zoo_params": (f"config: {{layouts: {LAYOUTS}, widths: [8192, 8192, 8192, 8192]}}\n",
                         "parameters, above the limit of 2e+09"),
}


def write(folder: Path, stem: str, text: str) -> Path:
    path = folder / f"{stem}.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    return path


def import_ascan(env: dict[str, str], code: str = "") -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != zoo.ZOO_DIR_ENV}, "PYTHONWARNINGS": "default", **env}
    return subprocess.run([sys.executable, "-c", "import timm, ascan\n" + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=180, cwd=REPO, env=env)


@pytest.mark.parametrize("stem", sorted(BAD_FILES))
def test_a_bad_zoo_file_is_refused_with_its_reason_in_one_line_and_fast(stem: str, tmp_path: Path):
    text, reason = BAD_FILES[stem]
    path = write(tmp_path, stem, text)
    started = time.perf_counter()
    with pytest.raises(ValueError) as err:
        zoo.read_zoo_file(path)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{stem}: {elapsed:.2f} s"
    assert str(err.value).startswith(f"{path}: ") and reason in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 600


def test_import_ascan_skips_every_bad_file_and_keeps_the_good_one(tmp_path: Path):
    folder = tmp_path / "zoo"
    folder.mkdir()
    (folder / "ascan_zoo_good.yaml").write_text(yaml.safe_dump(GOOD))
    for stem, (text, _) in BAD_FILES.items():
        write(folder, stem, text)
    os.mkfifo(folder / "ascan_zoo_fifo.yaml")  # reading would block forever
    (folder / "ascan_zoo_device.yaml").symlink_to("/dev/zero")  # reading would never end
    proc = import_ascan({zoo.ZOO_DIR_ENV: str(folder)}, """
        print(" ".join(timm.list_models("ascan_zoo*")))
        print(timm.create_model("ascan_zoo_good").config.widths)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["ascan_zoo_good", "(16, 32, 64, 64)"]
    warnings = [line for line in proc.stderr.splitlines() if "UserWarning: ascan zoo: skipping" in line]
    expected = {**{stem: reason for stem, (_, reason) in BAD_FILES.items()},
                "ascan_zoo_fifo": "not a regular file", "ascan_zoo_device": "not a regular file"}
    assert len(warnings) == len(expected)
    for stem, reason in expected.items():
        (line,) = [w for w in warnings if f"{folder / stem}.yaml: " in w]
        assert reason in line


def test_zoo_folders_are_the_package_then_the_user_zoo_or_the_environment(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert zoo.zoo_dirs() == [zoo.ZOO_DIR, tmp_path / "data" / "ascan-search" / "zoo"]
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # the XDG rule: relative values are ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.user_zoo_dir() == tmp_path / "home" / ".local" / "share" / "ascan-search" / "zoo"
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert zoo.zoo_dirs() == [zoo.ZOO_DIR, tmp_path / "a", tmp_path / "b"]  # instead of the user zoo


def test_a_fresh_process_reads_the_user_zoo_without_any_setting(tmp_path: Path):
    folder = tmp_path / "data" / "ascan-search" / "zoo"
    folder.mkdir(parents=True)
    (folder / "ascan_zoo_good.yaml").write_text(yaml.safe_dump(GOOD))
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    proc = import_ascan(env, 'print(timm.create_model("ascan_zoo_good").config.arch_hash)')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ArchConfig.from_dict(GOOD["config"]).arch_hash
