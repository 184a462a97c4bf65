"""Search spaces: a validated spec becomes a `SearchSpace` of AsCAN candidates.

A spec (`spaces/<name>.yaml` or a folder of `$ASCAN_SPACES`; format in `spaces/README.md`,
read by `search.spec`) says which block layouts to explore, with which block variants and
widths, under which named constraints, and how a candidate becomes two networks: the small
*proxy* trained briefly for accuracy and the *target* whose latency and MACs are measured.
`load_space` reads a spec; a `SearchSpace` counts, enumerates and samples `Candidate`s and
turns one into `ArchConfig`s. `python -m search.space NAME` prints a space (bad spec: exit
status 2).

Sampling (define-by-run): every choice is a named Optuna parameter (`s2_depth`, `s2_t`,
`s2_width`, `c_block`, `t_block`, or `layout` for specs that list layouts). Cross-stage
constraints are met by construction: a stage is offered only the depths and T counts that
can still be completed into a valid layout, so every sample is valid and a brute-force
sampler visits exactly the valid layouts. Integers are offered as an Optuna int range with
the largest step that fits; only if the offer has holes (e.g. `t_blocks: [0, 1, 4]`) can a
value fall in one, and that trial raises `optuna.TrialPruned`.
"""
from __future__ import annotations

import importlib.resources
import math
import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from itertools import product
from pathlib import Path
from typing import Any

import optuna

from ascan.config import NUM_STAGES, ArchConfig
from search.space.spec import (DEFAULT_WIDTHS, FAMILIES, Budget, Constraints, NetworkSettings, SpecProxy,
                         ReportSettings, Spec, SpecError, StageRule, TargetSettings, display_path, layout_family,
                         locate_spec, read_spec, stage_is_even)

__all__ = ["Candidate", "SearchSpace", "SpecError", "describe", "layout_family", "load_space"]

SPACES_ENV = "ASCAN_SPACES"  # folders of the user's own specs (os.pathsep-separated), searched first


def _builtin_spaces_dir() -> Path:
    """The shipped specs. pyproject.toml installs the repository's `spaces/` folder as the
    package `search.spaces`; a source checkout that is not installed reads the folder itself."""
    try:
        return Path(str(importlib.resources.files("search.spaces")))  # a folder: wheels install unzipped
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "spaces"


SPACES_DIR = _builtin_spaces_dir()
PAPER_C1 = ("CC", "CCCT", "CCTT", "CTTT")  # the paper's chosen layout
PAPER_SYMMETRIC = ("CC", "CCCC", "CCTT", "TTTT")  # the paper's symmetric example
ENUMERATE_LIMIT = 100_000

# A picker answers one named choice (name, options, ordinal?) -> value. Optuna sampling,
# replaying a candidate and random walks differ only in their picker.
Pick = Callable[[str, Sequence[Any], bool], Any]


# ----------------------------------------------------------------- layouts
class LayoutRules:
    """The layouts that per-stage rules and the constraints allow, walked stage by stage.

    A state after some stages is (T count of the last stage, total T so far, whether some
    stage was uneven). `_completions` counts the valid ways to finish from a state and is
    memoised, so counting is exact without enumerating and no walk enters a dead end.
    """

    def __init__(self, stages: Sequence[StageRule], constraints: Constraints):
        self.stages, self.constraints = tuple(stages), constraints
        self._memo: dict[tuple, int] = {}

    def _moves(self, stage: int, state: tuple) -> Iterator[tuple[int, int, tuple]]:
        prev_t, total_t, uneven = state
        for depth, t in self.stages[stage].options():
            if stage == 0 or self.constraints.allows_step(prev_t, t):
                yield depth, t, (t, total_t + t, uneven or not stage_is_even(depth, t))

    def _completions(self, stage: int, state: tuple) -> int:
        if stage == NUM_STAGES:
            return int(self.constraints.violated_at_end(state[1], state[2]) is None)
        if (stage, state) not in self._memo:
            self._memo[stage, state] = sum(self._completions(stage + 1, nxt) for _, _, nxt in self._moves(stage, state))
        return self._memo[stage, state]

    def _feasible(self, stage: int, state: tuple) -> list[tuple[int, int, tuple]]:
        return [move for move in self._moves(stage, state) if self._completions(stage + 1, move[2])]

    def count(self) -> int:
        return self._completions(0, (0, 0, False))

    def count_family(self, family: str) -> int:
        families = (family,) if family in self.constraints.families else ()
        return LayoutRules(self.stages, replace(self.constraints, families=families)).count()

    def count_unconstrained(self) -> int:
        return LayoutRules(self.stages, Constraints()).count()

    def iterate(self, stage: int = 0, state: tuple = (0, 0, False)) -> Iterator[tuple[str, ...]]:
        if stage == NUM_STAGES:
            yield ()
            return
        for depth, t, nxt in self._feasible(stage, state):
            for rest in self.iterate(stage + 1, nxt):
                yield ("C" * (depth - t) + "T" * t,) + rest

    def decide(self, pick: Pick) -> tuple[str, ...]:
        state, layouts = (0, 0, False), []
        for i, rule in enumerate(self.stages):
            feasible = self._feasible(i, state)
            depths = sorted({d for d, _, _ in feasible})
            depth = pick(f"s{i + 1}_depth", depths, True) if len(rule.depths) > 1 else depths[0]
            t_to_state = {t: nxt for d, t, nxt in feasible if d == depth}
            varies = len({t for _, t in rule.options()}) > 1
            t = pick(f"s{i + 1}_t", sorted(t_to_state), True) if varies else next(iter(t_to_state))
            state = t_to_state[t]
            layouts.append("C" * (depth - t) + "T" * t)
        return tuple(layouts)

    def may_hold_t(self, stage: int) -> bool:
        return any(t for _, t in self.stages[stage].options())


