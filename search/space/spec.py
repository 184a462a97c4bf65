"""Reading a search-space spec: YAML in, validated plain data (`Spec`) out.

Keys, types and defaults are documented in `spaces/README.md`; the dataclass defaults below
are the defaults. Every problem is a `SpecError`, one line `<file>: <key.path>: <problem>`.
YAML is read with `safe_yaml.load` (no aliases, no duplicate keys, bounded size and
nesting), and every number is bounded before anything is built: a spec cannot hang the
counting of layouts or ask for a network that does not fit in memory (`LIMITS`,
`MAX_PARAMS`). `search.space` turns a `Spec` into a `SearchSpace`.

The family rule lives here because the `families` constraint is defined by it (ours; the
paper only gives examples): a stage of depth d is *even* when its C count is 0, d/2 or d;
a layout is *symmetric* when every stage is even, *asymmetric* otherwise.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from ascan import bounds
from ascan.bounds import (MAX_HEAD_DIM, MAX_IMG_SIZE, MAX_IN_CHANS, MAX_NUM_CLASSES, MAX_PARAMS, MAX_RATIO,
                          MAX_STAGE_DEPTH, MAX_WIDTH)
from ascan.config import C_BLOCKS, NUM_STAGES, STAGE_PATTERN, T_BLOCKS

from search.space import safe_yaml
from search.space.settings import DEVICES, DTYPES, Budget  # noqa: F401 (part of the spec's vocabulary)

FAMILIES = ("symmetric", "asymmetric")
DEFAULT_WIDTHS = (64, 128, 256, 512)
# Upper bounds (inclusive) on numbers, far above any sane network yet small enough that
# nothing downstream overflows, hangs or runs out of memory. Lower bounds are in `setting`.
# The network's own bounds live in `ascan.bounds`: zoo files are read with the same ones.
LIMITS = {
    "network.stem_width": MAX_WIDTH, "network.stem_stride": 2, "network.head_width": MAX_WIDTH,
    "network.head_dim": MAX_HEAD_DIM, "network.expansion": MAX_RATIO, "network.se_ratio": 1,
    "network.mlp_ratio": MAX_RATIO, "network.drop_path_rate": 1, "network.in_chans": MAX_IN_CHANS,
    "target.img_size": MAX_IMG_SIZE, "target.batch_size": 4096, "target.num_classes": MAX_NUM_CLASSES,
    "proxy.width_mult": 4, "proxy.img_size": 512, "proxy.stem_stride": 2, "proxy.head_dim": MAX_HEAD_DIM,
    "proxy.drop_path_rate": 1,
    "budget.max_latency_ms": 1e9, "budget.max_macs": 1e18, "budget.max_params": 1e15,
    "report.reference_latency_ms": 1e9,
    "constraints.min_total_t": NUM_STAGES * MAX_STAGE_DEPTH, "constraints.max_total_t": NUM_STAGES * MAX_STAGE_DEPTH,
}
TOP_KEYS = ("description", "stages", "layouts", "blocks", "constraints", "network", "target", "proxy", "budget",
            "report")


class SpecError(ValueError):
    """A bad spec, in one line: `<file>: <key.path>: <problem>`."""

    def __init__(self, file: str, key: str | None, problem: str):
        problem, file = " ".join(problem.split()), _clip(file, 200)  # a last guard: both can come from users
        if len(problem) > 300:
            problem = problem[:297] + "..."
        self.file, self.key, self.problem = file, key, problem
        super().__init__(": ".join(part for part in (file, key, self.problem) if part))


def stage_is_even(depth: int, t: int) -> bool:
    c = depth - t
    return c in (0, depth) or 2 * c == depth


def layout_family(layouts: str | Sequence[str]) -> str:
    """'symmetric' or 'asymmetric' for `CC-CCCT-CCTT-CTTT` or its stage strings."""
    stages = layouts.split("-") if isinstance(layouts, str) else layouts
    return "symmetric" if all(stage_is_even(len(s), s.count("T")) for s in stages) else "asymmetric"


# ----------------------------------------------------------------- spec sections
@dataclass(frozen=True)
class NetworkSettings:
    """Architecture of the target network; the proxy rescales widths and head_dim."""

    stem_width: int = 64
    stem_stride: int = 2
    head_width: int = 768
    head_dim: int = 32
    expansion: float = 4.0
    se_ratio: float = 0.25
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    in_chans: int = 3
    CHOICES: ClassVar[dict] = {"stem_stride": (1, 2)}


@dataclass(frozen=True)
class TargetSettings:
    """The deployed network's input size and how its latency and MACs are measured."""

    img_size: int = 224
    batch_size: int = 1
    dtype: str = "float32"
    device: str = "auto"
    channels_last: bool = True
    compile: bool = False
    num_classes: int = 1000
    CHOICES: ClassVar[dict] = {"dtype": DTYPES, "device": DEVICES}


