"""`alnvid export`: ONNX Runtime and TorchScript files that give PyTorch's probabilities, carry the preprocessing,
and that `alnvid predict --model-file` runs like the checkpoint."""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from alnvid.cli.main import app
from alnvid.config import RunConfig
from alnvid.errors import AlnvidError
from alnvid.models.exported import (
    METADATA_KEYS,
    OPTIONAL_METADATA_KEYS,
    TORCHSCRIPT_METADATA,
    _AdaptiveAvgPool2dByMatrices,
    _exportable,
    export_model,
    load_exported,
)
from alnvid.models.module import ALNClassifier
from alnvid.models.trained import ModelEnsemble, TrainedModel, load_trained


def _tiny_model(name: str, input_norm: str = "none", consensus: str = "mean") -> TrainedModel:
    """A randomly initialised model of the registry at T 4 and 32 px, wrapped like a loaded checkpoint."""
    torch.manual_seed(0)
    config = RunConfig()
    config.model.name, config.model.input_norm, config.model.consensus = name, input_norm, consensus
    config.data.frames, config.data.resize, config.data.crop_size, config.data.input_size = 4, 40, 32, 32
    config.data.still_frames = "all"
    module = ALNClassifier(model_name=name, num_frames=4, input_norm=input_norm, consensus=consensus).eval()
    return TrainedModel(module, config, Path("unused.ckpt"))


def _batch(model: TrainedModel, size: int, seed: int) -> torch.Tensor:
    """Inputs as predict builds them: clips (B, 3, T, H, W), or K frames per video (B, K, 3, H, W) for images."""
    shape = (size, 3, 4, 32, 32) if model.spec.input_kind == "clip" else (size, 4, 3, 32, 32)
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", ["tin", "r3d_18", "resnet50"])
def test_exported_probabilities_equal_pytorch(name, fmt, tmp_path):
    model = _tiny_model(name)
    out = tmp_path / f"{name}.{fmt}"
    report = export_model(model, fmt, out)
    assert report["max_abs_difference"] <= 1e-4
    exported = load_exported(out)
    assert exported.format == fmt and exported.spec.name == name
    for size, seed in ((1, 10), (5, 11)):  # batch sizes other than the traced one
        x = _batch(model, size, seed)
        with torch.no_grad():
            expected = model.module.class_probabilities(x)
        got = exported.class_probabilities(x)
        assert got.shape == expected.shape == (size, 2)
        assert torch.allclose(got, expected, atol=1e-4, rtol=0)
        assert torch.allclose(got.sum(1), torch.ones(size), atol=1e-5)


def test_exported_file_standardises_clips_like_the_model(tmp_path):
    """A model trained with input_norm 'clip' keeps the standardisation inside the exported network."""
    model = _tiny_model("tin", input_norm="clip")
    export_model(model, "onnx", tmp_path / "tin.onnx")
    x = _batch(model, 3, seed=12) * 0.4 + 0.3  # another gain: the standardisation must happen inside the file
    with torch.no_grad():
        expected = model.module.class_probabilities(x)
    assert torch.allclose(load_exported(tmp_path / "tin.onnx").class_probabilities(x), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_max_consensus_picks_the_frame_per_clip_like_the_model(fmt, tmp_path):
    """The most positive frame is chosen inside the file, per clip, for a batch size other than the traced one."""
    model = _tiny_model("tin", consensus="max")
    export_model(model, fmt, tmp_path / f"tin.{fmt}")
    x = _batch(model, 3, seed=13)
    with torch.no_grad():
        expected = model.module.class_probabilities(x)
        mean = _tiny_model("tin").module.class_probabilities(x)
    assert not torch.allclose(expected, mean, atol=1e-3)  # the consensus changes the output
    assert torch.allclose(load_exported(tmp_path / f"tin.{fmt}").class_probabilities(x), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("side", [1, 2, 3, 7, 9, 20])
def test_exported_adaptive_pool_equals_pytorchs(side):
    """VGG's 7 x 7 adaptive pool, rewritten for the ONNX exporter, gives PyTorch's values at any feature size."""
    x = torch.randn(2, 3, side, side + 3, dtype=torch.float64)
    rewritten = _exportable(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(7)))
    assert isinstance(rewritten[0], _AdaptiveAvgPool2dByMatrices)
    assert torch.allclose(rewritten(x), torch.nn.AdaptiveAvgPool2d(7)(x), atol=1e-12, rtol=0)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_metadata_is_embedded_in_both_formats(tmp_path):
    model = _tiny_model("resnet50")
    model.config.data.mask_overlays = False
    export_model(model, "onnx", tmp_path / "m.onnx")
    export_model(model, "torchscript", tmp_path / "m.pt")
    props = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    extra = {TORCHSCRIPT_METADATA: ""}
    torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert props == json.loads(extra[TORCHSCRIPT_METADATA])
    assert set(props) == {*METADATA_KEYS, *OPTIONAL_METADATA_KEYS}
    assert {k: props[k] for k in ("model_name", "input_kind", "frames", "resize", "crop_size", "input_size",
                                  "mask_overlays", "still_frames", "num_classes")} == {
        "model_name": "resnet50", "input_kind": "image", "frames": 4, "resize": 40, "crop_size": 32,
        "input_size": 32, "mask_overlays": False, "still_frames": "all", "num_classes": 2}
    loaded = load_exported(tmp_path / "m.onnx")
    data = loaded.config.data
    assert (data.frames, data.resize, data.crop_size, data.input_size, data.mask_overlays, data.still_frames) == (
        4, 40, 32, 32, False, "all")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_files_without_alnvid_metadata_are_refused(tmp_path):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.rand(1, 3),), str(plain), dynamo=False)
    with pytest.raises(AlnvidError, match="lacks alnvid's preprocessing metadata"):
        load_exported(plain)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(AlnvidError, match="not a readable"):
        load_exported(garbage)
    with pytest.raises(AlnvidError, match="not found"):
        load_exported(tmp_path / "absent.onnx")