class LayoutList:
    """An explicit list of layouts, sampled as one categorical choice named `layout`."""

    def __init__(self, layouts: Sequence[tuple[str, ...]]):
        self.layouts = tuple(layouts)

    def count(self) -> int:
        return len(self.layouts)

    def count_family(self, family: str) -> int:
        return sum(layout_family(layouts) == family for layouts in self.layouts)

    def iterate(self) -> Iterator[tuple[str, ...]]:
        return iter(self.layouts)

    def decide(self, pick: Pick) -> tuple[str, ...]:
        return tuple(pick("layout", ["-".join(layouts) for layouts in self.layouts], False).split("-"))

    def may_hold_t(self, stage: int) -> bool:
        return any("T" in layouts[stage] for layouts in self.layouts)


# ----------------------------------------------------------------- the space
@dataclass(frozen=True)
class Candidate:
    """One point of a space: what the search chose. `widths` are the target's widths."""

    layouts: tuple[str, ...]
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    c_block: str = "fused_mbconv"
    t_block: str = "attention"

    def __post_init__(self) -> None:  # lists from JSON/YAML must compare and hash like tuples
        object.__setattr__(self, "layouts", tuple(self.layouts))
        object.__setattr__(self, "widths", tuple(self.widths))

    @property
    def layout(self) -> str:
        return "-".join(self.layouts)


