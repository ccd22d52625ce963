"""Benchmark 3, CPU inference per 3 s clip: fp32 eager PyTorch against the faster paths (torch dynamic int8, bf16
convolutions, ONNX Runtime fp32/int8, and babycry.export's artefacts, which have a dynamic time axis; the same int8
export traced with a fixed 3 s axis, as before, is timed beside it), hubert-base architecture, 2 threads, batch 1,
alternating, medians; then top-1 agreement with fp32 on the real Donate-a-Cry clips (3 s, and cut to 1 s or joined to
7 s for the export).

Usage: python benchmarks/bench_inference.py [--repeats 15] [--threads 2] [--agree-clips 134]"""
from __future__ import annotations
import argparse, contextlib, copy, io, json, shutil, sys, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *   # noqa: F401,F403
from common import WORK, SHARED_DATA

import numpy as np, pandas as pd, torch
from torch import nn

warnings.filterwarnings("ignore")
from babycry.core import CLIP_SAMPLES
from babycry.rundir import RunPaths
from babycry.data import run_data_stage
from babycry.dataset import normalize_waveforms
from babycry.model import BabyCryConfig, BabyCryForAudioClassification, save_classifier
from babycry import export as bx

LABELS6 = ["belly_pain", "burping", "cold_hot", "discomfort", "scared", "tired"]   # the phase-2 classes (hungry removed)


def hubert_base_dir(path) -> Path:
    "A saved hubert-base-architecture classifier with random weights (no hub), made once."
    path = Path(path)
    if (path/"config.json").exists(): return path
    from transformers import HubertConfig
    torch.manual_seed(0)
    m = BabyCryForAudioClassification(BabyCryConfig(HubertConfig(), head="simple", id2label=dict(enumerate(LABELS6)),
                                                    label2id={c: i for i, c in enumerate(LABELS6)}))
    tmp = path.with_name(path.name + ".partial"); shutil.rmtree(tmp, ignore_errors=True)
    save_classifier(m.eval(), tmp); tmp.rename(path)
    return path


def real_clips(run) -> np.ndarray:
    "Every clip of the real corpus's cache (train with augmented copies, valid, test), normalised, float32 [N, 48000]."
    c = RunPaths(run).cache
    return np.concatenate([normalize_waveforms(np.load(c/f"{s}.npy", mmap_mode="r")[:]).astype(np.float32)
                           for s in ("valid", "test", "train")])


def ort_session(path, threads):
    return bx.onnx_session(path, threads)


def ort_fn(sess):
    return lambda x: sess.run(None, {"input_values": np.asarray(x, np.float32)})[0]


def torch_fn(module, autocast_conv=False):
    def run(x):
        with torch.inference_mode(): return module(torch.as_tensor(x)).float().numpy()
    return run


class BF16Conv(nn.Module):
    "The conv feature encoder under bf16 autocast (oneDNN bf16 kernels on CPUs with avx512_bf16/AMX)."
    def __init__(self, enc): super().__init__(); self.enc = enc
    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16): return self.enc(x).float()


