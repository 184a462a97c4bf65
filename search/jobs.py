"""The two expensive steps of a trial, as plain functions of plain data.

They run wherever the executor puts them (this process or a Ray worker), so arguments and
results are dicts and strings: nothing that needs the driver's objects. Each worker process
keeps its loaded dataset (see `search.data.load_dataset`), so only the first job pays for it.
"""
from __future__ import annotations

import time
from typing import Any

from ascan import ArchConfig


def profile_target(target: dict[str, Any], settings: dict[str, Any], cache_path: str | None) -> dict[str, Any]:
    """Params, MACs and latency of the target network (cached by architecture and machine).

    The driver runs this with the whole device reserved, so nothing else shares it.
    """
    from .profile import LatencySettings, ProfileCache, profile_config

    cache = ProfileCache(cache_path) if cache_path else None
    result = profile_config(ArchConfig.from_dict(target), LatencySettings.from_dict(settings), cache)
    return result.to_dict()


def train_candidate(proxy: dict[str, Any], data_name: str, data_root: str | None,
                    settings: dict[str, Any]) -> dict[str, Any]:
    """Short proxy training; returns a `ProxyResult` as a dict (failures included, not raised),
    with wall-clock start and end times so overlapping trials can be seen."""
    from .data import load_dataset, make_split
    from .proxy import ProxySettings, train_proxy

    started_at = time.time()
    proxy_settings = ProxySettings(**settings)
    dataset = load_dataset(data_name, data_root)
    split = make_split(dataset, val_size=proxy_settings.val_size, seed=proxy_settings.data_seed,
                       train_size=proxy_settings.train_size)
    result = train_proxy(ArchConfig.from_dict(proxy), split, proxy_settings).to_dict()
    return {**result, "started_at": started_at, "finished_at": time.time()}


def cheap_metrics(target: ArchConfig) -> dict[str, float]:
    """Params and MACs without running anything: a weightless (meta) build and the analytic
    MAC formula, so a budget can reject a candidate before any measurement."""
    import torch

    from ascan import build_model

    from .macs import analytic_macs, count_params

    with torch.device("meta"):
        params = count_params(build_model(target))
    return {"params": float(params), "macs": float(analytic_macs(target))}


def cached_profile(target: ArchConfig, settings: dict[str, Any], cache_path: str | None) -> dict[str, Any] | None:
    """The cached profile of `target` on this machine, or None (then it must be measured)."""
    if not cache_path:
        return None
    from .profile import LatencySettings, ProfileCache, lookup_profile

    hit = lookup_profile(target, LatencySettings.from_dict(settings), ProfileCache(cache_path))
    return None if hit is None else hit.to_dict()
