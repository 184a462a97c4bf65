"""The wings' arrows run one way (app → report → engine → measure / space → ascan), with no
import cycle among `search/` modules, and the engine never imports torch or `ascan`."""
from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ROOT / "search"
RANK = {"space": 0, "measure": 1, "engine": 2, "report": 3, "app": 4}  # may import lower ranks only
ENGINE_MAY_IMPORT = {"space.settings", "measure.estimate"}  # torch-free modules below the engine


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else ".".join(
                [*module_name(path).split(".")[: -node.level], node.module])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


MODULES = {module_name(p): p for p in SEARCH.rglob("*.py")}


@functools.cache
def graph() -> dict[str, set[str]]:
    return {name: {m for m in imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_no_import_cycle_among_search_modules():
    edges, state, cycle = graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycle.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not cycle, cycle


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in RANK else None


@pytest.mark.parametrize("name", sorted(n for n in MODULES if wing(n)))
def test_wings_import_downwards_only(name):
    upward = [m for m in graph()[name] if wing(m) and RANK[wing(m)] > RANK[wing(name)]]
    assert not upward, f"{name} imports {upward}"


def test_engine_imports_neither_torch_nor_ascan_nor_measurement():
    for name, path in MODULES.items():
        if wing(name) != "engine":
            continue
        for module in imports(path):
            top = module.split(".")[0]
            assert top not in ("torch", "ascan", "torchvision", "timm"), f"{name} imports {module}"
            if module in MODULES and wing(module) in ("space", "measure"):
                assert module.split(".", 1)[1] in ENGINE_MAY_IMPORT, f"{name} imports {module}"


def test_the_engine_runs_without_torch():
    """Importing every engine module (a replay needs nothing more) loads neither torch nor ascan."""
    engine = sorted(n for n in MODULES if wing(n) == "engine")
    code = (f"import sys; import {', '.join(engine)}; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ascan', 'timm', 'torchvision'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
