"""babycry-push offline: the Hub API replaced by a recorder (which repo, which files, which commit message), on made-up
runs with real records and cards; the card's metadata read back by huggingface_hub as it was written."""
import json, math, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np, pandas as pd
import pytest, yaml
from huggingface_hub import ModelCard
from sklearn.metrics import accuracy_score

from babycry.card import DONATE_A_CRY_HUB_ID, write_cv_card, write_model_card
from babycry.core import load_json, save_json
from babycry.metrics import bootstrap_ci, metrics_from_probs
from babycry.publish import main
from babycry.rundir import RunPaths, mark_done

ROOT = Path(__file__).resolve().parents[1]
DAC = "0c8f14a9-6999-485b-97a2-913c1cbf099c-1431028888092-1.7-m-26-{}.wav"   # a Donate-a-Cry file name


class Recorder:
    "Stands in for huggingface_hub.HfApi: records the calls, sends nothing."
    def __init__(self): self.calls = []
    def create_repo(self, **kw):
        self.calls.append(("create_repo", kw)); return f"https://huggingface.co/{kw['repo_id']}"
    def create_commit(self, **kw):
        kw["files"] = {o.path_in_repo: o.path_or_fileobj for o in kw.pop("operations")}
        self.calls.append(("create_commit", kw)); return None
    @property
    def commit(self): return self.calls[-1][1]


def _png(path): Path(path).parent.mkdir(parents=True, exist_ok=True); Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")


def _scores(one_class=False):
    y = np.zeros(30, int) if one_class else np.arange(30) % 3
    return y, np.eye(3)[(y + (np.arange(30) % 5 == 0)) % 3] * 0.8 + 0.2 / 3


def made_up_run(root, reads=1, fold=None, folds=0, names=None, backbone="tiny", model_type="hubert", data_dir=None,
                one_class=False):
    "An evaluated phase 2 model's run: real records and card, made-up numbers, stand-in weights and figures."
    rp = RunPaths(root); y, p = _scores(one_class)
    mark_done(rp.data, dict(data_dir=str(data_dir or rp.root/"corpus"), fold=fold, folds=folds))
    names = names or [f"c{i}.wav" for i in range(30)]
    pd.DataFrame(dict(path=[f"/data/corpus/{n}" for n in names], status="ok")).to_csv(rp.manifest, index=False)
    mark_done(rp.phase1, dict(backbone=backbone)); mark_done(rp.phase2, dict(backbone=backbone))
    md = rp.model("phase2"); (md/"cpu_export.old-20260101-000000").mkdir(parents=True)
    save_json(dict(model_type="babycry", backbone_name=backbone, backbone_config=dict(model_type=model_type)), md/"config.json")
    for f in ("model.safetensors", "preprocessor_config.json", "modeling_babycry.py", "pipeline_babycry.py",
              "cpu_export.old-20260101-000000/model.onnx"): (md/f).write_text("stand-in")
    finished = rp.done("phase2")["finished"]
    save_json([dict(time=f"2026-01-0{i + 1}T00:00:00", model="phase2", model_finished=finished) for i in range(reads)],
              rp.test_reads)
    ci = {k: bootstrap_ci(y, p.argmax(1), accuracy_score, 50, 0) for k in ("accuracy", "macro_f1")}
    m = dict(model="phase2", model_dir=str(md), test=metrics_from_probs(y, p, ["a", "b", "c"]), n_groups=10,
             ci=dict(ci, resample="group", level=0.95, n_bootstrap=50), progression=[], test_reads=load_json(rp.test_reads))
    write_model_card(md, m, rp.root); save_json(m, rp.metrics)
    mark_done(rp.eval, dict(model="phase2", model_finished=finished))
    for f in ("confusion_counts.png", "roc.png"): _png(rp.eval/f)
    return rp


