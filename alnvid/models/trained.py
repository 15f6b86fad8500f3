"""A trained model with its run's settings, and its evaluation-time input: the same crop, resize, sampling and
scaling as at evaluation in training. Used by prediction (the run layer) and by Grad-CAM (explain/).

`ModelEnsemble` uses several trained models of one recipe (a cross-validation's folds) as one, as `alnvid cv`'s
fold ensemble does: P(metastasis) is the mean of the members' probabilities."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from alnvid.config import DataConfig, RunConfig
from alnvid.data.cache import PreprocessCache, Preprocessed, default_cache_dir
from alnvid.data.crop import Box
from alnvid.data.transforms import apply_to_clip, clip_transform, evaluation_views
from alnvid.errors import AlnvidError, AlnvidWarning, InputFileError
from alnvid.io import IMAGE_SUFFIXES
from alnvid.models.module import ALNClassifier
from alnvid.models.registry import ModelSpec, list_models


@dataclass
class TrainedModel:
    """A checkpoint with the configuration of the run that made it."""

    module: ALNClassifier
    config: RunConfig
    checkpoint: Path

    @property
    def spec(self) -> ModelSpec:
        return self.module.spec

    @property
    def input_size(self) -> int:
        return network_input_size(self.config.data, self.spec)

    @property
    def members(self) -> list[TrainedModel]:
        """The networks whose probabilities are averaged: this one alone (as `ModelEnsemble.members`)."""
        return [self]

    def class_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (B, classes) of a batch, on the model's device (as ExportedModel's)."""
        with torch.no_grad():
            return self.module.class_probabilities(x.to(self.module.device))


@dataclass
class ModelEnsemble:
    """Trained models of one recipe (same architecture, frames, sizes and clips) used as one: their mean
    probability, as `alnvid cv`'s fold ensemble. Settings, input and preprocessing are the first member's."""

    members: list[TrainedModel]

    @property
    def config(self) -> RunConfig:
        return self.members[0].config

    @property
    def spec(self) -> ModelSpec:
        return self.members[0].spec

    @property
    def input_size(self) -> int:
        return self.members[0].input_size

    def class_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of the members' softmax probabilities (B, classes)."""
        return torch.stack([member.class_probabilities(x) for member in self.members]).mean(0)


INPUT_SETTINGS = ("frames", "resize", "crop_size", "input_size", "eval_clips", "eval_flip", "still_frames",
                  "mask_overlays")
"""DataConfig settings that shape a model's input: the members of an ensemble must agree on all of them."""


def load_models(checkpoints: Sequence[str | Path], *, device: str = "cpu", eval_clips: int | None = None,
                eval_flip: bool | None = None) -> TrainedModel | ModelEnsemble:
    """One checkpoint's model, or the ensemble of several (refused unless they take the same input)."""
    if not checkpoints:
        raise AlnvidError("no checkpoint given", fix="pass --checkpoint RUN/checkpoints/best.ckpt (or a run folder).")
    models = [load_trained(c, device=device, eval_clips=eval_clips, eval_flip=eval_flip) for c in checkpoints]
    if len(models) == 1:
        return models[0]
    first = models[0]
    for model in models[1:]:
        differ = [name for name in INPUT_SETTINGS
                  if getattr(model.config.data, name) != getattr(first.config.data, name)]
        if model.spec.name != first.spec.name:
            differ.insert(0, f"model {model.spec.name} vs {first.spec.name}")
        if differ:
            raise AlnvidError(f"cannot average this checkpoint with {first.checkpoint}: it differs in "
                              f"{', '.join(differ)}", path=model.checkpoint,
                              fix="give the folds of one cross-validation (or its folder), not models of "
                              "different recipes.")
    return ModelEnsemble(models)


@dataclass
class FilePrediction:
    """P(metastasis) for one file, with the frames of the original loop that the model saw."""

    path: Path
    prob: float
    frame_indices: np.ndarray
    video: Preprocessed


