"""Grad-CAM over clips: every backbone, an independent reference computation, a trained sanity check with
model randomisation, keyframe and box mapping to the original loop, artefacts, privacy and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from alnvid.config import RunConfig
from alnvid.data.cache import Preprocessed
from alnvid.data.crop import Box
from alnvid.errors import AlnvidError, InputFileError
from alnvid.explain import (
    MIN_CAM_CELLS,
    GradCAM,
    InputGeometry,
    explain_file,
    explain_video,
    heat_box,
    normalise_clip,
    select_keyframes,
)
from alnvid.explain.export import export_gradcam, select_cases
from alnvid.explain.overlay import blend, colorize, save_gif, save_mp4
from alnvid.models.trained import TrainedModel
from alnvid.models import build_model, get_model_spec, list_models
from alnvid.models.module import ALNClassifier

FRAMES = 4
# Sizes at which each random-init backbone has a multi-pixel target map with positive evidence for a class
# (ResNet-50 stages reduce 32 px to 1x1; R3D-18 at 32 px happens to have none for either class).
SIZES = {"inception_v3": 75, "resnet50": 64, "tin": 64, "tsm": 64, "r3d_18": 48}


def tiny_trained(tmp_path: Path, name: str = "r2plus1d_18") -> TrainedModel:
    """An untrained ALNClassifier with tiny data settings (T 4, 40 px cached, 32 px input)."""
    torch.manual_seed(0)
    config = RunConfig()
    config.model.name = name
    config.data.frames, config.data.resize, config.data.crop_size, config.data.input_size = FRAMES, 40, 32, 32
    config.data.cache_dir = str(tmp_path / "cache")
    return TrainedModel(ALNClassifier(name, num_frames=FRAMES).eval(), config, tmp_path / "none.ckpt")


# --- every registered backbone -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_every_backbone_gives_a_normalised_clip_heatmap(name):
    spec = get_model_spec(name)
    size = SIZES.get(name, 32)
    torch.manual_seed(0)
    model = build_model(name, num_frames=FRAMES, **({"aux_logits": False} if name == "inception_v3" else {}))
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.rand(1, 3, FRAMES, size, size, generator=torch.Generator().manual_seed(1))
    if spec.input_kind == "image":
        x = x.transpose(1, 2)  # a static model explains the clip's frames as a batch
    cam = GradCAM.from_spec(model, spec)
    result = cam(x, frame_indices=np.array([3, 9, 15, 21]))
    if not result.heat.any():  # a random net may hold no positive evidence for class 1: then it does for class 0
        result = cam(x, target_class=0, frame_indices=np.array([3, 9, 15, 21]))

    assert result.heat.shape == (FRAMES, size, size) and result.heat.dtype == np.float32
    assert np.isfinite(result.heat).all() and result.heat.min() >= 0
    assert result.heat.max() == 1.0
    assert result.frame_indices.tolist() == [3, 9, 15, 21]
    with torch.no_grad():
        expected = model.eval()(x[0] if spec.input_kind == "image" else x).softmax(-1)[:, result.target_class].mean()
    assert result.prob == pytest.approx(float(expected), abs=1e-5)
    assert result.logits.shape == ((FRAMES, 2) if spec.input_kind == "image" else (1, 2))
    # state restored, hooks removed
    assert [p.requires_grad for p in model.parameters()] == flags
    layer = model.get_submodule(spec.target_layer)
    assert not layer._forward_hooks


def test_aln_classifier_is_explained_through_its_backbone(tmp_path):
    model = tiny_trained(tmp_path)
    x = torch.rand(1, 3, FRAMES, 32, 32, generator=torch.Generator().manual_seed(0))
    via_module = GradCAM.from_spec(model.module, model.spec)(x)
    via_backbone = GradCAM.from_spec(model.module.model, model.spec)(x)
    np.testing.assert_allclose(via_module.heat, via_backbone.heat, atol=1e-6)


# --- correctness against an independent computation ----------------------------------------------------------


class TinyClipNet(nn.Module):
    """conv (the target) -> ReLU -> global average pool -> linear; input (N, 3, T, H, W)."""

    def __init__(self, folded: bool = False):
        super().__init__()
        self.folded = folded
        self.features = nn.Conv2d(3, 5, 3, padding=1) if folded else nn.Conv3d(3, 5, (1, 3, 3), padding=(0, 1, 1))
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        if self.folded:
            n, c, t, h, w = x.shape
            maps = self.features(x.transpose(1, 2).reshape(n * t, c, h, w))
            return self.fc(maps.relu().mean((2, 3)).view(n, t, -1).mean(1))
        return self.fc(self.features(x).relu().mean((2, 3, 4)))


def reference_cam(model: TinyClipNet, x: torch.Tensor, per_clip: bool, target: int) -> torch.Tensor:
    """Grad-CAM written out with autograd.grad on the explicitly computed activations."""
    n, c, t, h, w = x.shape
    if model.folded:
        act = model.features(x.transpose(1, 2).reshape(n * t, c, h, w)).view(n, t, 5, h, w).transpose(1, 2)
        logits = model.fc(act.relu().mean((3, 4)).mean(2))
    else:
        act = model.features(x)
        logits = model.fc(act.relu().mean((2, 3, 4)))
    (grad,) = torch.autograd.grad(logits[0, target], act)
    weights = grad.mean((2, 3, 4) if per_clip else (3, 4), keepdim=True)
    cam = torch.relu((weights * act).sum(1))[0]
    return (cam / cam.max()).detach()


@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize("per_clip", [False, True])
@pytest.mark.parametrize("target", [0, 1])
def test_matches_hand_computed_gradcam(folded, per_clip, target):
    torch.manual_seed(3)
    model = TinyClipNet(folded)
    x = torch.rand(1, 3, 3, 6, 7)
    cam = GradCAM(model, "features", time_folded=folded, per_clip_weights=per_clip)
    result = cam(x, target_class=target)
    expected = reference_cam(model, x, per_clip, target)
    assert expected.max() > 0
    np.testing.assert_allclose(result.heat, expected.numpy(), atol=1e-5)
    # per-frame weights differ from per-clip weights on a clip whose frames differ
    if not per_clip:
        assert not np.allclose(result.heat, reference_cam(model, x, True, target).numpy(), atol=1e-3)


class TwoStageClipNet(nn.Module):
    """fine conv -> ReLU -> 2x2 average pool -> coarse conv -> ReLU -> global average pool -> linear."""

    def __init__(self):
        super().__init__()
        self.fine = nn.Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1))
        self.coarse = nn.Conv3d(4, 5, (1, 3, 3), padding=(0, 1, 1))
        self.fc = nn.Linear(5, 2)

    def stages(self, x):
        fine = self.fine(x)
        coarse = self.coarse(F.avg_pool3d(fine.relu(), (1, 2, 2)))
        return fine, coarse, self.fc(coarse.relu().mean((2, 3, 4)))

    def forward(self, x):
        return self.stages(x)[2]


@pytest.mark.parametrize("size, layer", [(4, "fine"), (6, "coarse")])
def test_maps_too_coarse_to_localise_are_taken_from_the_finer_layer(size, layer):
    """At 4 px the coarse stage is 2 x 2 (under MIN_CAM_CELLS = 3), so the fine stage is explained; at 6 px it
    is 3 x 3 and is explained itself. Either way the heat equals Grad-CAM written out on that stage."""
    torch.manual_seed(5)
    model = TwoStageClipNet()
    x = torch.rand(1, 3, 3, size, size)
    result = GradCAM(model, "coarse", finer_layer="fine")(x)
    assert MIN_CAM_CELLS == 3 and result.layer == layer
    fine, coarse, logits = model.stages(x)
    act = fine if layer == "fine" else coarse
    (grad,) = torch.autograd.grad(logits[0, 1], act)
    cam = torch.relu((grad.mean((2, 3, 4), keepdim=True) * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(3, size, size), mode="trilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(result.heat, (cam / cam.max()).detach().numpy(), atol=1e-5)


def test_static_frames_are_each_explained_by_their_own_logit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    frames = torch.rand(1, 3, 3, 8, 8)  # (1, K, 3, H, W)
    together = GradCAM(model, "1", input_kind="image")(frames)
    for k in range(3):
        alone = GradCAM(model, "1", input_kind="image")(frames[0, k:k + 1])
        raw_alone = alone.heat[0] * 1.0
        # up to the clip-wide normalisation, each frame's map is the map of that frame alone
        scale = together.heat[k].max() / raw_alone.max()
        np.testing.assert_allclose(together.heat[k], raw_alone * scale, atol=1e-5)
    assert together.frame_probs.shape == (3,)
    assert together.prob == pytest.approx(float(together.frame_probs.mean()))


def test_trilinear_upsampling_of_a_3d_map_and_clip_normalisation():
    """A map of T'=2 steps is stretched over 4 frames; the whole clip, not each frame, is divided by its max."""
    maps = torch.tensor([[[[1.0]], [[0.5]]]])  # (N=1, T'=2, 1, 1)
    up = F.interpolate(maps.unsqueeze(1), size=(4, 2, 2), mode="trilinear", align_corners=False)[:, 0]
    heat = normalise_clip(up)[0]
    assert heat[:, 0, 0].tolist() == pytest.approx([1.0, 0.875, 0.625, 0.5])
    assert normalise_clip(torch.zeros(1, 2, 3, 3)).abs().sum() == 0


