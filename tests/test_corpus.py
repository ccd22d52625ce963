"""Issue 23: any cry corpus, any label set; labels and recording sources the way real corpora come. One test per rule,
each on a small synthetic corpus from babycry.demo."""
import contextlib, io, shutil, warnings
from pathlib import Path

import pandas as pd, pytest

from babycry.core import load_json
from babycry.corpus import corpus_classes, discover, walk_files
from babycry.audit import source_report
from babycry.data import check_corpus, run_data_stage
from babycry.demo import make_long_recording_corpus, make_metadata_corpus, make_published_dac, make_windowed_corpus
from babycry.rundir import RunPaths
from babycry.run import main


def _quiet(f, *a, **k):
    "`f(*a, **k)` and what it printed."
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore"); r = f(*a, **k)
    return r, out.getvalue()


def _run_main(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def test_any_label_set_with_windowed_names(tmp_path):
    "Four non-recipe class folders of numbered windows: four classes, one source per recording, never split apart."
    src = make_windowed_corpus(tmp_path/"w", recordings=4, windows=3)
    files = discover(src)
    assert corpus_classes(files.label) == ["crying_baby", "fuss", "laugh", "other"]
    assert files.groupby("label").group.nunique().tolist() == [4] * 4               # 4 recordings, not 12 files
    assert set(files.source_rule) == {"window"}
    s, out = _quiet(run_data_stage, src, tmp_path/"run", workers=1)
    assert "301 - Crying baby" in out and "crying_baby" in out                       # the folder -> label table
    rp = RunPaths(tmp_path/"run")
    man = pd.read_csv(rp.manifest, keep_default_na=False)
    assert load_json(rp.labels)["classes"] == ["crying_baby", "fuss", "laugh", "other"] == s["classes"]
    ok = man[man.status == "ok"]
    assert (ok.groupby("group").split.nunique() == 1).all() and len(ok) == 48       # no recording on two sides
    assert load_json(rp.audit)["source_warnings"] == []
    rc, _, err = _run_main(["--data-dir", str(src), "--runs", str(tmp_path), "--folds", "3", "--dry-run"])
    assert rc == 0, err                                                              # nothing to remove: no hungry here
    dry = ["--data-dir", str(src), "--runs", str(tmp_path), "--dry-run", "-p", "class_removal.remove_classes"]
    assert _run_main(dry + ["Laugh"])[0] == 0                                        # a class of this corpus, any spelling
    rc, _, err = _run_main(dry + ["cat"])
    assert rc == 2 and "'cat' is not a class name" in err and "crying_baby, fuss, laugh, other" in err, err


def test_metadata_csv_wins_and_a_given_split_is_used_or_refused(tmp_path):
    "metadata.csv gives labels, sources and the split; split_from='given' uses it, and refuses one that leaks."
    src = make_metadata_corpus(tmp_path/"m")
    files = discover(src)
    assert set(files.label) == {"asphyxia", "normal", "pain"} and set(files.label_from) == {"metadata"}
    assert files.group.nunique() == 12                                               # not 36 files, not the folder
    s, _ = _quiet(run_data_stage, src, tmp_path/"run", workers=1, split_from="given")
    man = pd.read_csv(RunPaths(tmp_path/"run").manifest, keep_default_na=False)
    meta = pd.read_csv(src/"metadata.csv")
    given = dict(zip(meta.file_name.map(lambda n: str((src/n).resolve())), meta.split))
    ok = man[man.status == "ok"]
    assert (ok.split == ok.path.map(given)).all()
    leaky = make_metadata_corpus(tmp_path/"leaky", leak=True)
    with pytest.raises(ValueError, match=r"given split puts 1 recording source\(s\) on more than one side"):
        check_corpus(leaky, split_from="given")
    assert len(check_corpus(leaky)) == 36                                            # babycry's own split is fine
    with pytest.raises(ValueError, match="needs a fold column"):
        check_corpus(src, split_from="given", folds=3)


def test_the_published_donateacry_layout_is_read_from_its_tags(tmp_path):
    "The upload folders do not hide the tags: every file accounted for, pointed at the root or at one upload folder."
    src = make_published_dac(tmp_path/"dac")
    files = discover(src)
    assert len(files) == len(list(walk_files(src))) == 22 and set(files.label_from) == {"tag"}
    assert corpus_classes(files.label) == ["belly_pain", "hungry", "tired"]          # dk: unknown; lonely: no class
    one = discover(src/"donateacry-ios-upload-bucket")
    assert set(one.label) == {"hungry", "belly_pain", "tired", "unknown"} and set(one.label_from) == {"tag"}
    s, _ = _quiet(run_data_stage, src, tmp_path/"run", workers=1, split="0.5,0.5,0")
    man = pd.read_csv(RunPaths(tmp_path/"run").manifest, keep_default_na=False)
    assert s["classes"] == ["belly_pain", "hungry", "tired"]
    assert man.status.value_counts().to_dict() == {"ok": 18, "not_a_class": 4}       # the .3gp and .caf files decode
    assert man.groupby("group").split.nunique().max() == 1


def test_one_long_recording_cut_into_windows_is_one_source(tmp_path):
    "A class recorded once and cut into windows is refused by name with the options; dropping it is one of them."
    src = make_long_recording_corpus(tmp_path/"long", windows=12)
    files = discover(src)
    assert files[files.label == "noise"].group.nunique() == 1
    with pytest.raises(ValueError, match=r"'noise' has 1, but every class needs 3 \(one per split\)") as e:
        check_corpus(src)
    assert "-p data.drop_classes noise" in str(e.value) and "add recordings" in str(e.value)
    rc, _, err = _run_main(["--data-dir", str(src), "--runs", str(tmp_path), "--folds", "3", "--dry-run"])
    assert rc == 2 and "'noise' has 1" in err and "fewer folds" in err, err
    assert sorted(set(check_corpus(src, drop_classes="noise").label)) == ["cry", "laugh", "noise"]
    warn = source_report(files)["source_warnings"]
    assert len(warn) == 1 and "holds 12 of the 12 clips of 'noise'" in warn[0]


def test_given_folds_are_used_as_the_folds(tmp_path):
    "A fold column (here: one baby of each class per fold) with --folds K: the manifest's folds are the given ones."
    src = make_metadata_corpus(tmp_path/"m", clips=2)
    meta = pd.read_csv(src/"metadata.csv")
    meta["fold"] = meta.group.str[-1].astype(int) + 10                                # folds 10..13
    meta.drop(columns="split").to_csv(src/"metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"gives 4 folds \[10, 11, 12, 13\], not 5: use --folds 4"):
        check_corpus(src, split_from="given", folds=5)
    _quiet(run_data_stage, src, tmp_path/"run", workers=1, split_from="given", folds=4)
    man = pd.read_csv(RunPaths(tmp_path/"run").manifest, keep_default_na=False)
    want = dict(zip(meta.file_name.map(lambda n: str((src/n).resolve())), meta.fold - 10))
    assert (man.fold == man.path.map(want)).all()
    for k in range(4):                                                               # each fold's test split is that fold
        f = pd.read_csv(RunPaths(tmp_path/"run").fold(k).manifest, keep_default_na=False)
        assert set(f.path[f.split == "test"]) == {p for p, v in want.items() if v == k}