def load_trained(checkpoint: str | Path, *, device: str = "cpu", eval_clips: int | None = None,
                 eval_flip: bool | None = None) -> TrainedModel:
    """Load a checkpoint with the settings of the run that made it: those embedded in the checkpoint, or, for
    older checkpoints without them, the config.yaml of its run folder (checkpoints/../).
    `eval_clips` and `eval_flip` override the run's evaluation clips per video and mirroring (None keeps them)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise AlnvidError("checkpoint not found" + (" (this is a folder)" if checkpoint.is_dir() else ""),
                          path=checkpoint,
                          fix="give a run's checkpoints/best.ckpt (written by `alnvid fit` or `alnvid cv`).")
    try:
        module = ALNClassifier.load_from_checkpoint(checkpoint, map_location=device, weights=None)
    except AlnvidError:
        raise
    except Exception as exc:  # any unreadable file (truncated, random bytes, another program's pickle) alike
        raise AlnvidError(f"not a readable alnvid checkpoint ({type(exc).__name__})", path=checkpoint,
                          fix="give a best.ckpt or last.ckpt written by `alnvid fit` or `alnvid cv`, copied "
                          "completely; a crashed run keeps checkpoints/last.ckpt.") from None
    config = _run_config(module, checkpoint)
    config.data.frames = module.hparams.num_frames
    if not Path(config.data.cache_dir).is_dir():  # a checkpoint copied to another machine, or a run moved
        config.data.cache_dir = str(default_cache_dir())
    if eval_clips is not None:
        config.data.eval_clips = eval_clips
        config.data.__post_init__()
    if eval_flip is not None:
        config.data.eval_flip = eval_flip
    return TrainedModel(module.eval().to(device), config, checkpoint)


def _run_config(module: ALNClassifier, checkpoint: Path) -> RunConfig:
    if module.run_config is not None:
        return RunConfig.from_dict(module.run_config, source=f"{checkpoint} (embedded settings)")
    config_file = checkpoint.parent.parent / "config.yaml"
    if not config_file.is_file():
        raise AlnvidError("this checkpoint holds no run settings and is not inside its run folder (no "
                          "../config.yaml beside checkpoints/)", path=checkpoint,
                          fix="use it from inside its run folder (its config.yaml holds the crop, size and clip "
                          "settings the model must be given), or retrain with the current version of alnvid, "
                          "whose checkpoints carry their settings.")
    return RunConfig.load(config_file)


def frames_input(model: TrainedModel, video: Preprocessed, indices: np.ndarray) -> torch.Tensor:
    """Evaluation-time network input for the frames `indices` of a video: (3, T, H, W) for clip models,
    (T, 3, H, W) for static models (frames whose probabilities the module averages)."""
    data = model.config.data
    clip = apply_to_clip(clip_transform(data.crop_size, model.input_size, train=False), video.frames[indices])
    return clip.permute(1, 0, 2, 3) if model.spec.input_kind == "image" else clip


def prepare_input(model: TrainedModel, video: Preprocessed) -> tuple[torch.Tensor, np.ndarray]:
    """The network input for one preprocessed video (batch of 1) and the loop frame indices it holds, as in
    evaluation (`evaluation_views`): a video model's one clip (1, 3, T, H, W) from frames (T,), or with `eval_clips`
    K > 1 or `eval_flip` its views (1, K or 2K, 3, T, H, W) from frames (K, T); a static model's views (1, V, 3,
    H, W), V = 1 or T (`still_frames`), 2V with `eval_flip`, from frames (V,)."""
    transform = clip_transform(model.config.data.crop_size, model.input_size, train=False)
    views, indices = evaluation_views(video.frames, model.config.data, model.spec.input_kind, transform)
    if model.spec.input_kind == "clip" and len(views) == 1:
        return views, indices[0]
    return views.unsqueeze(0), indices


def require_motion(spec: ModelSpec, video: Preprocessed, path: str | Path, frames: int) -> None:
    """Refuse what a video model cannot learn motion from (a still image, or a loop of fewer than 2 different
    frames) with the static models to use instead; warn when the loop is shorter than the clip length T."""
    if spec.input_kind != "clip":
        return
    statics = ", ".join(list_models("static"))
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        raise InputFileError(f"a still image cannot be given to the video model {spec.name}", path=path,
                             fix=f"give the cine loop, or use a static model ({statics}) for still images.")
    if video.distinct_frames < 2:
        raise InputFileError(f"not a video: {video.n_frames} frame(s), {video.distinct_frames} different, but the "
                             f"video model {spec.name} needs a loop with at least 2 different frames", path=path,
                             fix=f"export the whole cine loop, or use a static model ({statics}) for single images.")
    if video.n_frames < frames:
        warnings.warn(f"{path}: {video.n_frames} frames, fewer than the clip length T = {frames}; frames are "
                      "repeated to fill the clip", AlnvidWarning, stacklevel=2)


def load_input(model: TrainedModel, path: str | Path, *, box: Box | None = None,
               cache: PreprocessCache | None = None) -> Preprocessed:
    """The preprocessed file (from the cache) this model is given, refused when the model cannot use it."""
    cache = cache or PreprocessCache.from_config(model.config.data)
    video = cache.load(path, box=box)
    require_motion(model.spec, video, path, model.config.data.frames)
    return video


def predict_file(model: TrainedModel, path: str | Path, *, box: Box | None = None,
                 cache: PreprocessCache | None = None) -> FilePrediction:
    """Probability of metastasis for one DICOM or video file (`model` may also be a `ModelEnsemble` or an exported
    model, see alnvid.models.exported.ExportedModel)."""
    video = load_input(model, path, box=box, cache=cache)
    x, indices = prepare_input(model, video)
    prob = float(model.class_probabilities(x)[0, 1])
    return FilePrediction(Path(path), prob, indices, video)


def model_input(model: TrainedModel, row: pd.Series) -> tuple[str, Box | None]:
    """The file (and crop box) a manifest row gives this model: a static model takes the row's still image when
    there is one, as in training; otherwise the video with its optional crop box."""
    still = row.get("still_path", "")
    if model.spec.input_kind == "image" and isinstance(still, str) and still:
        return still, None
    return row["path"], Box.optional(row.get("crop_box", ""))


def network_input_size(data: DataConfig, spec: ModelSpec) -> int:
    """The side fed to the network: the configured size, else the model's own (299 for InceptionV3), never below
    the smallest the architecture accepts."""
    return max(data.input_size or spec.input_size, spec.min_input_size)
