"""Proxy training on real CIFAR-10 slices: it learns, it reports, it fails softly, it is seeded."""
from __future__ import annotations

import json
import math

import pytest
import torch

from ascan import ArchConfig
from search.measure.data import make_split
from search.measure.estimate import binomial_se, combine_replicates, replicate_seed
from search.measure.proxy import PRESETS, ProxySettings, evaluate, preset, train_proxy, warmup_cosine


# The space's proxy of the paper's C1 layout, and a much smaller one for the quick checks.
C1_PROXY = ArchConfig(layouts=("CC", "CCCT", "CCTT", "CTTT"), widths=(16, 32, 64, 128), stem_width=16,
                      stem_stride=1, head_width=256, head_dim=16, img_size=32, num_classes=10)
TINY = ArchConfig(layouts=("C", "C", "CT", "T"), widths=(16, 16, 32, 32), stem_width=16, stem_stride=1,
                  head_width=64, head_dim=8, img_size=32, num_classes=10)


@pytest.fixture(scope="module")
def smoke_split(cifar):
    s = PRESETS["smoke"]
    return make_split(cifar, train_size=s.train_size, val_size=s.val_size, seed=s.data_seed)


def test_training_steps_lower_the_loss_and_report_every_epoch(smoke_split):
    seen = []
    result = train_proxy(TINY, smoke_split, PRESETS["smoke"], on_epoch=lambda e, acc: seen.append((e, acc)))
    assert result.status == "ok" and result.failure_reason is None, result
    assert result.epochs_done == 2 and [e for e, _ in seen] == [1, 2]
    # The curve scores the slice's first images every epoch; the whole slice is scored at the end.
    assert result.curve == tuple(acc for _, acc in seen) and result.head_accuracy == result.curve[-1]
    assert result.head_count == 100 and result.head_accuracy == result.head_correct / 100
    assert result.head_se == binomial_se(result.head_accuracy, 100)
    first, last = result.train_loss_curve
    assert last < first - 0.05 and last < math.log(10), result.train_loss_curve  # below chance
    # TSE: the mean step loss over the run; its moving average leans to the (lower) end of it.
    assert result.tse == pytest.approx((first + last) / 2)
    assert last - 0.2 < result.tse_ema < result.tse, (result.tse_ema, result.train_loss_curve)
    assert result.images_per_sec > 0 and result.wall_time_s > 0 and result.device == "cpu"
    assert result.val_count == len(smoke_split.y_val) == 200 and result.seed == PRESETS["smoke"].seed
    assert result.val_accuracy == result.val_correct / result.val_count
    assert result.val_se == binomial_se(result.val_accuracy, 200) > 0
    stored = json.loads(json.dumps(result.to_dict()))
    assert stored["curve"] == list(result.curve) and stored["val_se"] == result.val_se
    assert stored["val_correct"] == result.val_correct and stored["val_count"] == 200
    assert stored["tse"] == result.tse and stored["tse_ema"] == result.tse_ema
    assert stored["head_accuracy"] == result.head_accuracy and stored["head_se"] == result.head_se


def test_a_ten_thousand_image_score_has_the_standard_error_of_ten_thousand(cifar):
    settings = preset("default", epochs=1, train_size=640, num_threads=1)  # the default's 10k slice, a short training
    assert settings.val_size == 10_000 and settings.val_head == 2_000
    split = make_split(cifar, train_size=settings.train_size, val_size=settings.val_size, seed=settings.data_seed)
    result = train_proxy(TINY, split, settings)
    assert result.ok and result.val_count == 10_000 and result.val_accuracy == result.val_correct / 10_000
    assert result.val_se == binomial_se(result.val_accuracy, 10_000) < 0.0051  # half the 2k slice's 1.1 points
    # The first 2,000 images are a score of their own, with their own (larger) SE, in the same run.
    assert result.head_count == 2_000 and result.head_se == binomial_se(result.head_accuracy, 2_000)
    assert 0 <= result.head_correct <= result.val_correct and result.head_se > result.val_se


