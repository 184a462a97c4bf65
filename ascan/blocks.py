"""The two AsCAN building blocks, C (convolution) and T (transformer), and the C variants
the paper ablated.

Convolution blocks take and return NCHW tensors; the transformer block takes and returns
NHWC tensors, so a stage converts layout once, at its C->T boundary (C always precedes T in
a stage). Under `channels_last` memory format that conversion is a free view.

Choices where the paper is silent (ours):
- The hidden width of a C block is `in_chs * expansion` and the squeeze-excite bottleneck
  is `in_chs * se_ratio` (EfficientNetV2's convention, where FusedMBConv comes from:
  relative to the block input, not the expanded width), with GELU as the SE activation.
- A stride-2 C block opens a stage; its shortcut is a 2x2 average pool then a 1x1 conv
  (timm's ConvNeXt `Downsample`), the shortcut MaxViT and CoAtNet use.
- The FusedMBConv projection is followed by BatchNorm, as in timm's `EdgeResidual`.
- The T block uses LayerNorm (eps 1e-5) and a learned relative-position bias table per head
  (as Swin and MaxViT), sized for the design resolution and bilinearly resized to any other
  grid, so one set of weights runs at 32 px (proxy) and 224 px (deployment). The paper's
  equation shows a GELU before the LayerNorm; we read it as a typo and leave it out.

The inference fast path these blocks take in eval mode lives in `ascan/fused.py`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, SqueezeExcite, trunc_normal_
from timm.models.convnext import ConvNeXtBlock, Downsample

from .fused import DerivedTensors, conv_bn, fast_inference, linear

__all__ = ["FusedMBConv", "MBConv", "ConvNeXtC", "TransformerBlock", "RelPosBias", "StageDownsample", "make_c_block"]

def _se(width: int, base_chs: int, se_ratio: float) -> nn.Module:
    if se_ratio <= 0:
        return nn.Identity()
    return SqueezeExcite(width, rd_channels=max(1, round(base_chs * se_ratio)), act_layer=nn.GELU)


def _squeeze_excite_(x: torch.Tensor, se: nn.Module) -> torch.Tensor:
    """timm's SEModule forward, scaling `x` in place: at inference `x` is a fresh temporary, and
    reusing it spares allocating (and page-faulting in) the largest activation of the block."""
    if isinstance(se, nn.Identity):
        return x
    gate = se.fc2(se.act(se.bn(se.fc1(x.mean((2, 3), keepdim=True)))))
    return x.mul_(se.gate(gate))


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
        self.conv_exp = nn.Conv2d(in_chs, mid_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.act = nn.GELU()
        self.se = _se(mid_chs, in_chs, se_ratio)
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.shortcut = Downsample(in_chs, out_chs, stride=stride)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self._folded = DerivedTensors()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        if fast_inference(self):
            x = _squeeze_excite_(conv_bn(x, self.conv_exp, self.bn1, self._folded, "exp", gelu=True), self.se)
            return conv_bn(x, self.conv_pwl, self.bn2, self._folded, "pwl", residual=shortcut)
        x = self.act(self.bn1(self.conv_exp(x)))
        x = self.bn2(self.conv_pwl(self.se(x)))
        return shortcut + self.drop_path(x)


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
        self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.conv_dw = nn.Conv2d(mid_chs, mid_chs, 3, stride=stride, padding=1, groups=mid_chs, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.act = nn.GELU()
        self.se = _se(mid_chs, in_chs, se_ratio)
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.shortcut = Downsample(in_chs, out_chs, stride=stride)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self._folded = DerivedTensors()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        if fast_inference(self):
            x = conv_bn(x, self.conv_pw, self.bn1, self._folded, "pw", gelu=True)
            x = _squeeze_excite_(conv_bn(x, self.conv_dw, self.bn2, self._folded, "dw", gelu=True), self.se)
            return conv_bn(x, self.conv_pwl, self.bn3, self._folded, "pwl", residual=shortcut)
        x = self.act(self.bn1(self.conv_pw(x)))
        x = self.act(self.bn2(self.conv_dw(x)))
        x = self.bn3(self.conv_pwl(self.se(x)))
        return shortcut + self.drop_path(x)


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


_C_BLOCKS = {"fused_mbconv": FusedMBConv, "mbconv": MBConv, "convnext": ConvNeXtC}


def make_c_block(kind: str, in_chs: int, out_chs: int, stride: int, expansion: float, se_ratio: float,
                 drop_path: float) -> nn.Module:
    return _C_BLOCKS[kind](in_chs, out_chs, stride=stride, expansion=expansion, se_ratio=se_ratio,
                           drop_path=drop_path)


class StageDownsample(nn.Module):
    """Opens a stage whose first block cannot stride itself (a T block): 3x3 s2 conv + BN."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self._folded = DerivedTensors()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_inference(self):
            return conv_bn(x, self.conv, self.bn, self._folded, "conv")
        return self.bn(self.conv(x))