@dataclass(frozen=True)
class SpecProxy:
    """How a candidate is shrunk for short training: every width x width_mult, smaller images."""

    width_mult: float = 0.25
    img_size: int = 32
    stem_stride: int = 1
    head_dim: int = 16
    drop_path_rate: float = 0.0
    CHOICES: ClassVar[dict] = {"stem_stride": (1, 2)}


@dataclass(frozen=True)
class ReportSettings:
    """How results of this space are compared. Hypervolume uses the fixed reference point
    (error 1, latency `reference_latency_ms` on the target device): the same for every study
    of the space, so runs compare."""

    reference_latency_ms: float = 250.0


@dataclass(frozen=True)
class Constraints:
    """Named constraints on whole layouts. `c_before_t` (default, the paper's order): C blocks
    precede T blocks inside every stage; false lets listed layouts state each stage's order
    (`TCCC`). Orders never change a layout's family: counts decide it."""

    t_non_decreasing: bool = False
    min_total_t: int | None = None
    max_total_t: int | None = None
    families: tuple[str, ...] = FAMILIES
    c_before_t: bool = True

    def allows_step(self, prev_t: int, t: int) -> bool:
        return not self.t_non_decreasing or t >= prev_t

    def violated_at_end(self, total_t: int, uneven: bool) -> str | None:
        if self.min_total_t is not None and total_t < self.min_total_t:
            return "min_total_t"
        if self.max_total_t is not None and total_t > self.max_total_t:
            return "max_total_t"
        if ("asymmetric" if uneven else "symmetric") not in self.families:
            return "families"
        return None

    def violation(self, layouts: Sequence[str]) -> str | None:
        """Name of the first constraint `layouts` breaks, or None."""
        t_counts = [s.count("T") for s in layouts]
        if not all(self.allows_step(a, b) for a, b in zip(t_counts, t_counts[1:])):
            return "t_non_decreasing"
        return self.violated_at_end(sum(t_counts), layout_family(layouts) == "asymmetric")


@dataclass(frozen=True)
class StageRule:
    depths: tuple[int, ...]
    t_blocks: tuple[int, ...] | None  # None: any count from 0 to the depth

    def options(self) -> list[tuple[int, int]]:
        """(depth, T count) pairs this stage allows; C blocks always come first."""
        return [(d, t) for d in self.depths for t in range(d + 1) if self.t_blocks is None or t in self.t_blocks]


@dataclass(frozen=True)
class Spec:
    """A spec file, checked key by key. Exactly one of `rules` and `layouts` is set."""

    name: str
    path: Path
    file: str  # the path as error messages show it
    description: str
    rules: tuple[StageRule, ...] | None
    layouts: tuple[tuple[str, ...], ...] | None
    widths: tuple[tuple[int, ...], ...]  # width choices per stage
    c_blocks: tuple[str, ...]
    t_blocks: tuple[str, ...]
    constraints: Constraints
    network: NetworkSettings
    target: TargetSettings
    proxy: SpecProxy
    budget: Budget
    report: ReportSettings


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _exists(path: Path) -> bool:
    """Whether anything is there (a file, a FIFO, a device, a link to one), never opening it."""
    try:
        return path.exists()
    except OSError:
        return False