def made_up_cv_run(root, reads=(1, 1), exported=1):
    "A 2-fold cross-validated run: two evaluated folds, the pooled cv/metrics.json, its card, and leakage diagnostics."
    rp = RunPaths(root)
    mark_done(rp.data, dict(data_dir=str(rp.root/"corpus"), fold=None, folds=2))
    for k in (0, 1): made_up_run(rp.fold(k).root, reads=reads[k], fold=k, folds=2)
    y, p = _scores(); pooled = metrics_from_probs(np.r_[y, y], np.r_[p, p * 0 + 1 / 3], ["a", "b", "c"])
    ci = {k: bootstrap_ci(y, p.argmax(1), accuracy_score, 50, 0) for k in ("accuracy", "balanced_accuracy", "macro_f1", "ece")}
    m = dict(model="phase2", folds=2, n_clips=60, n_groups=20, pooled=pooled, ci=dict(ci, level=0.95, n_bootstrap=50,
             resample="group"), per_fold=[dict(fold=k, n=30, accuracy=0.5, balanced_accuracy=0.5, macro_f1=0.5, ece=0.1)
                                          for k in (0, 1)],
             exported=dict(fold=exported, model_dir=str(rp.fold(exported).model("phase2")), why="the best validation macro-F1"))
    write_cv_card(rp.root, m); save_json(m, rp.cv_metrics)
    mark_done(rp.cv, dict(folds=2, fold_evaluations=[rp.fold(k).done("eval")["finished"] for k in (0, 1)]))
    for f in ("confusion_counts.png", "leakage.png"): _png(rp.cv/f)
    (rp.cv/"leakage.csv").write_text("model,protocol,macro_f1\nphase1,clip,0.9\n")
    return rp


def _front_matter(path) -> dict:
    text = Path(path).read_text(); return yaml.safe_load(text[4:text.index("\n---", 4)])


def _values(obj):
    "Every leaf value of a nested dict/list."
    if isinstance(obj, dict): return [v for x in obj.values() for v in _values(x)]
    if isinstance(obj, list): return [v for x in obj for v in _values(x)]
    return [obj]


def test_card_metadata_to_the_hubs_conventions(tmp_path):
    rp = made_up_run(tmp_path/"dac", names=[DAC.format(t) for t in ("hu", "bp", "ti") * 10], one_class=True,
                     backbone="facebook/hubert-base-ls960", model_type="hubert")
    card = rp.model("phase2")/"README.md"; meta = _front_matter(card)
    assert ModelCard.load(card).data.to_dict() == meta                         # read back as it was written
    res = meta["model-index"][0]["results"][0]
    assert meta["datasets"] == [DONATE_A_CRY_HUB_ID] and res["dataset"]["type"] == DONATE_A_CRY_HUB_ID
    assert meta["base_model"] == "facebook/hubert-base-ls960" and "hubert" in meta["tags"]
    assert [m["type"] for m in res["metrics"]] == ["accuracy", "balanced_accuracy", "f1"]   # one class: no ROC-AUC
    assert meta["metrics"] == ["accuracy", "f1"]
    assert all(v is not None and not (isinstance(v, float) and not math.isfinite(v)) for v in _values(meta))
    # the demo corpus borrows Donate-a-Cry's names; a local backbone folder is no base model; another architecture
    demo = made_up_run(tmp_path/"demo", names=[DAC.format("hu")] * 30, data_dir=tmp_path/"r"/"demo_corpus",
                       backbone=str(tmp_path), model_type="wavlm")
    meta = _front_matter(demo.model("phase2")/"README.md")
    assert "datasets" not in meta and "base_model" not in meta and "wavlm" in meta["tags"] and "hubert" not in meta["tags"]
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "audiofolder"


def test_push_records_one_commit_of_the_run_model(tmp_path):
    rp = made_up_run(tmp_path/"runs"/"demo")
    moved = Path(shutil.move(rp.root, tmp_path/"moved"))                      # its records still name runs/demo
    api = Recorder()
    assert main([str(moved), "--repo-id", "me/babycry-demo"], api=api) == 0
    assert api.calls[0] == ("create_repo", dict(repo_id="me/babycry-demo", repo_type="model", private=False, exist_ok=True))
    c = api.commit
    assert c["repo_id"] == "me/babycry-demo" and c["repo_type"] == "model"
    assert sorted(c["files"]) == ["README.md", "config.json", "eval/confusion_counts.png", "eval/roc.png",
                                  "model.safetensors", "modeling_babycry.py", "pipeline_babycry.py", "preprocessor_config.json"]
    assert c["files"]["model.safetensors"] == str(moved/"phase2"/"model"/"model.safetensors")
    assert c["commit_message"] == ("babycry phase2 model: card, weights, code (modeling_babycry.py, pipeline_babycry.py) and "
                                   "2 evaluation figures")
    assert "Each test split was read once." in c["commit_description"] and "random weights" in c["commit_description"]
    api = Recorder()                                                           # another dataset id, in the pushed card only
    assert main([str(moved/"phase2"/"model"), "--repo-id", "me/x", "--dataset-id", "someone/cries"], api=api) == 0
    pushed = ModelCard(api.commit["files"]["README.md"].decode())
    assert pushed.data.datasets == ["someone/cries"] and "datasets" not in _front_matter(moved/"phase2"/"model"/"README.md")


