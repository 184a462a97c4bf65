"""`ArchConfig`: a whole AsCAN network as plain, validated, hashable data.

A config is the single source of truth for an architecture: the search samples one, the
profiler measures one, the zoo stores one, and `ascan.model.AsCAN` builds one. It is a
frozen dataclass so it can be a dict key, and it round-trips exactly through dict, JSON and
YAML. Its hash is the SHA-256 of its canonical JSON, so it is the same in every process and
on every machine.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

BLOCK_LETTERS = {"C": "convolution block", "T": "transformer block"}
C_BLOCKS = ("fused_mbconv", "mbconv", "convnext")
T_BLOCKS = ("attention", "multi_axis", "hierarchical")
NUM_STAGES = 4
# A stage is one run of C blocks and one run of T blocks, C first (the paper's order) or T first.
STAGE_PATTERN = re.compile(r"C*T*|T*C*")


@dataclass(frozen=True)
class ArchConfig:
    """An AsCAN network.

    `layouts[i]` is the block string of stage i (`"CC"`, `"CCCT"`, ...): C is the
    convolution block named by `c_block`, T the transformer block named by `t_block`. A stage
    is one run of C and one run of T blocks, in the order written: `"CCCT"` (the paper's,
    C before T) or `"TCCC"` (T first).
    The stem has stride `stem_stride` (2 in the paper; 1 lets a 32 px proxy keep a useful
    resolution in its late stages) and every stage opens at half the resolution before it.
    `img_size` is the resolution the network is designed for: it sizes the relative
    position bias tables and is checked against the depth of downsampling. The network
    still runs at other resolutions (the bias is resized).
    """

    layouts: tuple[str, ...] = ("CC", "CCCT", "CCTT", "CTTT")
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem_width: int = 64
    stem_stride: int = 2
    head_width: int = 768
    c_block: str = "fused_mbconv"
    t_block: str = "attention"
    expansion: float = 4.0
    se_ratio: float = 0.25
    head_dim: int = 32
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    num_classes: int = 1000
    in_chans: int = 3
    img_size: int = 224

    def __post_init__(self) -> None:
        # Normalise lists (from JSON/YAML) to tuples so equal configs compare and hash equal.
        object.__setattr__(self, "layouts", tuple(self.layouts))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        for name in ("expansion", "se_ratio", "mlp_ratio", "drop_path_rate"):
            object.__setattr__(self, name, float(getattr(self, name)))
        self._validate()

    # ----------------------------------------------------------------- validation
    def _validate(self) -> None:
        def bad(field_name: str, value: Any, why: str) -> ValueError:
            return ValueError(f"ArchConfig.{field_name}={value!r}: {why}")

        if len(self.layouts) != NUM_STAGES:
            raise bad("layouts", self.layouts, f"need exactly {NUM_STAGES} stages")
        if len(self.widths) != NUM_STAGES:
            raise bad("widths", self.widths, f"need exactly {NUM_STAGES} widths")
        for i, layout in enumerate(self.layouts):
            if not isinstance(layout, str) or not layout:
                raise bad(f"layouts[{i}]", layout, "a stage needs at least one block")
            unknown = sorted(set(layout) - set(BLOCK_LETTERS))
            if unknown:
                raise bad(f"layouts[{i}]", layout, f"unknown block letter {unknown[0]!r} (use C or T)")
            if not STAGE_PATTERN.fullmatch(layout):
                raise bad(f"layouts[{i}]", layout, "a stage is one run of C and one run of T blocks (CCTT or TTCC)")
        for name in ("stem_width", "head_width", "head_dim", "num_classes", "in_chans", "img_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(name, value, "must be a positive integer")
        if self.stem_stride not in (1, 2):
            raise bad("stem_stride", self.stem_stride, "must be 1 or 2")
        for i, width in enumerate(self.widths):
            if width <= 0:
                raise bad(f"widths[{i}]", width, "must be a positive integer")
            if "T" in self.layouts[i] and width % self.head_dim:
                raise bad(f"widths[{i}]", width, f"a stage with T blocks needs a width divisible by head_dim={self.head_dim}")
        if self.c_block not in C_BLOCKS:
            raise bad("c_block", self.c_block, f"choose one of {', '.join(C_BLOCKS)}")
        if self.t_block not in T_BLOCKS:
            raise bad("t_block", self.t_block, f"choose one of {', '.join(T_BLOCKS)}")
        for name in ("expansion", "mlp_ratio"):
            if getattr(self, name) <= 0:
                raise bad(name, getattr(self, name), "must be positive")
        if not 0.0 <= self.se_ratio < 1.0:
            raise bad("se_ratio", self.se_ratio, "must be in [0, 1)")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise bad("drop_path_rate", self.drop_path_rate, "must be in [0, 1)")
        for i, size in enumerate(self.stage_resolutions()):
            if size < 1:
                raise bad("img_size", self.img_size, f"stage {i + 1} would be below 1x1 (stride {self.stage_strides()[i]})")

    # ----------------------------------------------------------------- geometry
    def stage_strides(self) -> tuple[int, ...]:
        """Total stride of each stage's output relative to the input."""
        return tuple(self.stem_stride * 2 ** (i + 1) for i in range(NUM_STAGES))

    def stage_resolutions(self, img_size: int | None = None) -> tuple[int, ...]:
        size = self.img_size if img_size is None else img_size
        return tuple(size // stride for stride in self.stage_strides())

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(layout) for layout in self.layouts)

    @property
    def t_counts(self) -> tuple[int, ...]:
        return tuple(layout.count("T") for layout in self.layouts)

    @property
    def layout(self) -> str:
        """The block distribution alone, e.g. `CC-CCCT-CCTT-CTTT`."""
        return "-".join(self.layouts)

    # ----------------------------------------------------------------- identity
    def short_name(self) -> str:
        """Canonical short string: `C2-CCCT-CCTT-CTTT/64-128-256-512`.

        Homogeneous stages are run-length coded (`C2`, `T4`); settings that differ from the
        defaults follow after `/`, so two different networks never share a name.
        """
        stages = [_run_length(layout) for layout in self.layouts]
        name = "-".join(stages) + "/" + "-".join(str(w) for w in self.widths)
        defaults = ArchConfig.__dataclass_fields__
        extras = [
            f"{f}={getattr(self, f)}"
            for f in ("stem_width", "stem_stride", "head_width", "c_block", "t_block", "expansion", "se_ratio",
                      "head_dim", "mlp_ratio", "drop_path_rate", "num_classes", "in_chans", "img_size")
            if getattr(self, f) != defaults[f].default
        ]
        return name + ("/" + ",".join(extras) if extras else "")

    def __str__(self) -> str:
        return self.short_name()

    @property
    def arch_hash(self) -> str:
        """Stable content hash (12 hex digits of SHA-256 over the canonical JSON)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    # ----------------------------------------------------------------- conversions
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layouts"] = list(self.layouts)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchConfig":
        if not isinstance(data, dict):
            raise ValueError(f"ArchConfig: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ArchConfig.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "ArchConfig":
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    @classmethod
    def from_yaml(cls, text: str) -> "ArchConfig":
        return cls.from_dict(yaml.safe_load(text))

    def replace(self, **changes: Any) -> "ArchConfig":
        return dataclasses.replace(self, **changes)


def _run_length(layout: str) -> str:
    if len(set(layout)) == 1 and len(layout) > 1:
        return f"{layout[0]}{len(layout)}"
    return layout
