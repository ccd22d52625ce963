"""Benchmark 6, the data stage at corpus scale: wall time and peak memory of `run_data_stage` on synthetic corpora of
distinct cries (babycry's own `synth_cry`: 3-7 s, 16 kHz 16-bit WAV, seven classes, three clips per baby, Donate-a-Cry
names) with copies planted for the audit to find (same audio at a lower gain, a near copy under strong noise, a
byte-identical copy filed under another class), and whether it found every one.
Usage: python benchmarks/bench_data_scale.py [SIZES ...] [--workers 2]   (default sizes 1000 5000 20000)"""
from __future__ import annotations
import argparse, json, shutil, subprocess, sys, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *   # noqa: F401,F403  (ROOT on sys.path, WORK, machine, writers)
from common import WORK, RESULTS, ROOT

import numpy as np, soundfile as sf

from babycry.core import CLASSES
from babycry.core import parallel_map
from babycry.demo import synth_cry, _dac_name, DAC_TAGS

SCALE = WORK/"scale"


def _clip_job(job):
    "Write one distinct cry: (path, label, seconds, pitch, seed)."
    path, label, seconds, pitch, seed = job
    x = synth_cry(label, seconds, 16000, np.random.default_rng(seed), pitch)
    Path(path).parent.mkdir(parents=True, exist_ok=True); sf.write(path, x, 16000)


def make_scale_corpus(root: Path, n: int, seed=0, workers=2) -> list:
    "Write `n` files (distinct cries plus planted copies) to `root` once; return the planted copies [{copy, source, kind}]."
    truth = root/"planted.json"
    if truth.exists(): return json.loads(truth.read_text())
    if root.exists(): shutil.rmtree(root)
    rng, n_plant = np.random.default_rng(seed), max(3, n // 1000)
    babies, jobs, owner = [], [], []
    for i in range(n - 3 * n_plant):
        if i % 3 == 0: babies.append(dict(uuid=str(__import__("uuid").UUID(bytes=rng.bytes(16), version=4)),
                                          gender=rng.choice(["m", "f"]), age=rng.choice(["04", "48"]), pitch=rng.uniform(0.85, 1.15),
                                          label=CLASSES[len(babies) % len(CLASSES)]))
        b = babies[-1]
        p = root/b["label"]/_dac_name(rng, b, DAC_TAGS[b["label"]], ".wav")
        jobs.append((str(p), b["label"], float(rng.uniform(3, 7)), b["pitch"], int(rng.integers(2**31)))); owner.append(b)
    parallel_map(_clip_job, jobs, workers, desc=f"writing {len(jobs)} cries")
    src = rng.choice(len(jobs), 3 * n_plant, replace=False)
    planted = []
    for k, s in enumerate(src):
        p = Path(jobs[s][0]); x, sr = sf.read(p, dtype="float32"); kind = ("gain", "noise", "byte_copy")[k % 3]
        if kind == "byte_copy":
            other = CLASSES[(CLASSES.index(p.parent.name) + 1) % len(CLASSES)]
            q = root/other/p.name; shutil.copyfile(p, q)
        else:
            b = owner[s]; q = p.with_name(_dac_name(rng, b, DAC_TAGS[b["label"]], ".wav"))      # same baby, a new timestamp
            y = 0.6 * x if kind == "gain" else 0.7 * x + 0.1 * rng.standard_normal(len(x)).astype(np.float32)
            sf.write(q, y, sr)
        planted.append(dict(copy=str(q.resolve()), source=str(p.resolve()), kind=kind))
    truth.write_text(json.dumps(planted, indent=1))
    return planted


STAGE = ("import sys, json; from babycry.data import run_data_stage; "
         "s = run_data_stage(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), overwrite=True); print(json.dumps(s['seconds']))")


def run_measured(cmd, every=0.2) -> dict:
    "Run `cmd`; wall seconds and the peak summed RSS of its process tree (psutil, sampled every `every` s)."
    import psutil
    t0 = time.perf_counter(); proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak, done = [0], threading.Event()
    def sample():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True); rss = 0
                for p in procs:
                    try: rss += p.memory_info().rss
                    except psutil.Error: pass
                peak[0] = max(peak[0], rss)
            except psutil.Error: pass
            time.sleep(every)
    th = threading.Thread(target=sample, daemon=True); th.start()
    out = proc.communicate()[0]; wall = time.perf_counter() - t0; done.set(); th.join()
    if proc.returncode: raise RuntimeError(f"{cmd} failed ({proc.returncode}): {out[-2000:]}")
    return dict(wall_s=wall, peak_rss_GiB=peak[0] / 2**30, stage_s=json.loads(out.strip().splitlines()[-1]))


def found(run: Path, planted: list) -> int:
    "How many planted copies the audit reports (as a duplicate or an augmented copy of their source, either way round)."
    a = json.loads((run/"data"/"audit.json").read_text())
    pairs = {frozenset((c["path"], c["copy_of"])) for c in a["duplicates"] + a["augmented_copies"]}
    return sum(frozenset((p["copy"], p["source"])) in pairs for p in planted)


