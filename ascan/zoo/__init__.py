"""The AsCAN model zoo: named configs registered with timm.

Built-in variants are `@register_model` factories below. Architectures exported from a
search (`python -m search.export ...`) are YAML files in a zoo folder; each is registered
with timm when `ascan` is imported, so `timm.create_model("ascan_<name>")` builds it.

Zoo folders, read in this order (`zoo_dirs()`): this package's folder (files shipped with
ascan), then the folders of `$ASCAN_ZOO_DIR` (os.pathsep-separated) if it is set, else the
per-user zoo `$XDG_DATA_HOME/ascan-search/zoo` (by default `~/.local/share/ascan-search/zoo`).
A bad file is skipped with one warning naming it, and never registered: zoo files are read
with a size, nesting and alias limit, because every `import ascan` reads them, and their
networks with the bounds a search spec's are read with (`ascan.bounds`: widths, depths,
heads, a parameter estimate before anything is built).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from yaml.composer import ComposerError
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .. import bounds
from ..config import ArchConfig
from ..model import AsCAN

ZOO_DIR = Path(__file__).parent
PAPER_LAYOUT = ("CC", "CCCT", "CCTT", "CTTT")  # the paper's chosen asymmetric "C1"
SYMMETRIC_LAYOUT = ("CC", "CCCC", "CCTT", "TTTT")  # the paper's symmetric example

# Widths are ours: the paper gives AsCAN-L's size (173M params, 30.7 GMACs at 224 px) but not
# its widths. T/B/L scale like MaxViT (stem 64/64/128, widths 64..512 / 96..768 / 128..1024),
# with B and L deeper in stages 3-4, keeping the C-first asymmetric pattern.
ZOO_CONFIGS: dict[str, ArchConfig] = {
    "ascan_tiny": ArchConfig(layouts=PAPER_LAYOUT, widths=(64, 128, 256, 512), stem_width=64, head_width=768),
    "ascan_tiny_sym": ArchConfig(layouts=SYMMETRIC_LAYOUT, widths=(64, 128, 256, 512), stem_width=64,
                                 head_width=768),
    "ascan_base": ArchConfig(layouts=("CC", "CCCT", "CCCCTTTT", "CTTT"), widths=(96, 192, 384, 768),
                             stem_width=64, head_width=1024),
    "ascan_large": ArchConfig(layouts=("CC", "CCCCTT", "CCCCTTTTTTTT", "CTTTTTTT"), widths=(128, 256, 512, 1024),
                              stem_width=128, head_width=1280),
}


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.95, "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
        "first_conv": "stem.conv1.conv", "classifier": "fc", **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in ZOO_CONFIGS})


def create_ascan(variant: str, cfg: ArchConfig, pretrained: bool = False, **kwargs: Any) -> AsCAN:
    return build_model_with_cfg(
        AsCAN, variant, pretrained, model_cfg=cfg,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True), **kwargs)


@register_model
def ascan_tiny(pretrained: bool = False, **kwargs: Any) -> AsCAN:
    return create_ascan("ascan_tiny", ZOO_CONFIGS["ascan_tiny"], pretrained, **kwargs)


@register_model
def ascan_tiny_sym(pretrained: bool = False, **kwargs: Any) -> AsCAN:
    return create_ascan("ascan_tiny_sym", ZOO_CONFIGS["ascan_tiny_sym"], pretrained, **kwargs)


@register_model
def ascan_base(pretrained: bool = False, **kwargs: Any) -> AsCAN:
    return create_ascan("ascan_base", ZOO_CONFIGS["ascan_base"], pretrained, **kwargs)


@register_model
def ascan_large(pretrained: bool = False, **kwargs: Any) -> AsCAN:
    return create_ascan("ascan_large", ZOO_CONFIGS["ascan_large"], pretrained, **kwargs)


# ----------------------------------------------------------------- exported architectures
ZOO_DIR_ENV = "ASCAN_ZOO_DIR"  # zoo folders (os.pathsep-separated) read instead of the per-user one
BUILTIN_NAMES = frozenset(ZOO_CONFIGS)
EXPORTED: dict[str, ZooFile] = {}  # exported models registered with timm in this process, by name
MAX_FILE_BYTES = 64 * 1024  # an export is ~3 KB; a bigger file is not one
MAX_DEPTH = 16  # an export nests 4 levels deep
MAX_REASON_CHARS = 300  # a skipped file's reason is quoted in one warning line, so it is bounded


@dataclass(frozen=True)
class ZooFile:
    """One exported architecture: `<name>.yaml` holding `config:` and `provenance:`."""

    name: str
    path: Path
    config: ArchConfig
    provenance: dict[str, Any]

    @property
    def weights(self) -> Path | None:
        """Optional weights beside the YAML, as safetensors (never a pickle)."""
        path = self.path.with_suffix(".safetensors")
        return path if path.is_file() else None


def user_zoo_dir() -> Path:
    """The per-user zoo (XDG base-directory rule): `$XDG_DATA_HOME/ascan-search/zoo`, else
    `~/.local/share/ascan-search/zoo`. Exports go here unless `$ASCAN_ZOO_DIR` is set."""
    data_home = os.environ.get("XDG_DATA_HOME", "")
    base = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "ascan-search" / "zoo"


def user_zoo_dirs() -> list[Path]:
    """The writable zoo folders: those of `$ASCAN_ZOO_DIR` if set, else the per-user zoo."""
    from_env = [Path(p) for p in os.environ.get(ZOO_DIR_ENV, "").split(os.pathsep) if p]
    return from_env or [user_zoo_dir()]


def zoo_dirs() -> list[Path]:
    """Where zoo YAML files are read from: this package's folder, then `user_zoo_dirs()`."""
    return [ZOO_DIR, *user_zoo_dirs()]