def locate_spec(name_or_path: str | Path, spaces_dirs: Sequence[Path]) -> Path:
    """`hybrid` -> the first `<dir>/hybrid.yaml` of `spaces_dirs`; a path (with / or .yaml) is taken as given."""
    name = str(name_or_path)
    is_path = "/" in name or name.endswith((".yaml", ".yml"))
    if is_path:
        path = Path(name)
    else:
        candidates = [d / f"{name}.yaml" for d in spaces_dirs]
        path = next((p for p in candidates if _exists(p)), candidates[-1])
    try:
        exists, found = path.exists(), path.is_file()
    except OSError as err:  # e.g. a name longer than the file system allows
        raise SpecError(display_path(path), None, f"cannot open: {err.strerror or err}") from None
    if exists and not found:  # a FIFO would block, /dev/zero never end: name it, not "no such file"
        raise SpecError(display_path(path), None, "not a regular file (a spec is a YAML file)")
    if not found:
        available = sorted({p.stem for d in spaces_dirs for p in d.glob("*.yaml") if _is_file(p)})
        problem = "no such file" if is_path else f"no space named {_clip(repr(name))}{_hint(name, available)}"
        raise SpecError(display_path(path), None, f"{problem}; available spaces: {', '.join(available) or 'none'}")
    return path


def read_spec(path: Path) -> Spec:
    file = display_path(path)
    try:
        if path.stat().st_size > safe_yaml.MAX_BYTES:
            raise safe_yaml.YamlError(f"{path.stat().st_size} bytes: larger than the limit of {safe_yaml.MAX_BYTES}")
        data = safe_yaml.load(path.read_bytes())
    except safe_yaml.YamlError as err:
        raise SpecError(file, None, str(err)) from None
    except OSError as err:
        raise SpecError(file, None, f"cannot read: {err.strerror or err}") from None
    read = _Reader(file)
    if data is None:
        raise read.fail("", "empty spec")
    top = read.mapping(data, "", TOP_KEYS)
    description = top.get("description", "")
    if not isinstance(description, str):
        raise read.fail("description", f"expected a string, got {_kind(description)}")
    constraints = _read_constraints(read, top.get("constraints"))
    rules, widths = _read_stages(read, top.get("stages"), with_rules="layouts" not in top)
    if not constraints.c_before_t and "layouts" not in top:
        raise read.fail("constraints.c_before_t", "false needs a `layouts:` list that states each stage's order "
                        "(stage rules put C first)")
    blocks = read.mapping(top.get("blocks"), "blocks", ("c", "t"))
    spec = Spec(
        name=path.stem, path=path, file=file, description=description,
        rules=None if "layouts" in top else tuple(rules),
        layouts=_read_layouts(read, top["layouts"], constraints) if "layouts" in top else None,
        widths=widths, constraints=constraints,
        c_blocks=read.names(blocks.get("c", "fused_mbconv"), "blocks.c", C_BLOCKS),
        t_blocks=read.names(blocks.get("t", "attention"), "blocks.t", T_BLOCKS),
        network=read.settings(top.get("network"), "network", NetworkSettings),
        target=read.settings(top.get("target"), "target", TargetSettings),
        proxy=read.settings(top.get("proxy"), "proxy", SpecProxy),
        budget=read.settings(top.get("budget"), "budget", Budget),
        report=read.settings(top.get("report"), "report", ReportSettings))
    _check_size(read, spec)
    return spec


