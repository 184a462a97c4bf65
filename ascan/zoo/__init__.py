"""The AsCAN model zoo: named configs registered with timm.

Built-in variants are `@register_model` factories below. Architectures exported from a
search (`python -m search.export ...`) are YAML files in this folder; each is registered
with timm when `ascan` is imported, so `timm.create_model("ascan_<name>")` builds it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

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
        "first_conv": "stem.conv1", "classifier": "fc", **kwargs,
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
