"""ArchConfig: validation, canonical names, round-trips and a hash stable across processes."""
import json
import subprocess
import sys

import pytest

from ascan import ArchConfig

C1 = ArchConfig(layouts=("CC", "CCCT", "CCTT", "CTTT"))


def test_short_name_is_canonical():
    assert C1.short_name() == "C2-CCCT-CCTT-CTTT/64-128-256-512"
    sym = C1.replace(layouts=("CC", "CCCC", "CCTT", "TTTT"))
    assert sym.short_name() == "C2-C4-CCTT-T4/64-128-256-512"
    assert C1.replace(num_classes=10).short_name().endswith("/num_classes=10")
    assert C1.layout == "CC-CCCT-CCTT-CTTT"
    assert C1.t_counts == (0, 1, 2, 3) and C1.depths == (2, 4, 4, 4)


def test_round_trips_are_exact():
    cfg = C1.replace(drop_path_rate=0.1, c_block="mbconv", num_classes=10, img_size=32, stem_stride=1)
    assert ArchConfig.from_dict(cfg.to_dict()) == cfg
    assert ArchConfig.from_json(cfg.to_json()) == cfg
    assert ArchConfig.from_yaml(cfg.to_yaml()) == cfg
    assert ArchConfig.from_json(json.dumps(json.loads(cfg.to_json()))).arch_hash == cfg.arch_hash


def test_hash_distinguishes_and_is_stable_across_processes():
    assert C1.arch_hash != C1.replace(layouts=("CC", "CCCC", "CCTT", "TTTT")).arch_hash
    assert C1.arch_hash != C1.replace(num_classes=10).arch_hash
    code = ("from ascan import ArchConfig; "
            "print(ArchConfig(layouts=('CC','CCCT','CCTT','CTTT')).arch_hash)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == C1.arch_hash


@pytest.mark.parametrize("changes, field, value", [
    (dict(layouts=("CC", "CXCT", "CCTT", "CTTT")), "layouts[1]", "'CXCT'"),
    (dict(layouts=("CC", "", "CCTT", "CTTT")), "layouts[1]", "''"),
    (dict(layouts=("CC", "CTCT", "CCTT", "CTTT")), "layouts[1]", "'CTCT'"),
    (dict(layouts=("CC", "CCCT", "CCTT")), "layouts", None),
    (dict(widths=(64, 128, 250, 512)), "widths[2]", "250"),
    (dict(widths=(64, -128, 256, 512)), "widths[1]", "-128"),
    (dict(stem_width=-1), "stem_width", "-1"),
    (dict(head_dim=0), "head_dim", "0"),
    (dict(img_size=16), "img_size", "16"),
    (dict(c_block="resnet"), "c_block", "'resnet'"),
    (dict(drop_path_rate=1.5), "drop_path_rate", "1.5"),
    (dict(stem_stride=4), "stem_stride", "4"),
])
def test_invalid_configs_name_field_and_value(changes, field, value):
    with pytest.raises(ValueError) as err:
        C1.replace(**changes)
    message = str(err.value)
    assert f"ArchConfig.{field}" in message
    if value is not None:
        assert value in message
    assert "\n" not in message


def test_unknown_field_is_rejected():
    with pytest.raises(ValueError, match="ArchConfig.depth: unknown field"):
        ArchConfig.from_dict({**C1.to_dict(), "depth": 3})


def test_t_block_below_one_pixel():
    # 32 px with the paper's stride-2 stem puts stage 4 at 1x1: allowed. 16 px would be 0x0.
    assert ArchConfig(img_size=32).stage_resolutions() == (8, 4, 2, 1)
    assert ArchConfig(img_size=32, stem_stride=1).stage_resolutions() == (16, 8, 4, 2)
