"""Upper bounds on a network's numbers, shared by everything that reads one from a file.

Far above any sane network (the paper's stages are at most 4 blocks deep, AsCAN-L has
173 M parameters), yet small enough that nothing downstream overflows, hangs or asks for
terabytes. Search specs (`search.space.spec`) and zoo files (`ascan.zoo`) are both read
with them, and the parameter estimate refuses a network before anything is built.
"""
from __future__ import annotations

from typing import Sequence

MAX_STAGE_DEPTH = 16  # blocks per stage
MAX_WIDTH = 8192  # channels of a stage, the stem or the head
MAX_HEAD_DIM = 1024
MAX_RATIO = 16  # expansion (C blocks) and mlp_ratio (T blocks)
MAX_IN_CHANS = 64
MAX_IMG_SIZE = 2048
MAX_NUM_CLASSES = 100_000
MAX_PARAMS = 2e9  # estimated parameters


def estimate_params(*, in_chans: int, stem_width: int, widths: Sequence[float], depths: Sequence[int],
                    head_width: int, num_classes: int, expansion: float, se_ratio: float, mlp_ratio: float) -> float:
    """An upper estimate of a network's parameters from its numbers alone.

    Each block is counted as the larger of a C block (3x3 conv to `expansion` x width, SE,
    1x1 projection back) and a T block (qkv + output projections, MLP); enough to refuse a
    network that cannot fit in memory before anything is built.
    """
    params = 9.0 * in_chans * stem_width + 9.0 * float(stem_width) ** 2
    previous = float(stem_width)
    for depth, width in zip(depths, widths):
        w = float(width)
        hidden = expansion * w
        c_block = 9 * w * hidden + 2 * hidden * max(1.0, se_ratio * w) + hidden * w
        t_block = 4 * w * w + 2 * mlp_ratio * w * w
        params += previous * w + depth * max(c_block, t_block)
        previous = w
    return params + previous * head_width + float(head_width) * num_classes


def violation(config) -> str | None:
    """Why an `ArchConfig` breaks the bounds (one line naming the field), or None."""
    numbers = {"stem_width": (config.stem_width, MAX_WIDTH), "head_width": (config.head_width, MAX_WIDTH),
               "head_dim": (config.head_dim, MAX_HEAD_DIM), "expansion": (config.expansion, MAX_RATIO),
               "mlp_ratio": (config.mlp_ratio, MAX_RATIO), "in_chans": (config.in_chans, MAX_IN_CHANS),
               "img_size": (config.img_size, MAX_IMG_SIZE), "num_classes": (config.num_classes, MAX_NUM_CLASSES),
               **{f"widths[{i}]": (w, MAX_WIDTH) for i, w in enumerate(config.widths)},
               **{f"layouts[{i}]": (len(layout), MAX_STAGE_DEPTH) for i, layout in enumerate(config.layouts)}}
    for name, (value, limit) in numbers.items():
        if value > limit:
            what = "blocks" if name.startswith("layouts") else "is"
            return f"{name}: {value} {what} above the limit of {limit}"
    params = estimate_params(in_chans=config.in_chans, stem_width=config.stem_width, widths=config.widths,
                             depths=[len(layout) for layout in config.layouts], head_width=config.head_width,
                             num_classes=config.num_classes, expansion=config.expansion, se_ratio=config.se_ratio,
                             mlp_ratio=config.mlp_ratio)
    if params > MAX_PARAMS:
        return f"the network would have about {params:.3g} parameters, above the limit of {MAX_PARAMS:.3g}"
    return None