def bench(n: int, workers: int) -> dict:
    "Make (or reuse) the corpus of `n` files, run the data stage on it in a child process, check the audit."
    corpus, run = SCALE/f"corpus_{n}", SCALE/f"run_{n}"
    t0 = time.perf_counter(); planted = make_scale_corpus(corpus, n, workers=workers); made = time.perf_counter() - t0
    files = sum(1 for p in corpus.rglob("*.wav"))
    hours = sum(sf.info(p).duration for p in corpus.rglob("*.wav")) / 3600
    if run.exists(): shutil.rmtree(run)
    print(f"{files} files ({hours:.1f} h): running the data stage on {workers} workers ...", flush=True)
    m = run_measured([sys.executable, "-c", STAGE, str(corpus), str(run), str(workers)])
    a = json.loads((run/"data"/"audit.json").read_text())
    r = dict(files=files, hours=round(hours, 2), planted=len(planted), found=found(run, planted), workers=workers,
             corpus_s=round(made, 1), **{k: round(v, 3) for k, v in m.items()}, status_counts=a["status_counts"],
             load_avg_after=[round(x, 2) for x in __import__("os").getloadavg()], date=time.strftime("%Y-%m-%dT%H:%M:%S"))
    shutil.rmtree(run/"data"/"cache", ignore_errors=True)                # 4 GB at 20,000 files; the numbers are taken
    print(r, flush=True)
    return r


def plot(rows, path):
    "Log-log plot of wall time against files, with a line of slope 1 (linear growth) through the smallest size."
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    n, t = np.array([r["files"] for r in rows]), np.array([r["wall_s"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(n, t, "o-", label="data stage (wall time)")
    ax.loglog(n, t[0] * n / n[0], "--", color="grey", label="linear growth")
    ax.axhline(900, color="red", lw=0.8, label="goal at 20,000 files: 15 min")
    for x, y in zip(n, t): ax.annotate(f"{y:.0f} s", (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8)
    ax.set_xlabel("files"); ax.set_ylabel("seconds"); ax.set_title("babycry data stage, 2 workers"); ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def report(rows: list, m: dict, command: str):
    "Write results/data_scale.{json,md,png} for `rows` (one per corpus size) measured on machine `m`."
    big = {r["files"]: r for r in rows}
    ratio = big[20000]["wall_s"] / big[5000]["wall_s"] if 20000 in big and 5000 in big else None
    result = dict(benchmark="data_scale", machine=m, rows=rows, ratio_20000_5000=ratio)
    md = header("The data stage at corpus scale", m, command)
    md += ("Synthetic corpora of distinct cries (`synth_cry`: 3-7 s, 16 kHz 16-bit WAV, 7 classes, 3 clips per baby) with "
           "planted copies (a third each: the same audio at 0.6× gain, a near copy under strong noise, a byte copy "
           "under another class); `run_data_stage` in a child process on the given workers; peak memory is the summed "
           "RSS of its process tree (psutil, every 0.2 s). Making the corpus is not timed. Rows may come from separate "
           "runs (each has its date and the load average after it in the JSON).\n\n")
    md += md_table([{"files": r["files"], "audio (h)": r["hours"], "wall (s)": fmt(r["wall_s"]), "peak memory (GiB)": fmt(r["peak_rss_GiB"]),
                     "planted copies found": f"{r['found']} / {r['planted']}", "workers": r["workers"],
                     "load average after": r.get("load_avg_after", ["?"])[0]} for r in rows],
                   ["files", "audio (h)", "wall (s)", "peak memory (GiB)", "planted copies found", "workers", "load average after"])
    goals = []
    if 20000 in big:
        goals += [goal_line(big[20000]["wall_s"], 900, "20,000 files, wall time (s)", higher_is_better=False),
                  goal_line(big[20000]["peak_rss_GiB"], 4, "20,000 files, peak memory (GiB)", higher_is_better=False)]
    else: goals.append("20,000 files: not run.")
    if ratio is not None: goals.append(goal_line(ratio, 5, "time(20,000) / time(5,000)", higher_is_better=False))
    goals.append(goal_line(sum(r["found"] == r["planted"] for r in rows), len(rows), "sizes with every planted copy found"))
    md += "\n" + "".join(f"- {g}\n" for g in goals)
    write_results("data_scale", result, md)
    plot(rows, RESULTS/"data_scale.png")
    print(md)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 5000, 20000])
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    m = machine()
    old = RESULTS/"data_scale.json"
    rows = {r["files"]: r for r in (json.loads(old.read_text())["rows"] if old.exists() else [])}
    for n in a.sizes:
        r = bench(n, a.workers); rows[r["files"]] = r
    report([rows[k] for k in sorted(rows)], m, "python benchmarks/bench_data_scale.py " + " ".join(map(str, a.sizes)))


if __name__ == "__main__": main()
