"""The AsCAN building blocks, C (convolution) and T (transformer), the variants the paper
ablated, and the small fusable layers they are made of.

Convolution blocks take and return NCHW tensors; transformer blocks take and return NHWC
tensors, so a stage converts layout once, at its C/T boundary. Under `channels_last` memory
format that conversion is a free view.

C blocks (`C_BLOCK_TYPES`): `fused_mbconv` (the paper's), `mbconv`, `convnext`.
T blocks (`T_BLOCK_TYPES`): `attention` (the paper's vanilla global attention), `multi_axis`
(MaxViT) and `hierarchical` (FasterViT), each ending in the paper's parallel form
`y = x + Attn(LN(x)) + MLP(LN(x))` with its own attention (one MLP per T block).

Choices where the paper is silent (ours):
- The hidden width of a C block is `in_chs * expansion` and the squeeze-excite bottleneck
  is `in_chs * se_ratio` (EfficientNetV2's convention, where FusedMBConv comes from:
  relative to the block input, not the expanded width), with GELU as the SE activation.
- A stride-2 C block opens a stage; its shortcut is a 2x2 average pool then a 1x1 conv
  (timm's ConvNeXt `Downsample`), the shortcut MaxViT and CoAtNet use.
- The FusedMBConv projection is followed by BatchNorm, as in timm's `EdgeResidual`.
- T blocks use LayerNorm (eps 1e-5) and a learned relative-position bias table per head
  (as Swin and MaxViT), sized for the design grid and bilinearly resized to any other grid,
  so one set of weights runs at 32 px (proxy) and 224 px (deployment). The paper's equation
  shows a GELU before the LayerNorm; we read it as a typo and leave it out.
- Stochastic depth drops the attention and the MLP branch of a T block independently (as
  timm's `ParallelThingsBlock`), so each branch's residual add can fuse into its last layer.
- Windowed T blocks use `WINDOW_SIZE` 7 (MaxViT's and FasterViT's at 224 px), or the map size
  when the map is smaller. A map the window does not divide (16 px with a 7 px window, as in
  the proxy's stage 2) is zero-padded at the bottom and right to a multiple of the window and
  the padded tokens are masked out as keys, so they change no real token's output; their
  queries are computed and dropped (the MAC formula in search/macs.py counts them).

Every `fuse()` method here returns the layer's inference form (ascan/fused.py);
`timm.utils.reparameterize_model(model)` applies them all.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, SqueezeExcite as TimmSqueezeExcite, trunc_normal_
from timm.models.convnext import ConvNeXtBlock, Downsample
from timm.models.maxxvit import grid_partition, grid_reverse, window_partition, window_reverse

from .fused import CachedOutput, FusedConv, FusedLinear, InplaceSqueezeExcite, fold_conv_bn

__all__ = ["ConvBn", "Linear", "Mlp", "SqueezeExcite", "RelPosBias", "Attention", "FusedMBConv", "MBConv",
           "ConvNeXtC", "StageDownsample", "TransformerBlock", "MultiAxisBlock", "HierarchicalBlock",
           "C_BLOCK_TYPES", "T_BLOCK_TYPES", "WINDOW_SIZE", "make_c_block", "make_t_block"]

WINDOW_SIZE = 7


# ----------------------------------------------------------------------------- fusable layers
class ConvBn(nn.Module):
    """Conv2d + BatchNorm2d, then GELU (`gelu=True`) or a residual add (`shortcut`).

    `forward(x)` is `act(bn(conv(x)))`; `forward(x, shortcut)` is `shortcut + drop_path(bn(conv(x)))`.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 gelu: bool = False, drop_path: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.GELU() if gelu else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        return x if shortcut is None else shortcut + self.drop_path(x)

    def fuse(self) -> FusedConv:
        weight, bias = fold_conv_bn(self.conv, self.bn)
        return FusedConv(weight, bias, self.conv.stride, self.conv.padding, self.conv.groups,
                         gelu=isinstance(self.act, nn.GELU))


class Linear(nn.Linear):
    """`nn.Linear`, then GELU (`gelu=True`) or a residual add: `shortcut + drop_path(fc(x))`."""

    def __init__(self, in_features: int, out_features: int, gelu: bool = False, drop_path: float = 0.0):
        super().__init__(in_features, out_features)
        self.act = nn.GELU() if gelu else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.act(super().forward(x))
        return x if shortcut is None else shortcut + self.drop_path(x)

    def fuse(self) -> FusedLinear:
        return FusedLinear(self.weight, self.bias, gelu=isinstance(self.act, nn.GELU))