@dataclass(frozen=True, eq=False)
class SearchSpace:
    """A validated spec: count, enumerate and sample candidates; build their configs."""

    name: str
    path: Path
    description: str
    layout_set: LayoutRules | LayoutList
    constraints: Constraints
    widths: tuple[tuple[int, ...], ...]  # width choices per stage
    c_blocks: tuple[str, ...]
    t_blocks: tuple[str, ...]
    network: NetworkSettings
    target: TargetSettings
    proxy: SpecProxy
    budget: Budget
    report: ReportSettings

    @property
    def reference_latency_ms(self) -> float:
        return self.report.reference_latency_ms

    def count_layouts(self) -> int:
        return self.layout_set.count()

    def count(self) -> int:
        """Exact number of candidates: layouts x width choices x block variants."""
        return self.count_layouts() * math.prod(map(len, self.widths)) * len(self.c_blocks) * len(self.t_blocks)

    def count_by_family(self) -> dict[str, int]:
        """Layouts per family."""
        return {family: self.layout_set.count_family(family) for family in FAMILIES}

    def enumerate(self, limit: int = ENUMERATE_LIMIT) -> list[Candidate]:
        """Every candidate, in a fixed order (stage by stage, fewer blocks and fewer T first)."""
        if self.count() > limit:
            raise ValueError(f"space {self.name}: {self.count()} candidates exceed the enumeration limit {limit}")
        return [Candidate(layouts, widths, c, t) for layouts in self.layout_set.iterate()
                for widths in product(*self.widths) for c in self.c_blocks for t in self.t_blocks]

    def _decide(self, pick: Pick) -> Candidate:
        def static(name: str, choices: tuple) -> Any:
            return pick(name, choices, False) if len(choices) > 1 else choices[0]

        layouts = self.layout_set.decide(pick)
        widths = tuple(static(f"s{i + 1}_width", choices) for i, choices in enumerate(self.widths))
        return Candidate(layouts, widths, static("c_block", self.c_blocks), static("t_block", self.t_blocks))

    def sample(self, trial: optuna.Trial) -> Candidate:
        """Sample a valid candidate from `trial`; raises optuna.TrialPruned only for holes (see top)."""

        def pick(name: str, options: Sequence[Any], ordinal: bool) -> Any:
            if not ordinal:
                return trial.suggest_categorical(name, list(options))
            step = math.gcd(*(b - a for a, b in zip(options, options[1:]))) or 1
            value = trial.suggest_int(name, options[0], options[-1], step=step)
            if value not in options:
                raise optuna.TrialPruned(f"{name}={value} cannot complete a valid layout here (allowed: {list(options)})")
            return value

        return self._decide(pick)

    def random_candidate(self, rng: random.Random) -> Candidate:
        """A valid candidate drawn choice by choice (not uniform over candidates)."""
        return self._decide(lambda name, options, ordinal: rng.choice(list(options)))

    def params_for(self, candidate: Candidate) -> dict[str, Any]:
        """The Optuna params that make `sample` return `candidate` (for `study.enqueue_trial`)."""
        answers: dict[str, Any] = {"layout": candidate.layout, "c_block": candidate.c_block, "t_block": candidate.t_block}
        for i, (stage, width) in enumerate(zip(candidate.layouts, candidate.widths)):
            answers.update({f"s{i + 1}_depth": len(stage), f"s{i + 1}_t": stage.count("T"), f"s{i + 1}_width": width})
        params: dict[str, Any] = {}

        def pick(name: str, options: Sequence[Any], ordinal: bool) -> Any:
            if answers.get(name) not in options:
                raise ValueError(f"{candidate.layout}: {name}={answers[name]!r} is outside space {self.name}")
            params[name] = answers[name]
            return answers[name]

        if len(candidate.layouts) != NUM_STAGES or self._decide(pick) != candidate:
            raise ValueError(f"{candidate.layout}: outside space {self.name}")
        return params

    def __contains__(self, candidate: Candidate) -> bool:
        try:
            self.params_for(candidate)
        except ValueError:
            return False
        return True

    def reference_candidates(self) -> list[Candidate]:
        """The paper's C1 and its symmetric example, where this space holds them."""
        c_block = "fused_mbconv" if "fused_mbconv" in self.c_blocks else self.c_blocks[0]
        widths = tuple(choices[0] for choices in self.widths)
        refs = [Candidate(layouts, widths, c_block, self.t_blocks[0]) for layouts in (PAPER_C1, PAPER_SYMMETRIC)]
        return [ref for ref in refs if ref in self]

    def family(self, item: Candidate | ArchConfig | str | Sequence[str]) -> str:
        return layout_family(getattr(item, "layouts", item))

    def target_config(self, candidate: Candidate) -> ArchConfig:
        n = self.network
        return ArchConfig(
            layouts=candidate.layouts, widths=candidate.widths, stem_width=n.stem_width, stem_stride=n.stem_stride,
            head_width=n.head_width, c_block=candidate.c_block, t_block=candidate.t_block, expansion=n.expansion,
            se_ratio=n.se_ratio, head_dim=n.head_dim, mlp_ratio=n.mlp_ratio, drop_path_rate=n.drop_path_rate,
            num_classes=self.target.num_classes, in_chans=n.in_chans, img_size=self.target.img_size)

    def proxy_config(self, candidate: Candidate, num_classes: int) -> ArchConfig:
        """The shrunk network trained briefly; `num_classes` comes from the dataset."""
        p, scale = self.proxy, lambda width: _scale(width, self.proxy.width_mult)
        return self.target_config(candidate).replace(
            widths=tuple(map(scale, candidate.widths)), stem_width=scale(self.network.stem_width),
            head_width=scale(self.network.head_width), head_dim=p.head_dim, stem_stride=p.stem_stride,
            img_size=p.img_size, drop_path_rate=p.drop_path_rate, num_classes=num_classes)


def _scale(width: int, mult: float) -> int:
    return max(1, round(width * mult))


# ----------------------------------------------------------------- entry points
def spaces_dirs() -> list[Path]:
    """Where `space=NAME` is looked for: the folders of `$ASCAN_SPACES`, then the shipped specs."""
    return [*(Path(p) for p in os.environ.get(SPACES_ENV, "").split(os.pathsep) if p), SPACES_DIR]


def load_space(name_or_path: str | Path, dirs: Sequence[Path] | None = None) -> SearchSpace:
    """`hybrid` -> the first `hybrid.yaml` in `dirs` (default `spaces_dirs()`); a path (with /
    or .yaml) is read as given."""
    spec = read_spec(locate_spec(name_or_path, spaces_dirs() if dirs is None else dirs))
    return _build(spec)


