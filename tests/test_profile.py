"""The profiler: MAC counts against hand formulas, latency statistics, the cache, bad input.

Small configs and short measuring times keep this file fast; speed targets live in
benchmarks/profiler_vs_timm.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ascan import ArchConfig, build_model
from ascan.zoo import ZOO_CONFIGS
from search.measure.macs import analytic_macs, count_macs, count_params, flop_counter_macs
from search.measure.profile import (LatencySettings, ProfileCache, ProfileError, ProfileResult, environment_fingerprint,
                            fingerprint_hash, measure_latency, profile_config)

REPO = Path(__file__).resolve().parents[1]
SMALL = ArchConfig(img_size=64, widths=(32, 64, 128, 256), stem_width=32, head_width=256)
# Short, single-threaded measurements: 2 cores are shared with other tests. The contamination
# checks are off here (a loaded test machine would make results uncacheable); they have their
# own tests in test_profile_window.py.
QUICK = LatencySettings(device="cpu", batch_size=2, img_size=64, num_threads=1, warmup_iters=2, min_iters=5,
                        min_time_s=0.2, max_spread=100.0, max_foreign_cpu=100.0, max_steal=1.0)


@pytest.fixture(scope="module")
def small_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(SMALL)


def assert_one_line(error: pytest.ExceptionInfo, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


# ---------------------------------------------------------------------- MACs
class TinyAttention(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


def test_attention_is_counted_and_plain_counters_miss_it():
    B, N, C = 2, 49, 64
    linear = B * N * C * 3 * C + B * N * C * C
    attention = 2 * B * N * N * C  # QK^T and AV, summed over heads
    model = TinyAttention(C)

    assert count_macs(model, (B, N, C)).total == linear + attention
    assert flop_counter_macs(model, (B, N, C)) == linear + attention

    from fvcore.nn import FlopCountAnalysis  # after search.macs, which silences fvcore's import warning

    plain = FlopCountAnalysis(model, torch.zeros(B, N, C))
    plain.unsupported_ops_warnings(False)
    assert plain.total() == linear  # fvcore alone: attention silently 0
    assert "aten::scaled_dot_product_attention" in plain.unsupported_ops()
    assert flop_counter_macs(model, (B, N, C), map_attention=False) == linear


LAYOUT_CASES = {
    "mbconv_t_first_stride1": ArchConfig(layouts=("T", "CT", "TT", "T"), c_block="mbconv", stem_stride=1, img_size=32,
                                         widths=(32, 64, 128, 256), stem_width=32, head_width=256),
    "convnext": ArchConfig(layouts=("CT", "CT", "CT", "CT"), c_block="convnext", widths=(32, 64, 128, 256),
                           stem_width=32, head_width=256, num_classes=10),
    "no_se_expansion3": ArchConfig(layouts=("C", "CC", "CT", "TT"), se_ratio=0.0, expansion=3.0,
                                   widths=(32, 64, 96, 192), stem_width=24, head_width=256, mlp_ratio=2.0),
}
MAC_CASES = [  # (config, resolutions)
    *[(ZOO_CONFIGS[name], (32, 224)) for name in ("ascan_tiny", "ascan_tiny_sym")],
    *[(ZOO_CONFIGS[name], (32,)) for name in ("ascan_base", "ascan_large")],
    (LAYOUT_CASES["mbconv_t_first_stride1"], (32,)),
    (LAYOUT_CASES["convnext"], (32, 224)),
    (LAYOUT_CASES["no_se_expansion3"], (32, 224)),
]


@pytest.mark.parametrize("cfg, sizes", MAC_CASES, ids=lambda v: v.short_name() if isinstance(v, ArchConfig) else "")
def test_analytic_formula_agrees_with_fvcore(cfg: ArchConfig, sizes: tuple[int, ...]):
    # Weights are left uninitialised (built on the meta device): counting needs shapes, not values,
    # and initialising ascan_large alone would take seconds.
    with torch.device("meta"):
        model = build_model(cfg)
    model = model.to_empty(device="cpu")
    for size in sizes:
        counted = count_macs(model, (1, cfg.in_chans, size, size)).total
        expected = analytic_macs(cfg, size)
        assert abs(counted - expected) <= 0.01 * expected, (size, counted, expected)


def test_counts_on_eager_copy_of_compiled_model(small_model):
    compiled = torch.compile(small_model)  # lazy: nothing compiles unless called
    assert count_macs(compiled, (1, 3, 64, 64)).total == count_macs(small_model, (1, 3, 64, 64)).total
    assert count_params(compiled) == sum(p.numel() for p in small_model.parameters())


def test_heavy_unsupported_operator_is_an_error():
    class BatchedProduct(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.addbmm(x[0, 0], x, x.transpose(1, 2))

    with pytest.raises(ProfileError) as error:
        count_macs(BatchedProduct(), (4, 8, 8))
    assert_one_line(error, "aten::addbmm")


def test_count_macs_names_the_failing_shape(small_model):
    with pytest.raises(ProfileError) as error:
        count_macs(small_model, (1, 5, 64, 64))  # the stem wants 3 channels
    assert_one_line(error, "(1, 5, 64, 64)")
    assert small_model.training  # mode restored after the failure


# ---------------------------------------------------------------------- latency
def test_latency_statistics_and_restored_state(small_model):
    threads_before = torch.get_num_threads()
    result = measure_latency(small_model, QUICK)
    samples = sorted(result.samples_ms)

    assert result.n_samples == len(samples) >= QUICK.min_iters
    assert sum(samples) >= 0.9 * QUICK.min_time_s * 1000  # stopped on time, not just count
    assert samples[0] <= result.median_ms <= result.p90_ms <= samples[-1]
    assert 0 <= result.iqr_ms <= samples[-1] - samples[0]
    assert result.throughput == pytest.approx(QUICK.batch_size * 1000 / result.median_ms)
    assert result.settings.num_threads == result.fingerprint["threads"] == 1
    if os.access("/proc/self/clear_refs", os.W_OK):
        assert result.peak_memory_bytes > 0
    # The caller's model and torch's globals are untouched.
    assert torch.get_num_threads() == threads_before
    assert small_model.training and next(small_model.parameters()).dtype == torch.float32


def test_sampling_stops_on_min_iters_or_max_time(small_model):
    counted = measure_latency(small_model, LatencySettings(
        device="cpu", img_size=32, num_threads=1, warmup_iters=1, min_iters=7, min_time_s=0.0))
    assert counted.n_samples == 7
    capped = measure_latency(small_model, LatencySettings(
        device="cpu", img_size=32, num_threads=1, warmup_iters=1, min_iters=10**6, min_time_s=0.0, max_time_s=0.2))
    assert 1 <= capped.n_samples < 10**6


def test_channels_last_and_bfloat16_are_measured_and_recorded(small_model):
    settings = LatencySettings(device="cpu", img_size=32, num_threads=1, warmup_iters=1, min_iters=3,
                               min_time_s=0.0, channels_last=True, dtype="bfloat16")
    result = measure_latency(small_model, settings)
    assert result.median_ms > 0
    assert result.settings.channels_last and result.settings.dtype == "bfloat16"
    assert result.settings.settings_hash != QUICK.resolved().settings_hash


def test_environment_fingerprint_is_stable_and_specific():
    fp = environment_fingerprint("cpu", 1)
    for key in ("device_name", "torch", "threads", "cpu_capability", "float32_matmul_precision"):
        assert key in fp
    assert fp["torch"] == torch.__version__ and fp["threads"] == 1
    assert fingerprint_hash(fp) == fingerprint_hash(environment_fingerprint("cpu", 1))
    assert fingerprint_hash(fp) != fingerprint_hash(environment_fingerprint("cpu", 2))


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("field, value", [("dtype", "float64"), ("device", "tpu"), ("batch_size", 0),
                                          ("num_threads", 0), ("min_time_s", -1.0), ("clock", "gpu"),
                                          ("min_rounds", 0), ("target_rel_ci", -0.01), ("max_retries", -1)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ProfileError) as error:
        LatencySettings(**{field: value})
    assert_one_line(error, f"LatencySettings.{field}")


def test_model_that_cannot_run_names_the_input(small_model):
    with pytest.raises(ProfileError) as error:
        measure_latency(nn.Linear(10, 10), QUICK)
    assert_one_line(error, "(2, 3, 64, 64)", "float32", "cpu")


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> tuple[Path, ProfileResult]:
    """A cache holding one measured profile of SMALL under QUICK."""
    path = tmp_path_factory.mktemp("cache") / "profiles.db"
    return path, profile_config(SMALL, QUICK, ProfileCache(path))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_request_without_cuda_leaves_cache_intact(profiled):
    cache = ProfileCache(profiled[0])
    stored = cache.all()
    with pytest.raises(ProfileError) as error:
        profile_config(SMALL, LatencySettings(**{**QUICK.to_dict(), "device": "cuda"}), cache)
    assert_one_line(error, "LatencySettings.device='cuda'")
    assert cache.all() == stored and cache.integrity_check() == "ok"


# ---------------------------------------------------------------------- profile + cache
def test_profile_config_measures_once_per_machine(profiled):
    path, first = profiled
    assert first.macs == analytic_macs(SMALL, QUICK.img_size)
    assert first.params == count_params(build_model(SMALL))
    assert first.arch_hash == SMALL.arch_hash and first.arch == SMALL.to_dict()

    start = time.perf_counter()
    again = profile_config(SMALL, QUICK, ProfileCache(path))
    assert time.perf_counter() - start < 0.5
    assert again == first  # identical floats: read back, not re-measured
    assert ProfileResult.from_dict(first.to_dict()) == first

    cache = ProfileCache(path)
    before = len(cache)
    other = profile_config(SMALL, LatencySettings(**{**QUICK.to_dict(), "batch_size": 1}), cache)
    assert other.settings["batch_size"] == 1 and other.median_ms != first.median_ms
    assert len(cache) == before + 1 and cache.integrity_check() == "ok"


WRITER = textwrap.dedent("""
    import sys, time
    from search.measure.profile_cache import ProfileCache, ProfileResult
    worker, rows, start_at = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    time.sleep(max(0.0, start_at - time.time()))  # all writers start together
    cache = ProfileCache(sys.argv[4])
    for i in range(rows):
        cache.put(ProfileResult(arch_hash=f"w{worker}-{i}", params=i, macs=worker, median_ms=1.0, p90_ms=2.0,
                                iqr_ms=0.5, mean_ms=1.2, n_samples=10, throughput=1000.0, peak_memory_bytes=None,
                                settings={"batch_size": 1}, fingerprint={"cpu": "test"}))
""")


def test_concurrent_writers_do_not_corrupt_the_cache(tmp_path):
    path, workers, rows = tmp_path / "shared.db", 4, 30
    start_at = time.time() + 1.5
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(rows), str(start_at), str(path)],
                              cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for w in range(workers)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, errors

    cache = ProfileCache(path)
    assert cache.integrity_check() == "ok"
    results = cache.all()
    assert len(results) == workers * rows
    assert {r.arch_hash for r in results} == {f"w{w}-{i}" for w in range(workers) for i in range(rows)}
    assert cache.get("w3-7", results[0].settings_hash, results[0].fingerprint_hash).params == 7


def test_corrupt_cache_file_is_reported_not_deleted(tmp_path):
    path = tmp_path / "profiles.db"
    garbage = b"this is not an sqlite file\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(ProfileError) as error:
        ProfileCache(path)
    assert_one_line(error, str(path), "delete")
    assert path.read_bytes() == garbage
