"""Benchmark 4, GPU training throughput of phase 2 (clips/s), hubert-base architecture (random weights), 3 s clips:
the reference's loop (batch 8, fp16 autocast + GradScaler, eager attention, per-item decode + resample + feature extractor
in the DataLoader's __getitem__, 2 workers) against babycry's (bf16 autocast where supported, SDPA attention, cached
batches from the memory-mapped clip cache, a large batch), both with phase 2's freezing (top six layers trainable) and
its layer-wise-decay AdamW. Alternating rounds, medians. Without a CUDA GPU it prints "no GPU: skipped" and writes that.

Usage (one command, on a CUDA machine): python benchmarks/bench_gpu_train.py [--batch-size 64] [--steps 30] [--rounds 3]
Smoke test of the code path on a CPU (tiny backbone, writes nothing): python benchmarks/bench_gpu_train.py --smoke"""
from __future__ import annotations
import argparse, contextlib, io, sys, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *   # noqa: F401,F403
from common import WORK, SHARED_DATA

import numpy as np, pandas as pd, torch
from torch.utils.data import DataLoader

warnings.filterwarnings("ignore")
from babycry.core import RunPaths, Phase2Config
from babycry.data import run_data_stage
from babycry.dataset import CachedClips, LabelEncoder, collate_clips
from babycry.model import BabyCryConfig, BabyCryForAudioClassification, freeze_for_phase2, tiny_config
from babycry.phase2 import llrd_optimizer


def phase2_model(attn: str, labels, smoke=False):
    "hubert-base architecture (random weights; tiny for --smoke) with the improved head, frozen as in phase 2."
    from transformers import HubertConfig
    bcfg = tiny_config() if smoke else HubertConfig()
    bcfg._attn_implementation = attn
    m = BabyCryForAudioClassification(BabyCryConfig(bcfg, head="improved", id2label=dict(enumerate(labels)),
                                                    label2id={c: i for i, c in enumerate(labels)}))
    return freeze_for_phase2(m, 6)


def reference_loader(run, enc, batch_size=8, workers=2):
    "The reference's data path: decode + resample + feature extractor in __getitem__, over the run's train files."
    from bench_data import ReferenceClips
    meta = pd.read_csv(RunPaths(run).cache/"train.csv", keep_default_na=False)
    ds = ReferenceClips(meta.path, meta.label, list(enc.classes))
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)


def train_steps(model, opt, loader, steps, device, dtype, scaler=None) -> dict:
    "`steps` optimizer steps over `loader` (cycled); returns clips and seconds (CUDA-synchronised)."
    model.train()
    it, clips = iter(loader), 0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync(); t0 = time.perf_counter()
    for _ in range(steps):
        try: b = next(it)
        except StopIteration: it = iter(loader); b = next(it)
        x = b["input_values"].to(device, non_blocking=True); y = b["labels"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(input_values=x, labels=y).loss
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward(); scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5); scaler.step(opt); scaler.update()
        else:
            loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5); opt.step()
        clips += len(y)
    sync()
    return dict(clips=clips, seconds=time.perf_counter() - t0)