# ----------------------------------------------------------------- the strict reader
class _Reader:
    """Typed access to parsed YAML: every problem becomes a SpecError with its key path."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, key: str, problem: str) -> SpecError:
        return SpecError(self.file, key, problem)

    def mapping(self, value: Any, key: str, known: Sequence[str]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(value)}")
        for name in value:
            if name not in known:
                hint = _hint(str(name), known) or f" (known keys: {', '.join(known)})"
                raise self.fail(_at(key, name), "unknown key" + hint)
        return value

    def items(self, value: Any, key: str, ok: Callable[[Any], bool], what: str) -> list:
        """A value or a non-empty list of distinct values, each passing `ok`."""
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(key, f"expected {what} or a list of them, got an empty list")
        bad = [item for item in items if not ok(item)]
        if bad:
            raise self.fail(key, f"expected {what} or a list of them, got {_kind(bad[0])}")
        if len(set(items)) < len(items):
            raise self.fail(key, f"repeated value in {_clip(repr(items))}")
        return items

    def integers(self, value: Any, key: str, minimum: int, below: str, what: str = "an integer",
                 maximum: int | None = None) -> tuple[int, ...]:
        items = self.items(value, key, _is_int, what)
        too_small = [item for item in items if item < minimum]
        if too_small:
            raise self.fail(key, f"{_clip(str(too_small[0]))} {below}")
        too_big = [item for item in items if maximum is not None and item > maximum]
        if too_big:
            raise self.fail(key, f"{_clip(str(too_big[0]))} is above the limit of {maximum}")
        return tuple(sorted(items))

    def names(self, value: Any, key: str, allowed: Sequence[str]) -> tuple[str, ...]:
        items = self.items(value, key, lambda item: isinstance(item, str), "a name")
        for item in items:
            if item not in allowed:
                raise self.fail(key, f"unknown value {_clip(repr(item))}{_hint(item, allowed)} "
                                f"(choose from {', '.join(allowed)})")
        return tuple(items)

    def setting(self, value: Any, key: str, type_name: str, choices: Sequence | None) -> Any:
        """One scalar typed by its dataclass annotation ('int', 'float | None', ...)."""
        optional = type_name.endswith("| None")
        if value is None and optional:
            return None
        kind = type_name.split(" ")[0]
        if kind == "bool":
            ok, what = isinstance(value, bool), "true or false"
        elif kind == "str":
            ok, what = isinstance(value, str), "a string"
        elif kind == "int":
            ok, what = _is_int(value) and value >= (0 if optional else 1), "an integer >= " + ("0" if optional else "1")
        else:  # only these fractions may be zero; a zero width multiplier or ceiling is a mistake
            zero_ok = key.rsplit(".", 1)[-1] in ("se_ratio", "drop_path_rate")
            ok = _is_number(value) and math.isfinite(value) and (value >= 0 if zero_ok else value > 0)
            what = "a finite number " + (">= 0" if zero_ok else "> 0")
        if not ok:
            sci = " (YAML reads 1.5e9 as text: write 1.5e+9)" if isinstance(value, str) and "e" in value.lower() else ""
            raise self.fail(key, f"expected {what}, got {_kind(value)}{sci}")
        limit = LIMITS.get(key)
        if limit is not None and kind in ("int", "float") and value > limit:
            raise self.fail(key, f"{_clip(str(value))} is above the limit of {limit:g}")
        if choices and value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(map(str, choices))}{_hint(str(value), choices)}")
        return float(value) if kind == "float" else value

    def settings(self, value: Any, key: str, cls: type) -> Any:
        types = {f.name: f.type for f in fields(cls)}
        data = self.mapping(value, key, list(types))
        choices = getattr(cls, "CHOICES", {})
        return cls(**{name: self.setting(v, _at(key, name), types[name], choices.get(name)) for name, v in data.items()})


def _read_constraints(read: _Reader, value: Any) -> Constraints:
    data = dict(read.mapping(value, "constraints", tuple(f.name for f in fields(Constraints))))
    families = read.names(data.pop("families", list(FAMILIES)), "constraints.families", FAMILIES)
    types = {f.name: f.type for f in fields(Constraints)}
    values = {name: read.setting(v, f"constraints.{name}", types[name], None) for name, v in data.items()}
    constraints = Constraints(**values, families=families)
    low, high = constraints.min_total_t, constraints.max_total_t
    if low is not None and high is not None and low > high:
        raise read.fail("constraints.min_total_t", f"{low} is above max_total_t={high}")
    return constraints


def _read_stages(read: _Reader, value: Any, with_rules: bool) -> tuple[list[StageRule], tuple[tuple[int, ...], ...]]:
    if value is None:
        if with_rules:
            raise read.fail("stages", f"missing: give {NUM_STAGES} stage rules, or list `layouts:`")
        return [], tuple((width,) for width in DEFAULT_WIDTHS)
    if not isinstance(value, list) or len(value) != NUM_STAGES:
        raise read.fail("stages", f"expected a list of {NUM_STAGES} stages, got {_kind(value)}")
    rules, widths = [], []
    for i, entry in enumerate(value):
        key = f"stages[{i}]"
        entry = read.mapping(entry, key, ("depth", "t_blocks", "width"))
        widths.append(read.integers(entry.get("width", DEFAULT_WIDTHS[i]), f"{key}.width", 1, "is not a width",
                                    maximum=MAX_WIDTH))
        if not with_rules:
            fixed = next((k for k in ("depth", "t_blocks") if k in entry), None)
            if fixed:
                raise read.fail(f"{key}.{fixed}", "not used when the spec lists `layouts:` (they fix every stage)")
            continue
        if "depth" not in entry:
            raise read.fail(f"{key}.depth", "missing (allowed depths, e.g. 4 or [2, 4])")
        depths = read.integers(entry["depth"], f"{key}.depth", 1, f"leaves stage {i + 1} empty (need at least 1 block)",
                               maximum=MAX_STAGE_DEPTH)
        t_value = entry.get("t_blocks", 0 if i == 0 else "any")  # stage 1 is convolution-only unless told
        t_blocks = None if t_value == "any" else read.integers(
            t_value, f"{key}.t_blocks", 0, "is not a count", what="'any', an integer", maximum=MAX_STAGE_DEPTH)
        for depth in depths if t_blocks else ():
            if min(t_blocks) > depth:
                raise read.fail(f"{key}.t_blocks", f"no allowed T count fits depth {depth} (allowed: {list(t_blocks)})")
        if t_blocks and max(t_blocks) > max(depths):
            raise read.fail(f"{key}.t_blocks", f"{max(t_blocks)} T blocks do not fit in depth {max(depths)}")
        rules.append(StageRule(depths, t_blocks))
    return rules, tuple(widths)


def _read_layouts(read: _Reader, value: Any, constraints: Constraints) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list) or not value:
        raise read.fail("layouts", f"expected a non-empty list like ['CC-CCCT-CCTT-CTTT'], got {_kind(value)}")
    seen: dict[tuple[str, ...], int] = {}
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise read.fail(f"layouts[{i}]", f"expected a layout string like 'CC-CCCT-CCTT-CTTT', got {_kind(text)}")
        stages = tuple(text.split("-"))
        problem = (f"has {len(stages)} stages, need {NUM_STAGES}" if len(stages) != NUM_STAGES
                   else "has an empty stage" if not all(stages)
                   else f"has a stage longer than {MAX_STAGE_DEPTH} blocks" if max(map(len, stages)) > MAX_STAGE_DEPTH
                   else "uses letters other than C and T" if set(text) - set("CT-")
                   else "puts a T block before a C block (c_before_t)" if constraints.c_before_t
                   and any("TC" in s for s in stages)
                   else "mixes C and T blocks inside a stage (one run of each: CCTT or TTCC)"
                   if not all(STAGE_PATTERN.fullmatch(s) for s in stages)
                   else f"repeats layouts[{seen[stages]}]" if stages in seen
                   else f"breaks constraint {constraints.violation(stages)}" if constraints.violation(stages)
                   else None)
        if problem:
            raise read.fail(f"layouts[{i}]", f"{_clip(repr(text))} {problem}")
        seen[stages] = i
    return tuple(seen)


def estimate_params(spec: Spec) -> float:
    """An upper estimate of the largest target network's parameters, from the spec alone
    (`ascan.bounds.estimate_params` at each stage's largest width and depth)."""
    net = spec.network
    return bounds.estimate_params(in_chans=net.in_chans, stem_width=net.stem_width,
                                  widths=[max(widths) for widths in spec.widths], depths=_max_depths(spec),
                                  head_width=net.head_width, num_classes=spec.target.num_classes,
                                  expansion=net.expansion, se_ratio=net.se_ratio, mlp_ratio=net.mlp_ratio)


def _max_depths(spec: Spec) -> list[int]:
    if spec.layouts:
        return [max(len(layout[i]) for layout in spec.layouts) for i in range(NUM_STAGES)]
    return [max(rule.depths) for rule in spec.rules or ()]


def _check_size(read: _Reader, spec: Spec) -> None:
    params = estimate_params(spec)
    if params > MAX_PARAMS:
        raise read.fail("stages", f"the largest network would have about {params:.3g} parameters, above the limit "
                        f"of {MAX_PARAMS:.3g}: lower widths, depths, network.expansion or network.mlp_ratio")


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 40 else text[:37] + '...'}"


def _at(key: str, name: Any) -> str:
    return f"{key}.{_clip(str(name))}" if key else _clip(str(name))


def _hint(word: str, options: Sequence[Any]) -> str:
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.5)  # 0.5: catches 'widht'
    return f" (did you mean {close[0]!r}?)" if close else ""


def display_path(path: Path) -> str:
    """`path` relative to the working directory when inside it, as users typed it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
