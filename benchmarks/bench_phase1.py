"""Benchmark 2, phase 1: the frozen backbone run every epoch (run_phase1(cache_backbone=False), the reference's way) against
the embedding fast path (run_phase1(cache_backbone=True): the backbone runs once, the head trains on cached embeddings).

Speed: hubert-base architecture with random weights (a local backbone folder written once: no hub), on a subset of the
real Donate-a-Cry cache (--train-clips clips, stratified, + the real validation split), on CPU. The fast path runs all
--epochs epochs; the full path runs --full-epochs epochs (each ~1-2 min on 2 cores) and its per-epoch time is measured
from history.json; the 20-epoch full-path time is extrapolated from it (said so in the table).
Metrics: both paths with backbone "tiny" on the synthetic demo corpus, several seeds, same validation metrics expected.

Usage: python benchmarks/bench_phase1.py [--rounds 2] [--full-epochs 2] [--epochs 20] [--train-clips 200] [--seeds 0 1 2]"""
from __future__ import annotations
import argparse, contextlib, io, shutil, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *   # noqa: F401,F403
from common import WORK, SHARED_DATA

import numpy as np, pandas as pd, torch

from babycry.core import atomic_write, load_json, save_json
from babycry.rundir import RunPaths, mark_done
from babycry.data import run_data_stage
from babycry.phase1 import run_phase1


def hubert_base_random(path) -> Path:
    "A hubert-base-architecture backbone folder with random weights (config + weights + feature extractor), made once."
    path = Path(path)
    if (path/"config.json").exists(): return path
    from transformers import AutoModel, HubertConfig, Wav2Vec2FeatureExtractor
    from babycry.model import FEATURE_EXTRACTOR_DEFAULTS
    torch.manual_seed(0)
    tmp = path.with_name(path.name + ".partial"); shutil.rmtree(tmp, ignore_errors=True)
    AutoModel.from_config(HubertConfig()).save_pretrained(tmp)
    Wav2Vec2FeatureExtractor(**FEATURE_EXTRACTOR_DEFAULTS).save_pretrained(tmp)
    tmp.rename(path)
    return path


