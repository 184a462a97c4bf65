"""Images/s of our proxy training loop vs. a bare PyTorch loop on the same model, data and batch.

The bare loop is the least a training step can do: index a batch of pre-normalised float
images, forward, cross-entropy, backward, AdamW step. Ours adds augmentation on uint8
tensors, normalisation per batch, label smoothing, grad clipping, the LR schedule and the
non-finite-loss check. Both run the same steps on the same threads, interleaved (A B A B ...)
so that a neighbour's load hits both alike; the table gives the median of the repeats.
Target: overhead <= 10%.

    .venv/bin/python benchmarks/proxy_overhead.py [--steps 20] [--repeats 3] [--batch 128]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

# OpenMP threads that spin while waiting collapse when other work shares the 2 cores (measured:
# 43 vs 314 images/s), and sleeping waits cost ~25% on an idle machine (700 vs 512): on a shared
# machine, sleep. Set OMP_WAIT_POLICY=ACTIVE to override. Read once, so before torch's import.
# Both loops run under the same policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from ascan import ArchConfig, build_model  # noqa: E402
from search.measure.data import Normalizer, load_dataset, make_split  # noqa: E402
from search.measure.proxy import PRESETS, fit, resolve_device  # noqa: E402

C1_PROXY = ArchConfig(layouts=("CC", "CCCT", "CCTT", "CTTT"), widths=(16, 32, 64, 128), stem_width=16,
                      stem_stride=1, head_width=256, head_dim=16, img_size=32, num_classes=10)


def bare_loop(config: ArchConfig, images: torch.Tensor, labels: torch.Tensor, batch: int, steps: int,
              device: torch.device, seed: int) -> float:
    """Images/s of the plainest training loop (inputs already normalised, channels_last, on device)."""
    torch.manual_seed(seed)
    model = build_model(config).to(device=device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss_fn = nn.CrossEntropyLoss()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    order = torch.randperm(len(labels), device=device)
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * batch:(step + 1) * batch]
        with autocast:
            loss = loss_fn(model(images[index]).float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=PRESETS["default"].batch_size)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    settings = PRESETS["default"].replace(epochs=1, batch_size=args.batch, train_size=args.batch * args.steps,
                                          val_size=args.batch, warmup_fraction=0.0, device=args.device)
    device = resolve_device(settings.device)
    split = make_split(load_dataset("cifar10"), train_size=settings.train_size, val_size=settings.val_size, seed=0)
    memory_format = torch.channels_last
    normalised = Normalizer(split.mean, split.std, device)(split.x_train.to(device), memory_format)
    labels = split.y_train.to(device)
    if device.type == "cpu":
        torch.set_num_threads(settings.num_threads)

    def ours(seed: int) -> float:
        torch.manual_seed(seed)
        return fit(build_model(C1_PROXY), split, settings.replace(seed=seed)).images_per_sec

    def bare(seed: int) -> float:
        return bare_loop(C1_PROXY, normalised, labels, args.batch, args.steps, device, seed)

    ours(0), bare(0)  # warm-up: oneDNN/cuDNN primitive caches, allocator
    runs: dict[str, list[float]] = {"bare PyTorch loop": [], "search.proxy.fit": []}
    for repeat in range(args.repeats):
        runs["bare PyTorch loop"].append(bare(repeat))
        runs["search.proxy.fit"].append(ours(repeat))

    base = statistics.median(runs["bare PyTorch loop"])
    table = pd.DataFrame([
        {"loop": name, "images/s (median)": round(statistics.median(v), 1),
         "runs": " ".join(f"{x:.0f}" for x in v),
         "overhead %": round(100 * (base / statistics.median(v) - 1), 1)}
        for name, v in runs.items()
    ])
    print(f"model {C1_PROXY.layout} {C1_PROXY.widths}, batch {args.batch}, {args.steps} steps x {args.repeats} "
          f"repeats, device {device}, threads {torch.get_num_threads()}, OMP_WAIT_POLICY "
          f"{os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.2f}")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