def test_predict_needs_exactly_one_model(tmp_path):
    for options in ([], ["-c", "a.ckpt", "--model-file", "m.onnx"]):
        result = CliRunner().invoke(app, ["predict", "x.dcm", *options])
        assert result.exit_code == 2 and "--checkpoint or --model-file" in result.output


@pytest.fixture(scope="module")
def fast_tin_run(tiny_cohort, tmp_path_factory) -> Iterator[Path]:
    """`alnvid fit --fast --model tin` for 1 epoch on the tiny cohort (Grad-CAM export off, to save time)."""
    root = tmp_path_factory.mktemp("fast-tin")
    settings = root / "settings.yaml"
    settings.write_text("explain:\n  export: false\n")
    result = CliRunner().invoke(app, ["fit", "--data", str(tiny_cohort), "--model", "tin", "--fast", "--epochs", "1",
                                      "--config", str(settings), "--cache-dir", str(root / "cache"),
                                      "--out", str(root / "run"), "--json"])
    assert result.exit_code == 0, result.output
    yield root / "run"
    shutil.rmtree(root, ignore_errors=True)


def test_export_cli_onnx_predicts_like_the_checkpoint(fast_tin_run, tiny_cohort, tmp_path, monkeypatch):
    monkeypatch.setenv("ALNVID_CACHE", str(tmp_path / "cache"))
    checkpoint = fast_tin_run / "checkpoints" / "best.ckpt"
    model_file = tmp_path / "tin.onnx"
    exported = CliRunner().invoke(app, ["export", str(checkpoint), "--format", "onnx", "--out", str(model_file),
                                        "--json"])
    assert exported.exit_code == 0, exported.output
    report = json.loads(exported.output)
    assert report["metadata"]["frames"] == 8 and report["metadata"]["input_size"] == 64  # --fast
    manifest = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False)
    tests = manifest[manifest["split"].str.startswith("test")]
    cases = tmp_path / "cases.csv"
    tests.assign(path=[str(tiny_cohort.parent / p) for p in tests["path"]])[["patient_id", "path"]].to_csv(
        cases, index=False)
    runs = {}
    for option, model in (("--checkpoint", checkpoint), ("--model-file", model_file)):
        result = CliRunner().invoke(app, ["predict", str(cases), option, str(model), "--json"])
        assert result.exit_code == 0, result.output
        runs[option] = pd.DataFrame(json.loads(result.output))
    assert len(runs["--model-file"]) == 8
    assert list(runs["--model-file"]["patient_id"]) == list(runs["--checkpoint"]["patient_id"])
    assert np.allclose(runs["--model-file"]["prob"], runs["--checkpoint"]["prob"], atol=1e-4, rtol=0)
    # and both equal the run's own per-patient test predictions
    expected = pd.concat([pd.read_csv(fast_tin_run / f"predictions_{s}.csv", dtype={"patient_id": str})
                          for s in ("test_a", "test_b")]).set_index("patient_id")["prob"]
    per_patient = runs["--model-file"].groupby("patient_id")["prob"].mean()
    assert np.allclose(per_patient[expected.index], expected, atol=1e-4, rtol=0)
    # --eval-clips applies to the model file as to the checkpoint (3 clips per video, probabilities averaged)
    clips = {option: pd.DataFrame(json.loads(CliRunner().invoke(
        app, ["predict", str(cases), option, str(model), "--eval-clips", "3", "--json"]).output))
        for option, model in (("--checkpoint", checkpoint), ("--model-file", model_file))}
    assert np.allclose(clips["--model-file"]["prob"], clips["--checkpoint"]["prob"], atol=1e-4, rtol=0)
    assert report["metadata"]["eval_clips"] == 1
    # (the tiny loops hold T frames, so their 3 clips coincide: check the averaging on clips that differ)
    exported_model, trained = load_exported(model_file, eval_clips=3), load_trained(checkpoint)
    assert exported_model.config.data.eval_clips == 3
    x = torch.rand(2, 3, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))  # (B, K clips, 3, T, H, W)
    per_clip = exported_model.class_probabilities(x.flatten(0, 1)).view(2, 3, -1)
    assert not torch.allclose(per_clip[:, 0], per_clip[:, 1], atol=1e-4)
    torch.testing.assert_close(exported_model.class_probabilities(x), per_clip.mean(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(exported_model.class_probabilities(x), trained.class_probabilities(x), atol=1e-4, rtol=0)


def test_an_ensemble_exports_as_one_file_of_its_members_mean(tmp_path):
    members = []
    for seed in (0, 1):
        member = _tiny_model("tin")
        torch.manual_seed(seed)
        member.module.model.backbone.fc.reset_parameters()  # members that differ
        members.append(member)
    ensemble = ModelEnsemble(members)
    report = export_model(ensemble, "onnx", tmp_path / "ensemble.onnx")
    assert report["metadata"]["members"] == 2
    exported = load_exported(tmp_path / "ensemble.onnx")
    x = _batch(members[0], 3, seed=14)
    with torch.no_grad():
        each = [member.module.class_probabilities(x) for member in members]
    assert not torch.allclose(each[0], each[1], atol=1e-3)
    torch.testing.assert_close(exported.class_probabilities(x), (each[0] + each[1]) / 2, atol=1e-4, rtol=0)
    assert load_exported(tmp_path / "ensemble.onnx").metadata["members"] == 2


def test_export_cli_of_two_checkpoints_predicts_like_them(fast_tin_run, tiny_cohort, tmp_path, monkeypatch):
    monkeypatch.setenv("ALNVID_CACHE", str(tmp_path / "cache"))
    best, last = (fast_tin_run / "checkpoints" / name for name in ("best.ckpt", "last.ckpt"))
    model_file = tmp_path / "pair.pt"
    exported = CliRunner(env={"COLUMNS": "250"}).invoke(
        app, ["export", str(best), str(last), "--format", "torchscript", "--out", str(model_file)])
    assert exported.exit_code == 0, exported.output
    assert "(mean of 2 models)" in exported.output
    video = tiny_cohort.parent / pd.read_csv(tiny_cohort, dtype=str)["path"].iloc[-1]
    runs = {}
    for options in (["-c", str(best), "-c", str(last)], ["--model-file", str(model_file)]):
        result = CliRunner().invoke(app, ["predict", str(video), *options, "--json"])
        assert result.exit_code == 0, result.output
        runs[options[0]] = json.loads(result.output)[0]["prob"]
    assert runs["--model-file"] == pytest.approx(runs["-c"], abs=1e-4)


def test_export_cli_refuses_unknown_format(fast_tin_run, tmp_path):
    result = CliRunner().invoke(app, ["export", str(fast_tin_run / "checkpoints" / "best.ckpt"), "--format", "tflite",
                                      "--out", str(tmp_path / "m.tflite")])
    assert result.exit_code == 2 and "--format onnx or --format torchscript" in result.output
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_files_asking_for_more_than_one_plain_view_are_format_2_and_refused_by_format_1_readers(tmp_path,
                                                                                                monkeypatch):
    """A reader that predates eval_clips or eval_flip would score such a file from one unmirrored clip, silently;
    format 2 makes it refuse the file instead. Files at the default evaluation stay format 1."""
    model = _tiny_model("tin")
    export_model(model, "torchscript", tmp_path / "plain.pt")
    model.config.data.eval_flip = True
    export_model(model, "torchscript", tmp_path / "mirrored.pt")
    model.config.data.eval_flip, model.config.data.eval_clips = False, 3
    export_model(model, "torchscript", tmp_path / "clips.pt")
    versions = {name: load_exported(tmp_path / f"{name}.pt").metadata["format_version"]
                for name in ("plain", "mirrored", "clips")}
    assert versions == {"plain": 1, "mirrored": 2, "clips": 2}
    assert load_exported(tmp_path / "mirrored.pt").config.data.eval_flip is True
    monkeypatch.setattr("alnvid.models.exported.FORMAT_VERSION", 1)
    load_exported(tmp_path / "plain.pt")
    with pytest.raises(AlnvidError, match="exported by a newer alnvid"):
        load_exported(tmp_path / "mirrored.pt")
