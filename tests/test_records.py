"""Issue 24: run records vouch for their files; every check runs before anything does; nothing finished moves until the
new work has succeeded; a run moved or copied is the same run."""
import contextlib, io, re, shutil
from pathlib import Path

import numpy as np, pytest, soundfile as sf

from babycry.core import load_json, save_json
from babycry.config import Phase2Config, make_config
from babycry.rundir import RunPaths, mark_done, is_done, prepare_stage, verify_stage
from babycry.dataset import make_fake_cache
from babycry.plan import plan, find_notebooks, format_plan, record_stage
from babycry.summary import summary
from babycry.execute import StageFailed
from babycry import run as run_mod
from babycry.run import main


def _run_main(args):
    "babycry-run's exit status, what it printed and what it said on stderr."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def _model(path, nbytes, seed=0):
    path.mkdir(parents=True, exist_ok=True)
    (path/"model.safetensors").write_bytes(np.random.default_rng(seed).bytes(nbytes))
    save_json({"model_type": "babycry"}, path/"config.json")


def _evaluated(rp):
    "An evaluation of the run's phase 2 (its metrics.json as f3617ef wrote it: absolute paths) and its record."
    fin = load_json(rp.phase2/"done.json")["finished"]
    ci = lambda v: dict(point=v, low=v - .1, high=v + .1)
    save_json(dict(model="phase2", model_dir=str(rp.model("phase2").resolve()), model_finished=fin, n_groups=4,
                   model_card=str((rp.model("phase2")/"README.md").resolve()), test_reads=[{}],
                   test=dict(n=7, balanced_accuracy=.5, roc_auc_ovr_macro=.6, ece=.1),
                   ci=dict(accuracy=ci(.5), macro_f1=ci(.4), resample="group")),
              rp.metrics)
    mark_done(rp.eval, dict(model="phase2", model_finished=fin))


def toy_run(rd, params=None) -> RunPaths:
    "A run whose every stage is finished, by hand: tiny files, their records, babycry-run's record of each notebook."
    rp, params = RunPaths(rd), params or {"data_dir": None, "backbone": "tiny"}
    make_fake_cache(rd)
    save_json({"band_limit": {"hz": None}}, rp.audit)
    mark_done(rp.data, dict(seed=42, folds=0, data_dir=str((rp.root/"demo_corpus").resolve())))
    _model(rp.model("phase1"), 3 << 20)                                   # big enough for a sampled hash
    save_json({"epochs": [{"epoch": 1}]}, rp.history("phase1"))
    best = str((rp.phase1/"checkpoints/checkpoint-4").resolve())
    mark_done(rp.phase1, dict(epochs=1), result=dict(best_checkpoint=best))
    save_json({"classes": ["a", "b"]}, rp.class_removal/"labels.json")
    mark_done(rp.class_removal, dict(remove_classes=["hungry"]))
    _model(rp.model("phase2"), 5000, seed=1); mark_done(rp.phase2, dict(epochs=2))
    _evaluated(rp)
    _record_notebooks(rd, params)
    return rp


def _record_notebooks(rd, params, **kw):
    "What babycry-run records of each notebook it ran (`notebooks/<nb>.json`), for the plan of `params`."
    for r in plan(rd, params, nbs_dir=find_notebooks(), **kw):
        record_stage(r["params"]["run_dir"], r["notebook"], r["params"], 1.0)


def _plan(rd, params=None):
    return plan(rd, params or {"data_dir": None, "backbone": "tiny"}, nbs_dir=find_notebooks())


def test_a_finished_toy_run_is_skipped(tmp_path):
    rows = _plan(toy_run(tmp_path/"r").root)
    assert [r["action"] for r in rows] == ["skip"] * 7, format_plan(rows, tmp_path)
    assert verify_stage(RunPaths(tmp_path/"r").phase1) == []


