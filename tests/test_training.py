"The training recipe on the demo corpus with the tiny backbone: the test split is never read, runs resume and extend."
import os, shutil
from pathlib import Path

import numpy as np, pandas as pd, pytest, torch

from babycry.core import load_json
from babycry.rundir import RunPaths, is_done
from babycry.data import run_data_stage
from babycry.phase1 import run_phase1
from babycry.class_removal import run_class_removal
from babycry import phase2 as p2
from babycry.phase2 import run_phase2
from babycry.dataset import CachedClips, LabelEncoder, collate_clips
from babycry.model import BabyCryForAudioClassification


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A run directory with the data stage done and the test cache replaced by something unreadable."
    rd = tmp_path_factory.mktemp("runs")/"train"
    run_data_stage(None, rd, seed=0)
    rp = RunPaths(rd)
    for ext in ("npy",):
        (rp.cache/f"test.{ext}").rename(rp.cache/f"test.{ext}.hidden")
        (rp.cache/f"test.{ext}").write_bytes(b"the training stages must never open the test audio")
        os.chmod(rp.cache/f"test.{ext}", 0)
    return rd


def test_phase1_cache_backbone_never_reads_test(run):
    res = run_phase1(run, backbone="tiny", epochs=4, patience=3)
    rp = RunPaths(run)
    assert is_done(rp.phase1) and (rp.model("phase1")/"config.json").exists()
    h = load_json(rp.history("phase1"))
    assert 1 <= len(h["epochs"]) <= 4 and {"train_loss", "eval_loss", "eval_macro_f1", "lr"} <= set(h["epochs"][-1])
    assert (rp.phase1/"training_curves.png").exists() and (rp.phase1/"valid_confusion.png").exists()
    assert res["precision"] == "fp32"
    # the same command again has nothing to do, and returns the same record it returned when it trained
    before = (rp.phase1/"done.json").stat().st_mtime_ns
    assert run_phase1(run, backbone="tiny", epochs=4, patience=3) == load_json(rp.phase1/"done.json")["result"]
    assert (rp.phase1/"done.json").stat().st_mtime_ns == before


def test_class_removal(run):
    res = run_class_removal(run, remove_classes="hungry")
    assert "hungry" not in res["classes"] and len(res["classes"]) == 6
    rows = pd.read_csv(RunPaths(run).class_removal/"train.csv")
    assert "hungry" not in set(rows.label) and "index" in rows
    with pytest.raises(ValueError, match="'hungy' is not a class name"):
        run_class_removal(run, overwrite=True, remove_classes="hungy")


def test_phase2_resumes_after_interruption_and_extends(run, monkeypatch):
    rp = RunPaths(run)
    # a Kaggle session that dies after the second epoch
    orig = p2.fit.__globals__["HistoryCallback"].on_evaluate
    def dying(self, args, state, control, **kw):
        orig(self, args, state, control, **kw)
        if round(state.epoch) == 2: raise KeyboardInterrupt("session died")
    monkeypatch.setattr(p2.fit.__globals__["HistoryCallback"], "on_evaluate", dying)
    with pytest.raises(KeyboardInterrupt):
        run_phase2(run, epochs=3, patience=5)
    monkeypatch.undo()
    assert not is_done(rp.phase2) and list((rp.phase2/"checkpoints").glob("checkpoint-*"))
    # the same command resumes from the last checkpoint instead of starting over
    res = run_phase2(run, epochs=3, patience=5)
    h = load_json(rp.history("phase2"))
    assert [r["epoch"] for r in h["epochs"]] == [1, 2, 3]
    assert is_done(rp.phase2) and res["epochs_run"] == 3
    # it trained from the conv encoder's output, computed once for the train and validation clips (fp32 on a CPU)
    assert load_json(rp.phase2/"done.json")["params"]["cache_encoder"] is True and res["conv_encoder"] == "cached"
    for split in ("train", "valid"):
        conv = np.load(rp.phase2/"conv_features"/f"{split}.npy", mmap_mode="r")
        assert conv.dtype == np.float32 and len(conv) == len(pd.read_csv(rp.class_removal/f"{split}.csv"))
    assert not (rp.phase2/"conv_features"/"test.npy").exists()
    # more epochs later: continue from the best checkpoint, keep the first run's files
    res2 = run_phase2(run, epochs=5)
    assert (rp.phase2/"checkpoints.upto3").is_dir() and (rp.phase2/"done.upto3.json").exists()
    assert load_json(rp.phase2/"done.json")["params"]["patience"] == 10
    h2 = load_json(rp.history("phase2"))
    assert h2["epochs"][-1]["epoch"] <= 5 and h2["epochs"][-1]["epoch"] > res["best_epoch"]
    assert (rp.model("phase2")/"config.json").exists()


