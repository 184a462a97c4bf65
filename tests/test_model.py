"""The AsCAN family: zoo models build, run, train and expose features the timm way."""
import pytest
import timm
import timm.utils
import torch

from ascan import ArchConfig, build_model
from ascan.zoo import ZOO_CONFIGS

# Pinned parameter counts (1000 classes). A change here changes every published number.
EXPECTED_PARAMS = {
    "ascan_tiny": 21_063_708,
    "ascan_tiny_sym": 22_728_392,
    "ascan_base": 62_270_902,
    "ascan_large": 177_028_344,
}


def test_zoo_is_registered():
    assert set(EXPECTED_PARAMS) <= set(timm.list_models("ascan*"))


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_param_counts_pinned(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_zoo_forward_backward_at_32px(name):
    # 32 px exercises the resized relative-position bias of every T block.
    model = timm.create_model(name, num_classes=10, drop_path_rate=0.1)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name, batch", [("ascan_tiny", 2), ("ascan_tiny_sym", 2), ("ascan_base", 2), ("ascan_large", 1)])
def test_zoo_forward_at_224px(name, batch):
    model = timm.create_model(name).eval()
    with torch.inference_mode():
        assert model(torch.randn(batch, 3, 224, 224)).shape == (batch, 1000)


def test_backward_at_224px():
    model = timm.create_model("ascan_tiny", num_classes=7, drop_path_rate=0.1)
    model(torch.randn(2, 3, 224, 224)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_create_model_honours_kwargs():
    model = timm.create_model("ascan_tiny", num_classes=3, in_chans=1, drop_path_rate=0.2)
    assert model.config.num_classes == 3 and model.config.in_chans == 1
    assert model.config.drop_path_rate == 0.2
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)
    model.reset_classifier(5)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5)


def test_features_only_returns_four_stage_maps():
    model = timm.create_model("ascan_tiny", features_only=True).eval()
    with torch.inference_mode():
        feats = model(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert model.feature_info.reduction() == [4, 8, 16, 32]


@pytest.mark.parametrize("c_block", ["fused_mbconv", "mbconv", "convnext"])
def test_c_block_variants_build_and_train(c_block):
    cfg = ArchConfig(widths=(16, 32, 64, 128), stem_width=16, head_width=64, head_dim=16, img_size=32,
                     stem_stride=1, num_classes=10, c_block=c_block)
    model = build_model(cfg)
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss)


def test_stage_opening_with_t_block():
    cfg = ArchConfig(layouts=("CC", "TTTT", "CCTT", "TTTT"), widths=(16, 32, 64, 128), stem_width=16,
                     head_width=64, head_dim=16, img_size=64, num_classes=10)
    assert build_model(cfg)(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_channels_last_and_converted_model_match_eager():
    torch.manual_seed(0)
    cfg = ArchConfig(widths=(16, 32, 64, 128), stem_width=16, head_width=64, head_dim=16, img_size=64)
    model = build_model(cfg).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
    converted = timm.utils.reparameterize_model(model)
    with torch.inference_mode():
        cached = converted(x)
        cached_again = converted(x)
        model_cl = converted.to(memory_format=torch.channels_last)
        channels_last = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(cached, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cached_again, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(channels_last, reference, rtol=1e-4, atol=1e-4)


def test_zoo_configs_are_the_paper_layouts():
    assert ZOO_CONFIGS["ascan_tiny"].layout == "CC-CCCT-CCTT-CTTT"
    assert ZOO_CONFIGS["ascan_tiny_sym"].layout == "CC-CCCC-CCTT-TTTT"