class Mlp(nn.Module):
    """fc1, GELU, fc2 (timm's `Mlp` without dropout), with the residual add of its block."""

    def __init__(self, dim: int, hidden: int, drop_path: float = 0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden, gelu=True)
        self.fc2 = Linear(hidden, dim, drop_path=drop_path)

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.fc2(self.fc1(x), shortcut)


class SqueezeExcite(TimmSqueezeExcite):
    """timm's squeeze-excite; its inference form scales its input in place."""

    def fuse(self) -> InplaceSqueezeExcite:
        return InplaceSqueezeExcite(self.fc1, self.bn, self.act, self.fc2, self.gate)


def _se(width: int, base_chs: int, se_ratio: float) -> nn.Module:
    if se_ratio <= 0:
        return nn.Identity()
    return SqueezeExcite(width, rd_channels=max(1, round(base_chs * se_ratio)), act_layer=nn.GELU)


# ----------------------------------------------------------------------------- C blocks
class FusedMBConv(nn.Module):
    """The paper's C block: `y = x + P(SE(C(x)))` with C a full 3x3 conv expanding 4x."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            expansion: float = 4.0,
            se_ratio: float = 0.25,
            drop_path: float = 0.0,
    ):
        super().__init__()
        mid_chs = int(in_chs * expansion)
        self.conv_exp = ConvBn(in_chs, mid_chs, 3, stride=stride, gelu=True)
        self.se = _se(mid_chs, in_chs, se_ratio)
        self.conv_pwl = ConvBn(mid_chs, out_chs, 1, drop_path=drop_path)
        self.shortcut = Downsample(in_chs, out_chs, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pwl(self.se(self.conv_exp(x)), shortcut=self.shortcut(x))


class MBConv(nn.Module):
    """Inverted residual (MobileNetV2/EfficientNet): 1x1 expand, 3x3 depthwise, SE, 1x1 project."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            expansion: float = 4.0,
            se_ratio: float = 0.25,
            drop_path: float = 0.0,
    ):
        super().__init__()
        mid_chs = int(in_chs * expansion)
        self.conv_pw = ConvBn(in_chs, mid_chs, 1, gelu=True)
        self.conv_dw = ConvBn(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs, gelu=True)
        self.se = _se(mid_chs, in_chs, se_ratio)
        self.conv_pwl = ConvBn(mid_chs, out_chs, 1, drop_path=drop_path)
        self.shortcut = Downsample(in_chs, out_chs, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))), shortcut=self.shortcut(x))


class ConvNeXtC(ConvNeXtBlock):
    """timm's ConvNeXt block (7x7 depthwise, LN, MLP) with the C-block constructor signature.

    It has no squeeze-excite; `expansion` is its MLP ratio.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            expansion: float = 4.0,
            se_ratio: float = 0.25,
            drop_path: float = 0.0,
    ):
        super().__init__(in_chs, out_chs, stride=stride, mlp_ratio=expansion, drop_path=drop_path)


class StageDownsample(ConvBn):
    """Opens a stage whose first block cannot stride itself (a T block): 3x3 s2 conv + BN."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(in_chs, out_chs, 3, stride=2)


C_BLOCK_TYPES: dict[str, type[nn.Module]] = {"fused_mbconv": FusedMBConv, "mbconv": MBConv, "convnext": ConvNeXtC}


def make_c_block(kind: str, in_chs: int, out_chs: int, stride: int, expansion: float, se_ratio: float,
                 drop_path: float) -> nn.Module:
    return C_BLOCK_TYPES[kind](in_chs, out_chs, stride=stride, expansion=expansion, se_ratio=se_ratio,
                               drop_path=drop_path)


