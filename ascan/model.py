"""AsCAN: Asymmetric Convolution-Attention Networks (Kag et al., NeurIPS 2024).

A stem of two convs, four stages of C (convolution) and T (transformer) blocks at strides
4/8/16/32 (with the paper's stride-2 stem), and a head (1x1 projection, BN, GELU, global
pool, linear). The block distribution of every stage comes from an `ArchConfig`, so the
same class builds the paper's asymmetric `CC-CCCT-CCTT-CTTT`, its symmetric counterparts and
any layout a search proposes.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models import checkpoint_seq

from .blocks import ConvBn, StageDownsample, make_c_block, make_t_block
from .config import ArchConfig

__all__ = ["AsCAN", "AsCANStage", "build_model"]


class Stem(nn.Module):
    """Two 3x3 convs with BN + GELU; the first has the stem's stride and half the width.

    Half width in the first conv (as timm's CoAtNet "rw" stems) halves the stem's MACs at
    full resolution; the paper only says "two conv layers".
    """

    def __init__(self, in_chans: int, out_chs: int, stride: int):
        super().__init__()
        self.conv1 = ConvBn(in_chans, out_chs // 2, 3, stride=stride, gelu=True)
        self.conv2 = ConvBn(out_chs // 2, out_chs, 3, gelu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class AsCANStage(nn.Module):
    """One stage: C blocks then T blocks (or T then C, when `layout` says so), halving the
    resolution on entry.

    A stage that opens with a C block lets it stride itself; one that opens with T gets a
    `StageDownsample`. NCHW <-> NHWC happens once, around the T blocks (views under channels_last).
    """

    def __init__(self, in_chs: int, out_chs: int, layout: str, cfg: ArchConfig, grid_size: tuple[int, int],
                 drop_path_rates: list[float]):
        super().__init__()
        num_c = layout.count("C")
        self.t_first = layout[0] == "T"
        self.downsample = StageDownsample(in_chs, out_chs) if self.t_first else nn.Identity()
        c_rates = drop_path_rates[len(layout) - num_c:] if self.t_first else drop_path_rates[:num_c]
        t_rates = drop_path_rates[:len(layout) - num_c] if self.t_first else drop_path_rates[num_c:]
        c_in = out_chs if self.t_first else in_chs
        self.conv_blocks = nn.Sequential(*[
            make_c_block(cfg.c_block, c_in if i == 0 else out_chs, out_chs, stride=2 if i == 0 and not self.t_first else 1,
                         expansion=cfg.expansion, se_ratio=cfg.se_ratio, drop_path=rate)
            for i, rate in enumerate(c_rates)
        ])
        self.transformer_blocks = nn.Sequential(*[
            make_t_block(cfg.t_block, out_chs, cfg.head_dim, cfg.mlp_ratio, grid_size, drop_path=rate)
            for rate in t_rates
        ])

    def _transformers(self, x: torch.Tensor) -> torch.Tensor:
        if not len(self.transformer_blocks):
            return x
        return self.transformer_blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.t_first:
            return self.conv_blocks(self._transformers(x))
        return self._transformers(self.conv_blocks(x))


class AsCAN(nn.Module):
    """An AsCAN network built from an `ArchConfig`.

    `num_classes`, `in_chans`, `img_size` and `drop_path_rate` override the config's values,
    so `timm.create_model("ascan_tiny", num_classes=10)` works as for any timm model;
    `self.config` is the resolved config the network was built from. For fast inference,
    convert once: `timm.utils.reparameterize_model(model)` (see ascan/fused.py).
    """

    def __init__(
            self,
            cfg: ArchConfig,
            num_classes: Optional[int] = None,
            in_chans: Optional[int] = None,
            img_size: Optional[int] = None,
            drop_path_rate: Optional[float] = None,
            global_pool: str = "avg",
    ):
        super().__init__()
        overrides = dict(num_classes=num_classes, in_chans=in_chans, img_size=img_size, drop_path_rate=drop_path_rate)
        cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.global_pool = global_pool
        self.grad_checkpointing = False

        self.stem = Stem(cfg.in_chans, cfg.stem_width, cfg.stem_stride)
        total_blocks = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        stages, self.feature_info = [], []
        in_chs, first = cfg.stem_width, 0
        for i, (layout, width, res) in enumerate(zip(cfg.layouts, cfg.widths, cfg.stage_resolutions())):
            stages.append(AsCANStage(in_chs, width, layout, cfg, (res, res), rates[first:first + len(layout)]))
            self.feature_info.append(dict(num_chs=width, reduction=cfg.stage_strides()[i], module=f"stages.{i}"))
            in_chs, first = width, first + len(layout)
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = cfg.head_width
        self.head_proj = ConvBn(in_chs, cfg.head_width, 1, gelu=True)
        self.fc = nn.Linear(cfg.head_width, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if name.endswith("rel_pos.table")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.\w+\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_proj(x)
        if self.global_pool != "avg":
            return x  # unpooled map, as timm models give for global_pool=''
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(cfg: ArchConfig, **overrides) -> AsCAN:
    """Build an `AsCAN` network from a config (the entry point for search code)."""
    return AsCAN(cfg, **overrides)
