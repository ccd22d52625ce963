"""Benchmark: the hand-crafted rungs of the baseline ladder (babycry.ladder) on the real Donate-a-Cry corpus: the data
stage into benchmarks/_work/, then run_ladder with 5 grouped folds and 50 Optuna trials per tuned rung, timing the
feature extraction and each rung against the goal (all of it in under 5 minutes on two cores).
Usage: python benchmarks/bench_ladder.py [--data-dir DIR] [--folds 5] [--n-trials 50] [--workers 2]"""
from __future__ import annotations
import argparse, os, shutil, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, SHARED_DATA, RESULTS, machine, header, md_table, fmt, goal_line, write_results

from babycry.data import run_data_stage
from babycry.ladder import run_ladder, LADDER_COLUMNS
from babycry.rundir import RunPaths
from babycry.core import load_json

GOAL_SECONDS = 300


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=str(SHARED_DATA))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-trials", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--remove-classes", default=None)
    a = ap.parse_args(argv)
    m = machine()
    run = WORK/"dac_ladder"
    summary = run_data_stage(a.data_dir, run, workers=a.workers)            # once; later runs reuse it
    for f in ("features.npz",): (RunPaths(run).cv/f).unlink(missing_ok=True)      # time the feature extraction too
    t0 = time.perf_counter()
    table = run_ladder(run, folds=a.folds, n_trials=a.n_trials, seed=42, remove_classes=a.remove_classes,
                       workers=a.workers, overwrite=True)
    total = time.perf_counter() - t0
    info = load_json(RunPaths(run).ladder_run)
    shutil.copyfile(RunPaths(run).ladder_png, RESULTS/"ladder.png")
    rows = [{"model": r.model, "macro-F1 [95% CI]": f"{r.macro_f1:.3f} [{r.macro_f1_low:.3f}, {r.macro_f1_high:.3f}]",
             "balanced acc. [95% CI]": f"{r.balanced_accuracy:.3f} [{r.balanced_accuracy_low:.3f}, {r.balanced_accuracy_high:.3f}]",
             "accuracy": f"{r.accuracy:.3f}", "fold macro-F1 mean ± std": f"{r.macro_f1_fold_mean:.3f} ± {r.macro_f1_fold_std:.3f}",
             "seconds": fmt(r.seconds)} for r in table.itertuples()]
    times = [{"step": k, "seconds": fmt(v)} for k, v in info["seconds"].items()] + [{"step": "total (run_ladder)", "seconds": fmt(total)}]
    md = header("Baseline ladder, hand-crafted rungs (real Donate-a-Cry clips)", m, "python benchmarks/bench_ladder.py")
    md += (f"{info['n_clips']} usable clips of {a.data_dir}, classes {', '.join(info['classes'])}; {a.folds}-fold grouped "
           f"cross-validation over {int(table.n_groups.iloc[0])} recording sources, {a.n_trials} Optuna TPE trials per "
           f"tuned rung and outer fold on {info['inner_folds']} grouped inner folds, {a.workers} worker processes; "
           "out-of-fold metrics over all clips, 95% intervals from 1000 bootstrap resamples of sources. "
           "The machine is shared with other jobs, so the times are pessimistic.\n\n")
    md += md_table(rows, list(rows[0])) + "\n" + md_table(times, ["step", "seconds"])
    md += "\n" + goal_line(total, GOAL_SECONDS, "hand-crafted rungs, features included (s)", higher_is_better=False) + "\n"
    md += "\n![ladder](ladder.png)\n"
    result = dict(benchmark="ladder", machine=m, data_dir=a.data_dir, folds=a.folds, n_trials=a.n_trials, workers=a.workers,
                  data_stage_seconds=summary.get("seconds"), seconds=info["seconds"], total_seconds=total,
                  goal_seconds=GOAL_SECONDS, table=table.to_dict("records"))
    write_results("ladder", result, md)
    print(md)


if __name__ == "__main__": main()
