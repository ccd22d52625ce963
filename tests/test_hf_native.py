"""babycry models as transformers-native audio classifiers: pipeline() with and without babycry gives predict's answer;
transformers' audio-classification example (padded batches, freeze_feature_encoder, Trainer) gets babycry's numbers;
babycry-predict's faults (broken weights or exports, bad options and inputs) and its flat memory on long recordings."""
import contextlib, io, json, os, resource, shutil, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from babycry.model import BabyCryForAudioClassification, save_classifier
from babycry.inference import main, predict

LABELS = ["belly_pain", "burping", "cold_hot", "discomfort", "tired"]
LENGTHS = (0.5, 1, 3, 7, 30)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    "A tiny random babycry model with a band limit, saved as the training stages save theirs."
    torch.manual_seed(0)
    m = BabyCryForAudioClassification.from_backbone("tiny", LABELS, band_limit_hz=4000.0)
    return save_classifier(m.eval(), tmp_path_factory.mktemp("hf")/"model")


def clip(seconds, sr=16_000, seed=0):
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * sr)).astype(np.float32)


def by_name(scores) -> np.ndarray:
    d = scores if isinstance(scores, dict) else {s["label"]: s["score"] for s in scores}
    return np.array([d[c] for c in LABELS])


def test_remote_code_pipeline_gives_predicts_answer(folder, tmp_path):
    "In a Python without babycry, pipeline(trust_remote_code=True) runs the folder's own code and gives predict's numbers."
    inputs = {f"{s} s": clip(s, seed=i) for i, s in enumerate(LENGTHS)}
    inputs["7 s at 8 kHz"] = clip(7, 8000, seed=9)
    np.savez(tmp_path/"clips.npz", **{k.replace(" ", "_"): v for k, v in inputs.items()})
    code = f"""
import sys; sys.modules["babycry"] = None
import json, numpy as np
from transformers import pipeline
clf = pipeline("audio-classification", model={str(folder)!r}, trust_remote_code=True)
clips, out = np.load({str(tmp_path/'clips.npz')!r}), {{}}
for k in clips.files:
    x = clips[k]
    out[k] = clf(dict(raw=x, sampling_rate=8000) if k.endswith("8_kHz") else x, top_k=None)
print(json.dumps(dict(module=type(clf).__module__, out=out)))
"""
    env = {**os.environ, "HF_HOME": str(tmp_path/"hf-home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["module"].startswith("transformers_modules")                 # the folder's pipeline_babycry.py
    worst = {}
    for k, x in inputs.items():
        ref = predict(x, folder, sr=8000 if "8 kHz" in k else None)["probs"]
        worst[k] = float(np.abs(by_name(got["out"][k.replace(" ", "_")]) - by_name(ref)).max())
    print("largest |pipeline - predict| per clip:", {k: f"{v:.1e}" for k, v in worst.items()})
    assert max(worst.values()) < 1e-5, worst


def test_installed_pipeline_gives_predicts_answer_for_files(folder, tmp_path):
    "With babycry imported (no trust_remote_code), a file path and an array give predict's numbers."
    from transformers import pipeline
    clf = pipeline("audio-classification", model=str(folder))
    sf.write(tmp_path/"c.wav", clip(7, 44_100, seed=3), 44_100)
    assert np.abs(by_name(clf(str(tmp_path/"c.wav"), top_k=None)) - by_name(predict(tmp_path/"c.wav", folder)["probs"])).max() < 1e-5
    seg = clf(clip(0.5), top_k=None, return_segments=True)["segments"]
    assert len(seg) == 1 and seg[0]["warning"].startswith("only 0.50 s")


def test_run_audio_classification_recipe_gets_babycrys_numbers(folder, tmp_path):
    """What transformers' examples/pytorch/audio-classification/run_audio_classification.py does with its default flags:
    a feature extractor with return_attention_mask=True, the config from the dataset's label names (strings as ids),
    freeze_feature_encoder(), Trainer.evaluate on padded batches (its feature extractor pads them)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification, Trainer, TrainingArguments
    m = BabyCryForAudioClassification.from_pretrained(folder)
    m.config.band_limit_hz = None                          # the script applies no band limit: compare like with like
    folder = save_classifier(m, tmp_path/"no-band-limit")
    names = LABELS[::-1]                                   # the dataset's label order is not the model's
    rng = np.random.default_rng(1)
    wavs = [clip(s, seed=10 + i) for i, s in enumerate((1.0, 2.2, 3.0, 3.0, 1.7, 2.9, 3.0))]
    ids = rng.integers(0, len(names), len(wavs))
    fe = AutoFeatureExtractor.from_pretrained(folder, return_attention_mask=True)
    config = AutoConfig.from_pretrained(folder, num_labels=len(names), label2id={n: str(i) for i, n in enumerate(names)},
                                        id2label={str(i): n for i, n in enumerate(names)}, finetuning_task="audio-classification")
    model = AutoModelForAudioClassification.from_pretrained(folder, config=config)
    model.freeze_feature_encoder()
    assert not any(p.requires_grad for p in model.backbone.feature_extractor.parameters())

    def val_transforms(batch):                            # the script's, on a list instead of a datasets.Dataset
        inputs = fe([w for w in batch["audio"]], sampling_rate=fe.sampling_rate)
        return [{"input_values": v, "labels": int(y)} for v, y in zip(inputs["input_values"], batch["label"])]
    ds = val_transforms({"audio": wavs, "label": ids})
    args = TrainingArguments(output_dir=str(tmp_path/"out"), per_device_eval_batch_size=4, report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args, eval_dataset=ds, processing_class=fe,
                      compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(1) == p.label_ids).mean())})
    out = trainer.predict(ds)
    assert out.predictions.shape == (len(wavs), len(names))
    probs = torch.tensor(out.predictions).softmax(-1).numpy()
    # babycry's numbers: the saved model on each clip alone, labels matched by name (its own order is LABELS)
    ref = BabyCryForAudioClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        alone = np.concatenate([ref(**fe(w, sampling_rate=16_000, return_tensors="pt")).logits.softmax(-1).numpy() for w in wavs])
    perm = [LABELS.index(n) for n in names]
    diff = np.abs(probs - alone[:, perm]).max()
    print(f"largest |probability difference| Trainer (padded batches of 4) vs each clip alone: {diff:.1e}")
    assert diff < 1e-5
    for i, w in enumerate(wavs):                           # the 3 s clips: exactly babycry.predict's answer
        if len(w) == 48_000:
            assert np.abs(by_name(dict(zip(names, probs[i]))) - by_name(predict(w, folder)["probs"])).max() < 1e-5
    acc = trainer.evaluate()["eval_accuracy"]
    assert acc == pytest.approx(float((alone[:, perm].argmax(1) == ids).mean()))


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try: rc = main([str(a) for a in args])
        except SystemExit as e: rc = e.code
    return rc, out.getvalue(), err.getvalue() + " ".join(str(x.message) for x in w)


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    p = tmp_path_factory.mktemp("wav")/"cry.wav"
    sf.write(p, clip(7, 8000), 8000)
    return p


def test_missing_head_is_an_error_naming_it(folder, wav, tmp_path):
    m = BabyCryForAudioClassification.from_pretrained(folder)
    m.save_pretrained(tmp_path/"nohead", state_dict={k: v for k, v in m.state_dict().items() if not k.startswith("head.")})
    for _ in range(2):                                     # before: exit 0 and a random head, another label each call
        rc, out, err = cli(tmp_path/"nohead", wav)
        assert rc == 2 and "missing (head:" in err and "head.0.weight" in err and out == ""


def test_not_an_audio_classifier_names_its_model_type(wav, tmp_path):
    from transformers import HubertModel
    from babycry.model import tiny_config
    HubertModel(tiny_config()).save_pretrained(tmp_path/"backbone")
    rc, _, err = cli(tmp_path/"backbone", wav)
    assert rc == 2 and "holds a 'hubert' model (HubertModel), not an audio classifier" in err


def test_hf_sequence_classifier_with_its_own_labels(wav, tmp_path):
    from transformers import HubertConfig, HubertForSequenceClassification, Wav2Vec2FeatureExtractor
    from babycry.model import FEATURE_EXTRACTOR_DEFAULTS, tiny_config
    cfg = HubertConfig(**{**tiny_config().to_dict(), "num_labels": 2, "id2label": {"0": "no", "1": "yes"}, "label2id": {"no": "0", "yes": "1"}})
    HubertForSequenceClassification(cfg).save_pretrained(tmp_path/"hf")
    Wav2Vec2FeatureExtractor(**FEATURE_EXTRACTOR_DEFAULTS).save_pretrained(tmp_path/"hf")
    rc, out, _ = cli(tmp_path/"hf", wav, "--json", "--segments")
    r = json.loads(out)[0]
    assert rc == 0 and sorted(r["probs"]) == ["no", "yes"] and r["n_windows"] == 4 and len(r["segments"]) == 4


@pytest.mark.skipif(not __import__("babycry.export", fromlist=["x"]).has_onnxruntime(), reason="onnxruntime not installed")
def test_damaged_fast_export_falls_back_to_pytorch(folder, wav, tmp_path):
    from babycry.export import export_cpu
    md = tmp_path/"m"; shutil.copytree(folder, md)
    ref = cli(md, wav, "--json", "--no-fast")[1]
    export_cpu(md)
    onnx = md/"cpu_export"/"model.onnx"; onnx.write_bytes(onnx.read_bytes()[:onnx.stat().st_size // 2])   # cut short
    rc, out, err = cli(md, wav, "--json")
    assert rc == 0 and "damaged or cut short" in err and json.loads(out) == json.loads(ref)
    (md/"cpu_export"/"export.json").write_text("{not json")
    rc, out, err = cli(md, wav, "--json")
    assert rc == 0 and "export.json cannot be read" in err and json.loads(out) == json.loads(ref)


@pytest.mark.parametrize("hop", ["-5", "0", "nan", "inf", "4"])
def test_hop_is_checked(folder, wav, hop):
    rc, out, err = cli(folder, wav, "--hop", hop)
    assert rc == 2 and f"--hop {hop} is not allowed" in err and "np.float64" not in err and out == ""


def test_batch_size_and_python_arguments_are_checked(folder, wav):
    assert cli(folder, wav, "--batch-size", "0")[0] == 2
    with pytest.raises(ValueError, match=r"hop_seconds=-5 is not allowed"): predict(wav, folder, hop_seconds=np.float64(-5))
    with pytest.raises(ValueError, match=r"sr=0 is not allowed"): predict(clip(1), folder, sr=0)


def test_url_says_it_is_not_supported_and_stdin_works(folder, wav):
    rc, _, err = cli(folder, "https://example.com/cry.wav")
    assert rc == 1 and "https://example.com/cry.wav: URLs are not supported" in err
    cmd = [sys.executable, "-c", "import sys; from babycry.inference import main; sys.exit(main())", str(folder), "-", "--json"]
    with open(wav, "rb") as f: res = subprocess.run(cmd, stdin=f, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(res.stdout)[0]
    assert r["file"] == "-" and r["n_windows"] == 4 and r["probs"] == predict(wav, folder)["probs"]


def _peak_rss_mb(folder, path) -> float:
    "The peak resident memory of one babycry-predict process (VmHWM: its own, unlike ru_maxrss, which a child inherits)."
    code = ("import re, sys; from babycry.inference import main; rc = main(sys.argv[1:]); "
            "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code, str(folder), str(path), "--no-fast"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return float(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak memory from /proc (Linux)")
def test_long_recording_streams_in_flat_memory(folder, tmp_path):
    "Ten minutes at 8 kHz need no more memory than one (the file is decoded and scored a block at a time)."
    for minutes in (1, 10):
        with sf.SoundFile(tmp_path/f"{minutes}min.wav", "w", 8000, 1, subtype="PCM_16") as f:
            for i in range(minutes): f.write(clip(60, 8000, seed=i))
    short, long = _peak_rss_mb(folder, tmp_path/"1min.wav"), _peak_rss_mb(folder, tmp_path/"10min.wav")
    print(f"peak RSS: 1 min {short:.0f} MB, 10 min {long:.0f} MB")
    assert long - short < 40, (short, long)