def test_garbage_done_record_is_named_and_rerun(tmp_path):
    "A data/done.json that is not JSON: not 'finished' (every stage used to be skipped, then summary() died on it)."
    rp = toy_run(tmp_path/"r")
    (rp.data/"done.json").write_text("{garbage")
    (rp.notebooks/"04_phase1.json").write_text("not json either")
    rows = _plan(rp.root)
    assert [r["action"] for r in rows] == ["run"] * 7
    text = format_plan(rows, rp.root)
    assert "rerun (damaged: data/done.json is not valid JSON)" in text, text
    assert "notebooks/04_phase1.json is not valid JSON" in text, text
    assert not is_done(rp.data) and rp.done("data") == {}
    assert "run directory:" in summary(rp.root)                                      # no JSONDecodeError
    assert prepare_stage(rp.data, dict(seed=42)) == "resume"                        # the stage runs again ...
    assert (rp.data/"done.damaged.json").read_text() == "{garbage"                   # ... the bad record kept aside


def test_a_missing_cache_file_reruns_the_data_stage_and_everything_after(tmp_path):
    rp = toy_run(tmp_path/"r")
    (rp.cache/"train.npy").unlink()
    rows = _plan(rp.root)
    assert [r["action"] for r in rows] == ["run"] * 7 and rows[0]["status"] == "damaged"
    text = format_plan(rows, rp.root)
    assert "[1/7] 01_data                   rerun (damaged: data/cache/train.npy is missing)" in text, text
    assert "after 01_data" in text.splitlines()[4], text                              # why a finished 04 runs too
    params = load_json(rp.data/"done.json")["params"]
    assert prepare_stage(rp.data, params) == "resume"                           # the data stage does not skip itself
    assert (rp.data/"done.damaged.json").exists() and not is_done(rp.data)


def test_a_truncated_model_reruns_its_stage_and_those_after(tmp_path):
    rp = toy_run(tmp_path/"r")
    f = rp.model("phase1")/"model.safetensors"; f.write_bytes(f.read_bytes()[:1000])
    rows = _plan(rp.root)
    assert [r["action"] for r in rows] == ["skip"] * 3 + ["run"] * 4
    assert rows[3]["status"] == "damaged"
    assert rows[3]["damaged"] == [f"phase1/model/model.safetensors is damaged (1000 bytes, recorded {3 << 20})"]
    same = rp.model("phase2")/"model.safetensors"
    b = bytearray(same.read_bytes()); b[10] ^= 1; same.write_bytes(bytes(b))                    # one bit, the same size
    assert verify_stage(rp.phase2) == ["phase2/model/model.safetensors is damaged (its content changed)"]
    big = rp.cache/"valid.npy"
    b = bytearray(big.read_bytes()); b[-5] ^= 1; big.write_bytes(bytes(b))                     # in the last block
    assert verify_stage(rp.data) == ["data/cache/valid.npy is damaged (its content changed)"]
    assert prepare_stage(rp.phase1, load_json(rp.phase1/"done.json")["params"]) == "resume"
    m = rp.model("phase1")
    assert (m/"model.safetensors.damaged").exists() and not (m/"model.safetensors").exists()   # kept, not reused


# phase 2: nothing finished moves until the new work succeeded

def _phase2_run(rd, epochs=2):
    "A run with a finished phase 2 of `epochs` epochs (by hand: checkpoints, model, conv cache, record), evaluated."
    from babycry.phase2 import phase2_params, phase2_speed
    rp = RunPaths(rd)
    mark_done(rp.class_removal, dict(remove_classes=["hungry"]))
    ck = rp.phase2/"checkpoints"/"checkpoint-6"; ck.mkdir(parents=True)
    save_json(dict(best_model_checkpoint=str(ck), epoch=epochs), ck/"trainer_state.json")
    _model(rp.model("phase2"), 4000)
    save_json({"epochs": [{"epoch": e} for e in range(1, epochs + 1)]}, rp.history("phase2"))
    (rp.phase2/"conv_features").mkdir(); np.save(rp.phase2/"conv_features"/"train.npy", np.zeros((3, 4), np.float32))
    params = phase2_params(*phase2_speed(make_config(Phase2Config, epochs=epochs)))
    mark_done(rp.phase2, params, result=dict(best_checkpoint=str(ck), epochs_run=epochs))
    _evaluated(rp)
    return rp


