"""Trained models as single deployable files (ONNX or TorchScript) that `alnvid predict --model-file` runs without
Lightning, checkpoints or the run folder.

The exported network maps a float32 batch in [0, 1] to softmax probabilities (N, num_classes); column 1 is
P(metastasis). Clip models take (N, 3, T, H, W), static models single images (N, 3, H, W): a static model evaluated
on several frames of a loop (``still_frames: all``) is exported as the image classifier, and the caller averages
the frame probabilities per video, as training's evaluation does. The batch size is dynamic; T, H and W are those
of the run (TIN and TSM are built for a fixed T, and the spatial size is part of the preprocessing). Every registered
backbone exports, TIN included (its interlace is plain PyTorch); VGG's adaptive pool is rewritten as an equal
matrix form that the ONNX exporter takes at any input size.

A `ModelEnsemble` (a cross-validation's folds) exports as one file whose output is the mean of the members'
probabilities, as `alnvid cv`'s fold ensemble and `predict -c <cv folder>` compute it.

Each file carries the preprocessing that `predict` needs (:data:`METADATA_KEYS`): in ONNX as ``metadata_props``
(each value JSON-encoded), in TorchScript as the extra file ``alnvid.json``.
"""
from __future__ import annotations

import copy
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

import alnvid
from alnvid.config import RunConfig
from alnvid.data.cache import CACHE_FORMAT, default_cache_dir
from alnvid.errors import AlnvidError, InputFileError
from alnvid.models.module import standardise_items
from alnvid.models.registry import ModelSpec, get_model_spec
from alnvid.models.trained import ModelEnsemble, TrainedModel
from alnvid.utils import atomic_path

__all__ = ["ExportFormat", "ExportedModel", "export_model", "load_exported", "metadata_for"]

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
FORMAT_VERSION = 2
"""The newest format this version reads and writes; bump when the meaning of the input, output or metadata changes.
2: the file asks for evaluation that a reader of format 1 may not know (eval_clips > 1, eval_flip) and would
otherwise score silently with one unmirrored clip. A file whose evaluation settings are the defaults is still
written as format 1, which every version reads."""
TORCHSCRIPT_METADATA = "alnvid.json"
ONNX_OPSET = 17
TOLERANCE = 1e-4
"""Largest difference from PyTorch's probabilities that an export may show on its self-check."""

CROP_RULE = ("imaging region: DICOM ultrasound regions, else the largest region that moves over time (a manifest "
             "crop_box overrides it); burned-in overlays masked when mask_overlays; resized to resize x resize; "
             "centre crop crop_size x crop_size; rescaled to input_size x input_size; RGB scaled to [0, 1]")
SAMPLING_RULE = {"clip": "T = frames frames at the centres of T equal segments of the whole loop (eval_clips K > 1: "
                         "K interleaved such clips, their probabilities averaged; eval_flip: each clip also "
                         "mirrored left-right, averaged with it)",
                 "image": "the still image, else the middle frame of the loop (still_frames: middle) or T = frames "
                          "frames at segment centres, their probabilities averaged (still_frames: all; eval_flip: "
                          "each also mirrored left-right, averaged with it)"}
METADATA_KEYS = ("format_version", "alnvid_version", "model_name", "input_kind", "num_classes", "frames", "resize",
                 "crop_size", "input_size", "mask_overlays", "still_frames", "crop_rule", "frame_sampling",
                 "preprocessing_version", "input_layout", "output")
OPTIONAL_METADATA_KEYS = ("eval_clips", "members", "eval_flip")
"""Written since format 1 gained them; a file without them gets their default (eval_clips 1, members 1,
eval_flip false)."""