def test_errors_are_user_errors():
    model = TinyClipNet()
    with pytest.raises(AlnvidError, match="target class 5"):
        GradCAM(model, "features")(torch.rand(1, 3, 2, 5, 5), target_class=5)
    with pytest.raises(AlnvidError, match="no layer"):
        GradCAM(model, "layer9")
    with pytest.raises(AlnvidError, match="one clip at a time"):
        GradCAM(model, "features")(torch.rand(2, 3, 2, 5, 5))
    assert not model.features._forward_hooks


# --- sanity: a trained model looks at the evidence; randomised weights change the map ------------------------


class BlobNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 8, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(),
                                  nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.body(x).amax((2, 3, 4)))


def blob_clips(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Noise clips (T 8, 20x20); positives carry a bright 5x5 blob in frames 3-5 at a random place."""
    x = rng.normal(0.3, 0.1, (n, 1, 8, 20, 20)).astype(np.float32)
    y = np.arange(n) % 2
    where = []
    for i in np.nonzero(y)[0]:
        r, c = rng.integers(1, 14, 2)
        x[i, 0, 3:6, r:r + 5, c:c + 5] += 0.6
        where.append((i, r, c))
    return torch.from_numpy(x), torch.from_numpy(y), where


def test_trained_model_looks_at_the_blob_and_randomisation_changes_the_map():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = BlobNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        x, y, _ = blob_clips(16, rng)
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    x, y, where = blob_clips(8, np.random.default_rng(99))
    cam = GradCAM(model, "body.3")
    maps = []
    for i, r, c in where:
        result = cam(x[i:i + 1])
        assert result.prob > 0.9
        heat = result.heat
        t, rr, cc = np.unravel_index(heat.argmax(), heat.shape)
        assert 3 <= t <= 5 and r - 1 <= rr <= r + 5 and c - 1 <= cc <= c + 5
        assert select_keyframes(heat, np.arange(8), top_k=1)[0].frame_index in (3, 4, 5)
        maps.append(heat)
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.Linear)):
            module.reset_parameters()
    for (i, _, _), trained in zip(where, maps):
        randomised = cam(x[i:i + 1]).heat
        correlation = np.corrcoef(trained.ravel(), randomised.ravel())[0, 1] if randomised.any() else 0.0
        assert correlation < 0.8


# --- keyframes and geometry ----------------------------------------------------------------------------------


def test_keyframes_map_to_the_original_loop_and_skip_repeats():
    heat = np.zeros((5, 2, 2), np.float32)
    heat[0] = 0.1
    heat[1] = 0.9  # frame 7
    heat[2] = 0.8  # frame 7 again (short loop: repeated)
    heat[3] = 0.5  # frame 8
    indices = np.array([6, 7, 7, 8, 9])
    keys = select_keyframes(heat, indices, top_k=3, frame_time_ms=40.0)
    assert [k.frame_index for k in keys] == [7, 8, 6]
    assert [k.position for k in keys] == [1, 3, 0]
    assert keys[0].heat_mass == pytest.approx(3.6) and keys[0].time_s == pytest.approx(0.28)
    assert select_keyframes(np.zeros((3, 2, 2)), np.arange(3)) == []
    assert select_keyframes(heat, indices, top_k=1)[0].time_s is None


def test_the_keyframe_is_where_the_heat_is_concentrated_not_spread():
    heat = np.full((3, 4, 4), 0.3, np.float32)  # frame 0: weak heat everywhere (mass 4.8, nothing hot)
    heat[1] = 0.0
    heat[1, 1:3, 1:3] = 1.0  # frame 1: one hot spot (mass 4.0, all of it hot)
    heat[2] = 0.0
    heat[2, 0, 0] = 0.6  # frame 2: a small hot spot (hot mass 0.6)
    keys = select_keyframes(heat, np.array([10, 11, 12]), top_k=3)
    assert [k.frame_index for k in keys] == [11, 12, 10]
    assert [k.hot_mass for k in keys] == pytest.approx([4.0, 0.6, 0.0])
    assert [k.heat_mass for k in keys] == pytest.approx([4.0, 0.6, 4.8])


def test_heat_box_in_original_pixels():
    # box 200x200 at (100, 50); resize 256, centre crop 224 (offset 16), input 112 (factor 2)
    geometry = InputGeometry(Box(100, 50, 300, 250), resize=256, crop_size=224, input_size=112)
    heat = np.zeros((112, 112), np.float32)
    heat[10:20, 30:60] = 1.0  # rows 10-19, columns 30-59
    box = heat_box(heat, geometry)
    # column 30 -> cached 16 + 60 = 76 -> 100 + 76 * 200/256 = 159.375 -> 159;
    # column 60 -> cached 136 -> 100 + 136 * 200/256 = 206.25 -> 207
    # row 10 -> cached 36 -> 50 + 28.125 -> 78; row 20 -> cached 56 -> 50 + 43.75 -> 94
    assert box == Box(159, 78, 207, 94)
    assert heat_box(heat * 0.4, geometry) is None
    identity = InputGeometry(Box(0, 0, 64, 64), 64, 64, 64)
    assert heat_box(heat[:64, :64], identity) == Box(30, 10, 60, 20)


def test_heat_on_crop_has_the_crop_size_and_no_heat_where_the_network_saw_nothing():
    geometry = InputGeometry(Box(10, 20, 110, 70), resize=40, crop_size=20, input_size=20)
    on_crop = geometry.heat_on_crop(np.ones((20, 20), np.float32))
    assert on_crop.shape == (50, 100)
    assert on_crop[:, :20].max() == 0 and on_crop[:, -20:].max() == 0  # outer quarters: cut by the centre crop
    assert on_crop[25, 50] == pytest.approx(1.0)
    assert geometry.frame_on_crop(np.zeros((40, 40, 3), np.uint8)).shape == (50, 100, 3)


# --- whole-loop explanation ------------------------------------------------------------------------------------


def fake_video(frames: int = 10) -> Preprocessed:
    rng = np.random.default_rng(0)
    return Preprocessed(rng.integers(0, 255, (frames, 40, 40, 3), dtype=np.uint8), Box(10, 20, 90, 100), 120, 160,
                        40.0)


def test_multi_clip_merges_overlapping_windows_per_frame(tmp_path):
    model = tiny_trained(tmp_path)
    video = fake_video(10)
    result = explain_video(model, video, multi_clip=True)
    assert result.heat.shape == (10, 32, 32) and result.frame_indices.tolist() == list(range(10))
    # independent: windows 0-3, 2-5, 4-7, 6-9 explained one by one, raw maps averaged where they overlap
    from alnvid.data.transforms import apply_to_clip, clip_transform

    transform = clip_transform(32, 32, train=False)
    cam = GradCAM.from_spec(model.module, model.spec)
    total, count = torch.zeros(10, 32, 32), torch.zeros(10)
    for start in (0, 2, 4, 6):
        clip = apply_to_clip(transform, video.frames[start:start + 4])[None]
        raw, _ = cam.raw_maps(clip)
        total[start:start + 4] += raw[0]
        count[start:start + 4] += 1
    expected = total / count[:, None, None]
    # the windows go through the network as one batch there and one by one here: CPU kernels chosen by batch size
    # round differently (up to 7e-4 of the maximum on an AMD EPYC), far below what a wrong merge would change
    np.testing.assert_allclose(result.heat, (expected / expected.max()).numpy(), atol=2e-3)
    assert result.logits.shape == (4, 2)


def test_single_clip_uses_the_evaluation_frames(tmp_path):
    model = tiny_trained(tmp_path)
    result = explain_video(model, fake_video(10))
    assert result.frame_indices.tolist() == [1, 3, 6, 8]  # TSN segment centres of 10 frames in 4 segments
    static = explain_video(tiny_trained(tmp_path, "vgg19"), fake_video(10), multi_clip=True)
    assert static.heat.shape == (10, 32, 32) and static.frame_probs.shape == (10,)


# --- artefacts, privacy, CLI -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    from alnvid.data.demo import make_demo_cohort

    root = tmp_path_factory.mktemp("demo")
    manifest = make_demo_cohort(root, patients=6, frames=8, seed=1, frame_size=(96, 128))
    return manifest, pd.read_csv(manifest)


def header_strings(path: Path) -> list[str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    values = [str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.StudyDate, ds.AccessionNumber,
              ds.InstitutionName, str(ds.PatientName).replace("^", " ")]
    return [v for v in values if v]


def test_explain_file_writes_private_artefacts(tmp_path, demo):
    manifest, table = demo
    dicom = manifest.parent / table["path"][0]
    model = tiny_trained(tmp_path)
    out = tmp_path / "out"
    result = explain_file(model, dicom, out, top_k=2)

    assert result.name.startswith("explain_") and len(result.name) == len("explain_") + 8
    assert set(result.files) == {"overlay", "keyframe", "sheet", "heat", "gif", "mp4", "json"}
    names = [p.name for p in out.iterdir()]
    assert all(p.name.startswith(result.name) for p in out.iterdir()) and len(names) == 7
    forbidden = header_strings(dicom) + [dicom.stem]
    payload = (out / f"{result.name}.json").read_text()
    for text in forbidden:
        assert text not in payload and all(text not in n for n in names), text
    info = json.loads(payload)
    assert info["probability"] == pytest.approx(result.prob) and info["model"] == "r2plus1d_18"
    assert info["explained_frames"] == [1, 3, 5, 7] and info["n_frames"] == 8
    if result.keyframe:
        assert info["keyframe"]["frame_index"] in (1, 3, 5, 7)
        assert info["keyframe"]["time_s"] == pytest.approx(result.keyframe.frame_index * result.frame_time_ms / 1000)
    crop = result.crop_box
    with Image.open(result.files["overlay"]) as overlay:
        assert overlay.size == (crop.width, crop.height)  # the imaging region only: no banner text
    with Image.open(result.files["keyframe"]) as figure:
        assert figure.width > crop.width and figure.height > crop.height
    with Image.open(result.files["gif"]) as gif:
        assert gif.n_frames == 8
    with np.load(result.files["heat"]) as saved:
        np.testing.assert_allclose(saved["heat"], result.cam.heat, atol=1e-3)
    # same probability as `alnvid predict`
    from alnvid.models.trained import predict_file

    assert predict_file(model, dicom).prob == pytest.approx(result.prob, abs=1e-6)


def test_explain_file_refuses_unsafe_names_and_missing_files(tmp_path, demo):
    manifest, table = demo
    model = tiny_trained(tmp_path)
    with pytest.raises(AlnvidError, match="plain file name"):
        explain_file(model, manifest.parent / table["path"][0], tmp_path, name="../x")
    with pytest.raises(InputFileError):
        explain_file(model, tmp_path / "missing.dcm", tmp_path)


def test_overlay_colours_and_sweep_files(tmp_path):
    frame = np.full((4, 6, 3), 100, np.uint8)
    heat = np.zeros((4, 6), np.float32)
    heat[1, 2] = 1.0
    out = blend(frame, heat, alpha=0.5, cmap="jet")
    assert (out[0, 0] == 100).all()  # no heat: the ultrasound pixel unchanged
    red = colorize(np.ones((1, 1)), "jet")[0, 0].astype(float)
    np.testing.assert_array_equal(out[1, 2], np.rint(0.5 * 100 + 0.5 * red).astype(np.uint8))
    frames = [np.full((30, 41, 3), v, np.uint8) for v in (0, 120, 240)]
    with Image.open(save_gif(frames, tmp_path / "a.gif", frame_ms=40)) as gif:
        assert gif.n_frames == 3 and gif.info["duration"] == 40
    mp4 = save_mp4(frames, tmp_path / "a.mp4", fps=25)
    if mp4 is not None:
        import av

        with av.open(str(mp4)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(decoded) == 3 and decoded[0].shape == (30, 40, 3)
        assert abs(int(decoded[2].mean()) - 240) < 8


def test_select_cases_takes_confident_hits_and_all_errors():
    table = pd.DataFrame({"patient_id": list("abcdefgh"), "label": [1, 1, 1, 0, 0, 0, 1, 0],
                          "prob": [0.95, 0.7, 0.6, 0.05, 0.3, 0.8, 0.2, 0.55]})
    chosen = select_cases(table, top_n=2)
    assert chosen["patient_id"].tolist() == ["a", "b", "d", "e", "f", "h", "g"]
    assert chosen["reason"].tolist() == ["confident_positive"] * 2 + ["confident_negative"] * 2 + \
        ["false_positive"] * 2 + ["false_negative"]


def test_export_writes_an_index_of_neutral_names(tmp_path, demo):
    manifest, table = demo
    rows = table.assign(path=[str(manifest.parent / p) for p in table["path"]]).head(3)
    rows = rows.assign(prob=[0.9, 0.1, 0.6], label=[1, 0, 0])
    index = export_gradcam(tiny_trained(tmp_path), rows, tmp_path / "gradcam" / "test_a", top_n=1, gif=False,
                           mp4=False)
    assert index["patient_id"].tolist() == [rows["patient_id"][0], rows["patient_id"][1], rows["patient_id"][2]]
    assert index["reason"].tolist() == ["confident_positive", "confident_negative", "false_positive"]
    assert (tmp_path / "gradcam" / "test_a" / "index.csv").is_file()
    for name in index["name"]:
        assert (tmp_path / "gradcam" / "test_a" / f"{name}_keyframe.png").is_file()


def test_cli_explain_json(tmp_path, demo):
    from typer.testing import CliRunner

    from alnvid.cli.main import app

    manifest, table = demo
    model = tiny_trained(tmp_path)
    run = tmp_path / "run"
    _saved_run(model, run)
    dicom = manifest.parent / table["path"][1]
    result = CliRunner().invoke(app, ["explain", str(dicom), "-c", str(run / "checkpoints" / "best.ckpt"),
                                      "--out", str(tmp_path / "cli"), "--no-gif", "--no-mp4", "--json",
                                      "--name", "case_1"])
    assert result.exit_code == 0, result.output
    (info,) = json.loads(result.stdout)
    assert info["name"] == "case_1" and 0 <= info["probability"] <= 1
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        "case_1.json", "case_1_heat.npz", "case_1_keyframe.png", "case_1_overlay.png", "case_1_sheet.png",
        "index.csv"]
    bad = CliRunner().invoke(app, ["explain", "-c", str(run / "checkpoints" / "best.ckpt")])
    assert bad.exit_code == 2 and "either input file(s) or --manifest" in bad.output


def _saved_run(model: TrainedModel, run: Path) -> Path:
    (run / "checkpoints").mkdir(parents=True)
    model.config.save(run / "config.yaml")
    torch.save({"state_dict": model.module.state_dict(), "hyper_parameters": dict(model.module.hparams),
                "pytorch-lightning_version": L.__version__}, run / "checkpoints" / "best.ckpt")
    return run / "checkpoints" / "best.ckpt"


def test_an_ensemble_is_explained_by_its_members_mean_heat_and_predicts_their_mean(tmp_path, demo):
    from typer.testing import CliRunner

    from alnvid.cli.main import app
    from alnvid.models.trained import ModelEnsemble, load_models, predict_file

    manifest, table = demo
    dicom = manifest.parent / table["path"][2]
    members = []
    for k in range(2):
        member = tiny_trained(tmp_path)
        torch.manual_seed(k + 1)
        member.module = ALNClassifier("r2plus1d_18", num_frames=FRAMES).eval()  # two different networks
        members.append(member)
    ensemble = ModelEnsemble(members)
    result = explain_file(ensemble, dicom, tmp_path / "ensemble", gif=False, mp4=False)

    # independent: each member explained alone, its heat on its own 0-1 scale, averaged, rescaled to 0-1
    alone = [explain_file(m, dicom, tmp_path / f"member_{k}", gif=False, mp4=False) for k, m in enumerate(members)]
    mean = np.mean([a.cam.heat for a in alone], axis=0)
    np.testing.assert_allclose(result.cam.heat, mean / mean.max(), atol=1e-6)
    assert result.prob == pytest.approx(np.mean([a.prob for a in alone]), abs=1e-6)
    assert result.prob == pytest.approx(predict_file(ensemble, dicom).prob, abs=1e-6)
    assert json.loads(result.files["json"].read_text())["models"] == 2
    assert alone[0].prob != pytest.approx(alone[1].prob)  # the members do differ

    # from the command line: -c twice averages the two checkpoints; members of another recipe are refused
    paths = [_saved_run(m, tmp_path / f"run_{k}") for k, m in enumerate(members)]
    cli = CliRunner().invoke(app, ["predict", str(dicom), "-c", str(paths[0]), "-c", str(paths[1]), "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)[0]["prob"] == pytest.approx(result.prob, abs=1e-5)
    other = tiny_trained(tmp_path)
    other.config.data.input_size = 40
    odd = _saved_run(other, tmp_path / "run_odd")
    with pytest.raises(AlnvidError, match="differs in input_size"):
        load_models([paths[0], odd])
    refused = CliRunner().invoke(app, ["explain", str(dicom), "-c", str(paths[0]), "-c", str(odd)])
    assert refused.exit_code == 2 and "differs in input_size" in refused.output


def test_callback_exports_each_test_split_after_testing(tmp_path, demo):
    from types import SimpleNamespace

    from alnvid.explain import GradCAMExport

    manifest, table = demo
    model = tiny_trained(tmp_path)
    rows = table.assign(path=[str(manifest.parent / p) for p in table["path"]]).head(2)
    rows = rows.assign(label=[1, 0])
    model.module.epoch_outputs = {"test_a": [(str(p), int(y), prob) for p, y, prob in
                                             zip(rows["patient_id"], rows["label"], [0.8, 0.3])]}
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(test_rows={"test_a": rows}))
    model.module.train()
    callback = GradCAMExport(tmp_path / "gradcam", model.config, top_n=1, gif=False)
    callback.on_test_end(trainer, model.module)
    index = pd.read_csv(tmp_path / "gradcam" / "test_a" / "index.csv")
    assert index["reason"].tolist() == ["confident_positive", "confident_negative"]
    assert model.module.training  # mode restored
