from pathlib import Path

import pytest

from studies import make_tiny_study, write_tiny_space


@pytest.fixture()
def tiny_space(tmp_path: Path) -> Path:
    """A spec of four small layouts: studies over it take seconds per trial."""
    return write_tiny_space(tmp_path)


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished four-trial study of the tiny space (with a reused and an over-budget trial),
    made once per test session and shared by the dashboard and export tests."""
    return make_tiny_study(tmp_path_factory.getbasetemp() / "tiny_study")
