"""The T-block alternatives the paper ablated (MaxViT multi-axis, FasterViT hierarchical) and
stages with T before C: shapes at the proxy's and the target's resolutions, gradients, MACs
(analytic formula vs the traced count), the inference form, and configs that round-trip."""
from __future__ import annotations

import pytest
import timm
import torch
import yaml
from timm.utils import reparameterize_model

import ascan.blocks
from ascan import ArchConfig, build_model
from ascan.blocks import T_BLOCK_TYPES, WINDOW_SIZE, HierarchicalBlock, MultiAxisBlock
from ascan.config import C_BLOCKS, T_BLOCKS
from ascan.zoo import ZOO_CONFIGS, register_zoo_file
from search.measure.macs import analytic_macs, count_macs

pytestmark = pytest.mark.usefixtures("one_thread")
NEW_T_BLOCKS = ("multi_axis", "hierarchical")
# The search's proxy (32 px, stem stride 1: stage maps 16/8/4/2, so windows of 7 are padded) and
# a narrow target at 224 px (stage maps 56/28/14/7: windows divide them).
PROXY = dict(widths=(16, 32, 64, 128), stem_width=16, head_width=192, head_dim=16, img_size=32, stem_stride=1,
             num_classes=10)
TARGET = dict(widths=(16, 32, 64, 128), stem_width=16, head_width=64, head_dim=16, img_size=224, num_classes=10)


def test_registries_match_the_config_names():
    from ascan.blocks import C_BLOCK_TYPES
    assert tuple(C_BLOCK_TYPES) == C_BLOCKS and tuple(T_BLOCK_TYPES) == T_BLOCKS


@pytest.mark.parametrize("kind", NEW_T_BLOCKS)
@pytest.mark.parametrize("size", [16, 8, 4, 2, 1, 56, 28, 14, 7, 12])
def test_block_keeps_shape_at_every_stage_map(kind, size):
    block = T_BLOCK_TYPES[kind](32, head_dim=16, grid_size=(size, size))
    x = torch.randn(2, size, size, 32)
    assert block(x).shape == x.shape


@pytest.mark.parametrize("kind", NEW_T_BLOCKS)
def test_padded_tokens_are_masked_out(monkeypatch, kind):
    # 16 px maps under 7 px windows are padded to 21 px. Were the padded keys attended to, noise
    # in the padding (instead of zeros) would change the real tokens' outputs.
    torch.manual_seed(0)
    block = T_BLOCK_TYPES[kind](32, head_dim=16, grid_size=(16, 16)).eval()
    x = torch.randn(2, 16, 16, 32)
    with torch.no_grad():
        expected = block(x)
        zero_pad = ascan.blocks._pad

        def noise_pad(y, window):
            padded = zero_pad(y, window)
            noise = torch.randn_like(padded) * 10
            noise[:, :y.shape[1], :y.shape[2]] = 0
            return padded + noise

        monkeypatch.setattr(ascan.blocks, "_pad", noise_pad)
        torch.testing.assert_close(block(x), expected)
        monkeypatch.setattr(ascan.blocks, "_key_mask", lambda *args: None)  # the guard is what holds it
        assert not torch.allclose(block(x), expected, atol=1e-3)


@pytest.mark.parametrize("kind", NEW_T_BLOCKS)
@pytest.mark.parametrize("settings, size", [(PROXY, 32), (TARGET, 224)], ids=["proxy32", "target224"])
def test_network_runs_and_trains(kind, settings, size):
    torch.manual_seed(0)
    model = build_model(ArchConfig(**settings, t_block=kind, drop_path_rate=0.1))
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


MAC_CASES = [
    *[(ArchConfig(**PROXY, t_block=kind), 32) for kind in T_BLOCKS],
    *[(ArchConfig(**TARGET, t_block=kind), 224) for kind in T_BLOCKS],
    # designed at 224, run at 32 (windows shrink to the map), and T-first stages
    *[(ArchConfig(**TARGET, t_block=kind), 32) for kind in NEW_T_BLOCKS],
    *[(ArchConfig(**{**PROXY, "layouts": ("CC", "TCCC", "TTCC", "TTTC")}, t_block=kind), 32) for kind in T_BLOCKS],
    (ArchConfig(**{**TARGET, "layouts": ("CC", "TCCC", "TTCC", "TTTT")}, c_block="mbconv"), 224),
]