def subset_run(src_run, dst_run, n_train=200, seed=0) -> Path:
    "A run directory whose train cache is a stratified `n_train`-clip subset of `src_run`'s (valid split copied whole)."
    src, dst = RunPaths(src_run), RunPaths(dst_run)
    if (dst.data/"done.json").exists(): return Path(dst_run)
    meta = pd.read_csv(src.cache/"train.csv", keep_default_na=False)
    per = -(-n_train // meta.label.nunique())
    idx = np.sort(meta.groupby("label", group_keys=False).apply(lambda g: g.sample(min(per, len(g)), random_state=seed)).index[:n_train])
    x = np.load(src.cache/"train.npy", mmap_mode="r")[idx]
    with atomic_write(dst.cache/"train.npy", "wb") as f: np.save(f, np.ascontiguousarray(x))
    with atomic_write(dst.cache/"train.csv") as f: meta.iloc[idx].to_csv(f, index=False)
    for name in ("valid.npy", "valid.csv"): shutil.copy(src.cache/name, dst.cache/name)
    shutil.copy(src.labels, dst.labels)
    mark_done(dst.data, dict(subset_of=str(src_run), n_train=int(len(idx)), seed=seed))
    return Path(dst_run)


def one_run(run_dir, backbone, cache_backbone, epochs, seed=42) -> dict:
    "run_phase1 from scratch (its stage folder removed first, cached embeddings included); timings and metrics."
    shutil.rmtree(RunPaths(run_dir).phase1, ignore_errors=True)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        res = run_phase1(run_dir, backbone=str(backbone), epochs=epochs, patience=10_000, cache_backbone=cache_backbone, seed=seed,
                         precision="fp32")
    wall = time.perf_counter() - t0
    hist = load_json(RunPaths(run_dir).history("phase1"))["epochs"]
    cum = [r["seconds"] for r in hist]
    per_epoch = np.diff([0.0] + cum).tolist()
    return dict(cache_backbone=cache_backbone, epochs=len(hist), wall_s=wall, train_loop_s=cum[-1], per_epoch_s=per_epoch,
                setup_and_finish_s=wall - cum[-1], valid=res["valid"])


def speed(a, m) -> dict:
    bb = hubert_base_random(WORK/"hubert-base-random")
    run_data_stage(a.data_dir, WORK/"dac", workers=2)
    run = subset_run(WORK/"dac", WORK/f"phase1-{a.train_clips}", a.train_clips)
    n_train = len(pd.read_csv(RunPaths(run).cache/"train.csv")); n_valid = len(pd.read_csv(RunPaths(run).cache/"valid.csv"))
    print(f"phase-1 speed: hubert-base random weights, {n_train} train + {n_valid} valid clips, "
          f"fast path {a.epochs} epochs vs full path {a.full_epochs} epochs, {a.rounds} alternating rounds")
    runs = dict(fast=[], full=[])
    for r in range(a.rounds):
        order = [("fast", True, a.epochs), ("full", False, a.full_epochs)]
        for name, fp, ep in (order if r % 2 == 0 else order[::-1]):
            out = one_run(run, bb, fp, ep); runs[name].append(out)
            print(f"  round {r+1}: {name}: {out['wall_s']:.1f} s wall for {out['epochs']} epochs "
                  f"(per epoch {[round(x, 1) for x in out['per_epoch_s']]}; setup+finish {out['setup_and_finish_s']:.1f} s)", flush=True)
    fast_wall = median([x["wall_s"] for x in runs["fast"]])
    full_epoch = median([e for x in runs["full"] for e in x["per_epoch_s"]])
    full_fixed = median([x["setup_and_finish_s"] for x in runs["full"]])
    full_est = full_fixed + a.epochs * full_epoch
    fast_epoch = median([e for x in runs["fast"] for e in x["per_epoch_s"][1:]])   # epoch 1 of the fast path is cheap too
    fast_extract = median([x["setup_and_finish_s"] for x in runs["fast"]])
    return dict(train_clips=n_train, valid_clips=n_valid, runs=runs, fast_wall_s=fast_wall, fast_epoch_s=fast_epoch,
                fast_setup_extract_finish_s=fast_extract, full_epoch_s=full_epoch, full_setup_finish_s=full_fixed,
                full_wall_est_s=full_est, full_epochs_measured=a.full_epochs, speedup=full_est / fast_wall,
                full_wall_measured_is_extrapolated=a.full_epochs < a.epochs)


def metrics(a) -> dict:
    "Same validation metrics from both paths? backbone 'tiny' on the demo corpus, several seeds."
    run = WORK/"demo"
    with contextlib.redirect_stdout(io.StringIO()): run_data_stage(None, run, workers=2)
    rows = []
    for seed in a.seeds:
        for fp in (True, False):
            out = one_run(run, "tiny", fp, a.metric_epochs, seed=seed)
            rows.append(dict(seed=seed, cache_backbone=fp, accuracy=out["valid"]["accuracy"], macro_f1=out["valid"]["macro_f1"],
                             wall_s=out["wall_s"]))
            print(f"  metrics seed {seed} cache_backbone={fp}: acc {rows[-1]['accuracy']:.3f} f1 {rows[-1]['macro_f1']:.3f} "
                  f"({out['wall_s']:.1f} s)", flush=True)
    return dict(epochs=a.metric_epochs, seeds=list(a.seeds), rows=rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(SHARED_DATA))
    ap.add_argument("--train-clips", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--full-epochs", type=int, default=2, help="epochs of each full-path run (20 = no extrapolation, ~25 min each)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--metric-epochs", type=int, default=30)
    ap.add_argument("--skip-speed", action="store_true"); ap.add_argument("--skip-metrics", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    import transformers; transformers.logging.set_verbosity_error()
    from transformers.utils import logging as hf_logging; hf_logging.disable_progress_bar()
    m = machine()
    old = load_json(RESULTS/"phase1.json") if (RESULTS/"phase1.json").exists() else {}
    sp = old.get("speed") if a.skip_speed else speed(a, m)
    me = old.get("metrics") if a.skip_metrics else metrics(a)
    result = dict(benchmark="phase1", machine=m, speed=sp, metrics=me, goal_speedup=10)
    md = header("Phase 1: frozen backbone every epoch vs the embedding fast path (CPU)", m,
                "python benchmarks/bench_phase1.py " + " ".join(sys.argv[1:] if argv is None else argv))
    if sp:
        ext = sp["full_wall_measured_is_extrapolated"]
        md += (f"hubert-base architecture (random weights, 94.4 M parameters, fp32), simple head, {sp['train_clips']} train clips "
               f"(stratified subset of the real Donate-a-Cry train cache) + {sp['valid_clips']} validation clips, batch 8, "
               f"`run_phase1` end to end (model build, training, per-epoch validation and checkpoints, final predictions and saved model), "
               f"{len(sp['runs']['fast'])} alternating rounds, medians. The fast path ran all 20 epochs; "
               + (f"each full-path run ran {sp['full_epochs_measured']} epochs and its 20-epoch time is **extrapolated** as "
                  f"setup/finish + 20 × the median measured epoch.\n\n" if ext else "the full path ran all 20 epochs.\n\n"))
        rows = [dict(path="full: backbone every epoch (`cache_backbone=False`)", **{
                    "s per epoch (median)": fmt(sp["full_epoch_s"]), "setup + finish s": fmt(sp["full_setup_finish_s"]),
                    "20 epochs, s": fmt(sp["full_wall_est_s"]) + (" (extrapolated)" if ext else "")}),
                dict(path="fast: embeddings once (`cache_backbone=True`)", **{
                    "s per epoch (median)": fmt(sp["fast_epoch_s"]), "setup + finish s": fmt(sp["fast_setup_extract_finish_s"]) + " (incl. embedding pass)",
                    "20 epochs, s": fmt(sp["fast_wall_s"]) + " (measured)"})]
        md += md_table(rows, ["path", "s per epoch (median)", "setup + finish s", "20 epochs, s"])
        md += "\n" + goal_line(sp["speedup"], 10, "20-epoch phase-1 speed-up (×)") + "\n\n"
    if me:
        df = pd.DataFrame(me["rows"])
        piv = df.pivot(index="seed", columns="cache_backbone", values=["accuracy", "macro_f1"])
        rows = [dict(seed=s, **{"val acc full": f"{piv.loc[s, ('accuracy', False)]:.3f}", "val acc fast": f"{piv.loc[s, ('accuracy', True)]:.3f}",
                                "val macro-F1 full": f"{piv.loc[s, ('macro_f1', False)]:.3f}", "val macro-F1 fast": f"{piv.loc[s, ('macro_f1', True)]:.3f}"})
                for s in piv.index]
        d_acc = (piv[("accuracy", True)] - piv[("accuracy", False)]).abs().max()
        d_f1 = (piv[("macro_f1", True)] - piv[("macro_f1", False)]).abs().max()
        md += (f"Same validation metrics? backbone `tiny`, synthetic demo corpus, {me['epochs']} epochs, seeds {me['seeds']}, "
               f"`run_phase1(cache_backbone=True/False)`:\n\n")
        md += md_table(rows, ["seed", "val acc full", "val acc fast", "val macro-F1 full", "val macro-F1 fast"])
        md += f"\nLargest difference between the paths over the seeds: accuracy {d_acc:.3f}, macro-F1 {d_f1:.3f}.\n"
        result["metrics"]["max_abs_diff"] = dict(accuracy=float(d_acc), macro_f1=float(d_f1))
    write_results("phase1", result, md)
    print(md)


if __name__ == "__main__": main()
