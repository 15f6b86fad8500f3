"""3D CNNs on whole clips: pytorchvideo's R(2+1)D-50 and ResNet-3D-50, torchvision's R(2+1)D-18 and R3D-18.

All take (N, C, T, H, W) and return logits; their heads pool adaptively, so any clip length and size >= 32 px work.
pytorchvideo is imported inside the builders so that this module imports where it is not installed.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torchvision.models import video as tv_video

from alnvid.models.registry import register_model

__all__ = ["r2plus1d_18", "r2plus1d_50", "r3d_18", "resnet3d_50"]


@contextmanager
def _quiet_pytorchvideo_import() -> Iterator[None]:
    """Silence the torch.jit.script deprecation warning pytorchvideo's modules raise when first imported."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        yield


def _head_kwargs(num_classes: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Depth 50, logits (no softmax) and a global average head pool (the default only fits 224 px, T >= 16)."""
    return {
        "model_depth": 50,
        "model_num_class": num_classes,
        "head_activation": None,
        "head_pool": nn.AdaptiveAvgPool3d,
        "head_output_size": (1, 1, 1),
        **kwargs,
    }


@register_model(
    "r2plus1d",
    input_kind="clip",
    family="video",
    target_layer="blocks.4",
    finer_layer="blocks.3",
    description="R(2+1)D-50 (pytorchvideo): factorised spatial + temporal convolutions",
)
def r2plus1d_50(num_classes: int = 2, **kwargs: Any) -> nn.Module:
    """R(2+1)D-50 from pytorchvideo (random init), logits without softmax, global average head pool.

    ``kwargs`` go to ``pytorchvideo.models.r2plus1d.create_r2plus1d`` (e.g. ``dropout_rate``).
    """
    with _quiet_pytorchvideo_import():
        from pytorchvideo.models.r2plus1d import create_r2plus1d

    return create_r2plus1d(**_head_kwargs(num_classes, kwargs))


@register_model(
    "resnet3d",
    input_kind="clip",
    family="video",
    target_layer="blocks.4",
    finer_layer="blocks.3",
    description="ResNet-3D-50 (pytorchvideo 'slow' ResNet): 3D bottlenecks with temporal kernels in res4-res5",
)
def resnet3d_50(num_classes: int = 2, **kwargs: Any) -> nn.Module:
    """ResNet-3D-50 from pytorchvideo (random init), logits without softmax, global average head pool.

    ``kwargs`` go to ``pytorchvideo.models.resnet.create_resnet`` (e.g. ``dropout_rate``, default 0.5).
    """
    with _quiet_pytorchvideo_import():
        from pytorchvideo.models.resnet import create_resnet

    return create_resnet(**_head_kwargs(num_classes, kwargs))


@register_model(
    "r2plus1d_18",
    input_kind="clip",
    family="video",
    target_layer="layer4",
    finer_layer="layer3",
    description="R(2+1)D-18 (torchvision): lighter factorised 3D CNN",
)
def r2plus1d_18(num_classes: int = 2, **kwargs: Any) -> nn.Module:
    """torchvision R(2+1)D-18 (random init) with a ``num_classes`` fc."""
    return tv_video.r2plus1d_18(weights=None, num_classes=num_classes, **kwargs)


@register_model(
    "r3d_18",
    input_kind="clip",
    family="video",
    target_layer="layer4",
    finer_layer="layer3",
    description="R3D-18 (torchvision): lighter full 3D CNN",
)
def r3d_18(num_classes: int = 2, **kwargs: Any) -> nn.Module:
    """torchvision R3D-18 (random init) with a ``num_classes`` fc."""
    return tv_video.r3d_18(weights=None, num_classes=num_classes, **kwargs)