def build_contenders(model_dir, threads, work) -> tuple[dict, dict]:
    "name -> f(x [B, 48000] normalised) -> logits; and name -> one-line description."
    from onnxruntime.quantization import QuantType, quantize_dynamic
    model = BabyCryForAudioClassification.from_pretrained(str(model_dir)).eval()
    plain = bx.LogitsOnly(model).eval()                                    # the model as predict runs it (SDPA attention)
    allint8 = bx.export_module(model, convs_as_linear=True)                   # eager attention + LinearConvEncoder
    q_plain = bx.torch_int8(copy.deepcopy(plain))
    q_bf16 = copy.deepcopy(q_plain); q_bf16.model.backbone.feature_extractor = BF16Conv(q_bf16.model.backbone.feature_extractor)
    q_fast = bx.torch_int8(bx.export_module(model))                         # export torch-int8: transformer Linear only
    work.mkdir(parents=True, exist_ok=True)
    # ONNX graphs: the model as is (eager attention, original convolutions) and babycry.export's fast module
    orig = bx.export_module(model); orig.model.backbone.feature_extractor = model.backbone.feature_extractor
    if not (work/"orig.fp32.onnx").exists(): bx.export_onnx(orig, work/"orig.fp32.onnx")
    if not (work/"orig.int8-naive.onnx").exists():        # quantize_dynamic's defaults: every op it can, per tensor
        quantize_dynamic(str(work/"orig.fp32.onnx"), str(work/"orig.int8-naive.onnx"), weight_type=QuantType.QInt8)
    if not (work/"orig.int8-matmul-pc.onnx").exists(): bx.quantize_onnx(work/"orig.fp32.onnx", work/"orig.int8-matmul-pc.onnx", keep_fp32=())
    if not (work/"linconv.fp32.onnx").exists(): bx.export_onnx(allint8, work/"linconv.fp32.onnx")
    if not (work/"linconv.int8.onnx").exists(): bx.quantize_onnx(work/"linconv.fp32.onnx", work/"linconv.int8.onnx", keep_fp32=())
    if not (work/"fixed3s.int8.onnx").exists():           # babycry.export's onnx-int8 as it was: a fixed 48,000-sample axis
        bx.export_onnx(bx.export_module(model), work/"fixed3s.fp32.onnx", dynamic_time=False)
        bx.quantize_onnx(work/"fixed3s.fp32.onnx", work/"fixed3s.int8.onnx")
    with contextlib.redirect_stdout(io.StringIO()):
        for m in ("onnx-fp32", "onnx-int8"):
            if not (work/f"export-{m}"/"export.json").exists():
                d = bx.export_cpu(model_dir, m, overwrite=True); shutil.rmtree(work/f"export-{m}", ignore_errors=True)
                shutil.copytree(d, work/f"export-{m}")
        d = bx.export_cpu(model_dir, "onnx-int8", overwrite=True)          # what users get: left in the model directory
    for old in Path(model_dir).glob("cpu_export.old-*"): shutil.rmtree(old)        # scratch copies of this benchmark's own exports
    loaded = bx.load_cpu_export(model_dir, threads=threads)
    fns = {
        "eager fp32": torch_fn(plain),
        "torch int8 (nn.Linear)": torch_fn(q_plain),
        "torch int8 + bf16 conv encoder": torch_fn(q_bf16),
        "torch int8, transformer Linear only (export torch-int8)": torch_fn(q_fast),
        "ORT fp32 (export onnx-fp32)": ort_fn(ort_session(work/"export-onnx-fp32"/"model.onnx", threads)),
        "ORT int8 naive (quantize_dynamic defaults: all ops, per tensor)": ort_fn(ort_session(work/"orig.int8-naive.onnx", threads)),
        "ORT int8 every MatMul, per channel": ort_fn(ort_session(work/"orig.int8-matmul-pc.onnx", threads)),
        "ORT int8 every MatMul per channel + convs as MatMul (LinearConvEncoder, all int8)": ort_fn(ort_session(work/"linconv.int8.onnx", threads)),
        "ORT int8 transformer MatMuls, projection/head fp32, fixed 3 s time axis (the export before the dynamic axis)":
            ort_fn(ort_session(work/"fixed3s.int8.onnx", threads)),
        "ORT int8 transformer MatMuls per channel, projection/head fp32 (export onnx-int8, load_cpu_export)": loaded,
    }
    return fns, dict(loaded=repr(loaded), export_record=load_json_safe(d/"export.json"))


def load_json_safe(p):
    from babycry.core import load_json
    try: return load_json(p)
    except Exception as e: return dict(error=str(e))


def agreement(fns, X, batch=8) -> dict:
    "Top-1 agreement and max |logit diff| of every contender with 'eager fp32' over the clips X."
    outs = {n: np.concatenate([f(X[i:i + batch]) for i in range(0, len(X), batch)]) for n, f in fns.items()}
    ref = outs["eager fp32"]
    return {n: dict(top1_agreement=float((o.argmax(1) == ref.argmax(1)).mean()), max_abs_logit_diff=float(np.abs(o - ref).max()),
                    clips=len(X)) for n, o in outs.items()}