class _Probabilities(nn.Module):
    """The network followed by a float32 softmax, after the per-item standardisation when the model was trained
    with it (`model.input_norm` 'clip'): what `ALNClassifier.class_probabilities` computes per item."""

    def __init__(self, network: nn.Module, standardise: bool = False):
        super().__init__()
        self.network = network
        self.standardise = standardise

    def forward(self, x: Tensor) -> Tensor:
        out = self.network(standardise_items(x) if self.standardise else x)
        logits = out.logits if hasattr(out, "logits") else out
        return logits.float().softmax(-1)


class _AdaptiveAvgPool2dByMatrices(nn.Module):
    """``AdaptiveAvgPool2d`` written as two averaging matrices, ``A_h · x · A_wᵀ``, with PyTorch's windows
    ``[floor(i·n/m), ceil((i+1)·n/m))``. The ONNX exporter only takes adaptive pools whose output size divides the
    input size, which VGG's 7 x 7 pool breaks below 224 px; this form exports at any size, with the same values."""

    def __init__(self, output_size: tuple[int, int]):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        rows = _window_means(self.output_size[0], int(x.shape[-2]), x.dtype)
        cols = _window_means(self.output_size[1], int(x.shape[-1]), x.dtype)
        return rows @ x @ cols.T


def _window_means(out: int, size: int, dtype: torch.dtype) -> Tensor:
    """(out, size) matrix whose row i averages adaptive-pool window i of a length-`size` axis."""
    matrix = torch.zeros(out, size, dtype=dtype)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class _MeanProbabilities(nn.Module):
    """Several `_Probabilities` averaged: an ensemble's output, one network in the file."""

    def __init__(self, members: list[_Probabilities]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)


def _exportable(network: nn.Module) -> nn.Module:
    """A copy of `network` with every non-global ``AdaptiveAvgPool2d`` replaced by :class:`_AdaptiveAvgPool2dByMatrices`."""
    network = copy.deepcopy(network)
    for name, layer in list(network.named_modules()):
        if isinstance(layer, nn.AdaptiveAvgPool2d):
            size = layer.output_size if isinstance(layer.output_size, tuple) else (layer.output_size,) * 2
            if size != (1, 1) and None not in size:
                parent, _, child = name.rpartition(".")
                setattr(network.get_submodule(parent) if parent else network, child, _AdaptiveAvgPool2dByMatrices(size))
    return network


def metadata_for(model: TrainedModel | ModelEnsemble) -> dict[str, Any]:
    """The preprocessing and model facts an exported file carries (see :data:`METADATA_KEYS`)."""
    data, spec = model.config.data, model.spec
    clip = spec.input_kind == "clip"
    return {
        "format_version": 2 if (clip and data.eval_clips > 1) or data.eval_flip else 1,
        "alnvid_version": alnvid.__version__,
        "model_name": spec.name,
        "input_kind": spec.input_kind,
        "num_classes": int(model.config.model.num_classes),
        "frames": int(data.frames),
        "resize": int(data.resize),
        "crop_size": int(data.crop_size),
        "input_size": int(model.input_size),
        "mask_overlays": bool(data.mask_overlays),
        "still_frames": data.still_frames,
        "eval_clips": int(data.eval_clips) if clip else 1,  # optional: files from before it score one clip
        "eval_flip": bool(data.eval_flip),  # optional: files from before it do not mirror
        "members": len(model.members),
        "crop_rule": CROP_RULE,
        "frame_sampling": SAMPLING_RULE[spec.input_kind],
        "preprocessing_version": CACHE_FORMAT,
        "input_layout": "x: float32 (N, 3, T, H, W) in [0, 1]" if clip else "x: float32 (N, 3, H, W) in [0, 1]",
        "output": "probabilities: float32 (N, num_classes), softmax; column 1 = P(metastasis)",
    }