@pytest.mark.parametrize("cfg, size", MAC_CASES, ids=lambda v: v.short_name() if isinstance(v, ArchConfig) else str(v))
def test_analytic_macs_equal_traced_macs(cfg: ArchConfig, size: int):
    with torch.device("meta"):
        model = build_model(cfg)
    model = model.to_empty(device="cpu")
    assert count_macs(model, (1, 3, size, size)).total == analytic_macs(cfg, size)


@pytest.mark.parametrize("kind", NEW_T_BLOCKS)
@pytest.mark.parametrize("settings, size", [(PROXY, 32), (TARGET, 224)], ids=["proxy32", "target224"])
def test_inference_form_matches_eager(kind, settings, size):
    torch.manual_seed(0)
    model = build_model(ArchConfig(**{**settings, "layouts": ("CC", "TCCC", "CCTT", "CTTT")}, t_block=kind)).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(x)
    with torch.inference_mode():
        actual = reparameterize_model(model)(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=2e-5 * expected.abs().max().item())


def test_windows_follow_the_design_grid():
    assert MultiAxisBlock(32, 16, grid_size=(56, 56)).window == (WINDOW_SIZE, WINDOW_SIZE)
    assert MultiAxisBlock(32, 16, grid_size=(4, 4)).window == (4, 4)
    assert HierarchicalBlock(32, 16, grid_size=(16, 16)).carrier_attn.rel_pos.grid_size == (3, 3)


@pytest.mark.parametrize("name, changes", [
    ("multi_axis", dict(t_block="multi_axis")), ("hierarchical", dict(t_block="hierarchical")),
    ("t_first", dict(layouts=("CC", "TCCC", "TTCC", "TTTC"))),
    ("sym_t_first_hier", dict(layouts=("CC", "CCCC", "TTCC", "TTTT"), t_block="hierarchical"))])
def test_config_round_trips_and_exports_to_timm(tmp_path, name, changes):
    cfg = ZOO_CONFIGS["ascan_tiny"].replace(**changes)
    for again in (ArchConfig.from_yaml(cfg.to_yaml()), ArchConfig.from_json(cfg.to_json())):
        assert again == cfg and again.arch_hash == cfg.arch_hash
    assert cfg.arch_hash != ZOO_CONFIGS["ascan_tiny"].arch_hash
    # An exported candidate is a zoo YAML holding its config; timm then builds it by name.
    path = tmp_path / f"ascan_test_{name}.yaml"
    path.write_text(yaml.safe_dump({"config": cfg.to_dict()}))
    register_zoo_file(path)
    with torch.device("meta"):
        model = timm.create_model(f"ascan_test_{name}")
    assert model.config == cfg


def test_existing_hashes_unchanged():
    # Pinned before t_block had choices and T-first stages existed (commit d4c373b).
    assert {name: c.arch_hash for name, c in ZOO_CONFIGS.items()} == {
        "ascan_tiny": "7d5b3e1ba809", "ascan_tiny_sym": "54e71b5a616e", "ascan_base": "6197b00c2d89",
        "ascan_large": "2cc3d0d4f864"}


@pytest.mark.parametrize("layout, ok", [("TCCC", True), ("TTCC", True), ("CCTT", True), ("TTTT", True),
                                        ("CTCT", False), ("TCCT", False)])
def test_a_stage_is_one_run_of_each_kind(layout, ok):
    make = lambda: ArchConfig(layouts=("CC", layout, "CCTT", "CTTT"))  # noqa: E731
    if ok:
        assert make().layouts[1] == layout
    else:
        with pytest.raises(ValueError, match=r"layouts\[1\]"):
            make()
