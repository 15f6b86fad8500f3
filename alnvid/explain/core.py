"""Explain a trained model's prediction on one file: Grad-CAM over the sweep, keyframes and the pictures.

Output names are neutral: ``explain_<first 8 hex digits of the file's SHA-256>`` unless a name is given, because
file names of scanner exports often carry the patient's name, ID or exam date. Nothing from the DICOM header is
written; the JSON holds the probability, keyframes, times, boxes, the model name and the file's content hash.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from alnvid.data.cache import PreprocessCache, Preprocessed
from alnvid.data.crop import Box
from alnvid.data.sampling import eval_clip_indices
from alnvid.errors import AlnvidError
from alnvid.explain.gradcam import GradCAM, GradCAMResult, normalise_clip
from alnvid.explain.keyframe import InputGeometry, Keyframe, heat_box, select_keyframes
from alnvid.explain.overlay import (
    HIGHLIGHT,
    blend,
    contact_sheet,
    keyframe_figure,
    save_gif,
    save_mp4,
    save_png,
)
from alnvid.models.trained import ModelEnsemble, TrainedModel, frames_input, load_input, prepare_input
from alnvid.io import content_hash
from alnvid.utils import atomic_path, atomic_write_text

__all__ = ["Explanation", "explain_file", "explain_video"]

MAX_SHEET_TILES = 32
CLIPS_PER_BATCH = 4
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class Explanation:
    """What `explain_file` found and wrote. ``prob`` is P(metastasis) exactly as `alnvid predict` computes it."""

    name: str
    sha256: str
    model_name: str
    prob: float
    cam: GradCAMResult
    keyframes: list[Keyframe]
    heat_box: Box | None
    crop_box: Box
    n_frames: int
    frame_time_ms: float | None
    multi_clip: bool
    per_clip_weights: bool
    files: dict[str, Path] = field(default_factory=dict)
    eval_clips: int = 1
    """Clips per video behind ``prob`` (as `alnvid predict` with the same --eval-clips)."""
    eval_flip: bool = False
    """Whether each clip was also scored and explained mirrored (`data.eval_flip`)."""
    models: int = 1
    """Models averaged (a cross-validation's fold ensemble, see `ModelEnsemble`), 1 for one checkpoint."""

    @property
    def keyframe(self) -> Keyframe | None:
        return self.keyframes[0] if self.keyframes else None

    def to_dict(self) -> dict:
        """JSON-ready summary (no header data, no input path)."""
        def frame(k: Keyframe) -> dict:
            return {"frame_index": k.frame_index, "time_s": k.time_s, "heat_mass": round(k.heat_mass, 4),
                    "hot_mass": round(k.hot_mass, 4)}

        return {
            "name": self.name,
            "file_sha256": self.sha256,
            "model": self.model_name,
            "probability": self.prob,
            "target_class": self.cam.target_class,
            "target_probability": self.cam.prob,
            "keyframe": frame(self.keyframe) if self.keyframe else None,
            "top_frames": [frame(k) for k in self.keyframes],
            "heat_box": None if self.heat_box is None else list(_box_tuple(self.heat_box)),
            "crop_box": list(_box_tuple(self.crop_box)),
            "explained_frames": [int(i) for i in self.cam.frame_indices],
            "n_frames": self.n_frames,
            "frame_time_ms": self.frame_time_ms,
            "channel_weights": "per_clip" if self.per_clip_weights else "per_frame",
            "layer": self.cam.layer,
            "multi_clip": self.multi_clip,
            "eval_clips": self.eval_clips,
            "eval_flip": self.eval_flip,
            "models": self.models,
            "files": {kind: path.name for kind, path in self.files.items()},
        }


def explain_video(model: TrainedModel | ModelEnsemble, video: Preprocessed, *, multi_clip: bool = False,
                  per_clip_weights: bool = True, target_class: int = 1) -> GradCAMResult:
    """Grad-CAM of a preprocessed video.

    An ensemble's heat is the mean of its members' heatmaps (each on its own 0-1 scale over the clip, so every
    member counts alike), put back on a 0-1 scale; its probabilities are the members' means.

    Default: the clips the model scores at evaluation (TSN sampling over the loop; `eval_clips` interleaved clips
    for a video model; with `eval_flip` each also mirrored, its maps mirrored back), one heatmap per sampled frame.
    ``multi_clip``: windows of T consecutive frames with stride T/2 cover the whole loop. Where several clips hold a
    frame, their raw maps are averaged per original frame and normalised over the loop, so every explained frame
    gets a heatmap on one common scale. Static models are run on every frame of the clip as a batch.
    """
    if isinstance(model, ModelEnsemble):
        return _ensemble_cam([explain_video(m, video, multi_clip=multi_clip, per_clip_weights=per_clip_weights,
                                            target_class=target_class) for m in model.members])
    cam = GradCAM.from_spec(model.module, model.spec, per_clip_weights=per_clip_weights)
    length = model.config.data.frames
    if multi_clip and video.n_frames > length:
        stride = length if model.spec.input_kind == "image" else max(1, length // 2)
        starts = list(range(0, video.n_frames - length + 1, stride))
        if starts[-1] != video.n_frames - length:
            starts.append(video.n_frames - length)
        windows = np.arange(length)[None] + np.array(starts)[:, None]  # (clips, T)
    else:
        clips = model.config.data.eval_clips if model.spec.input_kind == "clip" else 1
        windows = eval_clip_indices(video.n_frames, length, clips)
    mirror = model.config.data.eval_flip
    if len(windows) == 1 and not mirror:
        return cam(_model_input(model, video, windows)[0:1], target_class=target_class, frame_indices=windows[0])

    height = width = model.input_size
    heat_sum = torch.zeros(video.n_frames, height, width)
    prob_sum = torch.zeros(video.n_frames)
    count = torch.zeros(video.n_frames)
    clip_logits = []
    for chunk in np.array_split(windows, int(np.ceil(len(windows) / CLIPS_PER_BATCH))):
        inputs = _model_input(model, video, chunk)
        flat = torch.as_tensor(chunk.reshape(-1))
        for mirrored in (False, True) if mirror else (False,):
            raw, logits = cam.raw_maps(inputs.flip(-1) if mirrored else inputs, target_class=target_class)
            raw = raw.flip(-1) if mirrored else raw  # a mirrored view's maps back onto the frame as it is
            heat_sum.index_add_(0, flat, raw.cpu().flatten(0, 1))
            probs = logits.softmax(-1)[..., target_class].cpu()  # (clips, K)
            prob_sum.index_add_(0, flat, probs.expand(len(chunk), length).reshape(-1))
            count.index_add_(0, flat, torch.ones(flat.numel()))
            clip_logits.append(logits.mean(1).cpu())
    seen = count > 0
    heat = normalise_clip((heat_sum[seen] / count[seen, None, None])[None])[0]
    all_logits = torch.cat(clip_logits)
    return GradCAMResult(
        heat=heat.numpy(),
        prob=float(all_logits.softmax(-1)[:, target_class].mean()),
        logits=all_logits.numpy(),
        frame_indices=np.flatnonzero(seen.numpy()),
        target_class=target_class,
        frame_probs=(prob_sum[seen] / count[seen]).numpy() if model.spec.input_kind == "image" else None,
        layer=cam.used_layer,
    )


def _ensemble_cam(results: list[GradCAMResult]) -> GradCAMResult:
    first = results[0]
    heat = normalise_clip(torch.from_numpy(np.mean([r.heat for r in results], axis=0))[None])[0]
    frame_probs = None if first.frame_probs is None else np.mean([r.frame_probs for r in results], axis=0)
    return GradCAMResult(heat=heat.numpy(), prob=float(np.mean([r.prob for r in results])),
                         logits=np.mean([r.logits for r in results], axis=0), frame_indices=first.frame_indices,
                         target_class=first.target_class, frame_probs=frame_probs, layer=first.layer)


def explain_file(
    model: TrainedModel | ModelEnsemble,
    path: str | Path,
    out_dir: str | Path,
    *,
    multi_clip: bool = False,
    per_clip_weights: bool = True,
    target_class: int = 1,
    top_k: int = 3,
    gif: bool = True,
    mp4: bool = True,
    name: str | None = None,
    box: Box | None = None,
    cache: PreprocessCache | None = None,
    alpha: float = 0.5,
    cmap: str = "turbo",
) -> Explanation:
    """Explain the prediction on one DICOM or video and write the artefacts into ``out_dir``.

    Files (``<name>`` = ``explain_<sha8>`` or the given name): ``<name>_overlay.png`` (keyframe overlay at the
    size of the imaging region), ``<name>_keyframe.png`` (the same with colour bar, caption and heat box),
    ``<name>_sheet.png`` (every explained frame), ``<name>.gif`` / ``<name>.mp4`` (the whole sweep),
    ``<name>_heat.npz`` (heat and frame indices) and ``<name>.json`` (see :meth:`Explanation.to_dict`).
    """
    path, out_dir = Path(path), Path(out_dir)
    if top_k < 1:
        raise AlnvidError(f"top_k must be at least 1, got {top_k}", fix="ask for one or more keyframes.")
    if name is not None and not _SAFE_NAME.match(name):
        raise AlnvidError(f"output name {name!r} is not a plain file name",
                          fix="use letters, digits, '.', '_' and '-' only (no folders), e.g. case_017.")
    sha256 = content_hash(path)
    name = name or f"explain_{sha256[:8]}"
    data = model.config.data
    video = load_input(model, path, box=box, cache=cache)
    cam = explain_video(model, video, multi_clip=multi_clip, per_clip_weights=per_clip_weights,
                        target_class=target_class)
    if model.spec.input_kind == "clip" and not multi_clip and target_class == 1:
        prob = cam.prob  # of the evaluation views it explained, as `predict` averages them (members included)
    else:  # a static model is explained on every frame of the clip, and multi-clip on windows over the loop
        prob = float(model.class_probabilities(prepare_input(model, video)[0])[0, 1])
    geometry = InputGeometry(video.box, data.resize, data.crop_size, model.input_size)
    keyframes = select_keyframes(cam.heat, cam.frame_indices, top_k=top_k, frame_time_ms=video.frame_time_ms)
    hot = heat_box(cam.heat[keyframes[0].position], geometry) if keyframes else None
    explanation = Explanation(name, sha256, model.spec.name, prob, cam, keyframes, hot, video.box, video.n_frames,
                              video.frame_time_ms, multi_clip, per_clip_weights,
                              eval_clips=data.eval_clips if model.spec.input_kind == "clip" else 1,
                              eval_flip=data.eval_flip,
                              models=len(model.members))
    _write_artefacts(explanation, video, geometry, out_dir, gif=gif, mp4=mp4, alpha=alpha, cmap=cmap)
    return explanation


def _model_input(model: TrainedModel, video: Preprocessed, windows: np.ndarray) -> torch.Tensor:
    """Network input for clips of frame indices ``windows`` (clips, T): (clips, 3, T, H, W) for clip models,
    (clips, T, 3, H, W) frame stacks for static models."""
    return torch.stack([frames_input(model, video, w) for w in windows]).to(model.module.device)


def _write_artefacts(result: Explanation, video: Preprocessed, geometry: InputGeometry, out_dir: Path, *,
                     gif: bool, mp4: bool, alpha: float, cmap: str) -> None:
    cam, files = result.cam, result.files
    key = result.keyframe
    key_position = key.position if key else int(np.argmax(cam.heat_mass))

    def overlay(position: int) -> np.ndarray:
        frame = geometry.frame_on_crop(video.frames[cam.frame_indices[position]])
        return blend(frame, geometry.heat_on_crop(cam.heat[position]), alpha=alpha, cmap=cmap)

    key_overlay = overlay(key_position)
    files["overlay"] = save_png(key_overlay, out_dir / f"{result.name}_overlay.png")
    local_box = None
    if result.heat_box is not None:
        b, c = result.heat_box, result.crop_box
        local_box = (b.x0 - c.x0, b.y0 - c.y0, b.x1 - c.x0, b.y1 - c.y0)
    files["keyframe"] = save_png(keyframe_figure(key_overlay, _caption(result), cmap=cmap, box=local_box),
                                 out_dir / f"{result.name}_keyframe.png")

    positions = _sheet_positions(len(cam.heat), [k.position for k in result.keyframes])
    labels = [_frame_label(result, p) for p in positions]
    sheet = contact_sheet([overlay(p) for p in positions], labels, highlight=[p == key_position for p in positions])
    files["sheet"] = save_png(sheet, out_dir / f"{result.name}_sheet.png")

    with atomic_path(out_dir / f"{result.name}_heat.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, heat=cam.heat.astype(np.float16), frame_indices=cam.frame_indices)
    files["heat"] = out_dir / f"{result.name}_heat.npz"

    if gif or mp4:
        sweep = _sweep_frames(result, video, geometry, alpha=alpha, cmap=cmap)
        frame_ms = video.frame_time_ms or 50.0
        if gif:
            files["gif"] = save_gif(sweep, out_dir / f"{result.name}.gif", frame_ms=frame_ms)
        if mp4:
            written = save_mp4(sweep, out_dir / f"{result.name}.mp4", fps=1000.0 / frame_ms)
            if written is not None:
                files["mp4"] = written
    files["json"] = out_dir / f"{result.name}.json"
    atomic_write_text(files["json"], json.dumps(result.to_dict(), indent=2))


def _sweep_frames(result: Explanation, video: Preprocessed, geometry: InputGeometry, *, alpha: float, cmap: str,
                  max_side: int = 480) -> list[np.ndarray]:
    """Every frame of the loop with its heat: its own map in multi-clip mode, else the map of the sampled frame
    of its TSN segment (the frame that represents it in the clip). Keyframes get a red border."""
    cam = result.cam
    n = video.n_frames
    if len(cam.frame_indices) == n and np.array_equal(cam.frame_indices, np.arange(n)):
        position_of = np.arange(n)
    else:
        edges = np.linspace(0, n, len(cam.frame_indices) + 1)
        position_of = np.clip(np.searchsorted(edges, np.arange(n), side="right") - 1, 0, len(cam.frame_indices) - 1)
    scale = min(1.0, max_side / max(geometry.box.width, geometry.box.height))
    width, height = max(2, round(geometry.box.width * scale)), max(2, round(geometry.box.height * scale))
    small = InputGeometry(Box(0, 0, width, height), geometry.resize, geometry.crop_size, geometry.input_size)
    heats = {p: small.heat_on_crop(cam.heat[p]) for p in np.unique(position_of)}
    keys = {k.frame_index for k in result.keyframes[:1]}
    frames = []
    for index, position in enumerate(position_of):
        frame = blend(small.frame_on_crop(video.frames[index]), heats[position], alpha=alpha, cmap=cmap)
        if index in keys:
            frame[:3] = frame[-3:] = frame[:, :3] = frame[:, -3:] = HIGHLIGHT
        frames.append(frame)
    return frames


def _sheet_positions(count: int, keys: list[int]) -> list[int]:
    """All heatmap rows, or at most MAX_SHEET_TILES evenly spaced ones plus the keyframes."""
    if count <= MAX_SHEET_TILES:
        return list(range(count))
    spaced = np.linspace(0, count - 1, MAX_SHEET_TILES - len(keys)).round().astype(int)
    return sorted(set(spaced.tolist()) | set(keys))


def _frame_label(result: Explanation, position: int) -> str:
    index = int(result.cam.frame_indices[position])
    label = f"frame {index}"
    if result.frame_time_ms is not None:
        label += f"  {index * result.frame_time_ms / 1000:.2f} s"
    ranks = [rank for rank, k in enumerate(result.keyframes, 1) if k.position == position]
    if ranks:
        label += "  KEY" if ranks[0] == 1 else f"  top {ranks[0]}"
    return label


def _caption(result: Explanation) -> str:
    line = f"{result.model_name}: P(metastasis) = {result.prob:.3f}"
    if result.cam.target_class != 1:
        line += f"   (heat for class {result.cam.target_class}, P = {result.cam.prob:.3f})"
    key = result.keyframe
    if key is None:
        return line + "\nno positive Grad-CAM evidence for this class"
    where = f"keyframe: frame {key.frame_index} of {result.n_frames}"
    if key.time_s is not None:
        where += f" at {key.time_s:.2f} s"
    return f"{line}\n{where}"


def _box_tuple(box: Box) -> tuple[int, int, int, int]:
    return box.x0, box.y0, box.x1, box.y1
