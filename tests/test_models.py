"""Every registered backbone at a tiny size on CPU: shapes, learning, weight files, Grad-CAM layer; the registry."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from alnvid.errors import AlnvidError, InputFileError
from alnvid.models import build_model, get_model_spec, list_models

CLIPS, FRAMES = 2, 4
# Images a little larger than clips (and InceptionV3 larger still): batch norm over 2 images of 1x1 px in the last
# stage makes a few Adam steps erratic.
CLIP_SIZE, IMAGE_SIZE, SIZES = 32, 64, {"inception_v3": 128}
ALL_MODELS = ["tin", "tsm", "r2plus1d", "resnet3d", "r2plus1d_18", "r3d_18", "resnet50", "inception_v3", "vgg19", "vgg19_bn"]
# The auxiliary InceptionV3 head needs >= 299 px; it is tested separately.
TINY_KWARGS = {"inception_v3": {"aux_logits": False}}


def tiny_input(name: str, seed: int = 0) -> torch.Tensor:
    spec = get_model_spec(name)
    generator = torch.Generator().manual_seed(seed)
    size = SIZES.get(name, CLIP_SIZE if spec.input_kind == "clip" else IMAGE_SIZE)
    shape = (CLIPS, 3, FRAMES, size, size) if spec.input_kind == "clip" else (CLIPS, 3, size, size)
    return torch.rand(shape, generator=generator)


def tiny_model(name: str, weights: Path | None = None) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_frames=FRAMES, weights=weights, **TINY_KWARGS.get(name, {}))


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {}


def cached(models: dict[str, nn.Module], name: str) -> nn.Module:
    if name not in models:
        models[name] = tiny_model(name)
    return models[name]


def test_registry_lists_the_study_models():
    assert sorted(ALL_MODELS) == list_models()
    assert list_models("static") == ["inception_v3", "resnet50", "vgg19", "vgg19_bn"]
    assert get_model_spec("tin").time_folded and get_model_spec("tin").input_kind == "clip"
    assert get_model_spec("inception_v3").input_size == 299


def test_unknown_model_lists_valid_names():
    with pytest.raises(AlnvidError, match="(?s)unknown model 'tim'.*r2plus1d_18.*vgg19_bn"):
        get_model_spec("tim")


@pytest.mark.parametrize("name", ALL_MODELS)
def test_shape_and_target_layer(models, name):
    spec = get_model_spec(name)
    model = cached(models, name).eval()
    captured = []
    handle = model.get_submodule(spec.target_layer).register_forward_hook(lambda m, i, out: captured.append(out))
    with torch.no_grad():
        logits = model(tiny_input(name))
    handle.remove()
    assert logits.shape == (CLIPS, 2) and torch.isfinite(logits).all()
    (features,) = captured
    if spec.time_folded:
        assert features.dim() == 4 and features.shape[0] == CLIPS * FRAMES
    elif spec.input_kind == "clip":
        assert features.dim() == 5 and features.shape[0] == CLIPS
    else:
        assert features.dim() == 4 and features.shape[0] == CLIPS


@pytest.mark.parametrize("name", ALL_MODELS)
def test_finer_layer_is_the_stage_before_with_finer_maps(models, name):
    """Grad-CAM falls back on `finer_layer` where the target's maps are too coarse: it must be finer."""
    spec = get_model_spec(name)
    model = cached(models, name).eval()
    captured = {}
    handles = [model.get_submodule(layer).register_forward_hook(lambda m, i, out, layer=layer:
                                                                captured.__setitem__(layer, out))
               for layer in (spec.target_layer, spec.finer_layer)]
    with torch.no_grad():
        model(tiny_input(name))
    for handle in handles:
        handle.remove()
    coarse, fine = captured[spec.target_layer], captured[spec.finer_layer]
    assert fine.shape[-1] > coarse.shape[-1] and fine.shape[-2] > coarse.shape[-2]
    assert fine.shape[0] == coarse.shape[0] and fine.dim() == coarse.dim()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_loss_decreases_on_a_fixed_batch(models, name):
    model = cached(models, name).train()
    x, y = tiny_input(name, seed=1), torch.tensor([0, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    losses = []
    for _ in range(5):
        torch.manual_seed(0)  # same dropout masks every step
        loss = nn.functional.cross_entropy(model(x), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.manual_seed(0)
    with torch.no_grad():
        losses.append(nn.functional.cross_entropy(model(x), y).item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("name", ALL_MODELS)
def test_state_dict_round_trip(models, name, tmp_path):
    model = cached(models, name).eval()
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    reloaded = tiny_model(name, weights=path).eval()
    x = tiny_input(name, seed=2)
    with torch.no_grad():
        assert torch.equal(model(x), reloaded(x))


def test_inception_training_returns_aux_logits_at_299px():
    model = build_model("inception_v3").train()
    out = model(torch.rand(2, 3, 299, 299))
    assert out.logits.shape == (2, 2) and out.aux_logits.shape == (2, 2)
    assert model.eval()(torch.rand(1, 3, 75, 75)).shape == (1, 2)


@pytest.mark.parametrize("name", ["tin", "tsm"])
def test_temporal_resnet_rejects_other_clip_length(name):
    model = build_model(name, num_frames=8)
    with pytest.raises(AlnvidError, match=r"\(N, C, 8, H, W\)"):
        model(torch.rand(1, 3, 4, 32, 32))


def test_tin_inserts_interlace_in_every_bottleneck():
    model = build_model("tin", num_frames=FRAMES)
    interlaces = [m for m in model.modules() if type(m).__name__ == "TemporalInterlace"]
    assert len(interlaces) == 3 + 4 + 6 + 3
    assert [m.in_channels for m in interlaces[:2]] == [64, 256]  # before conv1, on the block's input
    assert model.backbone.layer1[0].conv1.conv.out_channels == 64


def test_tin_frames_interact_but_resnet_frames_do_not():
    torch.manual_seed(0)
    tin = build_model("tin", num_frames=FRAMES).eval()
    x = torch.rand(1, 3, FRAMES, CLIP_SIZE, CLIP_SIZE)
    changed = x.clone()
    changed[:, :, 0] = torch.rand(3, CLIP_SIZE, CLIP_SIZE)
    frames = lambda clip: clip.transpose(1, 2).flatten(0, 1)  # noqa: E731
    with torch.no_grad():
        per_frame = tin.backbone(frames(x)), tin.backbone(frames(changed))
    assert not torch.allclose(per_frame[0][1:], per_frame[1][1:])  # frame 0 reaches frames 1.. through interlace


@pytest.mark.parametrize("name", ["tin", "tsm"])
def test_consensus_mean_and_max_against_the_per_frame_logits(name):
    torch.manual_seed(0)
    model = build_model(name, num_frames=FRAMES).eval()
    x = torch.rand(2, 3, FRAMES, CLIP_SIZE, CLIP_SIZE)
    with torch.no_grad():
        per_frame = model.backbone(x.transpose(1, 2).flatten(0, 1)).view(2, FRAMES, -1)
        mean = model(x)
        model.consensus = "max"
        most = model(x)
    torch.testing.assert_close(mean, per_frame.mean(1))
    for clip in range(2):  # the frame with the largest logit difference, found independently
        frame = max(range(FRAMES), key=lambda t: float(per_frame[clip, t, 1] - per_frame[clip, t, 0]))
        torch.testing.assert_close(most[clip], per_frame[clip, frame])


def test_max_consensus_sends_the_gradient_to_one_frame_per_clip():
    from alnvid.models.tin import frame_consensus

    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.5, 3.0]], [[1.0, 1.0], [0.0, -1.0], [4.0, 4.5]]],
                          requires_grad=True)
    frame_consensus(logits, "max").sum().backward()
    # clip 0: differences 1, -2, 2.5 -> frame 2; clip 1: 0, -1, 0.5 -> frame 2
    expected = torch.zeros(2, 3, 2)
    expected[:, 2] = 1.0
    torch.testing.assert_close(logits.grad, expected)