def example_input(metadata: dict[str, Any], batch: int, seed: int = 0) -> Tensor:
    """A random input batch of the exported shape."""
    side = metadata["input_size"]
    shape = (batch, 3, metadata["frames"], side, side) if metadata["input_kind"] == "clip" else (batch, 3, side, side)
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def export_model(model: TrainedModel | ModelEnsemble, fmt: str, out: str | Path) -> dict[str, Any]:
    """Write `model` (one network, or an ensemble as the mean of its members' probabilities) as an ONNX or
    TorchScript file with its preprocessing metadata; return a self-check report.

    The file is traced on a batch of 2 and checked on a different batch of 3 (so the dynamic batch is exercised):
    it is kept only if its probabilities equal PyTorch's within :data:`TOLERANCE`.
    """
    if fmt not in FORMATS:
        raise AlnvidError(f"unknown export format {fmt!r}", fix=f"use --format {' or --format '.join(FORMATS)}.")
    out = Path(out)
    metadata = metadata_for(model)
    members = [_probabilities(member) for member in model.members]
    wrapper = (members[0] if len(members) == 1 else _MeanProbabilities(members)).float().eval().cpu()
    trace_input, check_input = example_input(metadata, 2, seed=0), example_input(metadata, 3, seed=1)
    with torch.no_grad():
        expected = wrapper(check_input).numpy()
    with atomic_path(out) as tmp:
        if fmt == "onnx":
            _write_onnx(wrapper, trace_input, metadata, tmp)
        else:
            _write_torchscript(wrapper, trace_input, metadata, tmp)
        got = load_exported(tmp).run(check_input.numpy())
        difference = float(np.abs(got - expected).max())
        if not difference <= TOLERANCE:
            raise AlnvidError(f"the exported {fmt} model differs from PyTorch by {difference:.2g} (more than "
                              f"{TOLERANCE:g}); nothing was written", path=out,
                              fix="report this with the model name and `alnvid --version`; try the other --format.")
    return {"out": str(out), "format": fmt, "model": metadata["model_name"], "max_abs_difference": difference,
            "metadata": metadata}


def _probabilities(model: TrainedModel) -> _Probabilities:
    """One trained network as the exported function: its input standardisation (if trained with it), then softmax."""
    standardise = model.module.hparams.get("input_norm", "none") == "clip"
    return _Probabilities(_exportable(model.module.model), standardise)


def _write_onnx(wrapper: nn.Module, example: Tensor, metadata: dict[str, Any], path: Path) -> None:
    """TorchScript-based ONNX export (opset 17), dynamic batch, metadata as JSON-valued metadata_props.

    The TorchScript-based exporter is used rather than torch.export's (torch >= 2.9's default): it works with every
    torch this package supports, needs no onnxscript, and traces TIN in a third of the time.
    """
    import onnx

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the exporter chosen above, on purpose
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["x"], output_names=["probabilities"],
                          dynamic_axes={"x": {0: "batch"}, "probabilities": {0: "batch"}})
    graph = onnx.load(str(path))
    for key in (*METADATA_KEYS, *OPTIONAL_METADATA_KEYS):
        graph.metadata_props.add(key=key, value=json.dumps(metadata[key]))
    graph.producer_name = "alnvid"
    onnx.save(graph, str(path))


def _write_torchscript(wrapper: nn.Module, example: Tensor, metadata: dict[str, Any], path: Path) -> None:
    """Traced TorchScript with the metadata as the extra file alnvid.json."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})


@dataclass
class ExportedModel:
    """An exported file with the same interface prediction uses for a checkpoint (`config`, `spec`,
    `input_size`, `class_probabilities`), so `predict_file` and `inference.predict_inputs` take either."""

    path: Path
    format: ExportFormat
    metadata: dict[str, Any]
    config: RunConfig
    _session: Any

    @property
    def spec(self) -> ModelSpec:
        return get_model_spec(self.metadata["model_name"])

    @property
    def input_size(self) -> int:
        return int(self.metadata["input_size"])

    def run(self, x: np.ndarray) -> np.ndarray:
        """The exported network's probabilities for one batch of the exported input layout."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.format == "onnx":
            return self._session.run(None, {"x": x})[0]
        with torch.no_grad():
            return self._session(torch.from_numpy(x)).numpy()

    def class_probabilities(self, x: Tensor) -> Tensor:
        """Probabilities (B, classes); several frames (B, K, 3, H, W) or clips (B, K, 3, T, H, W) per item are
        averaged, as `ALNClassifier.class_probabilities` does."""
        array = x.detach().cpu().float().numpy()
        if array.ndim == (5 if self.spec.input_kind == "image" else 6):
            b, k = array.shape[:2]
            return torch.from_numpy(self.run(array.reshape(b * k, *array.shape[2:])).reshape(b, k, -1).mean(1))
        return torch.from_numpy(self.run(array))


