"""Input guards: what is not an ultrasound video, scores that are not probabilities, manifests that cannot be
trained on, and the messages of bad files, each refused with exit status 2 (1 for `cohort check`'s findings), a
message naming the file and the fix, and nothing written. Real DICOMs from pydicom's test data."""
from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from alnvid.cli.main import app
from alnvid.config import RunConfig
from alnvid.data.cache import PreprocessCache
from alnvid.data.manifest import check_manifest
from alnvid.errors import AlnvidError, AlnvidWarning, InputFileError
from alnvid.io import read_video
from alnvid.models.registry import get_model_spec, list_models
from alnvid.models.trained import load_trained, require_motion

CT = Path(get_testdata_file("CT_small.dcm"))                    # CT, 1 frame
MR = Path(get_testdata_file("emri_small.dcm"))                  # MR, 10 frames
US_LOOP = Path(get_testdata_file("examples_ybr_color.dcm"))     # ultrasound, 30 frames
US_FRAME = Path(get_testdata_file("US1_UNCR.dcm"))              # ultrasound, 1 frame
US_TWO = Path(get_testdata_file("OBXXXX1A_2frame.dcm"))         # ultrasound, 2 different frames
STATICS = list_models("static")


def run(*args: str):
    return CliRunner(env={"COLUMNS": "250"}).invoke(app, [str(a) for a in args])


