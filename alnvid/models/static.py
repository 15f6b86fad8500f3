"""Static-image CNNs of the study (torchvision, random init): ResNet50, InceptionV3, VGG19 and VGG19-BN.

They take single frames (N, C, H, W) and return logits (N, num_classes). VGG's classifier follows an
``AdaptiveAvgPool2d(7)``, ResNet's an ``AdaptiveAvgPool2d(1)``, so both accept any input of at least 32 px.
"""
from __future__ import annotations

from typing import Any

from torchvision import models as tv_models

from alnvid.models.registry import register_model

__all__ = ["inception_v3", "resnet50", "vgg19", "vgg19_bn"]


@register_model("resnet50", input_kind="image", family="static", target_layer="layer4",
                finer_layer="layer3")
def resnet50(num_classes: int = 2, **kwargs: Any) -> tv_models.ResNet:
    """ResNet50 (torchvision, random init) for single frames."""
    return tv_models.resnet50(weights=None, num_classes=num_classes, **kwargs)


@register_model(
    "inception_v3", input_kind="image", family="static", target_layer="Mixed_7c", finer_layer="Mixed_6e",
    input_size=299, min_input_size=75
)
def inception_v3(num_classes: int = 2, aux_logits: bool = True, **kwargs: Any) -> tv_models.Inception3:
    """InceptionV3 (torchvision, random init, truncated-normal ``init_weights``) for single frames.

    With ``aux_logits=True``, in training mode it returns ``InceptionOutputs(logits, aux_logits)`` (train on
    ``loss(logits) + 0.4·loss(aux_logits)`` as in the paper) and in eval mode a logits tensor. The auxiliary head
    only runs on inputs of 299 px or more; for smaller inputs (down to 75 px) build with ``aux_logits=False``,
    which always returns a tensor. Designed for 299 px inputs.
    """
    return tv_models.inception_v3(
        weights=None, num_classes=num_classes, aux_logits=aux_logits, init_weights=True, **kwargs
    )


@register_model("vgg19", input_kind="image", family="static", target_layer="features.35",
                finer_layer="features.26")
def vgg19(num_classes: int = 2, **kwargs: Any) -> tv_models.VGG:
    """VGG19 (torchvision, random init); the target layer is the ReLU after the last convolution."""
    return tv_models.vgg19(weights=None, num_classes=num_classes, **kwargs)


@register_model("vgg19_bn", input_kind="image", family="static", target_layer="features.51",
                finer_layer="features.38")
def vgg19_bn(num_classes: int = 2, **kwargs: Any) -> tv_models.VGG:
    """VGG19 with batch norm (torchvision, random init); the target layer is the ReLU after the last convolution."""
    return tv_models.vgg19_bn(weights=None, num_classes=num_classes, **kwargs)
