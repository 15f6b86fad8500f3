"""Grad-CAM (Selvaraju et al. 2017) for every registered backbone, over a whole clip.

The activations of the model's last convolutional stage (``ModelSpec.target_layer``) are weighted by the mean
gradient of the target-class logit, summed over channels, passed through a ReLU, upsampled (trilinear) to the
input clip (T, H, W) and divided by the clip's maximum, so that frames of one clip are comparable.

Where that stage's maps are fewer than ``MIN_CAM_CELLS`` across (a ResNet's layer4 is 2 x 2 at 48 px), they can
only name a quadrant, so the stage before (``ModelSpec.finer_layer``, twice as fine) is explained instead; the
result says which layer was used. On the CPU demo's out-of-fold positives (seed 0, TIN at 48 px) this raised
pointing hits from 29 to 30 of 34 and keyframe hits from 26 to 30 of 34 (with per-clip weights).

Feature layouts handled: 3D CNNs (N, C, T', h, w); TIN/TSM fold time into the batch, (N·T, C, h, w), reshaped to
(N, C, T, h, w); static CNNs explaining a video run on every sampled frame as a batch, (N·K, C, h, w) read as
(N, C, K, h, w), each frame explained by its own logit. Channel weights are per clip by default (mean over T, h, w,
as pytorch-grad-cam: one weighting for the whole clip, so the frames' heat is comparable when the keyframe is
chosen) or per frame (mean over h, w at each time step, as mmaction2).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alnvid.errors import AlnvidError
from alnvid.models.registry import ModelSpec

__all__ = ["MIN_CAM_CELLS", "GradCAM", "GradCAMResult", "normalise_clip"]

MIN_CAM_CELLS = 3
"""Fewest cells across a target layer's maps (height and width) for it to be explained; below, the finer layer."""


@dataclass
class GradCAMResult:
    """Grad-CAM of one clip.

    heat: (T, H, W) float32 in [0, 1], normalised by the clip's maximum (all zeros where no evidence is found).
    prob: P(target class), softmax over classes (for static models the mean over the frames, as the module does).
    logits: (K, classes) — K = 1 for a clip model, the number of frames for a static model.
    frame_indices: (T,) frame of the original loop behind each heatmap frame.
    frame_probs: (T,) P(target class) of each frame for static models; None for clip models.
    layer: the layer whose activations were explained.
    """

    heat: np.ndarray
    prob: float
    logits: np.ndarray
    frame_indices: np.ndarray
    target_class: int
    frame_probs: np.ndarray | None = None
    layer: str = ""

    @property
    def heat_mass(self) -> np.ndarray:
        """Sum of heat of each frame (T,): how much of the evidence each frame carries."""
        return self.heat.reshape(len(self.heat), -1).sum(1)


