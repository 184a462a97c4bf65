"""The documentation checks itself: links and anchors resolve, the commands it shows name real
modules, scripts and keys, the settings page is the generated one, and no page or source file
speaks of how the work on the project was organised."""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from search.app.settings import SettingsError, all_keys, help_markdown, parse_sweep

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
COMMAND = re.compile(r"^(\.venv/bin/)?(python3?|ascan-search)\b")


def prose(text: str) -> str:
    """The text outside code: fenced blocks and inline code removed."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(page.read_text()).splitlines() if line.startswith("#")}


def links() -> list[tuple[Path, str]]:
    return [(page, target) for page in PAGES for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"[a-z]+:", target)]  # http:, https:, mailto: are not ours to check


@pytest.mark.parametrize("page, target", links(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_every_relative_link_and_anchor_resolves(page, target):
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    assert file.exists(), f"{page.relative_to(ROOT)}: link to {target}: no such file"
    if anchor:
        assert anchor in anchors(file), f"{page.relative_to(ROOT)}: link to {target}: no such heading"


def commands() -> list[tuple[Path, str]]:
    """Every command a page shows in a code block (fenced, or indented by four spaces) whose
    first word is python or ascan-search; `a && b` gives each part."""
    found = []
    for page in PAGES:
        fenced = False
        for line in page.read_text().splitlines():
            if FENCE.match(line):
                fenced = not fenced
                continue
            if fenced or line.startswith("    "):
                for part in line.strip().split("&&"):
                    if COMMAND.match(part.strip()):
                        found.append((page, part.strip()))
    return found


def check_command(command: str) -> None:
    words = shlex.split(command, comments=True)
    words = words[1:] if words[0] == "ascan-search" else words[1:]
    if words[0] == "-c":
        compile(words[1], "<python -c>", "exec")
    elif words[0] == "-m":
        assert importlib.util.find_spec(words[1]) is not None, f"no module {words[1]}"
    elif words[0] == "run_search.py" or command.startswith("ascan-search"):
        args = words if command.startswith("ascan-search") else words[1:]
        if args[:1] == ["help"]:
            return
        for arg in args:
            assert "=" in arg, f"{arg!r}: not key=value"
            key = arg.split("=", 1)[0]
            assert key == "config" or key in all_keys(), f"{key}: no such key"
        if not any(mark in command for mark in ("<", "…", "...")):  # placeholders: keys only
            parse_sweep(args)  # types, allowed values, duplicates: as the command line checks them
    else:
        assert (ROOT / words[0]).is_file(), f"no script {words[0]}"


@pytest.mark.parametrize("page, command", commands(), ids=lambda v: v.name if isinstance(v, Path) else v[:60])
def test_every_command_shown_names_real_modules_scripts_and_keys(page, command):
    try:
        check_command(command)
    except (AssertionError, SettingsError) as err:
        pytest.fail(f"{page.relative_to(ROOT)}: `{command}`: {err}")


def test_the_pages_show_commands_at_all():
    shown = [c for _, c in commands()]
    assert len(shown) >= 12 and any("run_search.py" in c for c in shown) and any(" -m " in c for c in shown)


def test_settings_page_is_the_generated_one():
    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == help_markdown(), "docs/settings.md is stale: python run_search.py help --markdown > docs/settings.md"


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


# Words that date a line to how the work was organised (built so this file does not match itself).
ORGANISATION = re.compile("|".join([r"\bwaves? \d", r"\bwave \d", r"\bin wave\b", r"\bsession \d", r"\bthis session\b",
                                    r"\biss" + r"ues? ?#?\d+", r"\(#\d+\)", r"\bmachine (loan|lease)", r"\blease\b",
                                    r"\bloan(ed)?\b"]), re.IGNORECASE)
SOURCES = ["README.md", "docs", "search", "ascan", "benchmarks", "tests"]


def test_no_line_speaks_of_how_the_work_was_organised():
    files = [p for where in SOURCES for p in ([ROOT / where] if (ROOT / where).is_file() else (ROOT / where).rglob("*"))
             if p.suffix in {".md", ".py", ".sh", ".yaml"} and p != Path(__file__)]
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}" for p in files
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if ORGANISATION.search(line)]
    assert not hits, "\n".join(hits)
