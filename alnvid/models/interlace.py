"""Temporal mixing layers for 2D CNNs run on time-folded clips: TIN's interlace and TSM's fixed shift.

Both take frames folded into the batch, ``(N·T, C, H, W)`` with frame ``t`` of clip ``n`` at row ``n·T + t``.

Sign convention (both layers): a positive offset ``o`` moves content later in time, ``y[t] = x[t - o]``;
frames shifted in from outside the clip are zeros.

The fractional shift is computed exactly: for each (clip, channel group) a ``T×T`` interpolation matrix
``M[t, s] = relu(1 - |t - s - o|)`` is built and applied to the frames with one batched matmul per group. For an
integer ``o`` it is a zero-filled roll; for ``o = f + a`` (``f`` integer, ``0 < a < 1``) it gives
``y[t] = (1 - a)·x[t - f] + a·x[t - f - 1]``, linear interpolation at ``t - o``. Autograd differentiates it with
respect to the features, the offsets and the weights (the true gradient, unlike mmcv's ``tin_shift``; at exactly
integer offsets, where the interpolation has a kink, the offset gradient is the right-hand slope
``x[t - o - 1] - x[t - o]``, as with mmaction2's floor/ceil sampler). It runs on any device and dtype, needs no
custom kernel, and on CUDA reads the input in place (no gather, no per-frame loop). It is the reference and the
CPU path; on CUDA, :class:`TemporalInterlace` runs the same function as fused Triton kernels
(:mod:`alnvid.models.interlace_triton`), tested equal to it.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alnvid.errors import AlnvidError

__all__ = [
    "OffsetNet",
    "TemporalInterlace",
    "TemporalShift",
    "WeightNet",
    "fractional_time_shift",
    "interpolation_matrices",
]


def interpolation_matrices(offsets: Tensor, num_frames: int, weights: Tensor | None = None) -> Tensor:
    """Per-(clip, group) ``T×T`` matrices ``A[n, g, t, s] = w[n, t, g]·relu(1 - |t - s - o[n, g]|)``.

    Built as ``(1 - a)·[t - s == f] + a·[t - s == f + 1]`` with ``f = floor(o)``, ``a = o - f``: the same values,
    with a defined (right-hand) offset gradient at integer offsets.

    ``offsets`` is ``(N, G)``; optional ``weights`` ``(N, T, G)`` scale output frame ``t`` after the shift.
    Returns ``(N, G, T, T)`` such that ``y[n, t] = sum_s A[n, g, t, s]·x[n, s]`` for the channels of group ``g``.
    """
    frames = torch.arange(num_frames, device=offsets.device)
    lag = (frames[:, None] - frames[None, :]).to(offsets.dtype)  # t - s
    whole = offsets.detach().floor()[:, :, None, None]
    frac = offsets[:, :, None, None] - whole
    matrices = (1 - frac) * (lag == whole) + frac * (lag == whole + 1)
    if weights is not None:
        matrices = matrices * weights.transpose(1, 2)[:, :, :, None]
    return matrices


def _mix_groups(frames: Tensor, matrices: Tensor, group_width: int) -> Tensor:
    """Apply ``matrices[:, g]`` over time to column block ``g`` of ``frames`` (N, T, K); the remaining columns pass.

    ``frames`` only needs a unit stride in its last dimension: on CUDA each block is a row-strided view that
    cuBLAS reads in place (CPU ``bmm`` has no fast path for those, so blocks are copied there), and ``split``'s
    backward is a single concatenation, so no full-size gradient buffers are zero-filled.
    """
    groups = matrices.shape[1]
    rest = frames.shape[2] - groups * group_width
    blocks = frames.split([group_width] * groups + ([rest] if rest else []), dim=2)
    matrices = matrices.to(frames.dtype)
    in_place = frames.device.type == "cuda"
    mixed = [
        torch.bmm(matrices[:, g], blocks[g] if in_place else blocks[g].contiguous()).to(frames.dtype)
        for g in range(groups)
    ]
    return torch.cat(mixed + list(blocks[groups:]), dim=2)


def fractional_time_shift(x: Tensor, offsets: Tensor, weights: Tensor | None = None) -> Tensor:
    """Shift channel groups of clips ``x`` (N, T, C, ...) in time by fractional ``offsets`` (N, G).

    The C channels form G equal contiguous groups; group ``g`` of clip ``n`` becomes
    ``y[n, t] = w[n, t, g]·x[n, t - offsets[n, g]]`` with linear interpolation between frames, zeros outside the
    clip, and ``w = 1`` when ``weights`` (N, T, G) is omitted. Differentiable in ``x``, ``offsets`` and ``weights``.
    """
    if x.dim() < 3 or offsets.dim() != 2 or offsets.shape[0] != x.shape[0]:
        raise ValueError(f"expected x (N, T, C, ...) and offsets (N, G); got {tuple(x.shape)} and {tuple(offsets.shape)}")
    n, t, c = x.shape[:3]
    groups = offsets.shape[1]
    if c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} equal offset groups")
    if weights is not None and weights.shape != (n, t, groups):
        raise ValueError(f"weights must be (N, T, G) = {(n, t, groups)}, got {tuple(weights.shape)}")
    matrices = interpolation_matrices(offsets, t, weights)
    frames = x.reshape(n, t, -1)
    return _mix_groups(frames, matrices, frames.shape[2] // groups).view(x.shape)


class OffsetNet(nn.Module):
    """Predicts one pair of temporal offsets per clip in (-2, 2) from channel descriptors (N, fold, T).

    Conv1d(fold -> 1, k=3) -> Linear(T, T) -> ReLU -> Linear(T, 2) -> 4·(sigmoid - 0.5). The last bias starts at
    0.5108 so the offsets start near 0.5 frame (as in the TIN paper), away from the kink at integer offsets.
    """

    def __init__(self, in_channels: int, num_frames: int, groups: int = 2):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, 1, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(num_frames, num_frames)
        self.fc2 = nn.Linear(num_frames, groups)
        nn.init.constant_(self.fc2.bias, 0.5108)

    def forward(self, descriptor: Tensor) -> Tensor:
        hidden = F.relu(self.fc1(self.conv(descriptor).squeeze(1)))
        return 4 * (torch.sigmoid(self.fc2(hidden)) - 0.5)


class WeightNet(nn.Module):
    """Predicts a weight in (0, 2) per frame and offset pair from channel descriptors (N, fold, T) -> (N, T, 2).

    Conv1d(fold -> 2, k=3) -> 2·sigmoid; the bias starts at 0 so the weights start at 1.
    """

    def __init__(self, in_channels: int, groups: int = 2):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, groups, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv.bias)

    def forward(self, descriptor: Tensor) -> Tensor:
        return 2 * torch.sigmoid(self.conv(descriptor)).transpose(1, 2)


class TemporalInterlace(nn.Module):
    """TIN's temporal interlace (Shao et al., AAAI 2020) for time-folded features (N·T, C, H, W).

    The first ``C // shift_div`` channels are split into 4 equal groups shifted by learned fractional offsets
    ``[o1, o2, -o1, -o2]`` (one pair per clip, from :class:`OffsetNet`) and scaled per frame by weights
    ``[w1, w2, w1, w2]`` (from :class:`WeightNet`) after the shift; the other channels pass through unchanged.
    Both nets read the spatial mean of the shifted channels. The nets run in float32 even under autocast.
    Built for a fixed number of frames ``num_frames`` (OffsetNet has Linear(T, T) layers).

    On CUDA (with Triton installed) the shift runs as fused kernels; ``fused = False`` keeps the matmul reference.
    """

    groups = 4
    fused = True

    def __init__(self, in_channels: int, num_frames: int, shift_div: int = 4):
        super().__init__()
        self.fold = in_channels // shift_div
        if self.fold == 0 or self.fold % self.groups:
            raise ValueError(
                f"in_channels // shift_div = {in_channels} // {shift_div} must be a positive multiple of 4"
            )
        self.in_channels = in_channels
        self.num_frames = num_frames
        self.shift_div = shift_div
        self.offset_net = OffsetNet(self.fold, num_frames)
        self.weight_net = WeightNet(self.fold)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_frames={self.num_frames}, shift_div={self.shift_div}"

    def offsets_and_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Offsets (N, 4) and weights (N, T, 4) for time-folded features ``x`` (N·T, C, H, W)."""
        descriptor = x[:, : self.fold].mean(dim=(2, 3)).view(-1, self.num_frames, self.fold).transpose(1, 2)
        dtype = self.offset_net.fc2.weight.dtype
        with torch.autocast(x.device.type, enabled=False):
            descriptor = descriptor.to(dtype)
            pair = self.offset_net(descriptor)
            weight_pair = self.weight_net(descriptor)
        return torch.cat([pair, -pair], dim=1), torch.cat([weight_pair, weight_pair], dim=2)

    def forward(self, x: Tensor) -> Tensor:
        _check_time_folded(x, self.num_frames, self.in_channels, type(self).__name__)
        folded, channels, height, width = x.shape
        clips = folded // self.num_frames
        offsets, weights = self.offsets_and_weights(x)
        if self.fused and x.is_cuda and triton_available():
            from alnvid.models.interlace_triton import fused_interlace

            return fused_interlace(x, offsets, weights, self.num_frames, self.fold)
        matrices = interpolation_matrices(offsets, self.num_frames, weights)
        group_width = self.fold // self.groups * height * width
        if x.is_contiguous():
            frames = x.view(clips, self.num_frames, channels * height * width)
            return _mix_groups(frames, matrices, group_width).view(x.shape)
        # channels_last (or other layouts): mix a channels-first copy of the shifted channels, keep the layout.
        shifted = x[:, : self.fold].contiguous().view(clips, self.num_frames, -1)
        shifted = _mix_groups(shifted, matrices, group_width).view(folded, self.fold, height, width)
        memory_format = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else None
        if memory_format is not None:
            shifted = shifted.contiguous(memory_format=memory_format)
        return torch.cat([shifted, x[:, self.fold :]], dim=1)


