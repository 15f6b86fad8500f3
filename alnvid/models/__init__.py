"""Backbones of the study (video: TIN, TSM, R(2+1)D, ResNet-3D; static: ResNet50, InceptionV3, VGG19) and their registry.

Clip models take (N, C, T, H, W) floats in [0, 1] and image models (N, C, H, W); all return logits (N, classes).
Build them by name with :func:`build_model`; :func:`get_model_spec` says what each expects.
"""
from __future__ import annotations

from alnvid.models.interlace import (
    TemporalInterlace,
    TemporalShift,
    fractional_time_shift,
)
from alnvid.models.registry import (
    ModelSpec,
    build_model,
    get_model_spec,
    list_models,
    load_weights,
    register_model,
)
from alnvid.models.static import inception_v3, resnet50, vgg19, vgg19_bn
from alnvid.models.tin import TemporalResNet, tin_resnet50, tsm_resnet50
from alnvid.models.video3d import r2plus1d_18, r2plus1d_50, r3d_18, resnet3d_50

__all__ = [
    "ModelSpec",
    "TemporalInterlace",
    "TemporalResNet",
    "TemporalShift",
    "build_model",
    "fractional_time_shift",
    "get_model_spec",
    "inception_v3",
    "list_models",
    "load_weights",
    "r2plus1d_18",
    "r2plus1d_50",
    "r3d_18",
    "register_model",
    "resnet3d_50",
    "resnet50",
    "tin_resnet50",
    "tsm_resnet50",
    "vgg19",
    "vgg19_bn",
]
