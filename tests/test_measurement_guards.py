"""Measurement guards fail loudly: the profile cache sees every change to the model code, and
the analytic MAC formula refuses a block it has no formula for."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import ascan
import ascan.config
from ascan import ArchConfig
from search.measure.macs import analytic_macs
from search.measure.profile import _ascan_code_hash
from search.measure.profile_cache import ProfileError

PACKAGE = Path(ascan.__file__).parent


@pytest.fixture()
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "ascan"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_code_hash_reads_the_imported_package_by_content(package_copy: Path):
    # A copy elsewhere hashes alike (paths are relative); a package with other code does not.
    assert _ascan_code_hash() == _ascan_code_hash(package_copy)
    (package_copy / "blocks.py").unlink()
    assert _ascan_code_hash() != _ascan_code_hash(package_copy)


@pytest.mark.parametrize("name", ["fused.py", "blocks.py", "model.py", "config.py", "zoo/__init__.py", "new_block.py"])
def test_code_hash_changes_with_any_model_file(package_copy: Path, name: str):
    before = _ascan_code_hash(package_copy)
    path = package_copy / name
    path.write_text((path.read_text() if path.exists() else "") + "\n# edited\n")
    assert _ascan_code_hash(package_copy) != before


def test_code_hash_ignores_zoo_yamls(package_copy: Path):
    before = _ascan_code_hash(package_copy)
    (package_copy / "zoo" / "exported_example.yaml").write_text("layouts: [CC, CCCT, CCTT, CTTT]\n")
    assert _ascan_code_hash(package_copy) == before


@pytest.mark.parametrize("field_name, names", [("c_block", "C_BLOCKS"), ("t_block", "T_BLOCKS")])
def test_analytic_macs_refuses_an_unknown_block(monkeypatch, field_name: str, names: str):
    # A block registered with the config (so ArchConfig accepts it) but with no MAC formula.
    monkeypatch.setattr(ascan.config, names, getattr(ascan.config, names) + ("dummy",))
    cfg = ArchConfig(**{field_name: "dummy"})
    with pytest.raises(ProfileError, match=f"no MAC formula for ArchConfig.{field_name}='dummy'"):
        analytic_macs(cfg)