class RelPosBias(nn.Module):
    """Learned relative-position bias for global attention over an (H, W) grid.

    The table holds one value per head and 2-D offset, `(heads, 2H-1, 2W-1)` for the design
    grid. At another grid size it is bilinearly resized (offsets scale with the grid), which
    keeps one set of weights valid from a 32 px proxy to 224 px. At inference the expanded
    `(heads, N, N)` bias is cached per grid size and dtype: it depends only on the table.
    """

    def __init__(self, num_heads: int, grid_size: tuple[int, int]):
        super().__init__()
        self.grid_size = grid_size
        h, w = grid_size
        self.table = nn.Parameter(torch.zeros(num_heads, 2 * h - 1, 2 * w - 1))
        trunc_normal_(self.table, std=0.02)
        self._expanded = DerivedTensors()

    @staticmethod
    def _offsets(h: int, w: int, device: torch.device) -> torch.Tensor:
        coords = torch.stack(torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                            indexing="ij")).flatten(1)  # (2, N)
        rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
        return (rel[0] + h - 1) * (2 * w - 1) + (rel[1] + w - 1)  # flat index into (2h-1, 2w-1)

    def _compute(self, h: int, w: int) -> torch.Tensor:
        table = self.table
        if (h, w) != self.grid_size:
            table = F.interpolate(table[None], size=(2 * h - 1, 2 * w - 1), mode="bilinear",
                                  align_corners=True)[0]
        index = self._offsets(h, w, table.device)
        return table.flatten(1)[:, index]  # (heads, N, N)

    def forward(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        if not fast_inference(self):
            return self._compute(h, w).to(dtype)
        return self._expanded.get(f"{h}x{w}/{dtype}", (self.table,), lambda: self._compute(h, w).to(dtype))


class Attention(nn.Module):
    """Global multi-head self-attention with relative-position bias, through SDPA."""

    def __init__(self, dim: int, head_dim: int, grid_size: tuple[int, int]):
        super().__init__()
        self.num_heads = dim // head_dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.rel_pos = RelPosBias(self.num_heads, grid_size)
        self.proj = nn.Linear(dim, dim)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """The attention heads' output, concatenated: everything but the output projection."""
        B, H, W, C = x.shape
        q, k, v = self.qkv(x.reshape(B, H * W, C)).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.rel_pos(H, W, q.dtype)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])
        return x.transpose(1, 2).reshape(B, H, W, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.heads(x))


class TransformerBlock(nn.Module):
    """The paper's T block: attention and MLP in parallel on one LayerNorm.

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
        self.attn = Attention(dim, head_dim, grid_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        if fast_inference(self):  # timm's Mlp is fc1, GELU, fc2 (its dropouts and norm are identities here)
            x = linear(self.attn.heads(y), self.attn.proj, residual=x)
            return linear(linear(y, self.mlp.fc1, gelu=True), self.mlp.fc2, residual=x)
        return x + self.drop_path(self.attn(y) + self.mlp(y))