class TemporalShift(nn.Module):
    """TSM's fixed shift (Lin et al., ICCV 2019) for time-folded features (N·T, C, H, W).

    With ``fold = C // shift_div``: channels ``[0, fold)`` move one frame earlier (offset -1), channels
    ``[fold, 2·fold)`` one frame later (offset +1), the rest pass through; zeros fill the clip's ends.
    """

    def __init__(self, in_channels: int, num_frames: int, shift_div: int = 8):
        super().__init__()
        self.fold = in_channels // shift_div
        if self.fold == 0:
            raise ValueError(f"in_channels // shift_div = {in_channels} // {shift_div} must be positive")
        self.in_channels = in_channels
        self.num_frames = num_frames
        self.shift_div = shift_div

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_frames={self.num_frames}, shift_div={self.shift_div}"

    def forward(self, x: Tensor) -> Tensor:
        _check_time_folded(x, self.num_frames, self.in_channels, type(self).__name__)
        clips = x.view(-1, self.num_frames, *x.shape[1:])
        fold = self.fold
        out = torch.zeros_like(clips)
        out[:, :-1, :fold] = clips[:, 1:, :fold]
        out[:, 1:, fold : 2 * fold] = clips[:, :-1, fold : 2 * fold]
        out[:, :, 2 * fold :] = clips[:, :, 2 * fold :]
        return out.view(x.shape)


def triton_available() -> bool:
    """Whether the fused CUDA kernels can be used (Triton is installed)."""
    return importlib.util.find_spec("triton") is not None


def _check_time_folded(x: Tensor, num_frames: int, channels: int, layer: str) -> None:
    """Raise a clear error unless ``x`` is (N·T, C, H, W) with the channels and a multiple of T the layer expects."""
    if x.dim() != 4 or x.shape[1] != channels or x.shape[0] % num_frames:
        raise AlnvidError(
            f"{layer} was built for clips of {num_frames} frames with {channels} channels, folded into the batch "
            f"as (N·{num_frames}, {channels}, H, W), but got a tensor of shape {tuple(x.shape)}.",
            fix=f"sample {num_frames} frames per clip, or build the model with num_frames equal to the clip length.",
        )
