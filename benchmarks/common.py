"""Shared helpers of the babycry benchmarks: an alternating timer with medians, a description of the machine, and the
JSON + markdown writers. Each benchmark script compares two (or more) ways of doing the same work *in one run*,
alternating them over several repetitions so that noise from other processes falls on both alike, and reports medians."""
from __future__ import annotations
import datetime, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE/"_work"          # git-ignored scratch space (run directories, models, exported files)
RESULTS = HERE/"results"     # committed tables
SHARED_DATA = ROOT.parent/"shared"/"data"/"donateacry-cleaned"

if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))   # import the checkout's babycry, not an installed copy


def cpu_model() -> str:
    "The CPU model name from /proc/cpuinfo (or platform.processor())."
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def cpu_flags(wanted=("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")) -> list:
    "Which of the SIMD extensions that matter for int8/bf16 inference the CPU has."
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
        return [f for f in wanted if f in flags]
    except (OSError, StopIteration): return []


def machine() -> dict:
    "What the numbers were measured on: CPU, cores, memory, GPU (or none), library versions, load average."
    import torch, transformers, numpy
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), host=platform.node(),
                python=platform.python_version(), os=platform.platform(), cpu=cpu_model(), cpu_flags=cpu_flags(),
                cores=os.cpu_count(), torch=torch.__version__, transformers=transformers.__version__, numpy=numpy.__version__,
                torch_threads=torch.get_num_threads())
    try:
        import psutil; info["memory_GiB"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError: pass
    try: info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError: pass
    for mod in ("onnxruntime", "onnx"):
        try: info[mod] = __import__(mod).__version__
        except ImportError: pass
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_GiB=round(p.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, gpu_count=torch.cuda.device_count())
    else: info["gpu"] = "none"
    return info


def machine_line(m: dict) -> str:
    "One line naming the machine, for the tables."
    gpu = m.get("gpu", "none")
    gpu = "no GPU" if gpu == "none" else f"GPU {gpu} ({m.get('gpu_memory_GiB')} GiB, CUDA {m.get('cuda')})"
    flags = ", ".join(m.get("cpu_flags", [])) or "n/a"
    return (f"{m['cpu']} ({m['cores']} cores; {flags}), {m.get('memory_GiB', '?')} GiB RAM, {gpu}; "
            f"python {m['python']}, torch {m['torch']}, transformers {m['transformers']}"
            + (f", onnxruntime {m['onnxruntime']}" if "onnxruntime" in m else "")
            + f"; load average at start {m.get('load_avg_at_start', '?')}; {m['date']}")


def median(xs): return float(statistics.median(xs)) if xs else float("nan")


def alternate(contenders: dict, repeats: int = 5, warmup: int = 1, log=print) -> dict:
    """Time each callable of `contenders` (name -> fn() returning None or a dict of extras) `repeats` times, alternating
    them round by round (A B A B ..., the order flipped every round), after `warmup` untimed rounds.
    Returns name -> {'times': [...], 'median': s, 'min': s, 'extras': [...]}."""
    names = list(contenders)
    for w in range(warmup):
        for n in names: contenders[n]()
    out = {n: dict(times=[], extras=[]) for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter(); extra = contenders[n](); dt = time.perf_counter() - t0
            out[n]["times"].append(dt); out[n]["extras"].append(extra)
            if log: log(f"  round {r+1}/{repeats}  {n}: {dt:.4f} s")
    for n in names:
        out[n].update(median=median(out[n]["times"]), min=min(out[n]["times"]))
    return out


def fmt(x, unit="", digits=3) -> str:
    "A number for a table (significant digits), or '—' for None/NaN."
    if x is None or (isinstance(x, float) and x != x): return "—"
    if isinstance(x, str): return x
    return f"{x:.{digits}g}{unit}" if abs(x) < 10**digits else f"{x:,.0f}{unit}"


def md_table(rows: list, columns: list) -> str:
    "A markdown table from a list of dicts (only `columns`, in order)."
    head = "| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|\n"
    return head + "".join("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |\n" for r in rows)


def write_results(name: str, result: dict, markdown: str) -> tuple:
    "Write `results/<name>.json` and `results/<name>.md` atomically; return both paths."
    from babycry.core import atomic_write, save_json
    RESULTS.mkdir(parents=True, exist_ok=True)
    js = save_json(result, RESULTS/f"{name}.json")
    with atomic_write(RESULTS/f"{name}.md", "w", encoding="utf-8") as f: f.write(markdown.rstrip() + "\n")
    print(f"wrote {js} and {RESULTS/f'{name}.md'}")
    return js, RESULTS/f"{name}.md"


def goal_line(measured: float, goal: float, what: str, higher_is_better=True) -> str:
    "'met' / 'NOT met' sentence for a ratio or a value against its goal."
    ok = measured >= goal if higher_is_better else measured <= goal
    cmp = "≥" if higher_is_better else "≤"
    return f"**{what}: {fmt(measured)} (goal {cmp} {fmt(goal)}): {'met' if ok else 'NOT met'}.**"


def git_rev() -> str:
    "The checkout's commit (with '+dirty' when the tree has changes), for the record."
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError: return "unknown"


def header(title: str, m: dict, command: str) -> str:
    "The top of every results markdown file: title, machine, command."
    return f"### {title}\n\nMachine: {machine_line(m)}  \nCommand: `{command}` (babycry {git_rev()})\n\n"