def assert_refused(result, *phrases: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    for phrase in phrases:
        assert phrase in text, (phrase, result.output)


def nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def copy_cohort(tiny_cohort: Path, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    shutil.copytree(tiny_cohort.parent, tmp_path / "cohort")
    manifest = tmp_path / "cohort" / "manifest.csv"
    return manifest, pd.read_csv(manifest, dtype=str, keep_default_na=False)


def fit_args(manifest: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--data", manifest, "--model", "tin", "--fast", "--epochs", "1", "--frames", "4",
            "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache", *extra]


@pytest.fixture(scope="module")
def identical_frames(tmp_path_factory) -> Path:
    """The real single-frame ultrasound DICOM stored as a 2-frame loop of the same frame."""
    ds = pydicom.dcmread(US_FRAME)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    path = tmp_path_factory.mktemp("dicom") / "two_identical.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def one_frame_gif(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gif") / "still.gif"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(path)
    return path


@pytest.fixture(scope="module")
def tin_checkpoint(tiny_cohort, tmp_path_factory) -> Iterator[Path]:
    """A TIN trained for one epoch on the tiny cohort (T 4, 32 px)."""
    from alnvid.config import DataConfig
    from alnvid.train import fit

    root = tmp_path_factory.mktemp("tin")
    config = RunConfig(data=DataConfig(frames=4, resize=40, crop_size=32, input_size=32, elastic=False,
                                       num_workers=0, cache_dir=str(root / "cache")), out=str(root / "run"))
    config.data.manifest = str(tiny_cohort)
    config.trainer.epochs, config.trainer.progress, config.explain.export = 1, False, False
    yield fit(config).best_checkpoint
    shutil.rmtree(root, ignore_errors=True)


# --- not an ultrasound -------------------------------------------------------------------------------------------

def test_the_test_files_are_what_they_claim():
    assert [read_video(p).meta.modality for p in (CT, MR, US_LOOP, US_FRAME)] == ["CT", "MR", "US", "US"]
    assert read_video(MR).n_frames == 10 and read_video(US_LOOP).n_frames == 30


def test_cache_refuses_other_modalities_even_from_a_warm_cache(tmp_path):
    with pytest.raises(InputFileError, match="not an ultrasound: the DICOM header gives modality MR") as info:
        PreprocessCache(tmp_path, 32).load(MR)
    assert str(MR) in info.value.message and "--allow-modality MR" in info.value.fix
    assert nothing_in(tmp_path)  # refused before anything is cached
    allowed = PreprocessCache(tmp_path, 32, allow_modalities=["mr"]).load(MR)
    assert allowed.n_frames == 10 and allowed.modality == "MR"
    with pytest.raises(InputFileError, match="not an ultrasound"):  # the cached entry is no way round the check
        PreprocessCache(tmp_path, 32).load(MR)
    ultrasound = PreprocessCache(tmp_path, 32).load(US_LOOP)
    assert ultrasound.modality == "US" and ultrasound.distinct_frames == 28  # two of the 30 frames repeat


def test_cohort_check_and_fit_refuse_a_ct_in_the_manifest(tiny_cohort, tmp_path):
    manifest, table = copy_cohort(tiny_cohort, tmp_path)
    table.loc[0, "path"] = str(CT)
    table.to_csv(manifest, index=False)
    assert_refused(run("cohort", "check", manifest), f"line 2: path {CT}: not an ultrasound", "modality CT",
                   "--allow-modality CT")
    assert "not an ultrasound" not in run("cohort", "check", manifest, "--allow-modality", "CT").output
    assert_refused(run("fit", *fit_args(manifest, tmp_path)), str(CT), "not an ultrasound", "--allow-modality CT")
    assert nothing_in(tmp_path / "run") and nothing_in(tmp_path / "cache")


def test_predict_refuses_another_modality_unless_allowed(tin_checkpoint, tmp_path):
    out = tmp_path / "p.csv"
    assert_refused(run("predict", MR, "-c", tin_checkpoint, "--out", out), str(MR), "not an ultrasound",
                   "modality MR", "--allow-modality MR")
    assert not out.exists()
    allowed = run("predict", MR, "-c", tin_checkpoint, "--out", out, "--allow-modality", "MR", "--json")
    assert allowed.exit_code == 0, allowed.output
    assert 0 <= pd.read_csv(out)["prob"].iloc[0] <= 1


def test_explain_refuses_a_ct(tin_checkpoint, tmp_path):
    assert_refused(run("explain", CT, "-c", tin_checkpoint, "--out", tmp_path / "x"), str(CT),
                   "not an ultrasound")
    assert nothing_in(tmp_path / "x")


# --- not a video ---------------------------------------------------------------------------------------------------

def test_video_models_need_two_different_frames(tmp_path, identical_frames, one_frame_gif):
    cache, tin = PreprocessCache(tmp_path, 32), get_model_spec("tin")
    for path, frames, different in ((US_FRAME, 1, 1), (identical_frames, 2, 1), (one_frame_gif, 1, 1)):
        video = cache.load(path)
        assert (video.n_frames, video.distinct_frames) == (frames, different)
        with pytest.raises(InputFileError, match=f"not a video: {frames} frame") as info:
            require_motion(tin, video, path, 16)
        assert all(name in info.value.fix for name in STATICS)
        require_motion(get_model_spec("resnet50"), video, path, 16)  # static models take single images
    with pytest.warns(AlnvidWarning, match="2 frames, fewer than the clip length T = 16"):
        require_motion(tin, cache.load(US_TWO), US_TWO, 16)


@pytest.mark.parametrize("fixture", ["US_FRAME", "identical_frames", "one_frame_gif"])
def test_predict_and_explain_refuse_a_single_frame(fixture, request, tin_checkpoint, tmp_path):
    path = US_FRAME if fixture == "US_FRAME" else request.getfixturevalue(fixture)
    out = tmp_path / "p.csv"
    assert_refused(run("predict", path, "-c", tin_checkpoint, "--out", out), str(path), "not a video",
                   "video model tin needs a loop with at least 2 different frames", ", ".join(STATICS))
    assert not out.exists()
    assert_refused(run("explain", path, "-c", tin_checkpoint, "--out", tmp_path / "x"), "not a video")
    assert nothing_in(tmp_path / "x")


def test_predict_refuses_a_still_image_with_the_static_models(tiny_cohort, tin_checkpoint, tmp_path):
    still = next((tiny_cohort.parent / "stills").glob("*.png"))
    out = tmp_path / "p.csv"
    assert_refused(run("predict", still, "-c", tin_checkpoint, "--out", out), str(still),
                   "a still image cannot be given to the video model tin", ", ".join(STATICS))
    assert not out.exists()


def test_a_loop_shorter_than_the_clip_is_scored_with_a_warning(tin_checkpoint):
    assert load_trained(tin_checkpoint).config.data.frames == 4
    ds = pydicom.dcmread(US_TWO, stop_before_pixels=True)
    assert int(ds.NumberOfFrames) == 2 and ds.Modality == "US"
    result = run("predict", US_TWO, "-c", tin_checkpoint, "--json")
    assert result.exit_code == 0, result.output
    assert "Warning:" in result.output and "2 frames, fewer than the clip length T = 4" in result.output


def test_fit_refuses_a_single_frame_before_writing(tiny_cohort, tmp_path):
    manifest, table = copy_cohort(tiny_cohort, tmp_path)
    table.loc[0, "path"] = str(US_FRAME)
    table.to_csv(manifest, index=False)
    assert_refused(run("fit", *fit_args(manifest, tmp_path)), str(US_FRAME), "not a video", ", ".join(STATICS))
    assert nothing_in(tmp_path / "run")



def test_fit_refuses_a_disk_too_full_for_its_checkpoints_before_writing(tiny_cohort, tmp_path, monkeypatch):
    """TIN's 24 M float32 weights need about 7 x 94 MB of checkpoints at once; with 100 MB free, fit says so before
    it decodes anything into the cache (which can take long)."""
    import alnvid.train as train

    real = shutil.disk_usage
    monkeypatch.setattr(train.shutil, "disk_usage", lambda path: real(path)._replace(free=100_000_000))
    result = run("fit", *fit_args(tiny_cohort, tmp_path))
    weights = sum(p.numel() * 4 for p in train.build_module(RunConfig()).parameters())
    assert_refused(result, "0.10 GB are free", f"need about {7 * weights / 1e9:.2f} GB", "--out")
    assert nothing_in(tmp_path / "run") and nothing_in(tmp_path / "cache")


def test_cv_counts_the_checkpoints_of_every_fold_training_at_once(tiny_cohort, tmp_path, monkeypatch):
    """3 folds, 2 at a time: 2 x 7 copies of the weights while the first two train, and the third's best.ckpt
    later, 15 copies. With room for 14.5, cv refuses before any fold folder or cache file is written and names
    --parallel-folds; each fold alone would have passed fit's own check (7)."""
    import alnvid.train as train

    weights = sum(p.numel() * 4 for p in train.build_module(RunConfig()).parameters())
    real = shutil.disk_usage
    monkeypatch.setattr(train.shutil, "disk_usage", lambda path: real(path)._replace(free=int(14.5 * weights)))
    result = run("cv", *fit_args(tiny_cohort, tmp_path), "--folds", "3", "--parallel-folds", "2")
    assert_refused(result, f"need about {15 * weights / 1e9:.2f} GB while it trains (2 folds training at once)",
                   "--parallel-folds")
    assert nothing_in(tmp_path / "run") and nothing_in(tmp_path / "cache")

# --- manifests that cannot be trained on ---------------------------------------------------------------------------

def test_header_only_manifest(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("patient_id,path,label\n")
    assert_refused(run("cohort", "check", manifest), "the manifest has a header but no rows")
    assert_refused(run("fit", *fit_args(manifest, tmp_path)), str(manifest), "header but no rows")
    assert_refused(run("cv", *fit_args(manifest, tmp_path)), "header but no rows")
    assert nothing_in(tmp_path / "run")


def test_one_class_manifest(tiny_cohort, tmp_path):
    manifest, table = copy_cohort(tiny_cohort, tmp_path)
    table["label"] = "1"
    table.to_csv(manifest, index=False)
    assert_refused(run("cohort", "check", manifest), "split 'train' has only class 1")
    assert_refused(run("fit", *fit_args(manifest, tmp_path)), "has only class 1")
    assert nothing_in(tmp_path / "run")


def test_too_many_folds_are_refused_with_a_fold_count_that_works(tiny_cohort, tmp_path):
    assert run("cohort", "check", tiny_cohort, "--folds", "6").exit_code == 0  # 6 positives, 10 negatives in train
    assert_refused(run("cohort", "check", tiny_cohort, "--folds", "7"), "7-fold cross-validation needs at least 7 "
                   "patients of each class", "6 with label 1 and 10 with label 0", "use --folds 6 or fewer")
    assert_refused(run("cv", *fit_args(tiny_cohort, tmp_path), "--folds", "7"), "use --folds 6 or fewer")
    assert_refused(run("cv", *fit_args(tiny_cohort, tmp_path), "--folds", "2", "--fold", "2"),
                   "--fold 2 is outside 0..1")
    assert nothing_in(tmp_path / "run") and nothing_in(tmp_path / "cache")


def test_max_consensus_for_a_3d_cnn_is_refused_before_anything_is_read(tiny_cohort, tmp_path):
    for command in ("fit", "cv"):
        assert_refused(run(command, *fit_args(tiny_cohort, tmp_path), "--model", "r2plus1d", "--consensus", "max"),
                       "model 'r2plus1d' has no per-frame logits", "--consensus mean", "tin, tsm")
    assert_refused(run("fit", *fit_args(tiny_cohort, tmp_path), "--consensus", "median"),
                   "model.consensus", "mean, max")
    assert nothing_in(tmp_path / "run") and nothing_in(tmp_path / "cache")


# --- scores that are not probabilities -----------------------------------------------------------------------------

def _predictions(tmp_path: Path, prob, name="p.csv") -> Path:
    path = tmp_path / name
    labels = [0, 1, 0, 1, 0, 1, 1, 0]
    pd.DataFrame({"patient_id": [f"P{i}" for i in range(8)], "label": labels, "prob": prob}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("prob, shown", [([12, 80, 33, 62.13, 5, 90, 71, 40], "from 5 to 90"),
                                         ([-0.2, 0.8, 0.1, 0.7, 0.2, 0.9, 0.6, 0.4], "from -0.2 to 0.9")])
def test_stats_and_compare_refuse_scores_outside_0_1(prob, shown, tmp_path):
    path = _predictions(tmp_path, prob)
    for result in (run("stats", path), run("compare", path, path)):
        assert_refused(result, str(path), "must be a probability in [0, 1]", shown, "--scores rank or --scores logit")
        assert "AUC" not in result.stdout


def test_stats_on_a_runs_per_video_file_names_its_per_patient_twin(tmp_path):
    videos = tmp_path / "predictions_test_a_videos.csv"
    pd.DataFrame({"patient_id": ["P1", "P1", "P2"], "line": [2, 3, 4], "label": [1, 1, 0],
                  "prob": [0.9, 0.7, 0.2]}).to_csv(videos, index=False)
    assert_refused(run("stats", videos), "duplicated patient_id(s): P1", "per-patient predictions_test_a.csv")

def test_ranks_get_threshold_free_statistics_only(tmp_path):
    path = _predictions(tmp_path, [12, 80, 33, 62.13, 5, 90, 71, 40])
    result = run("stats", path, "--scores", "rank", "--json", "--n-boot", "100")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scores"] == "rank" and summary["threshold"] is None and summary["metrics"] is None
    assert summary["auc"] == 1.0  # positives 80, 62.13, 90, 71 all rank above the negatives
    assert summary["youden"]["threshold"] == pytest.approx((40 + 62.13) / 2)  # pROC's midpoint, on the rank scale
    text = run("stats", path, "--scores", "rank", "--n-boot", "100")
    assert "Youden-optimal threshold 51.06 (on the rank scale)" in " ".join(text.output.split())
    assert "Model at" not in text.output
    compared = run("compare", path, path, "--scores", "logit", "--json", "--n-boot", "100")
    assert compared.exit_code == 0 and json.loads(compared.stdout)["mcnemar"] is None


def test_constant_scores_have_no_youden_threshold(tmp_path):
    path = _predictions(tmp_path, [0.3] * 8)
    summary = json.loads(run("stats", path, "--json", "--n-boot", "100").stdout)
    assert summary["auc"] == 0.5 and summary["youden"] is None
    assert "every patient has the same score (0.3)" in summary["youden_note"]
    text = run("stats", path, "--n-boot", "100").output
    assert "inf" not in text and "no threshold separates them" in " ".join(text.split())


# --- messages --------------------------------------------------------------------------------------------------------

def test_latin1_manifest_is_refused_and_utf16_is_read(tiny_cohort, tmp_path):
    manifest, table = copy_cohort(tiny_cohort, tmp_path)
    table["site"] = "Hôpital Saint-Éloi"
    text = table.to_csv(index=False)
    manifest.write_bytes(text.encode("latin-1"))
    assert_refused(run("cohort", "check", manifest), "not UTF-8 text", "Latin-1", "save it as UTF-8")
    assert_refused(run("fit", *fit_args(manifest, tmp_path)), str(manifest), "save it as UTF-8")
    assert nothing_in(tmp_path / "run")
    manifest.write_bytes(text.encode("utf-16"))  # with its byte-order mark
    check = check_manifest(manifest)
    assert check.ok, check.problems
    assert (check.table["site"] == "Hôpital Saint-Éloi").all() and len(check.table) == len(table)


def test_a_folder_given_as_a_table_says_so(tmp_path):
    assert_refused(run("cohort", "check", tmp_path), "this is a folder, not a manifest CSV file")
    assert_refused(run("fit", *fit_args(tmp_path, tmp_path)), "this is a folder")
    assert_refused(run("stats", tmp_path), str(tmp_path), "this is a folder, not a predictions CSV file")
    assert nothing_in(tmp_path / "run")


def test_a_dicom_cut_inside_its_header_is_called_truncated(tiny_cohort, tmp_path):
    manifest, table = copy_cohort(tiny_cohort, tmp_path)
    cut = tmp_path / "cohort" / "videos" / "P001.dcm"
    cut.write_bytes(cut.read_bytes()[:700])
    assert pydicom.dcmread(cut, force=True).get("Rows") is None  # pydicom itself stops without a word
    with pytest.raises(InputFileError, match="truncated or corrupt: it ends inside its header"):
        read_video(cut)
    result = run("cohort", "check", manifest)
    assert_refused(result, "P001.dcm: the file is truncated or corrupt")
    assert "DICOMDIR" not in result.output


def test_compare_with_three_csvs_suggests_what_exists(tmp_path):
    paths = [_predictions(tmp_path, [0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.6, 0.4], f"{k}.csv") for k in "abc"]
    result = run("compare", *paths)
    assert_refused(result, "compare takes exactly two predictions CSVs", "alnvid compare a.csv b.csv")
    assert "evaluate" not in result.output


def test_stats_on_a_two_patient_split_names_no_missing_option(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("patient_id,label,prob,split\nA,0,0.2,test\nB,1,0.7,test\nC,0,0.1,val\nD,1,0.9,val\n"
                    "E,0,0.3,val\nF,1,0.6,val\n")
    result = run("stats", path, "--split", "test")
    assert_refused(result, str(path), "1 case(s) and 1 control(s)", "at least 2 of each")
    assert "without a CI" not in result.output


class Interrupt(L.Callback):
    """Stands in for the fold bookkeeping and presses Ctrl-C as the first epoch starts."""

    def __init__(self, *args):
        pass

    def on_train_epoch_start(self, trainer, pl_module):
        raise KeyboardInterrupt


def test_ctrl_c_during_cv_says_how_to_resume_and_exits_130(tiny_cohort, tmp_path, monkeypatch):
    monkeypatch.setattr("alnvid.cv.FoldBookkeeping", Interrupt)
    before = signal.getsignal(signal.SIGINT)
    result = run("cv", *fit_args(tiny_cohort, tmp_path), "--folds", "2")
    assert_refused(result, "Interrupted.", "rerun the same command to resume", code=130)
    assert signal.getsignal(signal.SIGINT) is before  # Lightning's "ignore Ctrl-C from now on" is undone
    assert not (tmp_path / "run" / "fold_0" / "summary.json").exists()


def test_disk_check_counts_only_the_checkpoints_of_the_runs_about_to_train(tmp_path, monkeypatch):
    """A resumed fold's checkpoints are replaced, so they count as room; a finished fold's stay, so they do not.
    Two runs of a 4 MB model need 2 x 7 x 4.004 MB = 56.06 MB."""
    import alnvid.train as train

    module = torch.nn.Linear(1000, 1000)  # 1,001,000 float32 parameters
    for fold, name, size in (("fold_0", "last.ckpt", 10_000_000), ("fold_1", "best.ckpt", 20_000_000)):
        (tmp_path / fold / "checkpoints").mkdir(parents=True)
        with open(tmp_path / fold / "checkpoints" / name, "wb") as file:
            file.truncate(size)
    real = shutil.disk_usage
    monkeypatch.setattr(train.shutil, "disk_usage", lambda path: real(path)._replace(free=50_000_000))
    train.check_disk_space(tmp_path, module, runs=[tmp_path / "fold_0", tmp_path / "fold_2"])  # 60 MB of room
    with pytest.raises(AlnvidError, match=r"0\.05 GB are free .* need about 0\.06 GB while it trains \(2 folds"):
        train.check_disk_space(tmp_path, module, runs=[tmp_path / "fold_2", tmp_path / "fold_3"])
    train.check_disk_space(tmp_path / "fold_2", module)  # one run: 28.03 MB
