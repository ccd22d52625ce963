"Phases 1 and 2 in two processes (torchrun, DDP over gloo on the CPU) on the demo corpus with the tiny backbone."
import json, os, sys, time
from pathlib import Path

import pandas as pd, pytest

from babycry.core import load_json
from babycry.rundir import RunPaths
from babycry.data import run_data_stage
from babycry.phase1 import run_phase1
from babycry.launch import run_ranks, epoch_steps, RankFailed
from babycry.class_removal import run_class_removal
from babycry.phase2 import run_phase2
from babycry.evaluate import run_evaluation
from babycry.dataset import CachedClips, LabelEncoder

TESTS = Path(__file__).resolve().parent

# Loaded by every Python process that starts with this folder on PYTHONPATH: in the training processes (RANK set) it
# logs each file under the run directory that Python code opens for writing or renames into place (json, csv, png,
# npy, and the final rename of every atomic write) to <log dir>/rank<RANK>.txt. torch.save and safetensors write from
# C++ and are not seen. It opens one file of its own under the log dir to show that the hook works in that process.
SITECUSTOMIZE = '''
import os, sys
_run, _log, _rank = os.environ.get("AUDIT_RUN_DIR"), os.environ.get("AUDIT_LOG_DIR"), os.environ.get("RANK")
if _run and _log and _rank is not None:
    _out = open(os.path.join(_log, f"rank{_rank}.txt"), "a", buffering=1)
    def _hook(event, args):
        if event == "open":
            path, mode, flags = (list(args) + [None, None])[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        elif event in ("os.rename", "os.replace"): path, writes = args[1], True
        else: return
        if writes and isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith((_run, _log)): _out.write(os.fsdecode(path) + "\\n")
    sys.addaudithook(_hook)
    open(os.path.join(_log, f"selftest-{_rank}"), "w").close()
'''


def _train_clips(rp, phase):
    "The training clips of `phase`."
    if phase == "phase1": return CachedClips(rp.root, "train", LabelEncoder.load(rp.labels))
    return pd.read_csv(rp.class_removal/"train.csv")


def _rank_writes(log_dir, run_dir):
    "{rank: set of paths it wrote (relative to the run, or the log dir for the hook's self-test)}."
    rel = lambda l: str(Path(l).relative_to(run_dir if l.startswith(str(run_dir)) else log_dir))
    return {int(p.stem[4:]): {rel(l) for l in p.read_text().split()} for p in Path(log_dir).glob("rank*.txt")}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    "The data stage, then phases 1 and 2 with nproc=2 (two epochs each) and the evaluation, with the ranks' writes logged."
    base = tmp_path_factory.mktemp("ddp")
    run, logs, site = base/"run", base/"writes", base/"site"
    logs.mkdir(); site.mkdir(); (site/"sitecustomize.py").write_text(SITECUSTOMIZE)
    run_data_stage(None, run, seed=0, balance=False)
    env = dict(AUDIT_RUN_DIR=str(run), AUDIT_LOG_DIR=str(logs),
               PYTHONPATH=os.pathsep.join([str(site), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        t0 = time.time()
        p1 = run_phase1(run, backbone="tiny", lr=1e-3, epochs=2, patience=2, nproc=2)
        run_class_removal(run)
        p2 = run_phase2(run, epochs=2, patience=2, lr_scale=20.0, nproc=2)
        seconds = time.time() - t0
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    metrics = run_evaluation(run, n_bootstrap=50)
    return dict(run=run, logs=logs, p1=p1, p2=p2, metrics=metrics, seconds=seconds)


def test_both_ranks_train_and_the_records_name_world_size_2(ddp_run):
    rp = RunPaths(ddp_run["run"])
    for phase, res in (("phase1", ddp_run["p1"]), ("phase2", ddp_run["p2"])):
        done = load_json(rp.stage(phase)/"done.json")
        assert done["result"]["world_size"] == 2 and "nproc" not in done["params"], phase
        ranks = done["result"]["ranks"]
        assert sorted(r["rank"] for r in ranks) == [0, 1], ranks
        assert all(r["clips_trained"] > 0 for r in ranks), ranks          # both processes trained
        h = load_json(rp.history(phase))
        assert h["world_size"] == 2 and len(h["epochs"]) == 2
        # the recipe's batch of 8 is split 4 + 4: an epoch has the steps of one process with a batch of 8
        n_train = len(_train_clips(rp, phase))
        assert h["epochs"][0]["step"] == epoch_steps(n_train, 8, 2) == -(-n_train // 8), (h["epochs"][0], n_train)
        assert (rp.model(phase)/"config.json").exists() and (rp.stage(phase)/"training_curves.png").exists()
    m = ddp_run["metrics"]
    assert m["model"] == "phase2" and m["test"]["n"] > 0 and (rp.eval/"metrics.json").exists()


def test_only_rank_0_writes_run_files(ddp_run):
    writes = _rank_writes(ddp_run["logs"], ddp_run["run"])
    assert set(writes) == {0, 1} and "selftest-0" in writes[0] and "selftest-1" in writes[1], writes   # the hook ran in both
    for f in ("phase1/history.json", "phase1/valid_predictions.csv", "phase1/valid_confusion.png", "phase1/features/train.pt",
              "phase2/history.json", "phase2/training_curves.png", "phase2/conv_features/train.npy"):
        assert f in writes[0], (f, sorted(writes[0]))
    # rank 1 writes nothing there but, at most, its RNG state into each checkpoint (Trainer's, for an exact resume)
    other = {p for p in writes[1] if p != "selftest-1" and Path(p).name != "rng_state_1.pth"}
    assert not other, sorted(other)


def fail_on_rank_1(seconds: float = 300):
    "Rank 1 raises at once; rank 0 would wait for `seconds`."
    if int(os.environ["RANK"]) == 1: raise ValueError("rank 1 broke on purpose")
    time.sleep(seconds)


def test_a_failing_rank_stops_the_stage_with_its_error(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    t0 = time.time()
    with pytest.raises(RankFailed, match="rank 1 of 2 failed: ValueError: rank 1 broke on purpose"):
        run_ranks(fail_on_rank_1, 2)
    assert time.time() - t0 < 120, "the other rank was not stopped"


def sleep_on_every_rank(seconds: float = 300):
    "Every rank waits."
    time.sleep(seconds)


def test_a_killed_launcher_leaves_no_training_process(tmp_path):
    "SIGKILL to the process that called run_ranks (a kernel killed outright): torchrun and its processes stop by themselves."
    import subprocess
    psutil = pytest.importorskip("psutil")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    code = "from babycry.launch import run_ranks; import test_distributed as t; run_ranks(t.sleep_on_every_rank, 2)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ranks, t0 = [], time.time()
        while len(ranks) < 2 and time.time() - t0 < 120:
            time.sleep(0.5)
            ranks = [c for c in psutil.Process(proc.pid).children(recursive=True)
                     if "rank_main" in " ".join(c.cmdline()) and "torch.distributed.run" not in " ".join(c.cmdline())]
        assert len(ranks) == 2, "the two processes did not start"
        tree = psutil.Process(proc.pid).children(recursive=True)
    finally: proc.kill(); proc.wait()
    gone, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"still running: {[p.cmdline()[:3] for p in alive]}"
