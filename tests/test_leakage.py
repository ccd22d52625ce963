"The leakage ladder's protocols: which clips and sources each puts on both sides of a fold, what it scores, its table."
import numpy as np, pandas as pd, pytest

from babycry.config import LadderConfig, make_config
from babycry.demo import make_toy_run
from babycry.ladder import ladder_row, oof_frame, run_ladder
from babycry.leakage import LEAKAGE_COLUMNS, protocol_pool
from babycry.rundir import RunPaths
from babycry.splits import assign_folds


def windowed(n_sources=12, windows=3, classes=("hungry", "tired")) -> pd.DataFrame:
    "A windowed corpus: each recording source cut into `windows` clips, with grouped folds as the data stage draws them."
    rows = [dict(path=f"/c/{c}_{s}_w{w}.wav", label=c, group=f"{c}-{s}", md5=f"{c}{s}{w}")
            for c in classes for s in range(n_sources) for w in range(windows)]
    df = pd.DataFrame(rows)
    return df.assign(fold=assign_folds(df, 4, 0))


def sources_on_both_sides(pool) -> int:
    return int((pool.groupby("group").fold.nunique() > 1).sum())


def test_grouped_never_splits_a_source():
    for seed in range(3):
        pool = protocol_pool(windowed(), "grouped", 4, seed, 2)
        assert sources_on_both_sides(pool) == 0 and pool.scored.all()


def test_clip_splits_sources_of_a_windowed_corpus():
    df = windowed()
    pool = protocol_pool(df, "clip", 4, 0, 2)
    assert sources_on_both_sides(pool) > df.group.nunique() // 2       # most sources' windows land in two folds or more
    assert (pool.groupby(["fold", "label"]).size().unstack().min() >= 1).all()   # still stratified by class
    assert len(pool) == len(df) and pool.scored.all()


def test_augment_first_scores_originals_and_trains_on_copies_of_test_clips():
    df = windowed()
    pool = protocol_pool(df, "augment-first", 4, 0, 4)
    assert len(pool) == 5 * len(df)
    assert pool[pool.scored].key.tolist() == df.path.tolist()            # the originals, in order, and nothing else
    assert (pool[~pool.scored].aug > 0).all() and pool[~pool.scored].key.str.contains("#aug").all()
    orig = pool[pool.aug == 0].set_index("path").fold
    cp = pool[pool.aug > 0]
    other_fold = cp.fold.to_numpy() != orig.loc[cp.path].to_numpy()
    trained = pd.Series(other_fold, index=cp.path.to_numpy()).groupby(level=0).any()
    assert trained.mean() > 0.9                                          # nearly every test clip has a copy in training


def test_constant_predictor_roc_auc_is_chance():
    df = windowed()
    classes = ["hungry", "tired"]
    y = df.label.map({c: i for i, c in enumerate(classes)})
    P = np.tile([0.7, 0.3], (len(df), 1))
    row = ladder_row(oof_frame(df, P, classes, "constant"), n_bootstrap=50, seed=0)
    assert row["roc_auc"] == pytest.approx(0.5) and row["roc_auc_low"] == pytest.approx(0.5)
    assert row["accuracy"] == pytest.approx(float((y == 0).mean()))


def test_protocols_setting_is_checked():
    assert make_config(LadderConfig, protocols="grouped,clip").protocols == ("grouped", "clip")
    with pytest.raises(ValueError, match="not leaky"): make_config(LadderConfig, "13_ladder", protocols="grouped,leaky")
    with pytest.raises(ValueError, match="holds grouped"): make_config(LadderConfig, "13_ladder", protocols="clip")


def test_leakage_table_on_a_toy_run(tmp_path):
    run = make_toy_run(tmp_path)
    run_ladder(run, rungs="majority,features+logreg", folds=3, n_trials=2, inner_folds=2, n_bootstrap=50, workers=1,
               seed=0, protocols="grouped,clip,augment-first", copies=2)
    rp = RunPaths(run)
    t = pd.read_csv(rp.leakage_csv)
    assert t.columns.tolist() == LEAKAGE_COLUMNS
    assert sorted(zip(t.protocol, t.model)) == sorted((p, m) for p in ("grouped", "clip", "augment-first")
                                                      for m in ("majority", "features+logreg"))
    assert t.set_index("protocol").leaky.groupby(level=0).all().to_dict() == {"augment-first": True, "clip": True,
                                                                              "grouped": False}
    assert set(t.n_clips) == {36} and rp.leakage_png.exists()
    assert t[t.model == "majority"].roc_auc.tolist() == pytest.approx([0.5] * 3)
    assert pd.read_csv(rp.ladder_csv).model.tolist() == ["majority", "features+logreg"]   # no leaky row in the ladder
    assert (rp.leaky_protocol("augment-first")/"oof_features_logreg.csv").exists()


def test_select_on_test_keeps_the_grouped_folds():
    df = windowed()
    pool = protocol_pool(df, "select-on-test", 4, 0, 2)
    assert pool.fold.tolist() == df.fold.tolist() and sources_on_both_sides(pool) == 0 and pool.scored.all()