def test_non_finite_training_stops_and_is_not_marked_done(run, tmp_path):
    "A NaN clip in the training cache: phase 1 stops with an error naming the phase and the epoch, and is not done."
    bad = tmp_path/"nan-run"
    shutil.copytree(run, bad, ignore=shutil.ignore_patterns("phase1", "phase2", "class_removal", "test.*"))
    x = np.load(RunPaths(bad).cache/"train.npy"); x[0, :100] = np.nan; np.save(RunPaths(bad).cache/"train.npy", x)
    with pytest.raises(FloatingPointError, match=r"phase1 stopped in epoch 1: .* is NaN or infinite"):
        run_phase1(bad, backbone="tiny", epochs=2, patience=3)
    assert not is_done(RunPaths(bad).phase1)


def test_phase2_saved_model_takes_waveforms(run):
    "The saved phase-2 model is the full model: on raw waveforms it gives the probabilities the cached path computed."
    rp = RunPaths(run)
    model = BabyCryForAudioClassification.from_pretrained(rp.model("phase2")).eval()
    enc = LabelEncoder.load(rp.phase2/"labels.json")
    ds = CachedClips(run, "valid", enc, rows=pd.read_csv(rp.class_removal/"valid.csv"))
    x = collate_clips([ds[i] for i in range(len(ds))])["input_values"]
    with torch.no_grad(): probs = model(x).logits.softmax(-1).numpy()
    saved = pd.read_csv(rp.phase2/"valid_predictions.csv")[[f"p_{c}" for c in enc.classes]].to_numpy()
    np.testing.assert_allclose(probs, saved, atol=1e-5)


def test_phase2_without_the_cache(run):
    res = run_phase2(run, epochs=1, cache_encoder=False, overwrite=True)
    rp = RunPaths(run)
    assert res["conv_encoder"] == "run every step (cache_encoder=False)" and not (rp.phase2/"conv_features").exists()
    assert load_json(rp.phase2/"done.json")["params"]["cache_encoder"] is False


def test_a_recipe_default_reaches_phase2(run, monkeypatch):
    "Editing a default in Phase2Config (here T_0) changes a phase 2 that has not run yet; one that ran keeps what it used."
    import dataclasses, shutil
    from babycry.config import Phase2Config, setting
    @dataclasses.dataclass
    class Edited(Phase2Config):
        T_0: int = setting(2, "epochs to the first warm restart", ge=1)
    rp = RunPaths(run)
    run_phase2(run, epochs=1, cache_encoder=False)                                  # finished earlier with these: skipped
    assert load_json(rp.phase2/"done.json")["params"]["T_0"] == 5
    monkeypatch.setattr(p2, "Phase2Config", Edited)                                # the edit: phase 2 reads it from config
    before = (rp.phase2/"done.json").stat().st_mtime_ns
    run_phase2(run, epochs=1, cache_encoder=False)                                  # None: what this run used (5)
    assert (rp.phase2/"done.json").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match=r"changed: \['T_0'\]"):             # never silently "already done"
        run_phase2(run, epochs=1, cache_encoder=False, T_0=3)
    shutil.move(rp.phase2, rp.root/"phase2.moved")                                  # a run whose phase 2 has not run yet
    run_phase2(run, epochs=1, cache_encoder=False)
    assert load_json(rp.phase2/"done.json")["params"]["T_0"] == 2                    # the edited recipe
