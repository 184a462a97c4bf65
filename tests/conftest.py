import os
import sys
from pathlib import Path

import optuna
import pytest
import torch

from search.measure.data import load_dataset, project_data_dir
from search.report.tables import open_study_dir
from studies import make_tiny_study, write_tiny_space

CIFAR_NPZ = project_data_dir() / "cifar10.npz"

# The quick loop, `pytest -m "not slow"`, starts no Ray and no search process: a test that
# does is marked slow. An audit hook sees every process a test starts and refuses these in a
# test without the mark, so a forgotten mark fails that test instead of slowing the loop.
# (It sees this process's children only: a child that starts Ray itself is not seen.)
SEARCH_PROGRAMS = {"run_search.py", "ascan-search"}  # the script and its installed entry point
RAY_PROGRAMS = {"ray", "raylet", "gcs_server"}  # `ray start`, and what ray.init starts locally
_quick_test: str | None = None  # the running test's id while it is not marked slow


def _refuse_slow_processes(event: str, args: tuple) -> None:
    if event != "subprocess.Popen" or _quick_test is None:
        return
    argv = args[1]
    words = argv.split() if isinstance(argv, (str, bytes)) else list(argv)
    names = [os.path.basename(os.fsdecode(word)) for word in words[:2]]
    if names[:1] and names[0] in RAY_PROGRAMS:
        started = "Ray"
    elif SEARCH_PROGRAMS.intersection(names):
        started = "a search process"
    else:
        return
    raise RuntimeError(f"{_quick_test} starts {started} ({' '.join(map(os.fsdecode, words[:3]))} ...) "
                       f"but is not marked slow: add @pytest.mark.slow")


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(_refuse_slow_processes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    global _quick_test
    _quick_test = None if item.get_closest_marker("slow") else item.nodeid
    try:
        return (yield)
    finally:
        _quick_test = None


@pytest.fixture(scope="session")
def cifar():
    """The project's real CIFAR-10 (../shared/data/cifar10.npz), loaded once per session.
    The dataset is not part of the repository, so a checkout without it skips the tests that
    train or split real images instead of failing them."""
    if not CIFAR_NPZ.is_file():
        pytest.skip(f"CIFAR-10 not at {CIFAR_NPZ}")
    return load_dataset("cifar10", root=CIFAR_NPZ.parent)


@pytest.fixture()
def tiny_space(tmp_path: Path) -> Path:
    """A spec of four small layouts: studies over it take seconds per trial."""
    return write_tiny_space(tmp_path)


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished four-trial study of the tiny space (with a reused and an over-budget trial),
    made once per test session and shared by the dashboard and export tests."""
    return make_tiny_study(tmp_path_factory.getbasetemp() / "tiny_study")


@pytest.fixture(scope="module")
def study(study_dir: Path) -> optuna.Study:
    return open_study_dir(study_dir)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: on a shared machine every op of a small model
    otherwise waits for a second, descheduled thread (~10 ms per op); results do not depend on
    the thread count. Modules ask for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