def test_cross_validated_run_pushes_the_exported_fold_and_never_leakage_as_results(tmp_path):
    rp = made_up_cv_run(tmp_path/"cv", exported=1)
    api = Recorder()
    assert main([str(rp.root), "--repo-id", "me/cv"], api=api) == 0
    files = api.commit["files"]
    assert files["config.json"] == str(rp.fold(1).model("phase2")/"config.json")
    assert "cv/confusion_counts.png" in files and not any("leakage" in f for f in files)
    assert "cv/leakage.csv: what leaky protocols would have reported" in api.commit["commit_description"]
    values = {m["type"]: m["value"] for m in _front_matter(rp.fold(1).model("phase2")/"README.md")["model-index"][0]
              ["results"][0]["metrics"]}
    assert values["accuracy"] == round(load_json(rp.cv_metrics)["pooled"]["accuracy"], 4)     # the pooled, grouped numbers
    api = Recorder()
    assert main([str(rp.root), "--repo-id", "me/cv", "--include-leakage"], api=api) == 0
    assert {f for f in api.commit["files"] if "leakage" in f} == {"diagnostics/leakage.csv", "diagnostics/leakage.png"}
    assert main([str(rp.fold(0).model("phase2")), "--repo-id", "me/cv"], api=Recorder()) == 2    # not the exported fold
    assert main([str(rp.fold(1).model("phase2")), "--repo-id", "me/cv"], api=Recorder()) == 0


def test_refusals_send_nothing(tmp_path, capsys):
    api = Recorder()
    twice = made_up_run(tmp_path/"twice", reads=2)
    assert main([str(twice.root), "--repo-id", "me/x"], api=api) == 2
    assert "read 2 times" in capsys.readouterr().err and api.calls == []
    cv = made_up_cv_run(tmp_path/"cv", reads=(2, 1))                           # fold 0's test split read twice
    assert main([str(cv.root), "--repo-id", "me/x"], api=api) == 2 and api.calls == []
    assert main([str(cv.root), "--repo-id", "me/x", "--allow-rereads"], api=api) == 0
    assert "Test split reads: [2, 1] (published with --allow-rereads)." in api.commit["commit_description"]
    outside = Path(shutil.copytree(twice.model("phase2"), tmp_path/"copied"/"model"))   # no run records around it
    assert main([str(outside), "--repo-id", "me/x"], api=Recorder()) == 2
    assert "not inside its run" in capsys.readouterr().err
    save_json(dict(twice.done("phase2"), finished="2030-01-01T00:00:00"), twice.phase2/"done.json")   # trained again
    assert main([str(twice.root), "--repo-id", "me/x", "--allow-rereads"], api=Recorder()) == 2
    assert "trained again after its evaluation" in capsys.readouterr().err


def test_old_card_rewritten_from_the_records(tmp_path, capsys):
    rp = made_up_run(tmp_path/"old"); card = rp.model("phase2")/"README.md"
    card.write_text(card.read_text().replace("type: audiofolder", "type: audio"))     # what an older babycry wrote
    assert main([str(rp.root), "--repo-id", "me/x"], api=Recorder()) == 2
    assert "differs in model-index" in capsys.readouterr().err
    assert main([str(rp.root), "--repo-id", "me/x", "--rewrite-card"], api=Recorder()) == 0
    assert "type: audiofolder" in card.read_text() and load_json(rp.test_reads).__len__() == 1


def test_cli_in_a_fresh_process(tmp_path):
    "babycry-push as a console script starts: its imports stand on their own (dry run: no Hub call)."
    rp = made_up_run(tmp_path/"demo")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", "import sys; from babycry.publish import main; sys.exit(main())",
                          str(rp.root), "--repo-id", "me/x", "--dry-run"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "dry run: would push 8 files" in res.stdout and "pipeline_babycry.py" in res.stdout