# ----------------------------------------------------------------------------- attention
class RelPosBias(nn.Module):
    """Learned relative-position bias for attention over an (H, W) grid of tokens.

    The table holds one value per head and 2-D offset, `(heads, 2H-1, 2W-1)` for the design
    grid. At another grid size it is bilinearly resized (offsets scale with the grid), which
    keeps one set of weights valid from a 32 px proxy to 224 px. `forward` returns the
    expanded `(heads, N, N)` bias; its inference form computes it once per grid size.
    """

    def __init__(self, num_heads: int, grid_size: tuple[int, int]):
        super().__init__()
        self.grid_size = tuple(grid_size)
        h, w = grid_size
        self.table = nn.Parameter(torch.zeros(num_heads, 2 * h - 1, 2 * w - 1))
        trunc_normal_(self.table, std=0.02)

    @staticmethod
    def _offsets(h: int, w: int, device: torch.device) -> torch.Tensor:
        coords = torch.stack(torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                            indexing="ij")).flatten(1)  # (2, N)
        rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
        return (rel[0] + h - 1) * (2 * w - 1) + (rel[1] + w - 1)  # flat index into (2h-1, 2w-1)

    def forward(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        table = self.table
        if (h, w) != self.grid_size:
            table = F.interpolate(table[None], size=(2 * h - 1, 2 * w - 1), mode="bilinear",
                                  align_corners=True)[0]
        return table.flatten(1)[:, self._offsets(h, w, table.device)].to(dtype)  # (heads, N, N)

    def fuse(self) -> CachedOutput:
        return CachedOutput(self)


class Attention(nn.Module):
    """Multi-head self-attention over an (H, W) grid of tokens with relative-position bias, via SDPA.

    `forward(x, key_mask, shortcut)` attends over each `(H, W)` map of `x` (a whole feature map,
    or a batch of windows) and returns `proj(...)`, plus `shortcut` when given. `attend` is the
    heads alone, for blocks that build their own token sequence and bias.
    """

    def __init__(self, dim: int, head_dim: int, grid_size: tuple[int, int], drop_path: float = 0.0):
        super().__init__()
        self.num_heads = dim // head_dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.rel_pos = RelPosBias(self.num_heads, grid_size)
        self.proj = Linear(dim, dim, drop_path=drop_path)

    def attend(self, tokens: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """The attention heads' output, concatenated: (B, N, C) tokens, bias broadcast to (B, heads, N, N)."""
        B, N, C = tokens.shape
        q, k, v = self.qkv(tokens).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(B, N, C)

    def forward(self, x: torch.Tensor, key_mask: Optional[torch.Tensor] = None,
                shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, H, W, C = x.shape
        bias = self.rel_pos(H, W, x.dtype)[None]
        bias = bias if key_mask is None else bias + key_mask
        return self.proj(self.attend(x.reshape(B, H * W, C), bias).reshape(B, H, W, C), shortcut)


class TransformerBlock(nn.Module):
    """The paper's T block: global attention and MLP in parallel on one LayerNorm.

    `y = x + Attn(LN(x)) + MLP(LN(x))`, on NHWC tensors.
    """

    def __init__(
            self,
            dim: int,
            head_dim: int = 32,
            mlp_ratio: float = 4.0,
            grid_size: tuple[int, int] = (7, 7),
            drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, head_dim, grid_size, drop_path=drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop_path=drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        return self.mlp(y, shortcut=self.attn(y, shortcut=x))


# ----------------------------------------------------------------------------- windowed attention
Partition = Callable[[torch.Tensor, list[int]], torch.Tensor]


def _window(design: tuple[int, int], h: int, w: int) -> list[int]:
    """The window at an (h, w) map: the design window, or the map where that is smaller."""
    return [min(design[0], h), min(design[1], w)]


def _pad(x: torch.Tensor, window: list[int]) -> torch.Tensor:
    """Zero-pad an NHWC map at the bottom and right to a multiple of `window`."""
    pad_h, pad_w = -x.shape[1] % window[0], -x.shape[2] % window[1]
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def _key_mask(h: int, w: int, padded: tuple[int, int], window: list[int], partition: Partition, batch: int,
              x: torch.Tensor) -> Optional[torch.Tensor]:
    """Additive attention mask `(batch * windows, 1, 1, N)` hiding padded tokens as keys, or None."""
    if padded == (h, w):
        return None
    real = torch.zeros(1, *padded, 1, device=x.device, dtype=x.dtype)
    real[:, :h, :w] = 1
    real = partition(real, window).flatten(1)  # (windows, N)
    mask = (1 - real) * torch.finfo(x.dtype).min
    return mask.repeat(batch, 1)[:, None, None, :]


def _attend_in_windows(attn: Attention, y: torch.Tensor, design: tuple[int, int], partition: Partition,
                       reverse: Callable) -> torch.Tensor:
    """`attn` inside the windows (or grid groups) of NHWC `y`, back on `y`'s map."""
    B, H, W, C = y.shape
    window = _window(design, H, W)
    y = _pad(y, window)
    padded = (y.shape[1], y.shape[2])
    out = attn(partition(y, window), key_mask=_key_mask(H, W, padded, window, partition, B, y))
    return reverse(out, window, list(padded))[:, :H, :W]


class MultiAxisBlock(nn.Module):
    """MaxViT's multi-axis attention (Tu et al., ECCV 2022) as a T block.

    Block (window) attention, then grid attention in the paper's parallel form with the MLP:
    `x = x + BlockAttn(LN1(x))`, `y = x + GridAttn(LN2(x)) + MLP(LN2(x))`. Ours: one MLP per
    T block (MaxViT has one after each attention) so the block is a drop-in for the vanilla T
    block, and no MBConv inside (C blocks are the stage's business). Windows and grids are
    `WINDOW_SIZE` squared (see the module docstring for maps it does not divide); the
    partition helpers are timm's MaxViT ones.
    """

    def __init__(
            self,
            dim: int,
            head_dim: int = 32,
            mlp_ratio: float = 4.0,
            grid_size: tuple[int, int] = (7, 7),
            drop_path: float = 0.0,
    ):
        super().__init__()
        self.window = tuple(_window((WINDOW_SIZE, WINDOW_SIZE), *grid_size))
        self.norm1 = nn.LayerNorm(dim)
        self.block_attn = Attention(dim, head_dim, self.window)
        self.norm2 = nn.LayerNorm(dim)
        self.grid_attn = Attention(dim, head_dim, self.window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop_path=drop_path)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(_attend_in_windows(self.block_attn, self.norm1(x), self.window, window_partition,
                                                  window_reverse))
        y = self.norm2(x)
        x = x + self.drop_path(_attend_in_windows(self.grid_attn, y, self.window, grid_partition, grid_reverse))
        return self.mlp(y, shortcut=x)


class HierarchicalBlock(nn.Module):
    """FasterViT's hierarchical attention (Hatamizadeh et al., ICLR 2024) as a T block.

    Each window gets a carrier token that summarises it; the carrier tokens attend to each
    other globally (with a relative-position bias over the window grid), then every window's
    tokens attend to [its carrier token, the window], and the MLP runs in parallel:
    `y = x + WindowAttn(LN([ct; x])) + MLP(LN(x))`. From the paper: carrier tokens from pooled
    window features, global carrier attention, local attention over carrier + window tokens.
    Ours: one carrier token per window, initialised as the mean of the window's tokens (the
    paper adds a conv position embedding first); no MLP on carrier tokens; carrier tokens are
    rebuilt in every block and their outputs dropped (the paper carries them from block to
    block and propagates them back to the map at the stage's end); the carrier token has no
    position bias in the local attention; pre-norm, no layer scale.
    """

    def __init__(
            self,
            dim: int,
            head_dim: int = 32,
            mlp_ratio: float = 4.0,
            grid_size: tuple[int, int] = (7, 7),
            drop_path: float = 0.0,
    ):
        super().__init__()
        self.window = tuple(_window((WINDOW_SIZE, WINDOW_SIZE), *grid_size))
        carrier_grid = tuple(-(-g // w) for g, w in zip(grid_size, self.window))  # windows per side
        self.carrier_norm = nn.LayerNorm(dim)
        self.carrier_attn = Attention(dim, head_dim, carrier_grid)
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, head_dim, self.window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop_path=drop_path)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        window = _window(self.window, H, W)
        # Window means over real tokens only (ceil_mode pools a partial window over its part).
        carriers = F.avg_pool2d(x.permute(0, 3, 1, 2), window, ceil_mode=True).permute(0, 2, 3, 1)
        carriers = self.carrier_attn(self.carrier_norm(carriers), shortcut=carriers)  # (B, nh, nw, C)

        y = self.norm(x)
        padded_y = _pad(y, window)
        padded = (padded_y.shape[1], padded_y.shape[2])
        windows = window_partition(padded_y, window).flatten(1, 2)  # (B * windows, n, C)
        tokens = torch.cat([self.norm(carriers).reshape(-1, 1, C), windows], 1)
        bias = F.pad(self.attn.rel_pos(*window, x.dtype), (1, 0, 1, 0))[None]  # carrier: no position bias
        key_mask = _key_mask(H, W, padded, window, window_partition, B, y)
        bias = bias if key_mask is None else bias + F.pad(key_mask, (1, 0))
        out = self.attn.proj(self.attn.attend(tokens, bias)[:, 1:])  # window tokens only
        out = window_reverse(out.reshape(-1, *window, C), window, list(padded))[:, :H, :W]
        return self.mlp(y, shortcut=x + self.drop_path(out))


T_BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "attention": TransformerBlock, "multi_axis": MultiAxisBlock, "hierarchical": HierarchicalBlock}


def make_t_block(kind: str, dim: int, head_dim: int, mlp_ratio: float, grid_size: tuple[int, int],
                 drop_path: float) -> nn.Module:
    return T_BLOCK_TYPES[kind](dim, head_dim=head_dim, mlp_ratio=mlp_ratio, grid_size=grid_size, drop_path=drop_path)
