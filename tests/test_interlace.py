"""TIN's fractional temporal interlace and TSM's shift against independent computations."""
from __future__ import annotations

import math

import pytest
import torch

from alnvid.errors import AlnvidError
from alnvid.models.interlace import (
    TemporalInterlace,
    TemporalShift,
    fractional_time_shift,
)


def naive_shift(x: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-clip, per-group, per-frame loop: y[t] = w[t]·((1 - a)·x[t - f] + a·x[t - f - 1]), o = f + a."""
    clips, frames, channels = x.shape[:3]
    groups = offsets.shape[1]
    width = channels // groups
    y = torch.zeros_like(x)
    for n in range(clips):
        for g in range(groups):
            part = slice(g * width, (g + 1) * width)
            offset = float(offsets[n, g])
            whole = math.floor(offset)
            frac = offset - whole
            for t in range(frames):
                for source, coefficient in ((t - whole, 1 - frac), (t - whole - 1, frac)):
                    if 0 <= source < frames:
                        y[n, t, part] += coefficient * x[n, source, part]
                if weights is not None:
                    y[n, t, part] *= float(weights[n, t, g])
    return y


def roll_zero_fill(clip: torch.Tensor, shift: int) -> torch.Tensor:
    """torch.roll along time (dim 1) with the wrapped-around frames set to zero."""
    rolled = torch.roll(clip, shifts=shift, dims=1)
    if shift > 0:
        rolled[:, :shift] = 0
    elif shift < 0:
        rolled[:, shift:] = 0
    return rolled


def test_gradcheck_features_offsets_weights():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    offsets = torch.tensor([[0.3, -1.4, 1.7, -0.6], [2.2, -0.25, 0.55, -2.9]], dtype=torch.float64, requires_grad=True)
    weights = (torch.rand(2, 5, 4, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(fractional_time_shift, (x, offsets, weights))


def test_offset_gradient_is_the_interpolation_slope():
    # y[t] = (1 - a) x[t - f] + a x[t - f - 1]  =>  dy[t]/do = x[t - f - 1] - x[t - f]
    x = torch.arange(6, dtype=torch.float64).square().view(1, 6, 1)
    offset = torch.tensor([[1.25]], dtype=torch.float64, requires_grad=True)
    y = fractional_time_shift(x, offset)
    y[0, 4, 0].backward()
    assert offset.grad.item() == pytest.approx(x[0, 2, 0].item() - x[0, 3, 0].item())  # 4 - 9
    assert y[0, 4, 0].item() == pytest.approx(0.75 * 9 + 0.25 * 4)


def test_offset_gradient_at_integer_offset_is_right_hand_slope():
    x = torch.arange(6, dtype=torch.float64).square().view(1, 6, 1)
    offset = torch.tensor([[2.0]], dtype=torch.float64, requires_grad=True)
    fractional_time_shift(x, offset)[0, 4, 0].backward()
    assert offset.grad.item() == pytest.approx(x[0, 1, 0].item() - x[0, 2, 0].item())  # 1 - 4


def test_integer_offsets_are_a_zero_filled_roll():
    torch.manual_seed(1)
    x = torch.randn(2, 7, 6, 3, 3)
    offsets = torch.tensor([[1.0, -2.0, 0.0], [3.0, -1.0, 7.0]])
    y = fractional_time_shift(x, offsets)
    for n in range(2):
        for g in range(3):
            part = slice(2 * g, 2 * g + 2)
            expected = roll_zero_fill(x[n : n + 1, :, part], int(offsets[n, g]))
            torch.testing.assert_close(y[n : n + 1, :, part], expected, rtol=0, atol=0)


def test_zero_offset_unit_weight_is_identity():
    x = torch.randn(3, 5, 8, 4, 4)
    y = fractional_time_shift(x, torch.zeros(3, 4), torch.ones(3, 5, 4))
    assert torch.equal(y, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_naive_loop_on_random_input(dtype):
    torch.manual_seed(2)
    x = torch.randn(3, 8, 12, 5, 4, dtype=dtype)
    offsets = (torch.rand(3, 4, dtype=dtype) * 6 - 3).round(decimals=3)
    weights = torch.rand(3, 8, 4, dtype=dtype) * 2
    torch.testing.assert_close(fractional_time_shift(x, offsets, weights), naive_shift(x, offsets, weights))


def test_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="cannot be split"):
        fractional_time_shift(torch.zeros(1, 4, 6, 2, 2), torch.zeros(1, 4))


def make_interlace(channels: int = 32, frames: int = 6, dtype: torch.dtype = torch.float64) -> TemporalInterlace:
    torch.manual_seed(3)
    return TemporalInterlace(channels, frames).to(dtype)


def test_module_matches_naive_loop_and_passes_other_channels():
    layer = make_interlace()
    x = torch.randn(2 * 6, 32, 5, 5, dtype=torch.float64)
    y = layer(x)
    offsets, weights = layer.offsets_and_weights(x)
    assert torch.equal(offsets[:, 2:], -offsets[:, :2])
    assert torch.equal(weights[:, :, 2:], weights[:, :, :2])
    clips = x.view(2, 6, 32, 5, 5)
    expected = naive_shift(clips[:, :, :8], offsets.detach(), weights.detach())
    torch.testing.assert_close(y.view(2, 6, 32, 5, 5)[:, :, :8], expected)
    assert torch.equal(y.view(2, 6, 32, 5, 5)[:, :, 8:], clips[:, :, 8:])


def test_module_offset_net_init_gives_half_frame():
    layer = make_interlace()
    torch.nn.init.zeros_(layer.offset_net.fc2.weight)
    torch.nn.init.zeros_(layer.weight_net.conv.weight)
    offsets, weights = layer.offsets_and_weights(torch.randn(6, 32, 3, 3, dtype=torch.float64))
    torch.testing.assert_close(offsets[0], torch.tensor([0.5, 0.5, -0.5, -0.5], dtype=torch.float64), atol=1e-4, rtol=0)
    assert torch.equal(weights, torch.ones_like(weights))


def test_module_gradcheck_through_offset_and_weight_nets():
    torch.manual_seed(4)
    layer = TemporalInterlace(8, num_frames=3, shift_div=2).double()
    x = torch.randn(2 * 3, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_module_gradients_reach_offset_and_weight_nets():
    layer = make_interlace(dtype=torch.float32)
    x = torch.randn(2 * 6, 32, 4, 4)
    (layer(x) * torch.randn(2 * 6, 32, 4, 4)).sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_module_channels_last_matches_and_keeps_layout():
    layer = make_interlace(dtype=torch.float32)
    x = torch.randn(2 * 6, 32, 5, 5)
    y = layer(x)
    y_cl = layer(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y)


def test_module_bf16_autocast_close_to_float32():
    layer = make_interlace(dtype=torch.float32)
    x = torch.randn(2 * 6, 32, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x.bfloat16().contiguous(memory_format=torch.channels_last))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), layer(x.bfloat16().float()), atol=0.05, rtol=0.02)


def test_module_rejects_other_clip_length_or_channels():
    layer = make_interlace(dtype=torch.float32)
    with pytest.raises(AlnvidError, match="6 frames"):
        layer(torch.randn(2 * 4, 32, 3, 3))
    with pytest.raises(AlnvidError, match="32 channels"):
        layer(torch.randn(6, 16, 3, 3))


def test_module_rejects_fold_not_divisible_into_four_groups():
    with pytest.raises(ValueError, match="multiple of 4"):
        TemporalInterlace(24, num_frames=4, shift_div=4)


def test_tsm_shift_is_fixed_one_frame_roll():
    torch.manual_seed(5)
    layer = TemporalShift(16, num_frames=5, shift_div=8)
    x = torch.randn(2 * 5, 16, 3, 3)
    clips = x.view(2, 5, 16, 3, 3)
    y = layer(x).view(2, 5, 16, 3, 3)
    torch.testing.assert_close(y[:, :, :2], roll_zero_fill(clips[:, :, :2], -1), rtol=0, atol=0)
    torch.testing.assert_close(y[:, :, 2:4], roll_zero_fill(clips[:, :, 2:4], 1), rtol=0, atol=0)
    assert torch.equal(y[:, :, 4:], clips[:, :, 4:])
    as_fractional = fractional_time_shift(clips, torch.tensor([[-1.0, 1.0] + [0.0] * 6] * 2))
    torch.testing.assert_close(y, as_fractional, rtol=0, atol=0)
    y_cl = layer(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(y_cl, layer(x))


# The fused CUDA kernels (alnvid.models.interlace_triton), run by Triton's interpreter on CPU tensors.


@pytest.fixture
def fused():
    """`fused_interlace` with its kernels built for Triton's CPU interpreter (rebuilt for the GPU afterwards)."""
    pytest.importorskip("triton", reason="Triton is not installed: the fused CUDA kernels cannot be checked")
    import importlib
    import os

    import alnvid.models.interlace_triton as module

    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield importlib.reload(module).fused_interlace
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before
        importlib.reload(module)


def reference_interlace(x, offsets, weights, frames, shifted):
    """The matmul reference on the first `shifted` channels of (N·T, C, H, W); the other channels pass."""
    clips = x.view(-1, frames, *x.shape[1:])
    moved = fractional_time_shift(clips[:, :, :shifted], offsets, weights)
    return torch.cat([moved, clips[:, :, shifted:]], dim=2).view(x.shape)


def random_case(dtype, channels_last=False, frames=5, channels=12, shifted=8, seed=6):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * frames, channels, 3, 4, dtype=dtype, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # fractional, exactly integer, negative and beyond-the-clip offsets
    offsets = torch.tensor([[0.3, -1.4, 2.0, -0.6], [frames + 1.5, -0.25, 0.0, -frames - 2.7]], dtype=dtype)
    weights = torch.rand(2, frames, 4, dtype=dtype, generator=generator) * 2
    return x, offsets, weights, frames, shifted


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_forward_and_gradients_equal_reference(fused, channels_last):
    x, offsets, weights, frames, shifted = random_case(torch.float64, channels_last)
    inputs = [t.clone().requires_grad_() for t in (x, offsets, weights)]
    reference_inputs = [t.clone().requires_grad_() for t in (x, offsets, weights)]
    y = fused(*inputs, frames, shifted)
    expected = reference_interlace(*reference_inputs, frames, shifted)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    upstream = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    grads = torch.autograd.grad(y, inputs, upstream)
    expected_grads = torch.autograd.grad(expected, reference_inputs, upstream)
    for name, got, want in zip(("features", "offsets", "weights"), grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


def test_fused_gradcheck(fused):
    x, offsets, weights, frames, shifted = random_case(torch.float64, frames=3, channels=8, shifted=4)
    x = x[:, :, :2, :2].contiguous()
    offsets = offsets + 0.125  # off the kinks at integer offsets, where finite differences average both slopes
    inputs = tuple(t.requires_grad_() for t in (x, offsets, weights))
    # fast mode: a random projection of the Jacobian (numerical vs analytical), a few kernel calls in all
    assert torch.autograd.gradcheck(lambda *a: fused(*a, frames, shifted), inputs, fast_mode=True)


def test_fused_float32_channels_last_matches_reference(fused):
    x, offsets, weights, frames, shifted = random_case(torch.float32, channels_last=True, frames=8, channels=32,
                                                       shifted=16)
    torch.testing.assert_close(fused(x, offsets, weights, frames, shifted),
                               reference_interlace(x, offsets, weights, frames, shifted))


def test_fused_matches_module_reference_path(fused):
    layer = make_interlace(dtype=torch.float64)
    x = torch.randn(2 * 6, 32, 5, 5, dtype=torch.float64)
    offsets, weights = layer.offsets_and_weights(x)
    torch.testing.assert_close(fused(x, offsets, weights, layer.num_frames, layer.fold), layer(x))