def skipped(m, why):
    md = header("Phase 2 GPU training throughput", m, "python benchmarks/bench_gpu_train.py")
    md += f"**no GPU: skipped** ({why}). Run the same command on a CUDA machine to fill this table.\n"
    write_results("gpu_train", dict(benchmark="gpu_train", machine=m, skipped=True, reason=why), md)
    print("no GPU: skipped")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(SHARED_DATA), help="real corpus; the demo corpus is used when it is missing")
    ap.add_argument("--batch-size", type=int, default=64, help="babycry's batch (the reference's is 8)")
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps per contender per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4, help="babycry's DataLoader workers")
    ap.add_argument("--smoke", action="store_true", help="run both loops on the CPU with the tiny backbone for 2 steps; write nothing")
    a = ap.parse_args(argv)
    m = machine()
    if not torch.cuda.is_available() and not a.smoke:
        return skipped(m, "this machine has no CUDA GPU: no GPU was lent for this run, so nothing was measured")
    device = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
    if a.smoke: a.steps, a.rounds, a.batch_size = 2, 1, 4
    data_dir = a.data_dir if Path(a.data_dir).exists() else None           # None: the synthetic demo corpus
    run = WORK/("dac" if data_dir else "demo")
    with contextlib.redirect_stdout(io.StringIO()): run_data_stage(data_dir, run, workers=2)
    enc = LabelEncoder.load(RunPaths(run).labels)
    labels = list(enc.classes)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if device.type == "cuda": torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
    cfg = Phase2Config()
    # the reference: fp16 + GradScaler, eager attention, batch 8, per-item feature extraction, 2 workers
    ref_model = phase2_model("eager", labels, a.smoke).to(device)
    ref_opt = llrd_optimizer(ref_model, cfg)
    ref_scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    ref_loader = reference_loader(run, enc, 8, 2)
    # babycry: bf16 (fp16 + scaler on GPUs without bf16), SDPA, cached batches, large batch
    bc_model = phase2_model("sdpa", labels, a.smoke).to(device)
    bc_opt = llrd_optimizer(bc_model, cfg)
    bc_dtype = torch.bfloat16 if bf16 else (torch.float16 if device.type == "cuda" else None)
    bc_scaler = None if bf16 or device.type != "cuda" else torch.amp.GradScaler("cuda")
    ds = CachedClips(run, "train", enc)
    workers = a.workers if device.type == "cuda" else 0                    # make_loader's settings, plus drop_last
    bc_loader = DataLoader(ds, batch_size=a.batch_size, shuffle=True, collate_fn=collate_clips, drop_last=True,
                           num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    ref_dtype = torch.float16 if device.type == "cuda" else None
    contenders = {
        "reference": lambda: train_steps(ref_model, ref_opt, ref_loader, a.steps, device, ref_dtype, ref_scaler),
        "babycry": lambda: train_steps(bc_model, bc_opt, bc_loader, a.steps, device, bc_dtype, bc_scaler),
    }
    for n, f in contenders.items(): f()                                    # warm-up (cuDNN autotune, workers, allocator)
    res = {n: dict(rounds=[]) for n in contenders}
    for r in range(a.rounds):
        for n in (list(contenders) if r % 2 == 0 else list(contenders)[::-1]):
            out = contenders[n](); out["clips_per_s"] = out["clips"] / out["seconds"]; res[n]["rounds"].append(out)
            print(f"  round {r+1} {n}: {out['clips_per_s']:.1f} clips/s", flush=True)
    for n in res: res[n]["median_clips_per_s"] = median([o["clips_per_s"] for o in res[n]["rounds"]])
    if device.type == "cuda":
        res["babycry"]["peak_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    ref, bc = res["reference"]["median_clips_per_s"], res["babycry"]["median_clips_per_s"]
    if a.smoke:
        print(f"smoke test passed on {device}: reference {ref:.1f} clips/s, babycry {bc:.1f} clips/s (nothing written)"); return
    result = dict(benchmark="gpu_train", machine=m, skipped=False, data_dir=str(data_dir), train_clips=len(ds),
                  batch_reference=8, batch_babycry=a.batch_size, steps=a.steps, rounds=a.rounds,
                  babycry_precision="bf16" if bf16 else "fp16", results=res, ratio=bc / ref, goal_clips_per_s=1000, goal_ratio=5)
    md = header("Phase 2 GPU training throughput", m, "python benchmarks/bench_gpu_train.py " + " ".join(sys.argv[1:] if argv is None else argv))
    md += (f"hubert-base architecture (random weights), improved head, phase-2 freezing (layers 6-11 + feature projection "
           f"trainable), LLRD AdamW, 3 s clips from {data_dir or 'the demo corpus'}; {a.steps} optimizer steps per round, "
           f"{a.rounds} alternating rounds after a warm-up, medians.\n\n")
    rows = [dict(loop="reference: batch 8, fp16 + GradScaler, eager attention, per-item decode/resample/feature extractor, 2 workers",
                 **{"clips/s (median)": fmt(ref)}),
            dict(loop=f"babycry: batch {a.batch_size}, {'bf16' if bf16 else 'fp16'}, SDPA, cached batches, {bc_loader.num_workers} workers",
                 **{"clips/s (median)": fmt(bc)})]
    md += md_table(rows, ["loop", "clips/s (median)"])
    md += "\n" + goal_line(bc, 1000, "babycry clips/s") + "\n\n" + goal_line(bc / ref, 5, "babycry / reference (×)") + "\n"
    write_results("gpu_train", result, md)
    print(md)


if __name__ == "__main__": main()
