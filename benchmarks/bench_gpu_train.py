"""Benchmark 4, phase-2 training throughput (clips/s): the loop `run_phase2` runs, with the frozen convolutional encoder
recomputed on every step (the waveform path) against the cached path (`ConvCached` trained from the encoder's output,
computed once per clip by `cached_conv_features`). Both: hubert-base architecture with random weights (`HubertConfig()`),
the improved head, phase-2 freezing (layers 6-11 and the feature projection trainable), LLRD AdamW, cosine warm restarts,
label smoothing 0.05, clipping at 0.5, 3 s clips, the DataLoader settings of `training_args` (4 persistent workers and
pinned memory on a GPU, none on a CPU), bf16 autocast and SDPA on a GPU that has bf16. Measured per batch size: clips/s
(medians of alternating rounds), the share of the loop's wall time spent waiting for the next batch, and once the
one-off cost of computing the cache (and after how many epochs it has paid for itself).

Usage on a CUDA machine (batches 8, 64, 256): python benchmarks/bench_gpu_train.py
Without a GPU the same command runs on the CPU with batches 2 and 8, 3 steps, 2 rounds (stated in the table; the GPU
table then says "no GPU: not measured"). Smoke test (tiny backbone, CPU, writes nothing): --smoke"""
from __future__ import annotations
import argparse, contextlib, io, math, sys, tempfile, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *   # noqa: F401,F403
from common import WORK, SHARED_DATA

import numpy as np, pandas as pd, torch, torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

warnings.filterwarnings("ignore")
from babycry.rundir import RunPaths
from babycry.config import Phase2Config
from babycry.data import run_data_stage
from babycry.dataset import CachedClips, LabelEncoder, collate_clips
from babycry.model import BabyCryConfig, BabyCryForAudioClassification, freeze_for_phase2, tiny_config
from babycry.phase2 import ConvCached, ConvFeatureClips, cached_conv_features, cosine_restarts_factory, llrd_optimizer


def phase2_model(labels, smoke=False):
    "hubert-base architecture (random weights; tiny for --smoke) with the improved head, frozen as in phase 2."
    from transformers import HubertConfig
    bcfg = tiny_config() if smoke else HubertConfig()
    m = BabyCryForAudioClassification(BabyCryConfig(bcfg, head="improved", id2label=dict(enumerate(labels)),
                                                    label2id={c: i for i, c in enumerate(labels)}))
    return freeze_for_phase2(m, 6)


def loader(ds, batch_size, n_batches, device, collate=None):
    "Full batches drawn at random (with replacement, so any corpus size works), with `training_args`' worker settings."
    cuda = device.type == "cuda"
    workers = 4 if cuda else 0
    return DataLoader(ds, batch_size=batch_size, sampler=RandomSampler(ds, replacement=True, num_samples=batch_size * n_batches),
                      collate_fn=collate, num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0, drop_last=True)


def train_steps(net, opt, sch, it, key, steps, device, dtype) -> dict:
    "`steps` Trainer-like optimizer steps; clips, seconds (CUDA-synchronised) and seconds spent waiting for batches."
    net.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clips, wait = 0, 0.0
    sync(); t0 = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        b = next(it)
        x, y = b[key].to(device, non_blocking=True), b["labels"].to(device, non_blocking=True)
        wait += time.perf_counter() - t
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = net(x).logits
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.05)       # Trainer's label smoother
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step(); sch.step(); opt.zero_grad(set_to_none=True)
        clips += len(y)
    sync()
    return dict(clips=clips, seconds=time.perf_counter() - t0, wait_seconds=wait)


