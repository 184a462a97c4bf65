"""The CUDA paths: proxy training with autocast, CUDA-event latency at fp16, the inference form
on the GPU, and a whole (tiny) search on one GPU. Marked `cuda`; they skip without CUDA, so
they run on the GPU machine (`benchmarks/gpu_check.sh` runs `pytest -m cuda`)."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from timm.utils import reparameterize_model

from ascan import ArchConfig, build_model
from search.measure import jobs
from search.measure.profile import LatencySettings, measure_latency, profile_window
from search.measure.proxy import preset

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SMALL = ArchConfig(img_size=32, widths=(16, 32, 64, 128), stem_width=16, head_width=128,
                   layouts=("CC", "CCCT", "CCTT", "CTTT"))
GPU = dict(device="cuda", batch_size=16, img_size=32, dtype="float16", channels_last=True, warmup_iters=3,
           min_iters=10, min_time_s=0.2, max_time_s=10.0, min_rounds=5, target_rel_ci=0.05)


def test_proxy_trains_on_the_gpu(cifar):
    settings = preset("smoke", device="cuda").to_dict()
    result = jobs.train_candidate(SMALL.replace(num_classes=10).to_dict(), cifar, None, settings)
    assert result["status"] == "ok", result["failure_reason"]
    assert result["device"].startswith("cuda")
    assert 0.0 < result["val_accuracy"] <= 1.0 and result["val_count"] == settings["val_size"]


def test_cuda_latency_at_fp16_is_timed_with_events():
    model = build_model(SMALL).eval()
    result = measure_latency(model, LatencySettings(**GPU))
    assert result.fingerprint["device_type"] == "cuda"
    assert result.n_samples >= 10 and 0 < result.median_ms < 1000 and math.isfinite(result.p90_ms)
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes > 0


def test_cuda_window_gives_each_candidate_an_interval():
    targets = [SMALL, SMALL.replace(layouts=("CC", "CCCC", "CCTT", "TTTT"))]
    results = profile_window(targets, SMALL.replace(widths=(32, 64, 96, 192)), LatencySettings(**GPU))
    for result in results:
        assert result.ci_low_ms <= result.median_ms <= result.ci_high_ms, result
        assert result.rounds >= 5


def test_inference_form_matches_on_the_gpu_at_fp16():
    torch.manual_seed(0)
    model = build_model(SMALL).eval().cuda()
    x = torch.randn(8, 3, 32, 32, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        expected = model(x).float()
        got = reparameterize_model(model)(x).float()
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)


def test_a_tiny_search_runs_on_the_gpu(tmp_path, cifar):
    import run_search

    code = run_search.main(["space=paper", "executor=inline", "proxy.preset=smoke", "search.n_trials=2",
                            "proxy.device=cuda", "profile.device=cuda", "profile.dtype=float16",
                            "profile.batch_size=16", "profile.max_time_s=10", "refine.trainings=0",
                            f"results_dir={tmp_path}"])
    assert code == 0
    rows = list(csv.DictReader(open(next(tmp_path.glob("*/trials.csv")))))
    assert len(rows) == 2 and all(row["state"] == "COMPLETE" for row in rows), rows
