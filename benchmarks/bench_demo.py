"""Benchmark 5, the demo end to end: wall time and peak memory of `babycry-run --demo` (synthetic corpus, tiny backbone,
stages 01-07 through papermill) in a scratch folder, measured with /usr/bin/time -v (peak RSS of the largest process)
and by polling the whole process tree with psutil (peak of the summed RSS: the runner plus its notebook kernels).
Falls back to papermill over nbs/01..06 with -p backbone tiny when babycry-run is not installed.

Usage: python benchmarks/bench_demo.py [--repeats 1]"""
from __future__ import annotations
import argparse, re, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *   # noqa: F401,F403
from common import ROOT, WORK


def tree_rss(proc) -> int:
    "Summed resident memory (bytes) of `proc` and all its descendants."
    import psutil
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try: total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied): pass
    return total


def run_measured(cmd, cwd, log) -> dict:
    "Run `cmd` under /usr/bin/time -v in `cwd`; poll the process tree's RSS every 0.2 s; return wall time and peaks."
    import psutil
    timev = shutil.which("time") and Path("/usr/bin/time").exists()
    full = (["/usr/bin/time", "-v"] if timev else []) + cmd
    peak, t0 = [0], time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(full, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
        pp = psutil.Process(p.pid)
        def poll():
            while p.poll() is None:
                peak[0] = max(peak[0], tree_rss(pp)); time.sleep(0.2)
        th = threading.Thread(target=poll, daemon=True); th.start()
        rc = p.wait(); th.join()
    wall = time.perf_counter() - t0
    text = Path(log).read_text(errors="replace")
    mx = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    failed = re.search(r"babycry-run: (stage .*? failed: .*)", text)
    return dict(returncode=rc, wall_s=wall, failure=failed.group(1).strip() if failed else None, peak_tree_rss_GiB=peak[0] / 2**30,
                time_v_max_rss_GiB=int(mx.group(1)) / 2**20 if mx else None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args(argv)
    m = machine()
    runner = shutil.which("babycry-run")
    rows, runs = [], []
    for r in range(a.repeats):
        scratch = Path(tempfile.mkdtemp(prefix="demo-", dir=WORK if WORK.exists() else None))
        if runner:
            cmd, how = [runner, "--demo", "--runs", str(scratch/"runs"), "--name", "demo"], "babycry-run --demo"
            out = run_measured(cmd, scratch, scratch/"log.txt")
        else:   # fallback: the stage notebooks in sequence
            how = "papermill nbs/01..06 -p backbone tiny (babycry-run not installed)"
            t0, outs = time.perf_counter(), []
            for nb in sorted((ROOT/"nbs").glob("0[1-6]_*.ipynb")):
                cmd = [sys.executable, "-m", "papermill", str(nb), str(scratch/nb.name), "-p", "run_dir", str(scratch/"runs/demo")]
                if nb.name[:2] in ("03", "04", "06"): cmd += ["-p", "backbone", "tiny"]
                outs.append(run_measured(cmd, scratch, scratch/f"{nb.stem}.log"))
            out = dict(returncode=max(o["returncode"] for o in outs), failure=None, wall_s=time.perf_counter() - t0,
                       peak_tree_rss_GiB=max(o["peak_tree_rss_GiB"] for o in outs),
                       time_v_max_rss_GiB=max((o["time_v_max_rss_GiB"] or 0) for o in outs))
        out.update(command=how, scratch=str(scratch)); runs.append(out)
        print(f"  run {r+1}: {how}: rc {out['returncode']}, {out['wall_s']:.1f} s, peak tree RSS {out['peak_tree_rss_GiB']:.2f} GiB", flush=True)
        if out["returncode"] == 0: shutil.rmtree(scratch, ignore_errors=True)
    wall = median([o["wall_s"] for o in runs]); peak = max(o["peak_tree_rss_GiB"] for o in runs)
    tv = max((o["time_v_max_rss_GiB"] or 0) for o in runs)
    result = dict(benchmark="demo", machine=m, runs=runs, median_wall_s=wall, peak_tree_rss_GiB=peak, time_v_max_rss_GiB=tv)
    md = header("The demo end to end", m, "python benchmarks/bench_demo.py " + " ".join(sys.argv[1:] if argv is None else argv))
    md += (f"`{runs[0]['command']}` in a fresh scratch folder (synthetic demo corpus, tiny backbone, every stage through "
           f"papermill), {a.repeats} run(s). Peak memory: the summed RSS of the runner and all its children (notebook "
           f"kernels), polled every 0.2 s, and /usr/bin/time -v's maximum RSS (the largest single process).\n\n")
    md += md_table([dict(what=runs[0]["command"], **{"exit status": ",".join(str(o["returncode"]) for o in runs),
                                                    "wall s (median)": fmt(wall), "peak tree RSS GiB": fmt(peak),
                                                    "max single-process RSS GiB (time -v)": fmt(tv)})],
                   ["what", "exit status", "wall s (median)", "peak tree RSS GiB", "max single-process RSS GiB (time -v)"])
    for o in runs:
        if o["returncode"] != 0:
            md += (f"\n**The demo did not finish** (exit status {o['returncode']}): {o.get('failure') or 'see the log'}; "
                   f"the wall time and memory above are up to that failure. Log: `{o['scratch']}`.\n")
    write_results("demo", result, md)
    print(md)


if __name__ == "__main__": main()
