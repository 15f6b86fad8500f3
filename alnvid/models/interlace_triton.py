"""TIN's temporal interlace as two fused Triton kernels (forward, backward): the CUDA path of
:class:`alnvid.models.interlace.TemporalInterlace`.

The matmul implementation in :mod:`alnvid.models.interlace` is the reference; this computes the same function and
the same gradients (features, offsets and weights; right-hand offset slope at integer offsets), in one pass over
the features instead of a ``T×T`` matrix build, four batched matmuls and a concatenation per layer. Each kernel
program handles one output frame of one clip, one channel group and one block of that group's elements, reading
the features in place in either NCHW or channels_last layout. The offset and weight gradients are reduced per
block into a buffer and summed by PyTorch, so they are deterministic (no atomics). (Sums use ``tl.reduce`` with
this module's own combine function rather than ``tl.sum``, so that reloading this module under the interpreter is
enough to interpret every function the kernels call.)

Triton's interpreter (``TRITON_INTERPRET=1`` set before this module is imported) runs the same kernels on CPU
tensors: the test suite uses it to check them against the reference without a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_BLOCK = 1024
"""Most elements of one channel group handled by one kernel program."""


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _gather(x_ptr, offset_ptr, row, group, j, frames, groups, group_size, inner, inner_stride, outer_stride,
            group_stride, time_stride):
    """Where row `row` (clip·frames + t) of group `group` reads, for elements `j` of the group: the two source
    frames x[t - f] and x[t - f - 1] of the offset f + frac (zero outside the clip), and the indices both kernels
    need again."""
    inside = j < group_size
    clip = row // frames
    t = row % frames
    element = group * group_stride + (j // inner) * outer_stride + (j % inner) * inner_stride
    clip_base = clip * frames * time_stride
    offset = tl.load(offset_ptr + clip * groups + group)
    whole = tl.floor(offset)
    frac = offset - whole
    shift = tl.minimum(tl.maximum(whole, -frames - 1), frames + 1).to(tl.int32)
    source = t - shift
    x0 = tl.load(x_ptr + clip_base + source * time_stride + element,
                 mask=inside & (source >= 0) & (source < frames), other=0.0)
    x1 = tl.load(x_ptr + clip_base + (source - 1) * time_stride + element,
                 mask=inside & (source >= 1) & (source <= frames), other=0.0)
    return inside, clip, t, element, clip_base, frac, shift, x0, x1


@triton.jit
def _shift_forward(x_ptr, y_ptr, offset_ptr, weight_ptr, frames, groups, group_size, inner, inner_stride,
                   outer_stride, group_stride, time_stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    group = tl.program_id(1)
    j = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    inside, clip, t, element, clip_base, frac, shift, x0, x1 = _gather(
        x_ptr, offset_ptr, row, group, j, frames, groups, group_size, inner, inner_stride, outer_stride,
        group_stride, time_stride)
    weight = tl.load(weight_ptr + row * groups + group)
    y = weight * ((1 - frac) * x0 + frac * x1)
    tl.store(y_ptr + clip_base + t * time_stride + element, y.to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _shift_backward(x_ptr, grad_y_ptr, grad_x_ptr, offset_ptr, weight_ptr, weight_partial_ptr, offset_partial_ptr,
                    frames, groups, group_size, blocks, inner, inner_stride, outer_stride, group_stride, time_stride,
                    BLOCK: tl.constexpr):
    row = tl.program_id(0)
    group = tl.program_id(1)
    block = tl.program_id(2)
    j = block * BLOCK + tl.arange(0, BLOCK)
    inside, clip, t, element, clip_base, frac, shift, x0, x1 = _gather(
        x_ptr, offset_ptr, row, group, j, frames, groups, group_size, inner, inner_stride, outer_stride,
        group_stride, time_stride)
    # Partial sums of row t: dL/dw[t] = sum gy[t]·shifted[t], dL/do += sum gy[t]·w[t]·(x[t-f-1] - x[t-f]).
    grad_y = tl.load(grad_y_ptr + clip_base + t * time_stride + element, mask=inside, other=0.0)
    weight = tl.load(weight_ptr + row * groups + group)
    partial = (row * groups + group) * blocks + block
    tl.store(weight_partial_ptr + partial, tl.reduce(grad_y * ((1 - frac) * x0 + frac * x1), 0, _add))
    tl.store(offset_partial_ptr + partial, tl.reduce(grad_y * weight * (x1 - x0), 0, _add))
    # dL/dx[t] = (1 - a)·w[t+f]·gy[t+f] + a·w[t+f+1]·gy[t+f+1]: the transpose of the forward's gather.
    target = t + shift
    ok0 = (target >= 0) & (target < frames)
    ok1 = (target >= -1) & (target < frames - 1)
    g0 = tl.load(grad_y_ptr + clip_base + target * time_stride + element, mask=inside & ok0, other=0.0)
    g1 = tl.load(grad_y_ptr + clip_base + (target + 1) * time_stride + element, mask=inside & ok1, other=0.0)
    w0 = tl.load(weight_ptr + (clip * frames + target) * groups + group, mask=ok0, other=0.0)
    w1 = tl.load(weight_ptr + (clip * frames + target + 1) * groups + group, mask=ok1, other=0.0)
    grad_x = (1 - frac) * w0 * g0 + frac * w1 * g1
    tl.store(grad_x_ptr + clip_base + t * time_stride + element, grad_x.to(grad_x_ptr.dtype.element_ty),
             mask=inside)


def _layout(x: Tensor, shifted_channels: int, groups: int) -> tuple[Tensor, dict[str, int]]:
    """``x`` (N·T, C, H, W) in NCHW or channels_last (else a contiguous copy) and the kernels' index arithmetic."""
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    _, _, height, width = x.shape
    pixels = height * width
    group_channels = shifted_channels // groups
    channel_stride, width_stride = x.stride(1), x.stride(3)
    if x.is_contiguous():  # a group's elements: channel-major, pixels innermost (unit stride)
        inner, inner_stride, outer_stride = pixels, width_stride, channel_stride
    else:  # channels_last: pixel-major, channels innermost (unit stride)
        inner, inner_stride, outer_stride = group_channels, channel_stride, width_stride
    return x, {"group_size": group_channels * pixels, "inner": inner, "inner_stride": inner_stride,
               "outer_stride": outer_stride, "group_stride": group_channels * channel_stride,
               "time_stride": x.stride(0)}