def trained_tiny(run) -> Path:
    "A tiny-backbone classifier trained (phase 1, 10 epochs) on the real corpus: the model for agreement on real clips."
    from babycry.phase1 import run_phase1
    md = RunPaths(run).model("phase1")
    if not (md/"config.json").exists():
        with contextlib.redirect_stdout(io.StringIO()): run_phase1(run, backbone="tiny", epochs=10, precision="fp32", seed=0)
    return md


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(SHARED_DATA))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--agree-clips", type=int, default=134, help="real clips for the hubert-base agreement (all for the tiny model)")
    ap.add_argument("--timing-only", action="store_true", help="re-time only; keep the agreement numbers of the last run's JSON")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from transformers.utils import logging as hf_logging; hf_logging.disable_progress_bar()
    m = machine()
    run_data_stage(a.data_dir, WORK/"dac", workers=2)
    X = real_clips(WORK/"dac")
    model_dir = hubert_base_dir(WORK/"hubert-base-classifier")
    fns, info = build_contenders(model_dir, a.threads, WORK/"onnx")
    clip = {"i": 0}
    def timed(f):
        def go():
            f(X[clip["i"] % len(X)][None])
        return go
    names = list(fns)
    def step():   # the next real clip for the next round
        clip["i"] += 1
    contenders = {n: timed(f) for n, f in fns.items()}
    print(f"timing {len(names)} contenders, batch 1 (one 3 s clip), {a.threads} threads, {a.repeats} alternating rounds")
    res = {n: dict(times=[]) for n in names}
    import os
    load_before = os.getloadavg()
    for n in names: contenders[n]()                                        # warm-up
    for r in range(a.repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            time.sleep(0.1)                                                # let the other pool's threads go idle
            t0 = time.perf_counter(); contenders[n](); res[n]["times"].append(time.perf_counter() - t0)
        step()
    for n in names: res[n].update(median_ms=1000 * median(res[n]["times"]), min_ms=1000 * min(res[n]["times"]))
    for n in names: print(f"  {res[n]['median_ms']:8.1f} ms  {n}")
    load_after = os.getloadavg()
    if a.timing_only:
        old = json.loads((RESULTS/"inference.json").read_text())
        agree_base, agree_tiny = old["agreement_hubert_base_random"], old["agreement_trained_tiny"]
    else: agree_base, agree_tiny = agreement_runs(a, fns, X)
    write(a, m, res, names, agree_base, agree_tiny, info, X, argv, load_before, load_after)


def other_lengths(X, n) -> dict:
    "Real clips of other lengths than 3 s, normalised: the first second of `n` clips, and `n` clips of 7 s (joined clips)."
    from babycry.dataset import normalize_waveforms
    one = normalize_waveforms(X[:n, :16_000].copy())
    seven = normalize_waveforms(np.concatenate([X[:n], X[n:2 * n], X[2 * n:3 * n, :16_000]], axis=1))
    return {"1 s": one.astype(np.float32), "7 s": seven.astype(np.float32)}


def agreement_runs(a, fns, X):
    print(f"agreement with eager fp32, hubert-base random weights, {a.agree_clips} real clips ...", flush=True)
    agree_base = agreement(fns, X[:a.agree_clips])
    export = [n for n in fns if "load_cpu_export" in n][0]
    for length, Xl in other_lengths(X, a.agree_clips // 3).items():      # the dynamic time axis: other lengths too
        print(f"agreement of the export at {length}, {len(Xl)} clips ...", flush=True)
        r = agreement({"eager fp32": fns["eager fp32"], export: fns[export]}, Xl, batch=4)[export]
        agree_base[f"{export} at {length}"] = r
    # the same export on a trained model: tiny backbone, phase 1 on the real corpus
    tmd = trained_tiny(WORK/"dac")
    shutil.rmtree(tmd/"cpu_export", ignore_errors=True)
    tiny = BabyCryForAudioClassification.from_pretrained(str(tmd)).eval()
    tfns = {"eager fp32": torch_fn(bx.LogitsOnly(tiny))}
    with contextlib.redirect_stdout(io.StringIO()):
        for meth in ("onnx-int8", "torch-int8"):
            bx.export_cpu(tmd, meth, overwrite=True); tfns[f"export {meth}"] = bx.load_cpu_export(tmd, threads=a.threads)
    for old in Path(tmd).glob("cpu_export.old-*"): shutil.rmtree(old)
    print(f"agreement on the trained tiny model, {len(X)} real clips ...", flush=True)
    agree_tiny = agreement(tfns, X)
    return agree_base, agree_tiny


def write(a, m, res, names, agree_base, agree_tiny, info, X, argv, load_before, load_after):
    base = res["eager fp32"]["median_ms"]
    best = min((n for n in names if n != "eager fp32"), key=lambda n: res[n]["median_ms"])
    winner = names[-1]
    result = dict(benchmark="cpu_inference", machine=m, threads=a.threads, batch=1, repeats=a.repeats, clip_samples=CLIP_SAMPLES,
                  model="hubert-base architecture, random weights, simple head, 6 classes", timings=res,
                  agreement_hubert_base_random=agree_base, agreement_trained_tiny=agree_tiny, export=info,
                  load_avg_before_timing=load_before, load_avg_after_timing=load_after,
                  fastest=best, babycry_export=winner, goal_ms=100, goal_agreement=0.99)
    md = header("CPU inference per 3 s clip", m, "python benchmarks/bench_inference.py " + " ".join(sys.argv[1:] if argv is None else argv))
    md += (f"hubert-base architecture (random weights, 6-class simple head), one 3 s clip per call (batch 1), "
           f"torch.set_num_threads({a.threads}) / ORT intra_op_num_threads={a.threads}, {a.repeats} rounds alternating all "
           f"contenders (order reversed every other round, a different real clip each round), medians. Agreement: top-1 "
           f"(argmax) agreement with eager fp32 over {a.agree_clips} real Donate-a-Cry clips (hubert-base, random weights) and over "
           f"all {len(X)} cached real clips for a tiny-backbone model trained (phase 1) on that corpus. "
           f"Load average (1/5/15 min) before timing {[round(v, 2) for v in load_before]}, after {[round(v, 2) for v in load_after]} "
           f"(on 2 cores: above ~2 other processes were competing, which slows the torch (OpenMP) paths more than ONNX Runtime).\n\n")
    rows = [dict(path=n, **{"median ms/clip": fmt(res[n]["median_ms"]), "min ms": fmt(res[n]["min_ms"]),
                            "× eager": fmt(base / res[n]["median_ms"]),
                            "top-1 agreement (hubert-base random)": f"{agree_base[n]['top1_agreement']:.3f}",
                            "max abs logit diff": fmt(agree_base[n]["max_abs_logit_diff"])}) for n in names]
    md += md_table(rows, ["path", "median ms/clip", "min ms", "× eager", "top-1 agreement (hubert-base random)", "max abs logit diff"])
    lengths = [n for n in agree_base if n.endswith((" at 1 s", " at 7 s"))]
    if lengths:
        md += ("\nThe same export (one ONNX file, dynamic time axis) on inputs of other lengths, against eager fp32 "
               "(hubert-base random weights; real clips cut to their first second, or three joined into 7 s):\n\n")
        md += md_table([dict(path=n.split(" (export")[0] + n[n.rfind(" at "):], **{"top-1 agreement": f"{agree_base[n]['top1_agreement']:.3f}",
                             "max abs logit diff": fmt(agree_base[n]["max_abs_logit_diff"]), "clips": agree_base[n]["clips"]})
                        for n in lengths], ["path", "top-1 agreement", "max abs logit diff", "clips"])
    md += "\nTrained tiny model (phase 1 on the real corpus), agreement with its fp32 eager logits:\n\n"
    md += md_table([dict(path=n, **{"top-1 agreement": f"{v['top1_agreement']:.4f}", "max abs logit diff": fmt(v["max_abs_logit_diff"]),
                                    "clips": v["clips"]}) for n, v in agree_tiny.items()], ["path", "top-1 agreement", "max abs logit diff", "clips"])
    md += "\n" + goal_line(res[winner]["median_ms"], 100, f"babycry.export onnx-int8, ms per clip", higher_is_better=False) + "\n"
    md += "\n" + goal_line(agree_tiny["export onnx-int8"]["top1_agreement"], 0.99, "top-1 agreement of the onnx-int8 export with fp32 (trained tiny, real clips)") + "\n"
    md += ("\n" + goal_line(agree_base[winner]["top1_agreement"], 0.99, "top-1 agreement of the onnx-int8 export with fp32 (hubert-base random weights, real clips)") + "\n")
    write_results("inference", result, md)
    print(md)


if __name__ == "__main__": main()