def not_measured_line() -> str:
    return "GPU (batches 8, 64, 256): **no GPU: not measured** on this machine; run the same command on a CUDA machine.\n\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="corpus for the clips (default: the real one on a GPU if present, else the demo corpus)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (GPU: 8 64 256; CPU: 2 8)")
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps per path per round (GPU 20, CPU 3)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (GPU 3, CPU 2)")
    ap.add_argument("--smoke", action="store_true", help="tiny backbone on the CPU, 2 steps, writes nothing")
    a = ap.parse_args(argv)
    m = machine()
    device = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
    gpu = device.type == "cuda"
    a.batches = a.batches or ([8, 64, 256] if gpu else [2, 4] if a.smoke else [2, 8])
    a.steps, a.rounds = a.steps or (20 if gpu else 2 if a.smoke else 3), a.rounds or (3 if gpu else 1 if a.smoke else 2)
    data_dir = a.data_dir or (str(SHARED_DATA) if gpu and SHARED_DATA.exists() else None)   # None: the synthetic demo corpus
    run = WORK/("dac" if data_dir else "demo")
    with contextlib.redirect_stdout(io.StringIO()): run_data_stage(data_dir, run, workers=2)
    enc = LabelEncoder.load(RunPaths(run).labels)
    bf16 = gpu and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else (torch.float16 if gpu else None)
    precision = "bf16" if bf16 else "fp16" if gpu else "fp32"
    if gpu: torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
    ds = CachedClips(run, "train", enc)
    model = phase2_model(list(enc.classes), a.smoke).to(device)
    cfg = Phase2Config()
    # the one-off cost: the conv encoder over every train clip, as run_phase2 does before training
    tmp = Path(tempfile.mkdtemp(dir=WORK))
    t0 = time.perf_counter()
    path = cached_conv_features(model, ds, tmp/"train.npy", "bench", precision=precision, device=device, batch_size=64 if gpu else 8)
    if gpu: torch.cuda.synchronize()
    extract_s = time.perf_counter() - t0
    cds = ConvFeatureClips(path, ds.labels)
    paths = {"recomputed": (model, ds, collate_clips, "input_values"), "cached": (ConvCached(model), cds, None, "conv_features")}
    res = {}
    for bs in a.batches:
        n_batches = a.steps * (a.rounds + 1) + 2
        state = {}
        for name, (net, d, coll, key) in paths.items():
            opt = llrd_optimizer(net, cfg)
            sch = cosine_restarts_factory(cfg, max(1, len(ds) // bs))(opt, None)
            state[name] = (net, opt, sch, iter(loader(d, bs, n_batches, device, coll)), key)
        run_one = lambda n: train_steps(*state[n][:4], state[n][4], a.steps, device, dtype)
        for n in paths: train_steps(*state[n][:4], state[n][4], 1, device, dtype)     # warm-up: workers, allocator, autotune
        rounds = {n: [] for n in paths}
        for r in range(a.rounds):
            for n in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                o = run_one(n); o["clips_per_s"] = o["clips"] / o["seconds"]; rounds[n].append(o)
                print(f"  batch {bs} round {r+1} {n}: {o['clips_per_s']:.2f} clips/s, waiting for data {o['wait_seconds']/o['seconds']:.1%}", flush=True)
        res[bs] = {n: dict(rounds=rs, median_clips_per_s=median([o["clips_per_s"] for o in rs]),
                           loader_wait_share=median([o["wait_seconds"] / o["seconds"] for o in rs])) for n, rs in rounds.items()}
        res[bs]["ratio_cached_over_recomputed"] = res[bs]["cached"]["median_clips_per_s"] / res[bs]["recomputed"]["median_clips_per_s"]
        if gpu: res[bs]["peak_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2); torch.cuda.reset_peak_memory_stats()
    extract = dict(clips=len(ds), seconds=extract_s, clips_per_s=len(ds) / extract_s, stored=str(np.load(path, mmap_mode="r").dtype),
                   MB_per_clip=path.stat().st_size / len(ds) / 1e6)
    for f in tmp.iterdir(): f.unlink()
    tmp.rmdir()
    if a.smoke:
        print(f"smoke test passed on {device}: " + ", ".join(f"batch {b}: x{r['ratio_cached_over_recomputed']:.2f}" for b, r in res.items())
              + " (nothing written)"); return
    write(m, a, argv, device, precision, data_dir, ds, extract, res)


def write(m, a, argv, device, precision, data_dir, ds, extract, res):
    "The JSON record and the markdown table."
    gpu = device.type == "cuda"
    result = dict(benchmark="gpu_train", machine=m, device=str(device), gpu=m.get("gpu"), skipped=False, gpu_measured=gpu,
                  precision=precision, data_dir=str(data_dir), train_clips=len(ds), steps=a.steps, rounds=a.rounds,
                  batches=a.batches, extract=extract, results={str(b): r for b, r in res.items()},
                  weights="random (HubertConfig(), the hubert-base architecture)")
    cmd = "python benchmarks/bench_gpu_train.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = header("Phase 2 training throughput: conv encoder recomputed vs cached", m, cmd.strip())
    where = f"GPU {m.get('gpu')}" if gpu else f"the CPU ({m.get('cores')} cores, shared with other work)"
    md += (f"On {where}, {precision}. hubert-base architecture with **random weights**, improved head, phase-2 freezing, LLRD AdamW, "
           f"cosine warm restarts, label smoothing, clipping; 3 s clips from {data_dir or 'the demo corpus'}; DataLoader "
           f"{'with 4 persistent workers and pinned memory' if gpu else 'without workers (as training_args on a CPU)'}. "
           f"{a.steps} optimizer steps per round, {a.rounds} alternating rounds after a warm-up step, medians. "
           f"*Waiting for data*: the share of the loop's wall time spent getting the next batch onto the device.\n\n")
    if not gpu: md += not_measured_line() + f"CPU (batches {', '.join(map(str, a.batches))}: smaller than on a GPU, to keep the run short):\n\n"
    rows = []
    for b, r in res.items():
        for n in ("recomputed", "cached"):
            rows.append({"batch": b, "conv encoder": "run every step" if n == "recomputed" else "cached (computed once)",
                         "clips/s (median)": fmt(r[n]["median_clips_per_s"]), "waiting for data": f"{r[n]['loader_wait_share']:.1%}",
                         "cached / recomputed": fmt(r["ratio_cached_over_recomputed"]) if n == "cached" else ""})
    md += md_table(rows, ["batch", "conv encoder", "clips/s (median)", "waiting for data", "cached / recomputed"])
    gain = {b: 1 / r["recomputed"]["median_clips_per_s"] - 1 / r["cached"]["median_clips_per_s"] for b, r in res.items()}
    be = {b: (1 / extract["clips_per_s"]) / g if g > 0 else math.inf for b, g in gain.items()}
    extract["break_even_epochs"] = {str(b): v for b, v in be.items()}
    md += (f"\nComputing the cache once: {extract['clips']} clips in {extract['seconds']:.1f} s ({fmt(extract['clips_per_s'])} clips/s), "
           f"stored as {extract['stored']}, {extract['MB_per_clip']:.3f} MB per clip; it has paid for itself after "
           + ", ".join(f"{v:.2f} epochs at batch {b}" for b, v in be.items()) + " (phase 2 runs 30).\n")
    write_results("gpu_train", result, md)
    print(md)


if __name__ == "__main__": main()
