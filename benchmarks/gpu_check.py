"""GPU check, part 2 (see gpu_check.sh): proxy trainings on CUDA (the default recipe on 4,000
images) and one profiling window of the same candidates on CUDA (fp16, batch 16).
Prints one line per training and per measured candidate; writes $OUT/gpu_check.json."""
import json, os, sys, time
import torch
from search.measure import jobs
from search.space.space import load_space
from search.measure.proxy import preset

out = os.environ.get("OUT", "/tmp")
space = load_space("paper")
cands = list(space.enumerate())[:4]
print("device", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
rows = []
settings = preset("default", device="cuda", train_size=4000, val_size=1000, epochs=3).to_dict()
for c in cands:
    proxy = space.proxy_config(c, num_classes=10).to_dict()
    t = time.perf_counter()
    r = jobs.train_candidate(proxy, "cifar10", None, settings)
    rows.append({"layout": c.layout, "status": r["status"], "acc": r["val_accuracy"], "val_se": r.get("val_se"),
                 "wall_s": round(time.perf_counter() - t, 2), "img_s": round(r["images_per_sec"]), "device": r["device"],
                 "reason": r["failure_reason"]})
    print(rows[-1], flush=True)
lat = dict(device="cuda", batch_size=16, img_size=224, dtype="float16", channels_last=True, compile=False,
           num_threads=16, min_time_s=0.5, min_iters=10, max_time_s=20)
ref = space.target_config(space.reference_candidates()[0]).to_dict()
t = time.perf_counter()
window = jobs.profile_window_job([space.target_config(c).to_dict() for c in cands], ref, lat, None)
for h, p in window.items():
    print({k: p.get(k) for k in ("median_ms", "ci_low_ms", "ci_high_ms", "ci_rel_half_width", "rounds", "raw_median_ms",
                                 "contaminated", "contamination", "throughput")}, flush=True)
print("window s", round(time.perf_counter() - t, 1))
json.dump({"train": rows, "window": window}, open(f"{out}/gpu_check.json", "w"), default=str, indent=1)
