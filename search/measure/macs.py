"""Counting parameters and MACs, and the analytic per-block MAC formula that checks the count.

MACs are multiply-accumulates (one fused multiply-add = 1 MAC) in convolutions, linear
layers, matrix products and attention (QK^T and AV). Normalisation, activations, pooling and
other element-wise work are not counted: BatchNorm folds into the preceding conv at
deployment, and the rest is a few percent that no counter agrees on.

The count comes from fvcore's `FlopCountAnalysis` (which already counts one multiply-add as
one "flop"), with a handle for `aten::scaled_dot_product_attention`: without it fvcore (and
torch's `FlopCounterMode` on CPU) count attention as 0. A heavy operator (matmul, conv,
attention family) that no handle covers is an error, never a silent zero.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

with warnings.catch_warnings():
    # fvcore scripts a loss function at import time, which torch 2.x flags as deprecated.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape
from torch.utils.flop_counter import FlopCounterMode

from ascan import ArchConfig
from ascan.blocks import WINDOW_SIZE

from search.measure.profile_cache import ProfileError, one_line

__all__ = ["MacCount", "count_params", "count_macs", "analytic_macs", "sdpa_macs", "flop_counter_macs"]

# Operators whose work is MACs (these, and any *mm, *matmul*, conv*, *convolution* or
# *attention* operator): fvcore counts them as 0 when no handle covers them, so `count_macs` refuses to.
HEAVY_OPS = {"einsum", "linear", "bilinear", "tensordot", "mv", "dot", "lstm", "gru", "rnn_tanh", "rnn_relu"}
# fvcore counts these cheap operators by default; they are not MACs (see module docstring).
NOT_MACS = ("aten::batch_norm", "aten::group_norm", "aten::layer_norm", "aten::instance_norm",
            "aten::upsample_nearest2d", "aten::upsample_bilinear2d", "aten::adaptive_avg_pool2d",
            "aten::grid_sampler")


@dataclass(frozen=True)
class MacCount:
    """MACs of one forward pass. `ignored_ops` are the cheap operators left uncounted."""

    total: int
    by_operator: dict[str, int] = field(default_factory=dict)
    by_module: dict[str, int] = field(default_factory=dict)
    ignored_ops: dict[str, int] = field(default_factory=dict)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in _eager(model).parameters())


def sdpa_macs(query_shape, key_shape, value_shape) -> int:
    """QK^T plus AV of scaled-dot-product attention: batch*heads * L*S*(E + Ev)."""
    *batch, length, dim = query_shape
    source = key_shape[-2]
    return math.prod(batch) * length * source * (dim + value_shape[-1])


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return sdpa_macs(*(get_shape(v) for v in inputs[:3]))


def _not_macs(inputs: list[Any], outputs: list[Any]) -> int:
    # fvcore's `set_op_handle(op, None)` does not drop a default handle; a zero handle does.
    return 0


def _baddbmm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    n, c, t = get_shape(inputs[1])
    return n * c * t * get_shape(inputs[2])[-1]


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> MacCount:
    """Trace `model` on zeros of `input_shape` (eval mode, no grad) and count its MACs.

    A compiled model is counted through its eager original. Raises `ProfileError` when the
    model fails at this shape or when a heavy operator has no MAC formula.
    """
    model = _eager(model)
    first = next(model.parameters(), None)
    example = torch.zeros(tuple(input_shape), device=first.device if first is not None else "cpu",
                          dtype=first.dtype if first is not None else torch.float32)
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, example)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_handle,
                               "aten::baddbmm", _baddbmm_handle,
                               **{op: _not_macs for op in NOT_MACS})
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        with torch.no_grad():
            total = int(analysis.total())
    except Exception as error:  # the trace runs user code: any failure means "cannot run at this shape"
        raise ProfileError(f"count_macs: {type(model).__name__} failed at input shape {tuple(input_shape)} "
                           f"({one_line(error)})") from error
    finally:
        model.train(was_training)
    ignored = dict(analysis.unsupported_ops())
    heavy = sorted(op for op in ignored if _is_heavy(op))
    if heavy:
        raise ProfileError(f"count_macs: operator {heavy[0]} (x{ignored[heavy[0]]}) has no MAC formula; "
                           "add a handle in search/macs.py")
    by_operator = {op: int(n) for op, n in analysis.by_operator().items() if n}
    return MacCount(total=total, by_operator=by_operator,
                    by_module={name: int(n) for name, n in analysis.by_module().items()}, ignored_ops=ignored)


def flop_counter_macs(model: nn.Module, input_shape: tuple[int, ...], map_attention: bool = True) -> int:
    """MACs by torch's `FlopCounterMode` (FLOPs / 2), a second opinion for the benchmark.

    On CPU attention reaches the counter as `scaled_dot_product_attention` (inference mode)
    or `_scaled_dot_product_flash_attention_for_cpu`, neither of which it counts;
    `map_attention` adds our formula for both.
    """
    model = _eager(model)
    first = next(model.parameters())
    example = torch.zeros(tuple(input_shape), device=first.device, dtype=first.dtype)

    def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * sdpa_macs(query_shape, key_shape, value_shape)

    aten = torch.ops.aten
    mapping = {aten.scaled_dot_product_attention: attention_flops,
               aten._scaled_dot_product_flash_attention_for_cpu: attention_flops} if map_attention else {}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model(example)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


# ---------------------------------------------------------------------- analytic formula
def analytic_macs(cfg: ArchConfig, img_size: int | None = None) -> int:
    """MACs per image of `ascan.build_model(cfg)` at `img_size` (default: the config's), by hand.

    Written from ascan/model.py and ascan/blocks.py, block by block, so that a change in the
    model that the counter would silently absorb shows up as a disagreement. A C or T block
    without a formula here raises `ProfileError` (never another block's MACs).
    """
    c_formula = _formula(_C_BLOCK_MACS, "c_block", cfg.c_block)
    t_formula = _formula(_T_BLOCK_MACS, "t_block", cfg.t_block)
    size = cfg.img_size if img_size is None else img_size
    mid = cfg.stem_width // 2
    size = _conv_out(size, 3, cfg.stem_stride, 1)
    total = _conv_macs(size, cfg.in_chans, mid, 3) + _conv_macs(size, mid, cfg.stem_width, 3)
    in_chs = cfg.stem_width
    for layout, width, design in zip(cfg.layouts, cfg.widths, cfg.stage_resolutions()):
        num_c, t_first = layout.count("C"), layout[0] == "T"
        if t_first:  # StageDownsample: 3x3 stride-2 conv
            size = _conv_out(size, 3, 2, 1)
            total += _conv_macs(size, in_chs, width, 3)
            in_chs = width
        for i in range(num_c):
            macs, size = c_formula(cfg, in_chs, width, 2 if i == 0 and not t_first else 1, size)
            total += macs
            in_chs = width
        window = min(WINDOW_SIZE, design)  # windowed T blocks' design window (ascan/blocks.py)
        total += (len(layout) - num_c) * t_formula(width, size, min(window, size), cfg.mlp_ratio)
    total += _conv_macs(size, in_chs, cfg.head_width, 1)  # head_proj
    total += cfg.head_width * cfg.num_classes if cfg.num_classes > 0 else 0  # fc
    return total


def _formula(table: dict[str, Callable], field_name: str, block: str) -> Callable:
    if block not in table:
        raise ProfileError(f"analytic_macs: no MAC formula for ArchConfig.{field_name}={block!r} "
                           f"(known: {', '.join(table)}); add one in search/macs.py")
    return table[block]


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _conv_macs(out_size: int, in_chs: int, out_chs: int, kernel: int, groups: int = 1) -> int:
    return out_size * out_size * out_chs * (in_chs // groups) * kernel * kernel


# C blocks: (cfg, in_chs, out_chs, stride, size) -> (MACs, output size)
def _shortcut_macs(in_chs: int, out_chs: int, out: int) -> int:
    """timm's Downsample shortcut: 2x2 average pool, then a 1x1 conv only when the width changes."""
    return _conv_macs(out, in_chs, out_chs, 1) if in_chs != out_chs else 0


def _se_macs(cfg: ArchConfig, in_chs: int, mid: int) -> int:
    rd = max(1, round(in_chs * cfg.se_ratio)) if cfg.se_ratio > 0 else 0
    return 2 * mid * rd  # two 1x1 convs on the pooled 1x1 map


def _fused_mbconv_macs(cfg: ArchConfig, in_chs: int, out_chs: int, stride: int, size: int) -> tuple[int, int]:
    mid, out = int(in_chs * cfg.expansion), _conv_out(size, 3, stride, 1)
    macs = _conv_macs(out, in_chs, mid, 3) + _se_macs(cfg, in_chs, mid) + _conv_macs(out, mid, out_chs, 1)
    return macs + _shortcut_macs(in_chs, out_chs, out), out


def _mbconv_macs(cfg: ArchConfig, in_chs: int, out_chs: int, stride: int, size: int) -> tuple[int, int]:
    mid, out = int(in_chs * cfg.expansion), _conv_out(size, 3, stride, 1)
    expand = _conv_macs(size, in_chs, mid, 1) + _conv_macs(out, mid, mid, 3, groups=mid)  # 1x1 at the input size
    macs = expand + _se_macs(cfg, in_chs, mid) + _conv_macs(out, mid, out_chs, 1)
    return macs + _shortcut_macs(in_chs, out_chs, out), out


def _convnext_macs(cfg: ArchConfig, in_chs: int, out_chs: int, stride: int, size: int) -> tuple[int, int]:
    # timm's ConvNeXtBlock: 7x7 depthwise (channel multiplier out/in), Linear MLP of width out*ratio.
    out = _conv_out(size, 7, stride, ((stride - 1) + 6) // 2)
    hidden = int(cfg.expansion * out_chs)
    macs = _conv_macs(out, in_chs, out_chs, 7, groups=in_chs) + 2 * out * out * out_chs * hidden
    return macs + _shortcut_macs(in_chs, out_chs, out), out


_C_BLOCK_MACS: dict[str, Callable] = {"fused_mbconv": _fused_mbconv_macs, "mbconv": _mbconv_macs,
                                      "convnext": _convnext_macs}


# T blocks: (dim, map size, window at this size, mlp_ratio) -> MACs
def _attention_macs(tokens: int, queries: int, dim: int, projected: int | None = None) -> int:
    """qkv on `tokens`, QK^T + AV of `queries` x `tokens` summed over heads, proj on `projected` (default all)."""
    projected = tokens if projected is None else projected
    return tokens * dim * 3 * dim + 2 * queries * tokens * dim + projected * dim * dim


def _mlp_macs(tokens: int, dim: int, mlp_ratio: float) -> int:
    return 2 * tokens * dim * int(dim * mlp_ratio)


def _vanilla_macs(dim: int, size: int, window: int, mlp_ratio: float) -> int:
    """Global attention over all tokens, MLP in parallel."""
    tokens = size * size
    return _attention_macs(tokens, tokens, dim) + _mlp_macs(tokens, dim, mlp_ratio)


def _multi_axis_macs(dim: int, size: int, window: int, mlp_ratio: float) -> int:
    """Block then grid attention over the map padded to a multiple of the window, then the MLP."""
    windows, n = math.ceil(size / window) ** 2, window * window  # windows of the padded map
    return 2 * windows * _attention_macs(n, n, dim) + _mlp_macs(size * size, dim, mlp_ratio)


def _hierarchical_macs(dim: int, size: int, window: int, mlp_ratio: float) -> int:
    """Carrier tokens attend globally; each padded window attends over [carrier, window]; MLP."""
    windows, n = math.ceil(size / window) ** 2, window * window  # windows of the padded map
    carriers = _attention_macs(windows, windows, dim)
    local = windows * _attention_macs(1 + n, 1 + n, dim, projected=n)
    return carriers + local + _mlp_macs(size * size, dim, mlp_ratio)


_T_BLOCK_MACS: dict[str, Callable] = {"attention": _vanilla_macs, "multi_axis": _multi_axis_macs,
                                      "hierarchical": _hierarchical_macs}


def _is_heavy(op: str) -> bool:
    name = op.split("::")[-1].lstrip("_")
    return (name in HEAVY_OPS or name.endswith("mm") or "matmul" in name or name.startswith("conv")
            or "convolution" in name or "attention" in name)


def _eager(model: nn.Module) -> nn.Module:
    """The eager module behind a `torch.compile` wrapper (MACs are counted on eager code)."""
    return getattr(model, "_orig_mod", model)