def _block(group_size: int) -> int:
    return max(16, min(MAX_BLOCK, triton.next_power_of_2(group_size)))


class FusedInterlace(torch.autograd.Function):
    """Shift the first ``shifted_channels`` channels of ``x`` (N·T, C, H, W) in ``G`` equal groups by ``offsets``
    (N, G), scale output frames by ``weights`` (N, T, G), pass the other channels through."""

    @staticmethod
    def forward(ctx, x: Tensor, offsets: Tensor, weights: Tensor, num_frames: int, shifted_channels: int) -> Tensor:
        groups = offsets.shape[1]
        x, layout = _layout(x, shifted_channels, groups)
        offsets, weights = offsets.contiguous(), weights.contiguous()
        y = torch.empty_like(x)
        y[:, shifted_channels:] = x[:, shifted_channels:]
        block = _block(layout["group_size"])
        grid = (x.shape[0], groups, triton.cdiv(layout["group_size"], block))
        _shift_forward[grid](x, y, offsets, weights, num_frames, groups, **layout, BLOCK=block)
        ctx.save_for_backward(x, offsets, weights)
        ctx.num_frames, ctx.shifted_channels = num_frames, shifted_channels
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, offsets, weights = ctx.saved_tensors
        shifted, groups = ctx.shifted_channels, offsets.shape[1]
        if grad_y.stride() != x.stride():
            grad_y = torch.empty_like(x).copy_(grad_y)
        _, layout = _layout(x, shifted, groups)
        block = _block(layout["group_size"])
        blocks = triton.cdiv(layout["group_size"], block)
        grad_x = torch.empty_like(x)
        grad_x[:, shifted:] = grad_y[:, shifted:]
        sums = torch.float64 if x.dtype == torch.float64 else torch.float32
        weight_partial = torch.empty(x.shape[0], groups, blocks, dtype=sums, device=x.device)
        offset_partial = torch.empty_like(weight_partial)
        _shift_backward[(x.shape[0], groups, blocks)](
            x, grad_y, grad_x, offsets, weights, weight_partial, offset_partial, ctx.num_frames, groups,
            layout["group_size"], blocks, layout["inner"], layout["inner_stride"], layout["outer_stride"],
            layout["group_stride"], layout["time_stride"], BLOCK=block)
        clips = x.shape[0] // ctx.num_frames
        grad_weights = weight_partial.sum(2).view(clips, ctx.num_frames, groups).to(weights.dtype)
        grad_offsets = offset_partial.sum(2).view(clips, ctx.num_frames, groups).sum(1).to(offsets.dtype)
        return grad_x, grad_offsets, grad_weights, None, None


def fused_interlace(x: Tensor, offsets: Tensor, weights: Tensor, num_frames: int, shifted_channels: int) -> Tensor:
    """:class:`FusedInterlace` applied to time-folded features ``x`` (N·T, C, H, W); see there."""
    return FusedInterlace.apply(x, offsets, weights, num_frames, shifted_channels)
