"""`ProxyEvaluator`: the engine's evaluator for real measurements.

A candidate of a `SearchSpace` becomes two networks: the *target* whose params, MACs and
latency are measured, and the small *proxy* trained briefly on real data for accuracy. The
jobs are `search.measure.jobs`' plain functions; the wrappers here turn their results into
trial-record fields (the one place that maps a result to the record), so the engine stores
what it gets without knowing what a network is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from ascan import ArchConfig
from search.measure import jobs
from search.space.space import SearchSpace


def latency_fields(profile: dict[str, Any]) -> dict[str, Any]:
    """A profile (`ProfileResult.to_dict()` with where it ran) as trial-record fields."""
    return dict(
        params=profile["params"], macs=profile["macs"], latency_ms=profile["median_ms"],
        latency_p90_ms=profile["p90_ms"], latency_iqr_ms=profile["iqr_ms"], latency_samples=profile["n_samples"],
        peak_memory_bytes=profile.get("peak_memory_bytes"), profile_fingerprint=profile.get("fingerprint"),
        profile_settings=profile.get("settings"), profile_node_id=profile.get("node_id"),
        profile_host=profile.get("host"), latency_ci_low_ms=profile.get("ci_low_ms"),
        latency_ci_high_ms=profile.get("ci_high_ms"), latency_ci_rel_half_width=profile.get("ci_rel_half_width"),
        latency_rounds=profile.get("rounds"), latency_reference=profile.get("reference"),
        latency_raw_median_ms=profile.get("raw_median_ms"), latency_window=profile.get("window"),
        latency_contamination=profile.get("contamination") if profile.get("contaminated") else None,
        load_foreign_cpu=profile.get("foreign_cpu"), load_steal=profile.get("steal"))


def training_fields(result: dict[str, Any]) -> dict[str, Any]:
    """A proxy training's result (`ProxyResult.to_dict()` with where it ran) as record fields."""
    return dict(
        accuracy=result["val_accuracy"], val_curve=result["curve"], train_loss_curve=result["train_loss_curve"],
        images_per_sec=result["images_per_sec"], proxy_wall_time_s=result["wall_time_s"],
        epochs_done=result["epochs_done"], proxy_device=result["device"], proxy_seed=result.get("seed"),
        val_count=result.get("val_count"), val_correct=result.get("val_correct"),
        head_accuracy=result.get("head_accuracy"), head_count=result.get("head_count"),
        head_correct=result.get("head_correct"), tse=result.get("tse"), tse_ema=result.get("tse_ema"),
        train_started_at=result["started_at"], train_finished_at=result["finished_at"],
        train_node_id=result.get("node_id"), train_host=result.get("host"))


def latency_job(targets: list[dict[str, Any]], reference: dict[str, Any], settings: dict[str, Any],
                cache_path: str | None, remeasure: bool = False) -> dict[str, Any]:
    """One profiling window (`jobs.profile_window_job`) in the evaluator's result shape."""
    window = jobs.profile_window_job(targets, reference, settings, cache_path, remeasure)
    first = next(iter(window.values()))
    return {"started_at": first["started_at"], "finished_at": first["finished_at"],
            "fields": {arch_hash: latency_fields(result) for arch_hash, result in window.items()}}


def training_job(proxy: dict[str, Any], data: Any, settings: dict[str, Any], progress: Any = None,
                 tag: Any = None) -> dict[str, Any]:
    """One proxy training (`jobs.train_candidate`) in the evaluator's result shape."""
    result = jobs.train_candidate(proxy, data, None, settings, progress, tag)
    return {"ok": result["status"] == "ok", "failure_reason": result.get("failure_reason"),
            "fields": training_fields(result)}


@dataclass
class ProxyEvaluator:
    """Proposes candidates of `space`; measures targets on this study's profiling settings and
    trains proxies with `proxy_settings` on `data` (the dataset or the executor's handle)."""

    space: SearchSpace
    data: Any
    proxy_settings: dict[str, Any]
    latency_settings: dict[str, Any]
    cache_path: str | None
    reference: dict[str, Any]  # the network timed in every round of a window (C1's target)
    num_classes: int
    in_chans: int

    def propose(self, trial: optuna.Trial) -> dict[str, Any]:
        candidate = self.space.sample(trial)
        target = self.space.target_config(candidate)
        proxy = self.space.proxy_config(candidate, num_classes=self.num_classes)
        if proxy.in_chans != self.in_chans:
            proxy = proxy.replace(in_chans=self.in_chans)
        return dict(
            layout=candidate.layout, family=self.space.family(candidate), arch_hash=target.arch_hash,
            target_name=target.short_name(), proxy_name=proxy.short_name(), c_block=target.c_block,
            t_block=target.t_block, t_per_stage="-".join(str(t) for t in target.t_counts),
            target_config=target.to_dict(), proxy_config=proxy.to_dict())

    def reference_params(self) -> list[dict[str, Any]]:
        return [self.space.params_for(candidate) for candidate in self.space.reference_candidates()]

    def cheap(self, record) -> dict[str, float]:
        return jobs.cheap_metrics(ArchConfig.from_dict(record.target_config))

    def cached_latency(self, record) -> dict[str, Any] | None:
        hit = jobs.cached_profile(ArchConfig.from_dict(record.target_config), self.latency_settings,
                                  self.cache_path, self.reference)
        return None if hit is None else latency_fields(hit)

    def latency(self, records, remeasure: bool = False) -> tuple:
        return latency_job, ([r.target_config for r in records], self.reference, self.latency_settings,
                             self.cache_path, remeasure)

    def train(self, record, seed: int | None = None, progress: Any = None, tag: Any = None) -> tuple:
        settings = self.proxy_settings if seed is None else {**self.proxy_settings, "seed": seed}
        return training_job, (record.proxy_config, self.data, settings, progress, tag)
