"""The two expensive steps of a trial, as plain functions of plain data.

They run wherever the executor puts them (this process or a Ray worker, maybe on another
machine), so arguments and results are plain data: dicts, strings, and the dataset (which
the driver loads once and hands over through the executor's object store). Each result says
where and when it ran (`node_id`, `host`, `started_at`, `finished_at`), so a study shows
which machine did what and whether jobs overlapped.
"""
from __future__ import annotations

import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from ascan import ArchConfig

if TYPE_CHECKING:
    from search.measure.data import ImageDataset


def profile_target(target: dict[str, Any], settings: dict[str, Any], cache_path: str | None) -> dict[str, Any]:
    """Params, MACs and latency of the target network (cached by architecture and machine),
    with where and when it ran.

    The driver runs this with a whole node reserved (`submit_exclusive`), so nothing else
    shares it; `settings["num_threads"]` should be that node's CPU count.
    """
    from search.measure.profile import LatencySettings, ProfileCache, profile_config

    started_at = time.time()
    cache = ProfileCache(cache_path) if cache_path else None
    result = profile_config(ArchConfig.from_dict(target), LatencySettings.from_dict(settings), cache)
    return {**result.to_dict(), **where_am_i(), "started_at": started_at, "finished_at": time.time()}


def profile_window_job(targets: list[dict[str, Any]], reference: dict[str, Any], settings: dict[str, Any],
                       cache_path: str | None, remeasure: bool = False) -> dict[str, dict[str, Any]]:
    """Anchored latencies (with intervals), params and MACs of a window of targets timed
    together with `reference` in every round (`search.profile.profile_window`), by arch hash.
    Runs alone on the profiling node, like `profile_target`."""
    from search.measure.profile import LatencySettings, ProfileCache, profile_window

    started_at = time.time()
    cache = ProfileCache(cache_path) if cache_path else None
    results = profile_window([ArchConfig.from_dict(t) for t in targets], ArchConfig.from_dict(reference),
                             LatencySettings.from_dict(settings), cache, remeasure=remeasure)
    where = {**where_am_i(), "started_at": started_at, "finished_at": time.time()}
    return {r.arch_hash: {**r.to_dict(), **where} for r in results}


def train_candidate(proxy: dict[str, Any], data: "str | ImageDataset", data_root: str | None,
                    settings: dict[str, Any], progress: Any = None, tag: Any = None) -> dict[str, Any]:
    """Short proxy training; returns a `ProxyResult` as a dict (failures included, not raised),
    with where it ran and its wall-clock start and end times, so overlapping trials can be seen.

    `data` is the loaded dataset (what the driver `put` into the object store: Ray hands the
    task the value) or a dataset name, then loaded here from `data_root` on this machine.
    `progress` (an executor's `Channel`) receives `(tag, epoch, epochs, accuracy)` after
    every epoch.
    """
    from search.measure.data import load_dataset, make_split
    from search.measure.proxy import ProxySettings, train_proxy

    started_at = time.time()
    proxy_settings = ProxySettings(**settings)
    dataset = load_dataset(data, data_root) if isinstance(data, str) else data
    split = make_split(dataset, val_size=proxy_settings.val_size, seed=proxy_settings.data_seed,
                       train_size=proxy_settings.train_size)
    def on_epoch(epoch: int, accuracy: float) -> None:
        if progress is not None:
            progress.put((tag, epoch, proxy_settings.epochs, accuracy))

    result = train_proxy(ArchConfig.from_dict(proxy), split, proxy_settings, on_epoch).to_dict()
    return {**result, **where_am_i(), "started_at": started_at, "finished_at": time.time()}


def where_am_i() -> dict[str, str]:
    """This process's Ray node id (`"local"` outside a Ray worker) and host name."""
    ray = sys.modules.get("ray")  # a Ray worker has imported it; elsewhere don't pay for the import
    in_ray = ray is not None and ray.is_initialized()
    node_id = ray.get_runtime_context().get_node_id() if in_ray else "local"
    return {"node_id": node_id, "host": socket.gethostname()}


def cheap_metrics(target: ArchConfig) -> dict[str, float]:
    """Params and MACs without running anything: a weightless (meta) build and the analytic
    MAC formula, so a budget can reject a candidate before any measurement."""
    import torch

    from ascan import build_model

    from search.measure.macs import analytic_macs, count_params

    with torch.device("meta"):
        params = count_params(build_model(target))
    return {"params": float(params), "macs": float(analytic_macs(target))}


def cached_profile(target: ArchConfig, settings: dict[str, Any], cache_path: str | None,
                   reference: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The cached profile of `target` on this machine (anchored to `reference` when given:
    never one anchored to another), or None (then it must be measured)."""
    if not cache_path:
        return None
    from search.measure.profile import LatencySettings, ProfileCache, lookup_profile

    anchor = ArchConfig.from_dict(reference) if reference else None
    hit = lookup_profile(target, LatencySettings.from_dict(settings), ProfileCache(cache_path), reference=anchor)
    return None if hit is None else hit.to_dict()
