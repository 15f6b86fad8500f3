"""TIN and TSM: a 2D ResNet50 on time-folded frames with temporal mixing in every bottleneck's residual branch."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models.resnet import Bottleneck, ResNet

from alnvid.config import CONSENSUS
from alnvid.errors import AlnvidError
from alnvid.models.interlace import TemporalInterlace, TemporalShift
from alnvid.models.registry import register_model

__all__ = ["TemporalResNet", "frame_consensus", "tin_resnet50", "tsm_resnet50"]


def frame_consensus(frame_logits: Tensor, consensus: str) -> Tensor:
    """(N, T, classes) per-frame logits -> (N, classes). 'mean' is TSN's consensus, as TIN and TSM publish it.
    'max' (multiple-instance learning, for evidence seen in only part of a sweep) takes, per clip, the logits of the
    frame least likely to be class 0 (for two classes, the largest logit difference): only that frame gets gradient."""
    if consensus == "mean":
        return frame_logits.mean(dim=1)
    evidence = torch.logsumexp(frame_logits[..., 1:], dim=-1) - frame_logits[..., 0]
    frame = evidence.argmax(dim=1, keepdim=True).unsqueeze(-1).expand(-1, 1, frame_logits.shape[-1])
    return frame_logits.gather(1, frame).squeeze(1)  # gather, not arange indexing: exports for any batch size


class TemporalResNet(nn.Module):
    """Run a torchvision ResNet on each frame of a clip and pool the per-frame logits (`CONSENSUS`; TSN's mean by
    default).

    Input (N, C, T, H, W) with T == ``num_frames``; output logits (N, num_classes). ``make_temporal(channels)``
    builds the layer inserted before ``conv1`` of every bottleneck of layer1-layer4, so it acts on the residual
    branch only. Inside the backbone the frames are folded into the batch: (N·T, C, H, W), frame t of clip n at
    row n·T + t.
    """

    def __init__(self, backbone: ResNet, num_frames: int, make_temporal: Callable[[int], nn.Module],
                 consensus: str = "mean"):
        super().__init__()
        if consensus not in CONSENSUS:
            raise AlnvidError(f"unknown frame consensus {consensus!r}", fix=f"use one of: {', '.join(CONSENSUS)}.")
        self.num_frames = num_frames
        self.consensus = consensus
        self.backbone = backbone
        for stage in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
            for block in stage:
                if not isinstance(block, Bottleneck):
                    raise TypeError(f"expected torchvision Bottleneck blocks, got {type(block).__name__}")
                conv = block.conv1
                block.conv1 = nn.Sequential(OrderedDict(temporal=make_temporal(conv.in_channels), conv=conv))

    def forward(self, clips: Tensor) -> Tensor:
        if clips.dim() != 5 or clips.shape[2] != self.num_frames:
            raise AlnvidError(
                f"{type(self).__name__} expects clips (N, C, {self.num_frames}, H, W) but got shape "
                f"{tuple(clips.shape)}.",
                fix=f"sample {self.num_frames} frames per clip, or build the model with num_frames equal to the "
                "clip length.",
            )
        n, c, t, h, w = clips.shape
        frames = clips.transpose(1, 2).reshape(n * t, c, h, w)
        return frame_consensus(self.backbone(frames).view(n, t, -1), self.consensus)


@register_model(
    "tin",
    input_kind="clip",
    family="video",
    target_layer="backbone.layer4",
    finer_layer="backbone.layer3",
    time_folded=True,
    description="TIN-ResNet50: learned fractional temporal interlace in every bottleneck (Shao et al. 2020)",
)
def tin_resnet50(num_classes: int = 2, num_frames: int = 16, shift_div: int = 4,
                 consensus: str = "mean") -> TemporalResNet:
    """TIN-ResNet50 (random init): :class:`TemporalInterlace` on 1/``shift_div`` of the channels of every block."""
    return TemporalResNet(
        resnet50(weights=None, num_classes=num_classes),
        num_frames,
        lambda channels: TemporalInterlace(channels, num_frames, shift_div),
        consensus,
    )


@register_model(
    "tsm",
    input_kind="clip",
    family="video",
    target_layer="backbone.layer4",
    finer_layer="backbone.layer3",
    time_folded=True,
    description="TSM-ResNet50: fixed one-frame shift of 2/shift_div of the channels (Lin et al. 2019)",
)
def tsm_resnet50(num_classes: int = 2, num_frames: int = 16, shift_div: int = 8,
                 consensus: str = "mean") -> TemporalResNet:
    """TSM-ResNet50 (random init): :class:`TemporalShift` (±1 frame on 2/``shift_div`` of channels) in every block."""
    return TemporalResNet(
        resnet50(weights=None, num_classes=num_classes),
        num_frames,
        lambda channels: TemporalShift(channels, num_frames, shift_div),
        consensus,
    )
