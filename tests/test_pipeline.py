"The demo end to end through babycry-run (papermill over the stage notebooks), babycry-predict on its model, and resume."
import json, os, shutil, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

from babycry.rundir import RunPaths
from babycry.plan import STAGE_NOTEBOOKS
from babycry.run import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    "Run `babycry-run --demo --name e2e` from a scratch directory (a few minutes on two CPU cores)."
    work = tmp_path_factory.mktemp("e2e")
    old = os.getcwd(); os.chdir(work)
    try: rc = main(["--demo", "--name", "e2e"])
    finally: os.chdir(old)
    assert rc == 0, "babycry-run --demo failed: see the executed notebooks under runs/e2e/notebooks"
    return work/"runs"/"e2e"


def test_demo_writes_evaluation_card_and_notebooks(demo_run):
    rp = RunPaths(demo_run)
    m = json.loads((rp.eval/"metrics.json").read_text())
    assert m["model"] == "phase2" and m["test"]["n"] > 0
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc_ovr_macro", "ece"): assert k in m["test"]
    for k in ("accuracy", "macro_f1"): assert m["ci"][k]["low"] <= m["ci"][k]["point"] <= m["ci"][k]["high"]
    assert m["ci"]["resample"] in ("group", "clip") and len(m["progression"]) == 3
    for f in ("confusion_counts.png", "confusion_normalized.png", "reliability.png", "roc.png", "done.json"): assert (rp.eval/f).exists()
    card = (rp.model("phase2")/"README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: audio-classification" in card
    for section in ("## Intended use", "## Out-of-scope use", "## Data and splits", "## Training procedure",
                    "## Results", "## Limitations and bias", "## Hardware and training time"): assert section in card
    for nb in STAGE_NOTEBOOKS: assert (rp.notebooks/f"{nb}.ipynb").exists(), nb
    assert json.loads((demo_run/"pipeline.json").read_text())["demo"] is True


def _predict_cmd():
    exe = shutil.which("babycry-predict")
    return [exe] if exe else [sys.executable, "-c", "import sys; from babycry.inference import main; sys.exit(main())"]


def test_predict_cli_on_a_clip_and_a_corrupt_file(demo_run, tmp_path):
    rp = RunPaths(demo_run)
    man = pd.read_csv(rp.manifest, keep_default_na=False)
    clip = Path(man.loc[man.status == "ok", "path"].iloc[0])
    if not clip.is_absolute(): clip = demo_run.parent.parent/clip
    bad = tmp_path/"corrupt.wav"; bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    ok = subprocess.run(_predict_cmd() + [str(rp.model("phase2")), str(clip), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    res = json.loads(ok.stdout)[0]
    classes = json.loads((rp.class_removal/"labels.json").read_text())["classes"]
    assert res["label"] in classes and abs(sum(res["probs"].values()) - 1) < 1e-4
    both = subprocess.run(_predict_cmd() + [str(rp.model("phase2")), str(bad), str(clip)], capture_output=True, text=True)
    assert both.returncode == 1                                   # one file failed ...
    assert "corrupt.wav" in both.stderr and "ERROR" in both.stderr  # ... with a message naming it ...
    assert str(clip) in both.stdout                               # ... and the other still got its answer


def test_second_run_skips_finished_stages(demo_run, capsys):
    before = (RunPaths(demo_run).eval/"metrics.json").stat().st_mtime_ns
    assert main(["--run-dir", str(demo_run)]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, skipped") == len(STAGE_NOTEBOOKS), out
    assert (RunPaths(demo_run).eval/"metrics.json").stat().st_mtime_ns == before
    assert "accuracy" in out and "macro-F1" in out


def test_cross_validation_on_the_demo_corpus(demo_run, tmp_path, capsys):
    "babycry-run --folds 2 (data, phase 1 and evaluation only, to stay short): every usable clip predicted once, by the fold that never saw its source."
    args = ["--stages", "01,04,07", "-p", "backbone", "tiny", "-p", "phase1.lr", "1e-3", "-p", "phase1.epochs", "3"]
    assert main(["--data-dir", str(demo_run/"demo_corpus"), "--runs", str(tmp_path), "--name", "cv", "--folds", "2"] + args) == 0
    rp = RunPaths(tmp_path/"cv")
    man = pd.read_csv(rp.manifest, keep_default_na=False); ok = man[man.status == "ok"]
    oof = pd.read_csv(rp.cv/"oof.csv", keep_default_na=False)
    assert sorted(oof.path) == sorted(ok.path)                                   # every usable clip, exactly once
    assert (oof.fold.to_numpy() == oof.path.map(ok.set_index("path").fold).to_numpy()).all()
    for k in (0, 1):
        fm = pd.read_csv(rp.fold(k).manifest, keep_default_na=False)
        train = pd.read_csv(rp.fold(k).cache/"train.csv", keep_default_na=False)
        assert set(fm.path[fm.split == "test"]) == set(ok.path[ok.fold == k])
        assert train.augmented.astype(str).isin(["True"]).any()                   # balancing augmented training clips ...
        seen = set(fm.group[fm.split.isin(["train", "valid"])]) | set(train.group)
        assert not seen & set(oof.group[oof.fold == k]), k                         # ... of no source of the fold's test clips
    m = json.loads((rp.cv/"metrics.json").read_text())
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "ece"): assert m["ci"][k]["low"] <= m["pooled"][k] <= m["ci"][k]["high"], k
    assert m["ci"]["resample"] == "group" and len(m["per_fold"]) == 2 and m["n_clips"] == len(ok)
    assert "**This model is fold" in (rp.root/m["model_card"]).read_text()          # relative to the run
    assert "out-of-fold metrics of phase1 (2-fold" in capsys.readouterr().out
    assert main(["--run-dir", str(rp.root)] + args[:2]) == 0                       # resumed: every fold's stages skipped
    assert capsys.readouterr().out.count("finished earlier, skipped") == 6
    ladder_on_the_folds(rp, capsys)


def ladder_on_the_folds(rp, capsys):
    "--ladder on that run: baselines and the recipe's rungs (phase 1 as trained, its two variants trained per fold) on the same clips."
    rungs = "majority,features+logreg,embeddings+logreg,phase1,phase1-adapter,phase1-stats,phase2"
    assert main(["--run-dir", str(rp.root), "--ladder", "--stages", "13", "-p", "ladder.rungs", rungs, "-p", "ladder.n_trials", "2",
                 "-p", "ladder.n_bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    t = pd.read_csv(rp.cv/"ladder.csv").set_index("model")
    assert t.index.tolist() == rungs.split(",")[:-1], out                         # phase2 was never trained: skipped, and why
    assert json.loads((rp.cv/"ladder_run.json").read_text())["skipped"]["phase2"].startswith("folds [0, 1] have no finished phase2")
    assert t.clip_set.nunique() == 1 and t.n_clips.nunique() == 1 and t.n_classes.iloc[0] == 7     # same clips; nothing removed
    assert t.random_weights.to_dict() == {"majority": False, "features+logreg": False, **{r: True for r in rungs.split(",")[2:-1]}}
    oof = pd.read_csv(rp.cv/"oof_phase1.csv"); cv_oof = pd.read_csv(rp.cv/"oof.csv")
    assert (oof.sort_values("path").pred.to_numpy() == cv_oof.sort_values("path").pred.to_numpy()).all()    # the CV stage's own predictions
    for k in (0, 1):
        for v, kw in (("phase1-adapter", ("head", "adapter")), ("phase1-stats", ("pooling", "stats"))):
            done = json.loads((rp.fold(k).root/v/"done.json").read_text())
            assert done["params"][kw[0]] == kw[1] and done["params"]["epochs"] == 3      # the fold's own phase-1 settings, one changed
        reads = json.loads((rp.fold(k).root/"test_reads.json").read_text())
        assert [r["model"] for r in reads][-2:] == ["phase1-adapter", "phase1-stats"]
    card = rp.root/json.loads((rp.cv/"metrics.json").read_text())["model_card"]              # relative to the run
    assert "### Against the baseline ladder" in card.read_text()
    assert "baseline ladder (" in out and (rp.cv/"ladder.png").exists()
    assert main(["--run-dir", str(rp.root), "--ladder", "--stages", "13"]) == 0 and "finished earlier, skipped" in capsys.readouterr().out


def test_new_run_never_lands_on_an_old_one(demo_run, capsys):
    old = os.getcwd(); os.chdir(demo_run.parent.parent)
    try: assert main(["--demo", "--name", "e2e", "--dry-run"]) == 0
    finally: os.chdir(old)
    assert "runs/e2e-2" in capsys.readouterr().out


def test_sigterm_stops_the_kernel_and_releases_the_run(tmp_path):
    "SIGTERM to babycry-run shuts the running stage's kernel (and its workers) down, exits 130, and frees the run."
    import signal, time
    psutil = pytest.importorskip("psutil")
    cmd = [sys.executable, "-c", "import sys; from babycry.run import main; sys.exit(main())", "--demo", "--name", "sig"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kernels, t0 = [], time.time()
    while not kernels and time.time() - t0 < 120 and proc.poll() is None:
        time.sleep(0.5)
        kernels = [c for c in psutil.Process(proc.pid).children(recursive=True) if "ipykernel" in " ".join(c.cmdline())]
    assert kernels, "no stage kernel started"
    time.sleep(3)
    tree = kernels + [c for k in kernels for c in k.children(recursive=True)]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    gone, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"still running after babycry-run stopped: {[p.cmdline() for p in alive]}"
    assert not (tmp_path/"runs"/"sig"/".lock").exists()


def test_every_setting_reaches_its_stage(tmp_path, capsys):
    "Every field of every stage config is accepted by `babycry-run --dry-run -p <stage>.<field> <value>`, and shown in the plan."
    import dataclasses
    from babycry.config import STAGE_SETTINGS, stage_fields
    some = dict(precision="fp32", nproc=1, batch_size=8, remove_classes="hungry")
    for nb, (cls, _, _) in STAGE_SETTINGS.items():
        for f in dataclasses.fields(cls):
            if f.name not in stage_fields(nb): continue
            v = some.get(f.name, f.default) if f.default is None or f.name in some else f.default
            text = ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
            args = ["--demo", "--run-dir", str(tmp_path/"r"), "--dry-run", "-p", f"{nb}.{f.name}", text]
            if nb == "13_ladder": args += ["--folds", "2", "--ladder"]
            assert main(args) == 0, (nb, f.name, text, capsys.readouterr().err)
            assert f" {f.name}=" in capsys.readouterr().out, (nb, f.name)


def test_the_users_papermill_command_after_a_demo(demo_run, tmp_path):
    "After babycry-run --demo, `cd nbs && papermill 06_phase2.ipynb out.ipynb -p epochs 62` continues that run's phase 2."
    work = tmp_path/"project"; shutil.copytree(demo_run.parent.parent, work, symlinks=True)
    (work/"nbs").mkdir(); shutil.copy(Path(__file__).parents[1]/"nbs"/"06_phase2.ipynb", work/"nbs")
    assert os.readlink(work/"runs"/"latest") == "e2e"
    r = subprocess.run([sys.executable, "-m", "papermill", "06_phase2.ipynb", "out.ipynb", "-p", "epochs", "62"], cwd=work/"nbs",
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    text = lambda t: "".join(t) if isinstance(t, list) else t
    out = "".join(text(o.get("text", "")) for c in json.loads((work/"nbs"/"out.ipynb").read_text())["cells"] for o in c.get("outputs", []))
    assert f"run_dir: {(work/'runs'/'e2e').resolve()} (the latest run)" in out
    assert "continuing the finished 8-epoch run from its best checkpoint up to 62 epochs" in out
    done = json.loads((work/"runs"/"e2e"/"phase2"/"done.json").read_text())["params"]
    assert (done["epochs"], done["lr_scale"]) == (62, 20.0)                            # the demo's own learning-rate scale
    assert (work/"runs"/"e2e"/"phase2"/"done.upto8.json").exists()
