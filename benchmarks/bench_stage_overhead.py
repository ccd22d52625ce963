"""Benchmark 8, what a stage run spends outside the stages: `babycry-run --demo` and a 5-fold cross-validated run on
Donate-a-Cry (tiny backbone, short epochs), each under one or more versions of babycry, side by side in one run.

For every run it reads the executed notebooks that babycry-run keeps (`<run>/notebooks/*.ipynb`, and each fold's) and
splits the wall time into: the `#| stage` cells (the stage's own work), the other cells (imports, parameters, and
whatever chapter checks run), and the rest (kernel starts, papermill, the runner itself).

A version is a git ref of this repository (checked out once into `benchmarks/_work/code-<ref>` with `git worktree`) or
`.` for the checkout as it is; `babycry-run` runs with that version first on PYTHONPATH, so it finds that version's
notebooks and library.

Usage: python benchmarks/bench_stage_overhead.py [--versions 68e638c .] [--skip-folds] [--data-dir DIR]"""
from __future__ import annotations
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, WORK, SHARED_DATA, fmt, header, machine, md_table, write_results

FOLD_PARAMS = ["--folds", "5", "-p", "backbone", "tiny", "-p", "phase1.epochs", "3", "-p", "phase2.epochs", "2"]


def code_dir(ref: str) -> Path:
    "The folder holding version `ref` of babycry: the checkout for '.', else a git worktree of `ref` under _work/."
    if ref == ".": return ROOT
    d = WORK/f"code-{ref}"
    if not (d/"babycry").exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(d), ref], cwd=ROOT, check=True,
                       capture_output=True)
    return d


def is_stage_cell(cell) -> bool:
    "A `#| stage` cell: the stage's own work."
    src = "".join(cell.get("source", ""))
    return cell.get("cell_type") == "code" and any(l.strip().replace(" ", "") == "#|stage" for l in src.splitlines())


def imports_only(cell) -> bool:
    "A cell whose code is nothing but import statements (a stage's first cell imports the library)."
    import ast
    code = "\n".join(l for l in "".join(cell.get("source", "")).splitlines() if not l.lstrip().startswith(("#", "%", "!")))
    try: body = ast.parse(code).body
    except SyntaxError: return False
    return bool(body) and all(isinstance(x, (ast.Import, ast.ImportFrom)) for x in body)


def notebook_times(path) -> dict:
    "Wall time of one executed notebook (papermill's metadata) split into stage cells (and of those, the import cells), other cells and the rest."
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    total = float(nb.get("metadata", {}).get("papermill", {}).get("duration") or 0.0)
    stage = other = imports = 0.0
    for c in nb["cells"]:
        d = float(c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0)
        if is_stage_cell(c):
            stage += d
            if imports_only(c): imports += d
        elif c.get("cell_type") == "code": other += d
    return dict(notebook=str(path), total_s=total, stage_s=stage, stage_imports_s=imports, other_cells_s=other,
                outside_cells_s=max(total - stage - other, 0.0))


def run_times(run_dir) -> dict:
    "The per-notebook times of every executed notebook of a run (its own and its folds'), summed."
    nbs = sorted(Path(run_dir).glob("notebooks/*.ipynb")) + sorted(Path(run_dir).glob("folds/*/notebooks/*.ipynb"))
    rows = [notebook_times(p) for p in nbs]
    return dict(notebooks=len(rows), **{k: sum(r[k] for r in rows) for k in ("total_s", "stage_s", "stage_imports_s", "other_cells_s", "outside_cells_s")},
                per_notebook=rows)


def run(version: str, what: str, args: list, data_dir) -> dict:
    "One babycry-run of version `version` in a scratch folder; its wall time and where it went."
    code = code_dir(version)
    scratch = Path(tempfile.mkdtemp(prefix=f"overhead-{what}-", dir=WORK if WORK.exists() else None))
    env = dict(os.environ, PYTHONPATH=str(code) + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", BABYCRY_NBS=str(code/"nbs"))
    module = "babycry.run" if (code/"babycry"/"run.py").exists() else "babycry.pipeline"      # babycry-run's module then and now
    cmd = [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"]
    cmd += (["--demo"] if what == "demo" else ["--data-dir", str(data_dir), *FOLD_PARAMS]) + ["--runs", str(scratch/"runs"), "--name", what]
    t0 = time.perf_counter()
    with open(scratch/"log.txt", "w") as log: rc = subprocess.run(cmd, cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    t = run_times(scratch/"runs"/what)
    out = dict(version=version, code=str(code), what=what, command="babycry-run " + " ".join(cmd[3:]), returncode=rc, wall_s=wall, **t,
               outside_stage_share=(wall - t["stage_s"]) / wall if wall else float("nan"), scratch=str(scratch))
    print(f"  {version:>10} {what:<6} rc {rc}  wall {wall:7.1f} s  stage cells {t['stage_s']:7.1f} s  other cells "
          f"{t['other_cells_s']:7.1f} s  outside cells {wall - t['stage_s'] - t['other_cells_s']:7.1f} s  "
          f"({100 * out['outside_stage_share']:.0f}% outside the stage cells)", flush=True)
    if rc == 0: shutil.rmtree(scratch, ignore_errors=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--versions", nargs="+", default=["68e638c", "."], help="git refs of babycry, '.' for the checkout")
    ap.add_argument("--skip-folds", action="store_true", help="only the demo")
    ap.add_argument("--data-dir", default=str(SHARED_DATA))
    ap.add_argument("--name", default="stage_overhead", help="results/<name>.json and .md")
    a = ap.parse_args(argv)
    m, rows = machine(), []
    whats = ["demo"] + ([] if a.skip_folds or not Path(a.data_dir).exists() else ["folds5"])
    for what in whats:
        for v in a.versions: rows.append(run(v, what, [], a.data_dir))
    result = dict(benchmark="stage_overhead", machine=m, fold_params=FOLD_PARAMS, runs=rows)
    md = header("What a stage run spends outside the stages", m, "python benchmarks/bench_stage_overhead.py " + " ".join(sys.argv[1:] if argv is None else argv))
    md += ("Each row is one `babycry-run` in a fresh scratch folder. *stage cells*: the `#| stage` cells of the executed "
           "notebooks (papermill's per-cell durations); *other cells*: every other code cell that ran (imports, parameters, "
           "chapter checks); *outside cells*: the rest of the wall time (kernel starts, papermill, the runner). A stage's "
           "first cell imports the library it runs (torch, transformers ... once per kernel): those import cells are "
           "stage cells, and their time is shown on its own. "
           f"`folds5` is `babycry-run --data-dir {Path(a.data_dir).name} {' '.join(FOLD_PARAMS)}`.\n\n")
    md += md_table([{"version": r["version"], "run": r["what"], "exit": r["returncode"], "wall s": fmt(r["wall_s"]),
                     "notebooks": r["notebooks"], "stage cells s": fmt(r["stage_s"]), "other cells s": fmt(r["other_cells_s"]),
                     "outside cells s": fmt(r["wall_s"] - r["stage_s"] - r["other_cells_s"]),
                     "of the stage cells, imports s": fmt(r.get("stage_imports_s", 0.0)),
                     "outside the stage cells": f"{100 * r['outside_stage_share']:.0f}%"} for r in rows],
                   ["version", "run", "exit", "wall s", "notebooks", "stage cells s", "other cells s", "outside cells s",
                    "outside the stage cells", "of the stage cells, imports s"])
    write_results(a.name, result, md)
    print(md)


if __name__ == "__main__": main()
