"""Benchmark 1, data per epoch: the reference's loader (decode + resample + feature extractor per item in __getitem__,
batch 8, 2 workers) against babycry's cached batches (CachedClips + make_loader), over the same train clips of the real
Donate-a-Cry corpus. Usage: python benchmarks/bench_data.py [--repeats 5] [--data-dir DIR]"""
from __future__ import annotations
import argparse, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *   # noqa: F401,F403  (ROOT on sys.path, WORK, SHARED_DATA, alternate, machine, writers)
from common import WORK, SHARED_DATA

import numpy as np, pandas as pd, torch
from torch.utils.data import DataLoader, Dataset

from babycry.core import CLIP_SAMPLES, SAMPLE_RATE
from babycry.rundir import RunPaths
from babycry.audio import fix_length
from babycry.data import run_data_stage
from babycry.dataset import CachedClips, LabelEncoder, make_loader


class ReferenceClips(Dataset):
    "The reference recipe's dataset: every item decodes its file, resamples to 16 kHz, crops/pads and runs the feature extractor."
    def __init__(self, paths, labels, classes):
        from transformers import Wav2Vec2FeatureExtractor
        self.paths, self.labels = list(paths), [classes.index(l) for l in labels]
        self.fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True)
    def __len__(self): return len(self.paths)
    def __getitem__(self, i):
        import librosa
        x, _ = librosa.load(self.paths[i], sr=SAMPLE_RATE, mono=True)
        x = fix_length(x, CLIP_SAMPLES, mode="random", rng=np.random.default_rng(i))
        iv = self.fe(x, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values[0]
        return {"input_values": iv, "labels": torch.tensor(self.labels[i])}


def epoch(loader, post=None) -> dict:
    "One pass over `loader` (what a training epoch asks of the data pipeline); `post` is applied to each batch's waveforms."
    n = 0
    for b in loader:
        if post is not None: b["input_values"] = post(b["input_values"])
        n += len(b["labels"])
    return dict(clips=n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=str(SHARED_DATA))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loader (the reference used 2)")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    m = machine()
    run = WORK/"dac"
    summary = run_data_stage(a.data_dir, run, workers=2)          # once; later runs reuse it
    enc = LabelEncoder.load(RunPaths(run).labels)
    cached = CachedClips(run, "train", enc)
    meta = pd.read_csv(RunPaths(run).cache/"train.csv", keep_default_na=False)
    ref_ds = ReferenceClips(meta.path, meta.label, list(enc.classes))
    print(f"train split: {len(cached)} clips ({meta.path.nunique()} distinct source files)")
    ref_loader = DataLoader(ref_ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers)
    ours = make_loader(cached, batch_size=a.batch_size, train=True, device="cpu")
    res = alternate({"reference": lambda: epoch(ref_loader), "babycry": lambda: epoch(ours)}, repeats=a.repeats, warmup=1)
    ref, bc = (res[k]["median"] for k in ("reference", "babycry"))
    ratio = ref / bc
    result = dict(benchmark="data_per_epoch", machine=m, clips_per_epoch=len(cached), batch_size=a.batch_size,
                  reference_workers=a.workers, babycry_workers=ours.num_workers, repeats=a.repeats,
                  data_stage_seconds=summary.get("seconds"), data_dir=a.data_dir,
                  reference=res["reference"], babycry=res["babycry"], speedup=ratio, goal_speedup=20)
    rows = [dict(loader="reference: decode + resample + feature extractor per item, 2 workers",
                 **{"median s/epoch": fmt(ref), "min s/epoch": fmt(res['reference']['min']), "clips/s": fmt(len(cached)/ref)}),
            dict(loader=f"babycry: CachedClips memory map + batch normalisation, {ours.num_workers} workers",
                 **{"median s/epoch": fmt(bc), "min s/epoch": fmt(res['babycry']['min']), "clips/s": fmt(len(cached)/bc)})]
    md = header("Data per epoch (real Donate-a-Cry clips)", m, "python benchmarks/bench_data.py")
    md += (f"{len(cached)} train clips per epoch (the balanced train split of {a.data_dir}, {meta.path.nunique()} source files), "
           f"batch {a.batch_size}, {a.repeats} alternating repetitions after one warm-up, medians. "
           f"The one-off data stage that builds the cache took {summary.get('seconds')} s "
           f"({'reused' if summary.get('skipped') else 'measured in this run'}).\n\n")
    md += md_table(rows, ["loader", "median s/epoch", "min s/epoch", "clips/s"])
    md += "\n" + goal_line(ratio, 20, "speed-up per epoch (×)") + "\n"
    md += ("\nWhere babycry's time goes: copying the rows out of the memory map and stacking them, and the per-clip "
           "normalisation of each batch (`normalize_waveforms`, written without `torch.var`, which was twice as slow "
           "on this CPU: an earlier run of this script measured 12.4× with it).\n")
    write_results("data", result, md)
    print(md)


if __name__ == "__main__": main()