def _tree(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


@pytest.mark.parametrize("how", [dict(epochs=4), dict(epochs=2, overwrite=True),
                                 dict(epochs=3, overwrite=True, lr_scale=2.0)])
def test_a_failing_phase2_leaves_the_finished_one_as_it_was(tmp_path, monkeypatch, how):
    "More epochs (the continue path) or overwrite=True, and training fails: phase2/ is untouched, nothing is set aside."
    import babycry.phase2 as p2
    rp = _phase2_run(tmp_path/"r"); before = _tree(rp.phase2)
    def boom(fn, n, **kw): raise RuntimeError("training failed")
    monkeypatch.setattr(p2, "run_ranks", boom)
    with pytest.raises(RuntimeError, match="training failed"): p2.run_phase2(rp.root, **how)
    assert _tree(rp.phase2) == before
    assert not list(rp.root.glob("phase2.old-*")) and not list(rp.phase2.glob("*upto*"))
    assert verify_stage(rp.phase2) == [] and "no longer exists" not in summary(rp.root)


def test_a_phase2_extension_that_succeeds_keeps_the_first_run(tmp_path, monkeypatch):
    "The continue path, done: the first run's checkpoints and record as *.upto<N>, every recorded path inside phase2/."
    import babycry.phase2 as p2
    rp = _phase2_run(tmp_path/"r")
    def train(fn, n, run_dir, cfg, warmup_epochs, stage):
        work = Path(stage)
        assert work != rp.phase2 and (work/"conv_features"/"train.npy").exists()    # the cache: reused, not recomputed
        assert load_json(work/"extend.json")["resume_from"] == str(rp.phase2/"checkpoints"/"checkpoint-6")
        assert (rp.phase2/"done.json").exists() and (rp.phase2/"checkpoints").is_dir()  # the finished run: in place
        ck = work/"checkpoints"/"checkpoint-12"; ck.mkdir(parents=True)
        save_json(dict(best_model_checkpoint=str(ck)), ck/"trainer_state.json")
        _model(work/"model", 4000, seed=3); save_json(dict(best_checkpoint=str(ck)), work/"history.json")
        return dict(best_checkpoint=str(ck), epochs_run=4)
    monkeypatch.setattr(p2, "run_ranks", train)
    res = p2.run_phase2(rp.root, epochs=4)
    done = load_json(rp.phase2/"done.json")
    assert done["params"]["epochs"] == 4 and res["best_checkpoint"] == str(rp.phase2/"checkpoints"/"checkpoint-12")
    first = rp.phase2/"checkpoints.upto2"/"checkpoint-6"
    assert first.is_dir() and load_json(rp.phase2/"done.upto2.json")["params"]["epochs"] == 2
    assert load_json(first/"trainer_state.json")["best_model_checkpoint"] == str(first)
    assert load_json(rp.phase2/"history.json")["best_checkpoint"] == str(rp.phase2/"checkpoints"/"checkpoint-12")
    assert not (rp.root/"phase2.next").exists() and verify_stage(rp.phase2) == []
    assert [p.name[:11] for p in rp.root.glob("phase2.old-*")] == ["phase2.old-"]         # the first run's model, kept


# all checks first

def _corpus(root, classes=("belly_pain", "hungry", "tired"), sources=3) -> Path:
    "A tiny corpus: `sources` recording sources (sub-folders) per class, one short WAV each."
    for c in classes:
        for s in range(sources):
            p = root/c/f"baby{s}"/"cry.wav"; p.parent.mkdir(parents=True)
            sf.write(p, np.random.default_rng(s).normal(0, .1, 8000).astype("float32"), 16000)
    return root


def test_processes_that_do_not_split_the_batch_fail_in_the_plan(tmp_path):
    rc, out, err = _run_main(["--demo", "--runs", str(tmp_path), "--nproc", "3", "--dry-run"])
    assert rc == 2 and "04_phase1: batch_size=8 does not split evenly over 3 processes" in err, err
    assert "[1/7]" not in out                                                      # refused before the plan is shown


def test_settings_out_of_range_or_not_finite_fail_in_the_plan(tmp_path):
    for p, why in [(["phase2.lr_scale", "inf"], "06_phase2.lr_scale=inf is not allowed: it must be a finite number"),
                   (["workers", "0"], "01_data.workers=0 is not allowed: it must be a whole number >= 1"),
                   (["data.workers", "nan"], "01_data.workers=nan is not allowed")]:
        rc, _, err = _run_main(["--demo", "--runs", str(tmp_path), "--dry-run", "-p", *p])
        assert rc == 2 and why in err, (p, err)


def test_the_plan_says_what_overwrite_does(tmp_path):
    rp = toy_run(tmp_path/"r")
    rows = _plan(rp.root, {"data_dir": None, "backbone": "tiny", "phase2.overwrite": True})
    line = format_plan(rows, rp.root).splitlines()[6]
    assert "06_phase2" in line, line
    assert "overwrite=True: the finished phase2 is kept as phase2.old-<time> once the new one is done" in line, line


def test_an_evaluation_that_would_refuse_the_retrained_model_is_said_first(tmp_path):
    "Phase 2 trained again after its evaluation: 07 would stop after the training (needs overwrite); the plan says so."
    from babycry.plan import check_plan
    rp, p = toy_run(tmp_path/"r"), {"data_dir": None, "backbone": "tiny", "phase2.epochs": 10}
    with pytest.raises(ValueError, match=r"07_evaluation is finished, and this run makes what it evaluated again") as e:
        check_plan(_plan(rp.root, p))
    assert "(06_phase2)" in str(e.value) and "-p evaluation.overwrite True" in str(e.value)
    assert len(check_plan(_plan(rp.root, {**p, "evaluation.overwrite": True}))) == 7
    assert len(check_plan(_plan(rp.root, {"data_dir": None, "backbone": "tiny", "phase1.lr": 0.5}))) == 7  # phase2 kept


def test_folds_beyond_the_demo_sources_fail_before_anything_runs(tmp_path, monkeypatch):
    def ran(*a, **k): raise AssertionError("a stage ran")
    monkeypatch.setattr(run_mod, "run_pipeline", ran)
    rc, out, err = _run_main(["--demo", "--runs", str(tmp_path), "--name", "f", "--folds", "1000"])
    want = r"1000-fold cross-validation needs at least 1000 recording sources, the corpus has \d\d "
    assert rc == 2 and re.search(want, err), err
    assert "[1/" not in out and not (tmp_path/"f").exists()
    corpus = _corpus(tmp_path/"corpus")
    rc, _, err = _run_main(["--data-dir", str(corpus), "--runs", str(tmp_path), "--folds", "12", "--dry-run"])
    assert rc == 2 and "needs at least 12 recording sources, the corpus has 9" in err and "fewer folds" in err, err


def test_a_class_with_too_few_sources_for_the_folds_fails_before_decoding(tmp_path):
    "A class with two sources: a fold holds one, and the other cannot be both a train and a valid source (found late)."
    corpus = _corpus(tmp_path/"corpus")
    rc, _, err = _run_main(["--data-dir", str(corpus), "--runs", str(tmp_path), "--folds", "3", "--dry-run"])
    assert rc == 0, err                                                             # tired: 3 sources, 3 folds: enough
    shutil.rmtree(corpus/"tired"/"baby2")
    rc, _, err = _run_main(["--data-dir", str(corpus), "--runs", str(tmp_path), "--folds", "3", "--dry-run"])
    assert rc == 2 and "3-fold cross-validation needs at least 3 recording sources of each class" in err, err
    assert "'tired' has 2" in err and "--folds 0" in err, err


def test_class_removal_that_would_leave_one_class_fails_before_decoding(tmp_path, monkeypatch):
    "A corpus of only hungry and tired: the recipe removes hungry, leaving one class (found after 355 s, before)."
    corpus = _corpus(tmp_path/"corpus", ("hungry", "tired"))
    rc, out, err = _run_main(["--data-dir", str(corpus), "--runs", str(tmp_path), "--dry-run"])
    assert rc == 2 and "would leave ['tired']" in err and '-p class_removal.remove_classes ""' in err, err
    dry = ["--data-dir", str(corpus), "--runs", str(tmp_path), "--dry-run", "-p", "class_removal.remove_classes"]
    assert _run_main(dry + [""])[0] == 0
    rc, _, err = _run_main(dry + ["hungy"])
    assert rc == 2 and "'hungy' is not a class name" in err, err


def test_a_garbage_pipeline_json_is_named(tmp_path):
    rd = tmp_path/"r"; rd.mkdir(); (rd/"pipeline.json").write_text("{'demo': True}")
    rc, _, err = _run_main(["--run-dir", str(rd), "--dry-run"])
    assert rc == 2 and f"{rd/'pipeline.json'} is not valid JSON" in err, err


class _NoKernel:
    def __init__(self, *a, **k): pass
    def __enter__(self): return self
    def __exit__(self, *e): return False


def test_a_failed_parameter_is_not_kept_and_an_overwritten_stage_comes_back(tmp_path, monkeypatch):
    "The stage a new -p reaches fails: pipeline.json keeps the run's earlier settings, the finished stage is put back."
    corpus = _corpus(tmp_path/"corpus"); rd = tmp_path/"r"; rp = RunPaths(rd)
    def stage(nb, params, run_dir, nbs, *a):                      # stand-ins for the notebooks
        d = RunPaths(run_dir)
        if nb == "04_phase1" and params.get("overwrite"):
            assert prepare_stage(d.phase1, dict(lr=params["lr"]), overwrite=True) == "fresh"
            (d.phase1/"partial.txt").write_text("half")
            raise StageFailed("stage 04_phase1 failed: NonFiniteError: phase1 stopped in epoch 1")
        if nb == "04_phase1":
            d.phase1.mkdir(parents=True, exist_ok=True); (d.phase1/"w.bin").write_bytes(b"1")
            mark_done(d.phase1, dict(lr=None))
        record_stage(run_dir, nb, params, 0.1); return 0.1
    monkeypatch.setattr(run_mod, "run_stage", stage); monkeypatch.setattr(run_mod, "StageKernel", _NoKernel)
    assert _run_main(["--data-dir", str(corpus), "--run-dir", str(rd), "-p", "backbone", "tiny"])[0] == 0
    before, finished = load_json(rp.pipeline_json), _tree(rp.phase1)
    rc, _, err = _run_main(["--run-dir", str(rd), "-p", "phase1.lr", "10", "-p", "phase1.overwrite", "True",
                            "-p", "eval.seed", "3"])
    assert rc == 1 and "stage 04_phase1 failed" in err
    kept = load_json(rp.pipeline_json)
    assert kept["parameters"] == before["parameters"] + [["eval.seed", "3"]], kept     # the failed stage's: not kept
    assert "not kept in pipeline.json: -p phase1.lr 10 -p phase1.overwrite True" in err, err
    assert _tree(rp.phase1) == finished                                                 # the finished phase 1, back
    assert len(list(rd.glob("phase1.failed-*"))) == 1 and not list(rd.glob("phase1.old-*"))
    assert "the finished phase1 was put back" in err, err
    assert _run_main(["--run-dir", str(rd), "-p", "eval.overwrite", "True"])[0] == 0            # it succeeds: acts once
    kept = load_json(rp.pipeline_json)
    assert ["eval.overwrite", "True"] not in kept["parameters"]
    assert kept["changes"][-1]["parameters"] == [["eval.overwrite", "True"]]


def test_prepare_stage_puts_a_set_aside_stage_back_when_asked_for_it_again(tmp_path):
    s = tmp_path/"phase1"
    mark_done(s, {"lr": 1e-4}); first = load_json(s/"done.json")
    assert prepare_stage(s, {"lr": 1e-3}, overwrite=True) == "fresh"          # set aside; the new run never finishes
    (s/"half.bin").write_bytes(b"x")
    assert prepare_stage(s, {"lr": 1e-4}) == "skip" and load_json(s/"done.json") == first   # asked for as it was: back
    assert prepare_stage(s, {"lr": 1e-3}, overwrite=True) == "fresh"
    mark_done(s, {"lr": 1e-3})                                          # this time it finishes: the old one stays kept
    assert prepare_stage(s, {"lr": 1e-4}, overwrite=True) == "fresh" and len(list(tmp_path.glob("phase1.old-*"))) == 2


def test_a_damaged_fold_stage_reruns_that_fold_and_the_gathering(tmp_path):
    "Cross-validated: fold 1's phase 1 lost a file; fold 0 stays finished, fold 1 runs from 04, then the gathering."
    rd, params = tmp_path/"cv", {"data_dir": None, "backbone": "tiny", "folds": 2}
    rp = RunPaths(rd); mark_done(rp.data, dict(folds=2)); mark_done(rp.cv, {})
    for k in (0, 1):
        for d in ("data", "phase1", "class_removal", "phase2", "eval"):
            s = rp.fold(k).stage(d); s.mkdir(parents=True); (s/"w.bin").write_bytes(b"w"); mark_done(s, dict(fold=k))
    _record_notebooks(rd, params)
    assert [r["action"] for r in _plan(rd, params)] == ["skip"] * 14
    (rp.fold(1).phase1/"w.bin").unlink()
    rows = _plan(rd, params)
    assert [r["action"] for r in rows] == ["skip"] * 9 + ["run"] * 5
    assert (rows[9]["fold"], rows[9]["status"], rows[9]["damaged"]) == (1, "damaged", ["phase1/w.bin is missing"])


# a moved or copied run is the same run

def test_a_moved_run_resumes_and_reports_its_own_files(tmp_path):
    a = toy_run(tmp_path/"a"/"run"); b = tmp_path/"b"/"copy"
    shutil.copytree(a.root, b)
    rows = _plan(b)
    assert [r["action"] for r in rows] == ["skip"] * 7, format_plan(rows, b)
    assert rows[3]["params"]["run_dir"] == str(b.resolve())
    rb = RunPaths(b)
    assert prepare_stage(rb.data, dict(seed=42, folds=0, data_dir=str((b/"demo_corpus").resolve()))) == "skip"
    assert rb.done("phase1")["result"]["best_checkpoint"] == str((b/"phase1/checkpoints/checkpoint-4").resolve())
    assert load_json(rb.phase1/"done.json")["files"]["model/model.safetensors"]["size"] == 3 << 20   # relative path
    text = summary(b)
    assert str(a.root.resolve()) not in text and f"model:        {(b/'phase2'/'model').resolve()}" in text, text


def test_one_real_evaluation_writes_paths_relative_to_the_run(tmp_path):
    "Phase 1 (tiny backbone, one epoch), its evaluation, a copy of the run that reports its own model; then damaged."
    from babycry.phase1 import run_phase1
    from babycry.evaluate import run_evaluation
    rd = tmp_path/"a"/"run"; make_fake_cache(rd); save_json({}, RunPaths(rd).audit)
    mark_done(RunPaths(rd).data, dict(seed=0))
    run_phase1(rd, backbone="tiny", epochs=1, patience=1)
    run_evaluation(rd, n_bootstrap=10)
    m = load_json(RunPaths(rd).metrics)
    assert (m["model_dir"], m["model_card"]) == ("phase1/model", "phase1/model/README.md")
    b = tmp_path/"b"; shutil.copytree(rd, b)
    assert verify_stage(RunPaths(b).phase1) == [] and verify_stage(RunPaths(b).eval) == []
    text = summary(b)
    assert f"model:        {(b/'phase1'/'model').resolve()}" in text and str(rd) not in text, text
    f = RunPaths(b).model("phase1")/"model.safetensors"; f.write_bytes(f.read_bytes()[:1000])   # phase 1 runs again
    run_phase1(b, backbone="tiny", epochs=1, patience=1)                                  # resumed from its checkpoint
    assert verify_stage(RunPaths(b).phase1) == [] and (RunPaths(b).phase1/"done.damaged.json").exists()
