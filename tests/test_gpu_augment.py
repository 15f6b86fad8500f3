"""Training augmentation in torch after collation (`data.augment_device` 'gpu'), checked on the CPU: flip and crop
copy a real clip's pixels, resizing is bilinear, every frame of a clip moves alike, the elastic field has
albumentations' spread and smoothness, draws repeat, and a fit trains with it."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from albumentations.augmentations.geometric.functional import generate_displacement_fields
from typer.testing import CliRunner

from alnvid.cli.main import app
from alnvid.cli.train import describe_runtime, training_overrides
from alnvid.config import RunConfig, changed_result_settings, resolve_config
from alnvid.data.cache import PreprocessCache
from alnvid.data.datamodule import StillDataModule, VideoDataModule
from alnvid.data.gpu_augment import (
    ELASTIC_ALPHA,
    ELASTIC_SIGMA,
    augment_batch,
    draw_params,
    elastic_displacement,
    noise_grid_shape,
)
from alnvid.data.manifest import load_manifest
from alnvid.errors import AlnvidError
from alnvid.train import Hardware, fit, resolve_auto


@pytest.fixture()
def real_clip(tiny_cohort, tiny_data_config) -> np.ndarray:
    """The first 4 frames (4, 40, 40, 3) uint8 of a demo DICOM, as cached (cropped to the imaging region, 40 px)."""
    path = load_manifest(tiny_cohort).table["path"].iloc[0]
    frames = np.asarray(PreprocessCache.from_config(tiny_data_config).load(path).frames[:4])
    assert frames.shape == (4, 40, 40, 3) and frames.std() > 10  # a real, varied image
    return frames


def _params(flip, top, left, **extra) -> dict:
    return {"flip": torch.tensor(flip), "top": torch.tensor(top), "left": torch.tensor(left), **extra}


def test_flip_and_crop_copy_the_pixels_of_a_real_clip(real_clip):
    second = real_clip[::-1].copy()  # another clip: the frames in reverse
    batch = torch.from_numpy(np.stack([real_clip, second]))
    out = augment_batch(batch, _params([True, False], [3, 8], [5, 0]), crop_size=32)
    expected = [real_clip[:, :, ::-1][:, 3:35, 5:37], second[:, 8:40, 0:32]]  # flip, then crop the flipped frame
    expected = np.stack([e.transpose(3, 0, 1, 2) for e in expected]).astype(np.float32) / np.float32(255)
    assert out.shape == (2, 3, 4, 32, 32) and out.dtype == torch.float32
    assert np.array_equal(out.numpy(), expected)
    still = augment_batch(batch[:, 0], _params([True, False], [3, 8], [5, 0]), crop_size=32)
    assert still.shape == (2, 3, 32, 32) and torch.equal(still, out[:, :, 0])


def test_resize_to_the_input_side_is_bilinear(real_clip):
    out = augment_batch(torch.from_numpy(real_clip[None]), _params([False], [4], [2]), crop_size=32, input_size=48)
    crops = real_clip[:, 4:36, 2:34].astype(np.float32)
    expected = np.stack([cv2.resize(frame, (48, 48), interpolation=cv2.INTER_LINEAR) for frame in crops]) / 255
    assert out.shape == (1, 3, 4, 48, 48)
    np.testing.assert_allclose(out[0].permute(1, 2, 3, 0).numpy(), expected, atol=1e-5)


def test_elastic_moves_every_frame_of_a_clip_alike(real_clip):
    frame = real_clip[0]
    clip = torch.from_numpy(np.stack([frame] * 4))[None].expand(2, -1, -1, -1, -1)  # 2 clips of 4 equal frames
    noise = torch.from_numpy(np.random.default_rng(3).standard_normal((2, *noise_grid_shape(40, 40)),
                                                                      dtype=np.float32))
    params = _params([False, True], [4, 4], [4, 4], elastic=torch.tensor([True, False]), noise=noise)
    out = augment_batch(clip, params, crop_size=32)
    for t in range(1, 4):
        assert torch.equal(out[:, :, t], out[:, :, 0])
    plain = augment_batch(clip, _params([False, True], [4, 4], [4, 4]), crop_size=32)
    assert torch.equal(out[1], plain[1])  # elastic off: exactly flip and crop
    moved = (out[0] - plain[0]).abs()
    assert 0 < moved.mean() < 0.05  # a sub-pixel warp (alpha 30, sigma 6 moves ~0.3 px)
    still = augment_batch(clip[:, 0], params, crop_size=32)
    torch.testing.assert_close(still, out[:, :, 0])
    params["noise"] = torch.zeros_like(noise)  # a zero field resamples at the pixel centres
    torch.testing.assert_close(augment_batch(clip, params, crop_size=32), plain, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU computation is the reference)")
def test_cuda_equals_the_cpu_computation(real_clip):
    clips = torch.from_numpy(np.stack([real_clip, real_clip[::-1].copy()]))
    noise = torch.from_numpy(np.random.default_rng(5).standard_normal((2, *noise_grid_shape(40, 40)),
                                                                      dtype=np.float32))
    params = _params([True, False], [1, 6], [7, 2], elastic=torch.tensor([True, False]), noise=noise)
    expected = augment_batch(clips, params, crop_size=32, input_size=48)
    out = augment_batch(clips.cuda(), {k: v.cuda() for k, v in params.items()}, crop_size=32, input_size=48)
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=0)


def _lag_correlation(field: np.ndarray, lag: int) -> float:
    a, b = field[..., :-lag], field[..., lag:]
    return float(np.mean((a - a.mean()) * (b - b.mean())) / field.var())


def test_elastic_field_has_albumentations_spread_smoothness_and_bound():
    size, draws, rng = 256, 6, np.random.default_rng(0)
    reference = np.stack([np.stack(generate_displacement_fields((size, size), ELASTIC_ALPHA, ELASTIC_SIGMA, False,
                                                                (0, 0), rng, "gaussian")) for _ in range(draws)])
    noise = torch.from_numpy(rng.standard_normal((draws, *noise_grid_shape(size, size)), dtype=np.float32))
    ours = elastic_displacement(noise, size, size).numpy()
    assert ours.shape == reference.shape == (draws, 2, size, size)
    inner = (slice(None), slice(None), slice(32, -32), slice(32, -32))  # both treat the borders differently
    ours, reference = ours[inner], reference[inner]
    # white noise normalised by its peak (~4.6), smoothed by a Gaussian of sigma: std alpha / (peak 2 sqrt(pi) sigma)
    theory = ELASTIC_ALPHA / (4.62 * 2 * np.sqrt(np.pi) * ELASTIC_SIGMA)
    assert ours.std() == pytest.approx(reference.std(), rel=0.1) and ours.std() == pytest.approx(theory, rel=0.1)
    for lag in (3, 6, 12):  # correlation exp(-lag^2 / (4 sigma^2)) between points lag pixels apart
        expected = np.exp(-lag**2 / (4 * ELASTIC_SIGMA**2))
        assert _lag_correlation(ours, lag) == pytest.approx(_lag_correlation(reference, lag), abs=0.05)
        assert _lag_correlation(ours, lag) == pytest.approx(expected, abs=0.05)
    assert np.abs(ours).max() < 8 * theory
    wild = elastic_displacement(1e6 * torch.randn(2, *noise_grid_shape(64, 64)), 64, 64)
    assert wild.abs().max() <= ELASTIC_ALPHA + 1e-4  # smoothing and upsampling average: never beyond alpha
    assert torch.equal(elastic_displacement(torch.zeros(1, *noise_grid_shape(64, 64)), 64, 64),
                       torch.zeros(1, 2, 64, 64))


def test_parameters_are_drawn_from_the_item_seed():
    first = draw_params(np.random.default_rng(7), 40, 40, 32, elastic=True)
    again = draw_params(np.random.default_rng(7), 40, 40, 32, elastic=True)
    assert first.keys() == again.keys() == {"flip", "top", "left", "elastic", "noise"}
    assert all(torch.equal(torch.as_tensor(first[k]), torch.as_tensor(again[k])) for k in first)
    assert 0 <= first["top"] <= 8 and 0 <= first["left"] <= 8 and first["noise"].shape == (2, 14, 14)
    assert draw_params(np.random.default_rng(7), 40, 40, 32, elastic=False).keys() == {"flip", "top", "left"}
    draws = [draw_params(np.random.default_rng(seed), 40, 40, 32, elastic=True) for seed in range(400)]
    assert np.mean([d["flip"] for d in draws]) == pytest.approx(0.5, abs=0.08)
    assert np.mean([d["elastic"] for d in draws]) == pytest.approx(0.5, abs=0.08)
    assert {d["top"] for d in draws} == set(range(9))


def _augmented_epoch(module, loader) -> list[torch.Tensor]:
    return [module.on_after_batch_transfer(batch, 0)["x"] for batch in loader]


def test_datamodules_hand_over_uint8_frames_and_augment_them_repeatably(tiny_cohort, tiny_data_config):
    tiny_data_config.augment_device, tiny_data_config.elastic = "gpu", True
    module = VideoDataModule(tiny_cohort, tiny_data_config, batch_size=3)
    raw = next(iter(module.train_dataloader()))
    assert raw["x"].dtype == torch.uint8 and raw["x"].shape == (3, 4, 40, 40, 3)
    assert raw["augment"]["noise"].shape == (3, 2, 14, 14)
    loader = module.train_dataloader()
    first, again = _augmented_epoch(module, loader), _augmented_epoch(module, loader)
    assert first[0].shape == (3, 3, 4, 32, 32) and first[0].dtype == torch.float32  # as the models get them today
    assert 0 <= min(x.min() for x in first) and max(x.max() for x in first) <= 1
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    loader.sampler.set_epoch(1)
    assert not torch.equal(_augmented_epoch(module, loader)[0], first[0])
    assert "augment" not in next(iter(module.val_dataloader()))  # evaluation: centre crop on the CPU, as before
    still = StillDataModule(tiny_cohort, tiny_data_config, batch_size=2)
    batch = still.on_after_batch_transfer(next(iter(still.train_dataloader())), 0)
    assert batch["x"].shape == (2, 3, 32, 32) and "augment" not in batch
    tiny_data_config.augment_device = "auto"  # unresolved (no run started): the CPU path, as before
    assert next(iter(VideoDataModule(tiny_cohort, tiny_data_config, batch_size=3).train_dataloader()))["x"].dtype \
        == torch.float32


def test_auto_augments_on_the_gpu_and_resuming_refuses_another_device():
    gpu, cpu = RunConfig(), RunConfig()
    assert resolve_auto(gpu, Hardware(gpu=True, name="H100", bf16=True, cores=16))["augment"] == "gpu"
    assert resolve_auto(cpu, Hardware(gpu=False, cores=2))["augment"] == "cpu"
    assert (gpu.data.augment_device, cpu.data.augment_device) == ("gpu", "cpu")
    explicit = RunConfig()
    explicit.data.augment_device = "cpu"
    assert resolve_auto(explicit, Hardware(gpu=True, name="H100", bf16=True, cores=16))["augment"] == "cpu"
    assert "data.augment_device" in changed_result_settings(cpu, gpu)  # different draws: results change
    assert changed_result_settings(RunConfig(), cpu) == ["trainer.precision"]  # saved before the setting: the CPU
    assert "data.augment_device" in changed_result_settings(RunConfig(), gpu)


def test_augment_on_option_sets_the_device_and_refuses_others():
    def device(value):
        return resolve_config(None, fast_settings=False, overrides=training_overrides(augment_on=value)).data

    assert device("gpu").augment_device == "gpu" and device(None).augment_device == "auto"
    with pytest.raises(AlnvidError, match="(?s)data.augment_device is 'tpu'.*auto, cpu, gpu"):
        device("tpu")
    helps = {command: " ".join(CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output.split())
             for command in ("fit", "cv")}
    for text in helps.values():
        assert "--augment-on" in text and "auto (default: gpu when training on a GPU, else cpu)" in text
    assert "and augmentation on the GPU (opt out with" in helps["fit"] and "--augment-on cpu)" in helps["fit"]


def test_fit_trains_with_augmentation_after_transfer(tiny_cohort, tiny_data_config, tmp_path):
    config = RunConfig(data=tiny_data_config, out=str(tmp_path / "run"))
    config.data.manifest, config.data.augment_device, config.data.elastic = str(tiny_cohort), "gpu", True
    config.model.name = "r3d_18"
    config.trainer.epochs, config.trainer.accelerator, config.trainer.limit_train_batches = 1, "cpu", 1
    config.trainer.progress, config.explain.export = False, False
    result = fit(config)
    assert result.runtime["augment"] == "gpu"
    assert describe_runtime(result.runtime) == "CPU: 32-true, default memory layout, 0 loader workers, augmentation " \
        "after collation"
    assert describe_runtime({**result.runtime, "device": "NVIDIA H100"}).endswith(", augmentation on the GPU")
    assert describe_runtime({**result.runtime, "augment": "cpu"}).endswith(", augmentation in the training process")
    assert describe_runtime({**result.runtime, "augment": "cpu", "workers": 2}).endswith(
        ", 2 loader workers, augmentation in the loader workers")
    assert RunConfig.load(tmp_path / "run" / "config.yaml").data.augment_device == "gpu"
    assert np.isfinite(pd.read_csv(tmp_path / "run" / "epochs.csv")["train_loss"]).all()
    config.data.augment_device = "cpu"
    with pytest.raises(AlnvidError, match=r"started with other settings \(data.augment_device\)"):
        fit(config, resume=True)


def test_data_pipeline_benchmark_tiny_runs_every_path(load_benchmark):
    benchmark = load_benchmark("data_pipeline")
    results = benchmark.main(["--tiny", "--workers", "0", "--batches", "2", "--device", "cpu", "--json"])
    assert [(r["path"], r["workers"], r["device"]) for r in results] == [
        ("cpu", 0, "cpu"), ("gpu", 0, "cpu"), ("frames", 0, "cpu")]
    assert all(r["clips_per_s"] > 0 for r in results) and results[1]["augment_ms_per_batch"] > 0


def test_intensity_shifts_brightness_and_scales_contrast_of_the_whole_clip(real_clip):
    batch = torch.from_numpy(real_clip[None])
    params = _params([False], [0], [0], contrast=torch.tensor([1.5]), brightness=torch.tensor([-0.1]))
    out = augment_batch(batch, params, crop_size=40)
    expected = np.clip(real_clip.transpose(3, 0, 1, 2)[None].astype(np.float32) / 255 * 1.5 - 0.1, 0, 1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    drawn = [draw_params(np.random.default_rng(seed), 40, 40, 32, elastic=False, intensity=0.2) for seed in range(200)]
    contrasts, brightnesses = np.array([d["contrast"] for d in drawn]), np.array([d["brightness"] for d in drawn])
    assert 0.8 <= contrasts.min() < 0.85 and 1.15 < contrasts.max() <= 1.2
    assert -0.2 <= brightnesses.min() < -0.15 and 0.15 < brightnesses.max() <= 0.2
    assert "contrast" not in draw_params(np.random.default_rng(0), 40, 40, 32, elastic=False)


def test_albumentations_intensity_is_one_brightness_and_contrast_per_clip(real_clip):
    from alnvid.data.transforms import apply_to_clip, clip_transform

    transform = clip_transform(40, None, train=True, elastic=False, intensity=0.2)
    transform.set_random_seed(3)
    out = apply_to_clip(transform, real_clip).numpy()  # (3, T, 40, 40)
    source = real_clip.transpose(3, 0, 1, 2).astype(np.float64) / 255
    if not np.allclose(out[..., 0], source[..., 0], atol=0.02):  # the flip coin came up: undo it
        source = source[..., ::-1]
    inside = (out > 0.02) & (out < 0.98)  # not clipped
    design = np.stack([source[inside], np.ones(inside.sum())], axis=1)
    (contrast, brightness), *_ = np.linalg.lstsq(design, out[inside], rcond=None)
    assert 0.8 <= contrast <= 1.2 and -0.2 <= brightness <= 0.2 and abs(contrast - 1) + abs(brightness) > 0.01
    # one (contrast, brightness) for every frame: the fit explains each frame to within uint8 rounding
    residual = np.abs(out - np.clip(source * contrast + brightness, 0, 1))
    assert residual.max() < 2.5 / 255


def test_intensity_input_norm_and_checkpoint_options_reach_the_settings():
    overrides = training_overrides(intensity=0.2, zoom=0.1, input_norm="clip", checkpoint_every=0.0)
    config = resolve_config(None, fast_settings=False, overrides=overrides)
    assert (config.data.intensity, config.data.zoom, config.model.input_norm) == (0.2, 0.1, "clip")
    assert config.trainer.checkpoint_every_s == 0.0
    assert changed_result_settings(RunConfig(), config) == ["data.intensity", "data.zoom", "model.input_norm"]
    with pytest.raises(AlnvidError, match="data.zoom"):
        resolve_config(None, fast_settings=False, overrides=training_overrides(zoom=1.5))
    with pytest.raises(AlnvidError, match="model.input_norm"):
        resolve_config(None, fast_settings=False, overrides=training_overrides(input_norm="batch"))


def test_zoom_resamples_a_crop_of_another_side_like_cv2(real_clip):
    batch = torch.from_numpy(np.stack([real_clip, real_clip]))
    params = _params([False, True], [3, 0], [6, 2], side=torch.tensor([26, 38]))
    out = augment_batch(batch, params, crop_size=32)
    flipped = real_clip[:, :, ::-1]
    crops = [real_clip[:, 3:29, 6:32], flipped[:, 0:38, 2:40]]  # zoomed in (26 px) and out (38 px)
    for got, crop in zip(out, crops):
        expected = np.stack([cv2.resize(np.ascontiguousarray(f), (32, 32), interpolation=cv2.INTER_LINEAR)
                             for f in crop]).astype(np.float32) / 255
        np.testing.assert_allclose(got.permute(1, 2, 3, 0).numpy(), expected, atol=1.01 / 255)  # cv2 rounds to uint8
    same_side = augment_batch(batch[:1], _params([True], [3], [5], side=torch.tensor([32])), crop_size=32)
    plain = augment_batch(batch[:1], _params([True], [3], [5]), crop_size=32)
    torch.testing.assert_close(same_side, plain, atol=1e-6, rtol=0)  # side = crop: the plain crop's pixels


def test_zoom_draws_sides_within_the_frame_on_both_paths(real_clip):
    from alnvid.data.transforms import ZoomCrop, apply_to_clip, clip_transform

    drawn = [draw_params(np.random.default_rng(seed), 40, 40, 32, elastic=False, zoom=0.2) for seed in range(300)]
    sides = np.array([d["side"] for d in drawn])
    assert sides.min() == round(32 * 0.8) and sides.max() == 38 and len(set(sides)) > 8
    assert all(d["top"] + d["side"] <= 40 and d["left"] + d["side"] <= 40 for d in drawn)
    assert "side" not in draw_params(np.random.default_rng(0), 40, 40, 32, elastic=False)
    crop = ZoomCrop(32, 0.2)
    crop.set_random_seed(0)
    cpu_sides = [crop.get_params_dependent_on_data({"shape": (40, 40, 3)}, {})["side"] for _ in range(300)]
    assert min(cpu_sides) == 26 and max(cpu_sides) == 38
    transform = clip_transform(32, None, train=True, elastic=False, zoom=0.2)
    still = np.repeat(real_clip[:1], 4, axis=0)  # the same frame four times stays four equal frames
    out = apply_to_clip(transform, still)
    assert out.shape == (3, 4, 32, 32) and all(torch.equal(out[:, 0], out[:, t]) for t in range(4))


def test_zoom_with_elastic_moves_only_the_clips_whose_coin_says_so(real_clip):
    batch = torch.from_numpy(np.stack([real_clip, real_clip]))
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((2, *noise_grid_shape(40, 40)), dtype=np.float32))
    base = _params([True, True], [3, 3], [4, 4], side=torch.tensor([30, 30]))
    zoomed = augment_batch(batch, base, crop_size=32)
    warped = augment_batch(batch, {**base, "elastic": torch.tensor([False, True]), "noise": noise}, crop_size=32)
    still = augment_batch(batch, {**base, "elastic": torch.tensor([True, True]), "noise": torch.zeros_like(noise)},
                          crop_size=32)
    torch.testing.assert_close(warped[0], zoomed[0])  # coin off: the zoomed crop alone
    assert (warped[1] - zoomed[1]).abs().mean() > 0.01  # coin on: moved
    torch.testing.assert_close(still, zoomed, atol=1e-5, rtol=0)  # a zero field moves nothing
