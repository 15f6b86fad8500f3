"""Model registry (timm-style): every backbone of the study by name, with what callers need to feed and explain it."""
from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from alnvid.errors import AlnvidError, InputFileError

__all__ = ["ModelSpec", "build_model", "get_model_spec", "list_models", "load_weights", "register_model"]

InputKind = Literal["clip", "image"]
Family = Literal["video", "static"]


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model is and how to use it.

    input_kind: "clip" models take (N, C, T, H, W), "image" models (N, C, H, W); both return logits (N, classes).
    target_layer: dotted path of the last convolutional stage, for Grad-CAM.
    finer_layer: the stage before it (half its stride), which Grad-CAM uses where the last stage's maps are too
        coarse to localise anything at the input size (see ``alnvid.explain.gradcam.MIN_CAM_CELLS``).
    time_folded: the target layer's output is (N·T, C, h, w) (2D CNN on folded frames) rather than
        (N, C, t, h, w) or (N, C, h, w).
    input_size: the side length the architecture was designed for; min_input_size: the smallest that runs.
    """

    name: str
    builder: Callable[..., nn.Module]
    input_kind: InputKind
    kind: Family
    target_layer: str
    finer_layer: str | None = None
    input_size: int = 224
    min_input_size: int = 32
    time_folded: bool = False
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    input_kind: InputKind,
    target_layer: str,
    family: Family,
    finer_layer: str | None = None,
    input_size: int = 224,
    min_input_size: int = 32,
    time_folded: bool = False,
    description: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder ``fn(num_classes=..., [num_frames=...,] **kwargs) -> nn.Module`` under ``name``."""
    if input_kind not in ("clip", "image") or family not in ("video", "static"):
        raise ValueError(f"invalid input_kind={input_kind!r} or family={family!r} for model {name!r}")

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            input_kind=input_kind,
            kind=family,
            target_layer=target_layer,
            finer_layer=finer_layer,
            input_size=input_size,
            min_input_size=min_input_size,
            time_folded=time_folded,
            description=description if description is not None else (doc[0] if doc else ""),
        )
        return builder

    return decorator


def list_models(kind: Family | None = None) -> list[str]:
    """Registered model names, sorted; ``kind`` ("video" or "static") filters them."""
    return sorted(name for name, spec in _REGISTRY.items() if kind is None or spec.kind == kind)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise AlnvidError(
            f"unknown model {name!r}.",
            fix=f"use one of: {', '.join(list_models())}.",
        ) from None


def build_model(
    name: str,
    num_classes: int = 2,
    num_frames: int = 16,
    weights: str | Path | None = None,
    consensus: str = "mean",
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` with random initialisation, or with the state dict in the local file ``weights``.

    ``num_frames`` is passed to builders whose architecture depends on the clip length (TIN, TSM); the others
    accept any number of frames. ``consensus`` (how per-frame logits become a clip's) exists only for models that
    score frames one by one (TIN, TSM); the others refuse anything but 'mean'. ``weights`` may be a plain state
    dict or a Lightning checkpoint (keys under ``"state_dict"`` prefixed ``"model."``); loading is strict.
    """
    spec = get_model_spec(name)
    parameters = inspect.signature(spec.builder).parameters
    if "num_frames" in parameters:
        kwargs["num_frames"] = num_frames
    check_consensus(name, consensus)
    if "consensus" in parameters:
        kwargs["consensus"] = consensus
    model = spec.builder(num_classes=num_classes, **kwargs)
    if weights is not None:
        load_weights(model, weights)
    return model


def takes_consensus(name: str) -> bool:
    """Whether model `name` pools per-frame logits, so that its `consensus` can be chosen (TIN, TSM)."""
    return "consensus" in inspect.signature(get_model_spec(name).builder).parameters


def check_consensus(name: str, consensus: str) -> None:
    """Refuse a frame consensus other than 'mean' for a model that has no per-frame logits to pool."""
    if consensus != "mean" and not takes_consensus(name):
        takers = [other for other in list_models() if takes_consensus(other)]
        raise AlnvidError(f"model {name!r} has no per-frame logits to pool, so consensus {consensus!r} does not apply",
                          fix=f"use --consensus mean with {name!r}, or a frame-wise video model: {', '.join(takers)}.")


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict or Lightning checkpoint into ``model`` strictly, with errors that say what to do."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("weights file not found.", path=path, fix="check the path to the .pt/.ckpt file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise InputFileError(
            f"cannot read the weights file ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}).",
            path=path,
            fix="pass a file written by torch.save(model.state_dict(), path) or a Lightning checkpoint "
            "whose hyper-parameters are plain Python values.",
        ) from None
    state_dict = _extract_state_dict(checkpoint, path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        key for key in set(expected) & set(state_dict) if tuple(expected[key].shape) != tuple(state_dict[key].shape)
    )
    if missing or unexpected or mismatched:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                problems.append(f"{label} keys: {shown}")
        raise InputFileError(
            f"the weights do not match this {type(model).__name__} ({'; '.join(problems)}).",
            path=path,
            fix="build the same model (name, num_classes, num_frames) that was trained to produce this file.",
        )
    model.load_state_dict(state_dict, strict=True)


def _extract_state_dict(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model's tensors from a plain state dict or a Lightning checkpoint (``"model."`` prefix removed)."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise InputFileError(
            "the file is not a state dict (a mapping of parameter names to tensors).",
            path=path,
            fix="save weights with torch.save(model.state_dict(), path) or pass a Lightning .ckpt file.",
        )
    if any(key.startswith("model.") for key in checkpoint):
        checkpoint = {key.removeprefix("model."): v for key, v in checkpoint.items() if key.startswith("model.")}
    return {key.removeprefix("_orig_mod."): value for key, value in checkpoint.items()}
