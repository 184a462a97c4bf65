"""The inference forms of AsCAN's fusable layers (ours; same weights, same MACs, same outputs
within float tolerance, pinned by tests/test_speed_equivalence.py).

A model becomes its fast inference form once, the timm way:

    fast = timm.utils.reparameterize_model(model)   # a converted copy; `inplace=True` converts `model`

which replaces every layer that has a `fuse()` method (`ascan.blocks.ConvBn`, `Linear`,
`SqueezeExcite`, `RelPosBias`) by the inference form below. Each layer and block has one
`forward`; the converted model is for inference only (its folded weights are buffers).

What the forms save, each a pass over (or an allocation of) a large activation: a conv + BatchNorm
pair runs as one conv with the BN folded into its weights; on CPU the GELU or residual add after a
conv or linear layer runs inside the oneDNN kernel (the fused kernels torch.compile itself emits
on CPU) and conv weights are kept in oneDNN's blocked layout; squeeze-excite scales its input in
place; a relative-position bias is expanded once per grid size.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["FusedConv", "FusedLinear", "InplaceSqueezeExcite", "CachedOutput", "fold_conv_bn"]

# oneDNN's conv/linear kernels with a fused GELU or add (what inductor emits on CPU); private
# ops, so their absence only costs speed.
_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise") \
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_ready(x: torch.Tensor) -> bool:
    """fp32 on CPU, outside autocast (which would run the plain conv in bf16), no autograd
    (the fused kernels have no backward)."""
    return (_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and x.requires_grad))


def _derived(compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """A tensor cached across calls: made outside inference mode (an inference tensor could not
    be used later under plain `no_grad`) and without autograd."""
    with torch.inference_mode(False), torch.no_grad():
        return compute()


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the one conv that computes `bn(conv(x))` in eval mode."""
    # At least in fp32 whatever the model's dtype: rsqrt(var + eps) loses too much in fp16.
    dtype = torch.promote_types(conv.weight.dtype, torch.float32)
    weight, bias = fuse_conv_bn_weights(*(None if t is None else t.detach().to(dtype) for t in (
        conv.weight, conv.bias, bn.running_mean, bn.running_var)), bn.eps, bn.weight.detach().to(dtype),
        bn.bias.detach().to(dtype))
    return weight.detach().to(conv.weight.dtype), bias.detach().to(conv.weight.dtype)


class FusedConv(nn.Module):
    """`gelu(conv(x))`, `conv(x) + shortcut` or `conv(x)` with folded weights, as one oneDNN
    kernel on fp32 CPU tensors (and plain ops elsewhere)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
                 groups: int, gelu: bool):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.stride, self.padding, self.groups, self.gelu = list(stride), list(padding), groups, gelu
        self._packed: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not _onednn_ready(x) or (self.gelu and shortcut is not None):
            x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
            x = F.gelu(x) if self.gelu else x
            return x if shortcut is None else x + shortcut
        args = (self.padding, self.stride, [1, 1], self.groups)
        # The weight in oneDNN's blocked layout for this input shape, or every call reorders it.
        key = (tuple(x.shape), self.weight.data_ptr(), self.weight.device)
        if key not in self._packed:
            self._packed[key] = _derived(lambda: torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, *args, list(x.shape)))
        weight = self._packed[key]
        if shortcut is not None:
            return torch.ops.mkldnn._convolution_pointwise.binary(x, shortcut, weight, self.bias, *args, "add",
                                                                  None, None, [], None)
        return torch.ops.mkldnn._convolution_pointwise(x, weight, self.bias, *args, "gelu" if self.gelu else "none",
                                                       [], "none" if self.gelu else None)

    def __getstate__(self) -> dict:  # copies start without packed weights (they follow the copy's buffers)
        return {**self.__dict__, "_packed": {}}


class FusedLinear(nn.Module):
    """`gelu(fc(x))`, `fc(x) + shortcut` or `fc(x)`, one oneDNN kernel on fp32 CPU tensors."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], gelu: bool):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.gelu = gelu

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        if _onednn_ready(x) and x.is_contiguous() and not (self.gelu and shortcut is not None):
            if shortcut is not None:
                return torch.ops.mkldnn._linear_pointwise.binary(x, shortcut, self.weight, self.bias, "add")
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu" if self.gelu else "none",
                                                      [], "none" if self.gelu else None)
        x = F.linear(x, self.weight, self.bias)
        x = F.gelu(x) if self.gelu else x
        return x if shortcut is None else x + shortcut


class InplaceSqueezeExcite(nn.Module):
    """timm's SEModule forward, scaling `x` in place: in an inference model `x` is a fresh
    temporary, and reusing it spares allocating (and page-faulting in) the block's largest
    activation. Holds the same submodules as the module it replaces."""

    def __init__(self, fc1: nn.Module, bn: nn.Module, act: nn.Module, fc2: nn.Module, gate: nn.Module):
        super().__init__()
        self.fc1, self.bn, self.act, self.fc2, self.gate = fc1, bn, act, fc2, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.bn(self.fc1(x.mean((2, 3), keepdim=True))))))
        return x.mul_(scale) if not (torch.is_grad_enabled() and x.requires_grad) else x * scale


class CachedOutput(nn.Module):
    """Caches the output of `source`, a module whose output depends only on its arguments and
    its (now frozen) parameters, per arguments, device and dtype: e.g. an expanded bias."""

    def __init__(self, source: nn.Module):
        super().__init__()
        self.source = source
        self._cache: dict[tuple, torch.Tensor] = {}

    def forward(self, *args) -> torch.Tensor:
        first = next(self.source.parameters())
        key = (*args, first.device, first.dtype, first.data_ptr())
        if key not in self._cache:
            self._cache[key] = _derived(lambda: self.source(*args))
        return self._cache[key]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}