class GradCAM:
    """Grad-CAM on ``model`` (a backbone or an ``ALNClassifier``) with hooks of our own on ``target_layer``.

    The hooks exist only while a call runs; the model is put in eval mode with its parameters frozen during
    the call and its training mode and ``requires_grad`` flags are restored afterwards.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: str,
        *,
        finer_layer: str | None = None,
        input_kind: str = "clip",
        time_folded: bool = False,
        per_clip_weights: bool = True,
    ):
        self.model = model
        self.layers = {name: self._submodule(name) for name in (target_layer, finer_layer) if name}
        self.input_kind = input_kind
        self.time_folded = time_folded
        self.per_clip_weights = per_clip_weights
        self.used_layer = target_layer
        """The layer explained by the last call (``finer_layer`` where ``target_layer``'s maps were too coarse)."""

    def _submodule(self, name: str) -> nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            raise AlnvidError(f"the model has no layer {name!r} to explain",
                              fix="give the dotted name of one of its convolutional stages "
                              "(see ModelSpec.target_layer).") from None

    @classmethod
    def from_spec(cls, model: nn.Module, spec: ModelSpec, *, per_clip_weights: bool = True) -> GradCAM:
        """Grad-CAM for a registered model; ``model`` is the backbone or the ``ALNClassifier`` holding it."""
        prefix = "model." if hasattr(model, "spec") and hasattr(model, "model") else ""
        return cls(model, prefix + spec.target_layer,
                   finer_layer=prefix + spec.finer_layer if spec.finer_layer else None,
                   input_kind=spec.input_kind, time_folded=spec.time_folded, per_clip_weights=per_clip_weights)

    def __call__(self, x: Tensor, *, target_class: int = 1, frame_indices: np.ndarray | None = None) -> GradCAMResult:
        """Explain one clip: ``x`` is (1, 3, T, H, W) or (3, T, H, W) for clip models; (1, K, 3, H, W),
        (K, 3, H, W) frames or (1, 3, H, W) one image for static models."""
        x = self._batched(x)
        raw, logits = self.raw_maps(x, target_class=target_class)
        heat = normalise_clip(raw)[0]
        probs = logits.float().softmax(-1)[..., target_class]  # (1, K)
        t = heat.shape[0]
        return GradCAMResult(
            heat=heat.numpy(),
            prob=float(probs.mean()),
            logits=logits[0].numpy(),
            frame_indices=np.arange(t) if frame_indices is None else np.asarray(frame_indices),
            target_class=target_class,
            frame_probs=probs[0].numpy() if self.input_kind == "image" and probs.shape[1] == t else None,
            layer=self.used_layer,
        )

    def raw_maps(self, x: Tensor, *, target_class: int = 1) -> tuple[Tensor, Tensor]:
        """Unnormalised maps (N, T, H, W) >= 0 and logits (N, K, classes) of a batch of clips (N, 3, T, H, W)
        or of frame stacks (N, K, 3, H, W) for static models."""
        frames = x.dim() == 5 and self.input_kind == "image"
        n = x.shape[0]
        k = x.shape[1] if frames else 1
        size = x.shape[-2:]
        net_input = x.flatten(0, 1) if frames else x
        with self._capture() as store, torch.enable_grad():
            net_input = net_input.detach().requires_grad_(True)
            out = self.model(net_input)
            logits = out.logits if hasattr(out, "logits") else out
            if not 0 <= target_class < logits.shape[-1]:
                raise AlnvidError(f"target class {target_class} does not exist: the model has "
                                  f"{logits.shape[-1]} classes",
                                  fix=f"choose a class between 0 and {logits.shape[-1] - 1}.")
            # Items (clips, or frames of a static model) are independent in eval mode, so the gradient of the
            # summed logits at each item's features is that item's own gradient.
            torch.autograd.grad(logits[:, target_class].sum(), net_input)
        self.used_layer = self._choose_layer(store)
        activations, gradients = store[self.used_layer]
        activations, gradients = (self._to_ncthw(t.detach().float(), n, k) for t in (activations, gradients))
        dims = (2, 3, 4) if self.per_clip_weights else (3, 4)
        weights = gradients.mean(dim=dims, keepdim=True)
        cam = F.relu((weights * activations).sum(dim=1))  # (N, T', h, w)
        length = x.shape[2] if self.input_kind == "clip" else k
        cam = F.interpolate(cam.unsqueeze(1), size=(length, *size), mode="trilinear", align_corners=False)
        return cam[:, 0].clamp_min(0), logits.detach().float().view(n, k, -1)

    def _batched(self, x: Tensor) -> Tensor:
        unbatched, allowed = (4, (5,)) if self.input_kind == "clip" else (3, (4, 5))
        if x.dim() == unbatched or (self.input_kind == "image" and x.dim() == 4 and x.shape[0] > 1):
            x = x.unsqueeze(0)  # one clip (3, T, H, W), one image (3, H, W) or frames (K, 3, H, W)
        if x.dim() not in allowed or x.shape[0] != 1:
            raise AlnvidError(f"Grad-CAM explains one clip at a time; got input of shape {tuple(x.shape)}",
                              fix="pass (1, 3, T, H, W) for video models or (1, K, 3, H, W) frames for static ones.")
        return x

    def _to_ncthw(self, features: Tensor, n: int, k: int) -> Tensor:
        """Target-layer features or gradients as (N, C, T', h, w)."""
        if features.dim() == 5:
            return features
        if features.dim() != 4:
            raise AlnvidError(f"the target layer returned a {features.dim()}-D tensor; Grad-CAM needs feature maps",
                              fix="use a convolutional stage as target layer.")
        if self.time_folded:
            t = features.shape[0] // n
            return features.view(n, t, *features.shape[1:]).transpose(1, 2)
        return features.view(n, k, *features.shape[1:]).transpose(1, 2)

    def _choose_layer(self, store: dict[str, list[Tensor]]) -> str:
        """The target layer, or the finer one where the target's maps are under MIN_CAM_CELLS across."""
        target, *finer = self.layers
        if finer and min(store[target][0].shape[-2:]) < MIN_CAM_CELLS:
            return finer[0]
        return target

    @contextmanager
    def _capture(self) -> Iterator[dict[str, list[Tensor]]]:
        """Per layer name: [activations, gradients] of the call made inside the context."""
        store: dict[str, list[Tensor]] = {}

        def hook(name: str):
            def keep_activations(module: nn.Module, inputs: tuple, output: Tensor) -> None:
                if not isinstance(output, Tensor):
                    raise AlnvidError(f"the target layer {type(module).__name__} does not return a tensor",
                                      fix="choose a layer whose output is a feature map.")
                store[name] = [output]
                output.register_hook(lambda gradient: store[name].append(gradient))
            return keep_activations

        was_training = self.model.training
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        handles = [layer.register_forward_hook(hook(name)) for name, layer in self.layers.items()]
        try:
            self.model.eval()
            for parameter, _ in flags:
                parameter.requires_grad_(False)
            yield store
        finally:
            for handle in handles:
                handle.remove()
            for parameter, flag in flags:
                parameter.requires_grad_(flag)
            self.model.train(was_training)


def normalise_clip(maps: Tensor) -> Tensor:
    """Divide each item's maps (N, ...) by that item's maximum over all its frames; all-zero items stay zero."""
    peak = maps.flatten(1).amax(1).view(-1, *([1] * (maps.dim() - 1)))
    return torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps)).float()
