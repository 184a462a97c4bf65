"""The inference form (`timm.utils.reparameterize_model`: folded BatchNorm, fused oneDNN kernels,
cached bias) computes what the plain modules compute, on real CIFAR-10 images, for every block
kind and memory format.

The reference is the same model in eval mode: plain conv, BatchNorm, GELU, SDPA with a freshly
gathered bias, nothing cached or fused.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import reparameterize_model

from ascan import ArchConfig, build_model
from ascan.blocks import T_BLOCK_TYPES
from ascan.fused import CachedOutput, FusedConv, FusedLinear
from search.measure.data import project_data_dir

pytestmark = pytest.mark.usefixtures("one_thread")
CIFAR = project_data_dir() / "cifar10.npz"
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
# Every block kind: each C block, a stage that opens with T (StageDownsample), T in three stages,
# and a stage with T before C.
SMALL = dict(layouts=("CC", "TT", "TTCC", "CT"), widths=(16, 32, 64, 128), stem_width=16, head_width=64,
             head_dim=16, img_size=64, num_classes=10)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Eight real CIFAR-10 test images, normalised, NCHW float32 at 32 px."""
    if not CIFAR.is_file():
        pytest.skip(f"CIFAR-10 not at {CIFAR}")
    with np.load(CIFAR) as data:
        x = torch.from_numpy(data["x_test"][:8].copy()).permute(0, 3, 1, 2).float() / 255
    return (x - MEAN[:, None, None]) / STD[:, None, None]


def at(images: torch.Tensor, size: int, count: int) -> torch.Tensor:
    return F.interpolate(images[:count], size=(size, size), mode="bilinear", align_corners=False)


def trained_looking(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine terms, so folding them is not an identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            bn.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            bn.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=generator) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith("rel_pos.table"):
                p.copy_(torch.randn(p.shape, generator=generator))
    return model.eval()


def reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def fast(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # fp32 summation order differs between the kernels: observed errors are ~1e-6 of the logits' range
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=2e-5 * expected.abs().max().item())


def test_ascan_tiny_at_224px_matches_reference(images):
    torch.manual_seed(0)
    model = trained_looking(timm.create_model("ascan_tiny"), seed=1)
    x = at(images, 224, 1)
    expected = reference(model, x)
    converted = reparameterize_model(model)
    assert_same(fast(converted, x), expected)
    assert_same(fast(converted, x), expected)  # second call: from the caches
    converted = converted.to(memory_format=torch.channels_last)
    assert_same(fast(converted, x.contiguous(memory_format=torch.channels_last)), expected)


@pytest.mark.parametrize("c_block, t_block", [("fused_mbconv", "attention"), ("mbconv", "attention"),
                                              ("convnext", "attention"), ("fused_mbconv", "multi_axis"),
                                              ("fused_mbconv", "hierarchical")])
def test_every_block_kind_matches_reference(images, c_block, t_block):
    torch.manual_seed(0)
    model = trained_looking(build_model(ArchConfig(**SMALL, c_block=c_block, t_block=t_block)), seed=2)
    converted = reparameterize_model(model)
    # 32 px: resized relative-position biases, windows padded (8 px maps, 7 px windows), batch 1
    for size, count in ((64, 3), (32, 1)):
        x = at(images, size, count)
        expected = reference(model, x)
        assert_same(fast(converted, x), expected)
        assert_same(fast(converted.to(memory_format=torch.channels_last),
                         x.contiguous(memory_format=torch.channels_last)), expected)
        converted = converted.to(memory_format=torch.contiguous_format)


def test_portable_fallback_matches_reference(images):
    # float64 skips the oneDNN kernels (fp32 CPU only): this is the path CUDA and other dtypes take.
    torch.manual_seed(0)
    model = trained_looking(build_model(ArchConfig(**SMALL, c_block="mbconv")), seed=5).double()
    x = at(images, 32, 2).double()
    torch.testing.assert_close(fast(reparameterize_model(model), x), reference(model, x), rtol=1e-9, atol=1e-12)


def test_conversion_replaces_every_fusable_layer_and_leaves_the_original(images):
    torch.manual_seed(0)
    model = trained_looking(build_model(ArchConfig(**SMALL)), seed=3)
    converted = reparameterize_model(model)
    cached = [m.source for m in converted.modules() if isinstance(m, CachedOutput)]  # the bias modules, kept
    assert [m for m in converted.modules() if hasattr(m, "fuse")] == cached
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    assert any(isinstance(m, FusedConv) for m in converted.modules())
    assert any(isinstance(m, FusedLinear) for m in converted.modules())
    assert any(isinstance(m, CachedOutput) for m in converted.modules())
    # The original is untouched and still trains; a copy of the converted model computes the same.
    x = at(images, 32, 2)
    assert_same(fast(copy.deepcopy(converted), x), reference(model, x))
    model.train()
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())  # BatchNorm and bias tables included


def test_every_t_block_has_an_inference_form():
    for kind in T_BLOCK_TYPES:
        model = build_model(ArchConfig(**{**SMALL, "t_block": kind}))
        converted = reparameterize_model(model)
        assert any(isinstance(m, CachedOutput) for m in converted.modules()), kind


def test_fast_path_runs_no_batchnorm_and_fused_kernels():
    model = reparameterize_model(build_model(ArchConfig(**SMALL)).eval())
    with torch.inference_mode(), torch.profiler.profile() as prof:
        model(torch.zeros(2, 3, 64, 64))
    ops = {event.key for event in prof.key_averages()}
    assert not {"aten::batch_norm", "aten::native_batch_norm"} & ops
    if torch.backends.mkldnn.is_available():
        assert {"mkldnn::_convolution_pointwise", "mkldnn::_linear_pointwise"} <= ops