def test_consensus_other_than_mean_is_refused_for_models_without_frame_logits():
    assert build_model("tin", num_frames=FRAMES, consensus="max").consensus == "max"
    with pytest.raises(AlnvidError, match="no per-frame logits") as caught:
        build_model("r2plus1d", consensus="max")
    assert "tin, tsm" in caught.value.fix
    build_model("resnet50", consensus="mean")  # the default is accepted everywhere


@pytest.mark.parametrize("name,frames,size", [("r2plus1d", 3, 40), ("resnet3d", 6, 48), ("r3d_18", 5, 36)])
def test_3d_models_accept_any_clip_length_and_size(name, frames, size):
    model = build_model(name).eval()
    assert not any(isinstance(module, nn.Softmax) for module in model.modules())  # logits for cross-entropy
    with torch.no_grad():
        assert model(torch.rand(1, 3, frames, size, size)).shape == (1, 2)


def test_vgg_accepts_non_224_input():
    model = build_model("vgg19_bn").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 80, 48)).shape == (1, 2)


def test_loads_lightning_checkpoint(tmp_path):
    source = tiny_model("tsm").eval()
    checkpoint = {
        "epoch": 3,
        "hyper_parameters": {"model_name": "tsm", "lr": 1e-4},
        "state_dict": {**{f"model.{k}": v for k, v in source.state_dict().items()}, "loss.weight": torch.ones(2)},
    }
    torch.save(checkpoint, tmp_path / "last.ckpt")
    loaded = build_model("tsm", num_frames=FRAMES, weights=tmp_path / "last.ckpt").eval()
    x = tiny_input("tsm")
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_weights_of_another_model_are_rejected_with_key_names(tmp_path):
    torch.save(tiny_model("tin").state_dict(), tmp_path / "tin.pt")
    with pytest.raises(AlnvidError, match=r"unexpected keys: backbone\.layer1\.0\.conv1\.temporal"):
        build_model("tsm", num_frames=FRAMES, weights=tmp_path / "tin.pt")
    with pytest.raises(AlnvidError, match=r"wrong shape keys: backbone\.fc\.bias, backbone\.fc\.weight"):
        build_model("tin", num_classes=3, num_frames=FRAMES, weights=tmp_path / "tin.pt")


def test_missing_or_corrupt_weight_files(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        build_model("r3d_18", weights=tmp_path / "absent.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputFileError, match="cannot read"):
        build_model("r3d_18", weights=tmp_path / "garbage.pt")
    torch.save(tiny_model("r3d_18").state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="cannot read"):
        build_model("r3d_18", weights=tmp_path / "truncated.pt")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pt")
    with pytest.raises(InputFileError, match="not a state dict"):
        build_model("r3d_18", weights=tmp_path / "list.pt")