def load_exported(path: str | Path, *, eval_clips: int | None = None, eval_flip: bool | None = None) -> ExportedModel:
    """Open a file written by `alnvid export` (ONNX or TorchScript, told apart by content) with its metadata.
    `eval_clips` and `eval_flip` override the exported run's evaluation clips per video and mirroring (None keeps
    them)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("exported model not found.", path=path,
                             fix="give the .onnx or .pt file written by `alnvid export`.")
    if zipfile.is_zipfile(path):
        fmt, session, metadata = "torchscript", *_open_torchscript(path)
    else:
        fmt, session, metadata = "onnx", *_open_onnx(path)
    _check_metadata(metadata, path)
    config = RunConfig()
    for name in ("frames", "resize", "crop_size", "input_size", "mask_overlays", "still_frames"):
        setattr(config.data, name, metadata[name])
    config.data.eval_clips = metadata.get("eval_clips", 1) if eval_clips is None else eval_clips
    config.data.eval_flip = bool(metadata.get("eval_flip", False)) if eval_flip is None else eval_flip
    metadata.setdefault("members", 1)
    config.data.__post_init__()
    config.data.cache_dir = str(default_cache_dir())
    config.model.name, config.model.num_classes = metadata["model_name"], metadata["num_classes"]
    return ExportedModel(path, fmt, metadata, config, session)


def _open_onnx(path: Path) -> tuple[Any, dict[str, Any]]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=ort.get_available_providers())
    except Exception as error:  # onnxruntime raises its own untyped errors for files it cannot parse
        raise InputFileError(f"not a readable ONNX or TorchScript model ({type(error).__name__}).", path=path,
                             fix="give the file written by `alnvid export` (copy it again if it was truncated).") from None
    raw = session.get_modelmeta().custom_metadata_map
    try:
        metadata = {key: json.loads(value) for key, value in raw.items()
                    if key in METADATA_KEYS or key in OPTIONAL_METADATA_KEYS}
    except json.JSONDecodeError:
        metadata = {}
    return session, metadata


def _open_torchscript(path: Path) -> tuple[Any, dict[str, Any]]:
    extra = {TORCHSCRIPT_METADATA: ""}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated.*", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as error:
        raise InputFileError(f"not a readable TorchScript model ({type(error).__name__}).", path=path,
                             fix="give the file written by `alnvid export` (copy it again if it was truncated).") from None
    try:
        metadata = json.loads(extra[TORCHSCRIPT_METADATA] or "{}")
    except json.JSONDecodeError:
        metadata = {}
    return module.eval(), metadata


def _check_metadata(metadata: dict[str, Any], path: Path) -> None:
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise InputFileError(f"the model file lacks alnvid's preprocessing metadata ({', '.join(missing)}), so "
                             "its input cannot be prepared as in training.", path=path,
                             fix="export the run's checkpoint with `alnvid export CHECKPOINT --out FILE`.")
    if metadata["format_version"] > FORMAT_VERSION:
        raise InputFileError(f"the model was exported by a newer alnvid ({metadata['alnvid_version']}, export format "
                             f"{metadata['format_version']}).", path=path,
                             fix=f"upgrade alnvid to {metadata['alnvid_version']} or later on this machine.")