def _build(spec: Spec) -> SearchSpace:
    """The checks that need the whole space: emptiness, head_dim divisibility, buildable configs."""
    layout_set = LayoutList(spec.layouts) if spec.layouts else LayoutRules(spec.rules, spec.constraints)
    if layout_set.count() == 0:
        before = layout_set.count_unconstrained()
        raise SpecError(spec.file, "constraints", f"no layout satisfies them ({before} layouts before constraints)")
    net, proxy = spec.network, spec.proxy
    for i, choices in enumerate(spec.widths):
        for width in choices if layout_set.may_hold_t(i) else ():
            small = _scale(width, proxy.width_mult)
            if width % net.head_dim:
                raise SpecError(spec.file, f"stages[{i}].width", f"{width} is not divisible by network.head_dim="
                                f"{net.head_dim} (stage {i + 1} may hold T blocks)")
            if small % proxy.head_dim:
                raise SpecError(spec.file, "proxy.width_mult", f"stage {i + 1} width {width} x {proxy.width_mult} = "
                                f"{small} is not divisible by proxy.head_dim={proxy.head_dim}")
    space = SearchSpace(spec.name, spec.path, spec.description, layout_set, spec.constraints, spec.widths, spec.c_blocks,
                        spec.t_blocks, net, spec.target, proxy, spec.budget, spec.report)
    example = space.random_candidate(random.Random(0))
    for section, build in (("target", space.target_config), ("proxy", lambda c: space.proxy_config(c, 10))):
        try:
            build(example)
        except ValueError as err:  # settings ArchConfig itself rejects, e.g. images too small
            raise SpecError(spec.file, section, str(err)) from None
    return space


def describe(space: SearchSpace, examples: int = 5) -> str:
    """The dry-run text: counts by family, settings and a few example candidates."""
    t, p, c = space.target, space.proxy, space.constraints
    per_layout = space.count() // space.count_layouts()
    shown = lambda value: "+".join(value) if isinstance(value, tuple) else value  # noqa: E731
    active = ["c_before_t" if c.c_before_t else "c_before_t=false"] + [
        f"{f.name}={shown(getattr(c, f.name))}" for f in fields(c) if f.name != "c_before_t" and getattr(c, f.name) != f.default]
    lines = [
        f"space {space.name} ({display_path(space.path)})" + (f": {space.description}" if space.description else ""),
        f"{space.count()} candidates = {space.count_layouts()} layouts x {per_layout} block/width choices",
        "layouts by family: " + ", ".join(f"{name} {n}" for name, n in space.count_by_family().items()),
        "constraints: " + ", ".join(active),
        f"target: {t.img_size} px, batch {t.batch_size}, {t.dtype}, device {t.device}, "
        f"channels_last={t.channels_last}, compile={t.compile}",
        f"proxy: {p.img_size} px, stem stride {p.stem_stride}, widths x{p.width_mult}, head_dim {p.head_dim}",
    ]
    ceilings = [f"{f.name}={getattr(space.budget, f.name)}" for f in fields(Budget) if getattr(space.budget, f.name)]
    lines += ["budget: " + ", ".join(ceilings)] if ceilings else []
    lines.append("examples:")
    for cand in _examples(space, examples):
        lines.append(f"  {cand.layout}  {space.family(cand)}  c_block={cand.c_block}  t_block={cand.t_block}  "
                     f"hash {space.target_config(cand).arch_hash}")
        lines.append(f"      target {space.target_config(cand).short_name()}")
        lines.append(f"      proxy  {space.proxy_config(cand, num_classes=10).short_name()}")
    return "\n".join(lines)


def _examples(space: SearchSpace, k: int) -> list[Candidate]:
    """The paper's references first, then a fixed-seed draw from the space."""
    rng = random.Random(0)
    if space.count() <= ENUMERATE_LIMIT:
        pool = space.enumerate()
        pool = [pool[i] for i in sorted(rng.sample(range(len(pool)), min(k, len(pool))))]
    else:
        pool = [space.random_candidate(rng) for _ in range(k)]
    chosen: list[Candidate] = []
    for cand in space.reference_candidates() + pool:
        if cand not in chosen:
            chosen.append(cand)
    return chosen[:k]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m search.space NAME_OR_PATH`: print the space; a bad spec exits 2 with one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m search.space NAME_OR_PATH", file=sys.stderr)
        return 2
    try:
        print(describe(load_space(args[0])))
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