def test_replicates_vary_the_training_on_the_same_scoring_images(smoke_split):
    base = preset("smoke", epochs=1, num_threads=1)
    runs = [train_proxy(TINY, smoke_split, base.replace(seed=replicate_seed(base.seed, k))) for k in range(3)]
    assert [r.seed for r in runs] == [0, 1, 2] and {r.val_count for r in runs} == {200}
    assert len({r.train_loss_curve for r in runs}) == 3  # weights, order and augmentation differ
    estimate = combine_replicates(runs)
    assert estimate.n == 3 and estimate.se >= estimate.val_se > 0


def test_same_seed_same_result_and_threads_restored(smoke_split):
    settings = preset("smoke", epochs=1, num_threads=1)
    threads = torch.get_num_threads()
    rng_before = torch.get_rng_state()
    a = train_proxy(TINY, smoke_split, settings)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng_before)
    b = train_proxy(TINY, smoke_split, settings)
    c = train_proxy(TINY, smoke_split, settings.replace(seed=1))
    assert a.train_loss_curve == b.train_loss_curve and a.curve == b.curve
    assert c.train_loss_curve != a.train_loss_curve


def test_nan_loss_returns_a_failed_result_with_reason(smoke_split):
    result = train_proxy(TINY, smoke_split, preset("smoke", lr=1e6))
    assert result.status == "failed" and not result.ok
    assert "non-finite training loss" in result.failure_reason and "lr=1e+06" in result.failure_reason
    assert result.epochs_done == 0 and result.curve == () and result.val_accuracy == 0.0
    assert result.val_count == 0 and math.isnan(result.val_se)
    assert result.tse is None and result.tse_ema is None and result.head_accuracy is None


def test_callback_exceptions_propagate_to_stop_a_trial(smoke_split):
    class Pruned(Exception):
        pass

    def prune(epoch: int, accuracy: float) -> None:
        raise Pruned(f"stop at {epoch}")

    with pytest.raises(Pruned, match="stop at 1"):
        train_proxy(TINY, smoke_split, preset("smoke"), on_epoch=prune)


def test_evaluate_scores_a_trained_model_on_other_images(cifar, smoke_split):
    from ascan import build_model
    from search.measure.proxy import fit
    model = build_model(TINY)
    result = fit(model, smoke_split, preset("smoke", epochs=1))
    same = evaluate(model, smoke_split.x_val, smoke_split.y_val, smoke_split, PRESETS["smoke"])
    assert same == result.val_accuracy  # the same scoring path as during training
    test_acc = evaluate(model, cifar.x_test[:300], cifar.y_test[:300], smoke_split, PRESETS["smoke"])
    assert 0.0 <= test_acc <= 1.0


def test_config_that_does_not_fit_the_data_is_a_caller_error(smoke_split):
    with pytest.raises(ValueError, match="num_classes=100"):
        train_proxy(TINY.replace(num_classes=100), smoke_split, PRESETS["smoke"])
    with pytest.raises(ValueError, match="in_chans=1"):
        train_proxy(TINY.replace(in_chans=1), smoke_split, PRESETS["smoke"])


def test_settings_validation_names_the_field():
    with pytest.raises(ValueError, match=r"ProxySettings.lr=-1"):
        ProxySettings(lr=-1)
    with pytest.raises(ValueError, match=r"ProxySettings.amp_dtype='fp8'"):
        ProxySettings(amp_dtype="fp8")
    with pytest.raises(ValueError, match=r"ProxySettings.device='tpu'"):
        ProxySettings(device="tpu")
    with pytest.raises(ValueError, match="unknown"):
        preset("fastest")
    with pytest.raises(ValueError, match=r"ProxySettings.score='loss': choose one of accuracy, head_accuracy"):
        ProxySettings(score="loss")
    assert preset("default", epochs=2).epochs == 2 and PRESETS["default"].epochs != 2


def test_thorough_trains_about_five_times_longer_than_default():
    default, thorough = PRESETS["default"], PRESETS["thorough"]
    ratio = (thorough.epochs * thorough.train_size) / (default.epochs * default.train_size)
    assert 4 <= ratio <= 6
    assert thorough.val_size == default.val_size and thorough.data_seed == default.data_seed  # same scoring slice


def test_warmup_then_cosine_schedule():
    factors = [warmup_cosine(step, 10, 100) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert max(factors) == pytest.approx(1.0) and factors[-1] < 0.01
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
