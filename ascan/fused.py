"""The inference fast path of AsCAN blocks (ours; same weights, same MACs, same outputs
within float tolerance, pinned by tests/test_speed_equivalence.py).

In eval mode without autograd, each conv + BatchNorm pair runs as one conv with the BN folded
into its weights; on CPU the GELU or residual add after a conv or linear layer runs inside
the oneDNN kernel (the fused kernels torch.compile itself emits on CPU), conv weights are
kept in oneDNN's blocked layout, and squeeze-excite scales its input in place. Each change
saves a pass over (or an allocation of) a large activation. Tools that watch the operators
(fvcore's jit trace, torch.compile, FlopCounterMode) and training see the plain modules.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ["DerivedTensors", "fast_inference", "conv_bn", "linear"]

# oneDNN's conv/linear kernels with a fused GELU or add (what inductor emits on CPU); private
# ops, so their absence only costs speed.
_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise") \
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class DerivedTensors:
    """Eval-time tensors computed from parameters (folded conv+BN weights, an expanded bias).

    An entry is keyed by its sources' device, dtype, storage and in-place version counter, so
    `load_state_dict`, `.to()`, an optimizer step or an EMA update made while the module stays
    in eval mode is always seen. Copies and pickles of a module start with an empty cache.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple, Any]] = {}

    def get(self, name: str, sources: tuple[torch.Tensor, ...], compute: Callable[[], Any], extra: tuple = ()) -> Any:
        """`compute()`, or its cached value while `sources` and `extra` are unchanged."""
        if any(t.is_inference() for t in sources):
            return compute()  # inference tensors carry no version counter: never cache them
        key = tuple((t.device, t.dtype, t.data_ptr(), t._version) for t in sources) + extra
        entry = self._entries.get(name)
        if entry is None or entry[0] != key:
            entry = self._entries[name] = (key, compute())
        return entry[1]

    def __deepcopy__(self, memo: dict) -> "DerivedTensors":
        return DerivedTensors()

    def __getstate__(self) -> dict:
        return {"_entries": {}}


def fast_inference(module: nn.Module) -> bool:
    """May `module` run its fused inference path? Eval mode, no autograd, nobody watching ops."""
    return not (module.training or torch.is_grad_enabled() or torch.jit.is_tracing()
                or torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None)


def _onednn_ready(x: torch.Tensor) -> bool:
    """fp32 on CPU, outside autocast (which would run the plain conv in bf16)."""
    return _ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    # At least in fp32 whatever the model's dtype: rsqrt(var + eps) loses too much in fp16.
    dtype = torch.promote_types(conv.weight.dtype, torch.float32)
    weight, bias = fuse_conv_bn_weights(*(None if t is None else t.to(dtype) for t in (
        conv.weight, conv.bias, bn.running_mean, bn.running_var)), bn.eps, bn.weight.to(dtype), bn.bias.to(dtype))
    return weight.detach().to(conv.weight.dtype), bias.detach().to(conv.weight.dtype)


def conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, derived: DerivedTensors, name: str,
            gelu: bool = False, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`gelu(bn(conv(x)))`, `bn(conv(x)) + residual` or `bn(conv(x))` at inference, as one conv.

    The folded weights live in `derived` under `name`; `gelu` and `residual` are exclusive.
    """
    sources = tuple(t for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
                    if t is not None)
    weight, bias = derived.get(name, sources, lambda: _fold(conv, bn))
    if _onednn_ready(x) and isinstance(conv.padding, tuple):
        args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        # The weight in oneDNN's blocked layout for this input shape, or every call reorders it.
        weight = derived.get(f"{name}/packed", sources, extra=tuple(x.shape), compute=lambda: (
            torch.ops.mkldnn._reorder_convolution_weight(weight, *args, list(x.shape))))
        if residual is not None:
            return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, weight, bias, *args, "add", None,
                                                                  None, [], None)
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *args, "gelu" if gelu else "none", [],
                                                       "none" if gelu else None)
    x = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    x = x if residual is None else x + residual
    return F.gelu(x) if gelu else x


def linear(x: torch.Tensor, fc: nn.Linear, gelu: bool = False, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`gelu(fc(x))`, `fc(x) + residual` or `fc(x)`, fused on CPU (inference only: no autograd)."""
    if _onednn_ready(x) and x.is_contiguous():
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, fc.weight, fc.bias, "add")
        return torch.ops.mkldnn._linear_pointwise(x, fc.weight, fc.bias, "gelu" if gelu else "none", [],
                                                  "none" if gelu else None)
    x = fc(x)
    x = x if residual is None else x + residual
    return F.gelu(x) if gelu else x