def read_zoo_file(path: Path) -> ZooFile:
    """Parse and validate one zoo file; the ValueError names the file and what is wrong."""
    path = Path(path)
    try:
        return _parse_zoo_file(path)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without aliases and with bounded nesting. Aliases let a few hundred
    bytes expand to gigabytes (a "billion laughs"), and deep nesting overflows PyYAML's
    recursive composer; an export needs neither."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise ComposerError(None, None, "aliases (*name) are not allowed", self.peek_event().start_mark)
        if self.depth >= MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _read_yaml(path: Path) -> Any:
    if not path.is_file():  # a FIFO or device would block or never end
        raise ValueError("not a regular file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ValueError(f"unreadable ({err.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES // 1024} KiB, not a zoo file")
    try:
        return yaml.load(raw.decode("utf-8"), Loader=_BoundedLoader)  # a SafeLoader subclass
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ValueError(f"unreadable YAML: {where}{getattr(err, 'problem', None) or err}") from None


def _parse_zoo_file(path: Path) -> ZooFile:
    name = path.stem
    if not (name.startswith("ascan_") and name.isidentifier()):
        raise ValueError("the file name must be 'ascan_<name>.yaml', the name a Python identifier")
    if name in BUILTIN_NAMES:
        raise ValueError(f"{name} is a built-in model and cannot be redefined")
    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError("expected a mapping with a 'config:' section")
    if data.get("name", name) != name:
        raise ValueError(f"name {data['name']!r} does not match the file name")
    try:
        config = ArchConfig.from_dict(data["config"])  # its ValueError names the bad field
    except (ValueError, TypeError, OverflowError) as err:  # e.g. a mapping where a number belongs, or `.inf`
        raise ValueError(f"config: {err}") from None
    if (problem := bounds.violation(config)) is not None:  # the bounds a spec is read with, before any build
        raise ValueError(f"config: {problem}")
    provenance = data.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise ValueError("'provenance:' must be a mapping")
    return ZooFile(name, path, config, provenance)


def _cfg_for(entry: ZooFile) -> dict[str, Any]:
    cfg = entry.config
    final = cfg.stage_resolutions()[-1]
    weights = entry.weights
    return _cfg(num_classes=cfg.num_classes, input_size=(cfg.in_chans, cfg.img_size, cfg.img_size),
                pool_size=(final, final), **({"file": str(weights)} if weights else {}))


def _entrypoint(entry: ZooFile) -> Callable[..., AsCAN]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> AsCAN:
        return create_ascan(entry.name, entry.config, pretrained, **kwargs)

    # timm registers a function under its __name__ and finds its pretrained cfg in the
    # `default_cfgs` of its __module__, so the generated function must claim both.
    entrypoint.__name__ = entrypoint.__qualname__ = entry.name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{entry.config.short_name()} (exported from {entry.path.name})"
    return entrypoint


def register_zoo_file(path: Path) -> ZooFile:
    """Register one zoo file with timm (again, if it changed): raises ValueError if invalid."""
    entry = read_zoo_file(path)
    default_cfgs.update(generate_default_cfgs({entry.name: _cfg_for(entry)}))
    fn = _entrypoint(entry)
    globals()[entry.name] = fn
    with warnings.catch_warnings():  # re-registering an exported name (after `--force`) is intended
        warnings.filterwarnings("ignore", message=f"Overwriting {entry.name} in registry")
        register_model(fn)
    EXPORTED[entry.name] = entry
    return entry


def load_zoo(dirs: list[Path] | None = None) -> dict[str, ZooFile]:
    """Register every `*.yaml` in the zoo folders. A bad file is skipped with one warning
    naming it, so one corrupt export never breaks `import ascan` for the other models."""
    for folder in zoo_dirs() if dirs is None else dirs:
        for path in sorted(Path(folder).glob("*.yaml")):
            earlier = EXPORTED.get(path.stem)
            if earlier is not None and earlier.path.resolve() != path.resolve():
                warnings.warn(f"ascan zoo: skipping {path}: {path.stem} is already defined by {earlier.path}",
                              stacklevel=2)
                continue
            try:
                register_zoo_file(path)
            except ValueError as err:
                reason = " ".join(str(err).split())  # one line, whatever the file held
                if len(reason) > MAX_REASON_CHARS:
                    reason = reason[:MAX_REASON_CHARS] + "..."
                warnings.warn(f"ascan zoo: skipping {reason}", stacklevel=2)
    return dict(EXPORTED)


load_zoo()
