"""Fast by default on a GPU: the 'auto' settings (resolved for a faked GPU or CPU), channels_last_3d models,
validation CIs without a bootstrap every epoch, and parallel folds equal to sequential ones."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from alnvid.cli.main import app
from alnvid.config import RunConfig
from alnvid.cv import auto_parallel_folds, run_cv
from alnvid.models.module import ALNClassifier
from alnvid.train import Hardware, detect_hardware, resolve_auto

H100 = Hardware(gpu=True, name="NVIDIA H100 80GB HBM3", bf16=True, cores=16)


def test_defaults_are_auto():
    config = RunConfig()
    assert (config.trainer.precision, config.model.channels_last, config.data.num_workers) == ("auto", None, None)


def test_gpu_gets_bf16_channels_last_and_capped_workers():
    config = RunConfig()
    chosen = resolve_auto(config, H100)
    assert chosen == {"device": "NVIDIA H100 80GB HBM3", "precision": "bf16-mixed", "channels_last": True,
                      "workers": 8, "augment": "gpu"}
    assert (config.trainer.precision, config.model.channels_last, config.data.num_workers) == ("bf16-mixed", True, 8)
    assert resolve_auto(RunConfig(), Hardware(gpu=True, name="old GPU", bf16=False, cores=4)) == {
        "device": "old GPU", "precision": "16-mixed", "channels_last": True, "workers": 4, "augment": "gpu"}


def test_cpu_keeps_full_precision_default_layout_and_few_workers():
    assert resolve_auto(RunConfig(), Hardware(gpu=False, cores=2)) == {
        "device": "CPU", "precision": "32-true", "channels_last": False, "workers": 2, "augment": "cpu"}
    assert resolve_auto(RunConfig(), Hardware(gpu=False, cores=1))["workers"] == 1


def test_explicit_settings_win_over_auto():
    config = RunConfig()
    config.trainer.precision, config.model.channels_last, config.data.num_workers = "32-true", False, 3
    assert resolve_auto(config, H100) == {"device": "NVIDIA H100 80GB HBM3", "precision": "32-true",
                                          "channels_last": False, "workers": 3, "augment": "gpu"}
    # resolving twice changes nothing (cv resolves before its folds, fit again in each)
    assert resolve_auto(config, H100)["precision"] == "32-true"


def test_cpu_accelerator_never_counts_as_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert detect_hardware("cpu").gpu is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert detect_hardware("auto") == Hardware(gpu=False, name="CPU", bf16=False, cores=detect_hardware("cpu").cores)


@pytest.mark.parametrize("model", ["r3d_18", "r2plus1d_18"])
def test_3d_models_train_in_channels_last_3d(model):
    """`--channels-last` used to crash every 3D CNN ("required rank 4 tensor"); they now take channels_last_3d."""
    torch.manual_seed(0)
    module = ALNClassifier(model, num_frames=4, channels_last=True)
    reference = ALNClassifier(model, num_frames=4)
    reference.load_state_dict(module.state_dict())
    # float64: in float32 the tiny clips' batch norms amplify rounding differences between the layouts to ~1%
    module, reference = module.double(), reference.double()
    conv = next(p for p in module.model.parameters() if p.dim() == 5)
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    assert module._laid_out(torch.rand(1, 3, 4, 32, 32)).is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.rand(2, 3, 4, 32, 32, dtype=torch.float64)
    batch = {"x": x, "label": torch.tensor([0, 1])}
    module.log = reference.log = lambda *args, **kwargs: None
    torch.manual_seed(1)  # the same dropout masks
    loss = module.training_step(batch, 0)
    loss.backward()
    torch.manual_seed(1)
    expected = reference.training_step(batch, 0)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    grad = next(p.grad for p in module.model.parameters() if p.dim() == 5)
    expected_grad = next(p.grad for p in reference.model.parameters() if p.dim() == 5)
    assert grad.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)


def test_2d_models_keep_channels_last():
    module = ALNClassifier("tin", num_frames=4, channels_last=True)
    assert module.memory_format == torch.channels_last
    assert ALNClassifier("resnet50", channels_last=True).memory_format == torch.channels_last


def test_fit_help_says_what_a_gpu_gets():
    result = CliRunner().invoke(app, ["fit", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "On a GPU the defaults are fast: bf16-mixed precision, channels_last memory format" in text
    assert "bf16-mixed on a GPU, 32-true on the CPU" in text


def test_auto_parallel_folds_rule():
    assert auto_parallel_folds(5, Hardware(gpu=False, cores=16)) == 1
    assert auto_parallel_folds(5, Hardware(gpu=True, cores=16, free_gib=78)) == 4
    assert auto_parallel_folds(5, Hardware(gpu=True, cores=16, free_gib=30)) == 2
    assert auto_parallel_folds(5, Hardware(gpu=True, cores=4, free_gib=139)) == 1
    assert auto_parallel_folds(2, Hardware(gpu=True, cores=16, free_gib=139)) == 2
    assert auto_parallel_folds(5, Hardware(gpu=True, cores=16, free_gib=8)) == 1


def test_parallel_folds_equal_sequential_folds(tiny_cohort, tiny_data_config, tmp_path, monkeypatch):
    """Two folds trained at once in their own processes give the predictions of the same folds one after another.

    With the same number of threads: by default each fold process gets its share of the cores, and another thread
    count sums floating-point numbers in another order (equal results, not equal bits)."""
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    results = {}
    for parallel in (1, 2):
        config = RunConfig(data=copy.deepcopy(tiny_data_config), out=str(tmp_path / f"parallel-{parallel}"))
        config.data.manifest = str(tiny_cohort)
        config.trainer.epochs, config.trainer.progress, config.explain.export = 1, False, False
        results[parallel] = run_cv(config, folds=2, parallel_folds=parallel)
    sequential, parallel = results[1], results[2]
    fold_log = (tmp_path / "parallel-2" / "logs" / "fold_1.log").read_text()
    assert "LeafSpec" not in fold_log and "Tip:" not in fold_log  # quietened as the command line is
    assert not (tmp_path / "parallel-1" / "logs").exists()
    assert parallel.fold_auc == sequential.fold_auc and parallel.best_fold == sequential.best_fold
    for name in ("fold_0/predictions_val.csv", "fold_1/predictions_val.csv", "oof_predictions.csv",
                 "predictions_test_a.csv", "ensemble/predictions_test_b.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(parallel.out / name), pd.read_csv(sequential.out / name),
                                      check_exact=False, rtol=0, atol=1e-6, obj=name)


class _Stage:
    """Just what BootstrapAUC reads of a trainer and a module, and the values it logs."""

    def __init__(self, epoch: int, max_epochs: int):
        self.current_epoch, self.max_epochs, self.sanity_checking = epoch, max_epochs, False
        labels, probs = [0, 1] * 6, [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.7, 0.3, 0.5, 0.15, 0.95]
        self.epoch_outputs = {"val": [(f"P{i}", y, p) for i, (y, p) in enumerate(zip(labels, probs))]}
        self.logged: dict[str, float] = {}

    def log(self, name, value, **kwargs):
        self.logged[name] = value


def test_validation_bootstrap_runs_on_the_last_epoch_only():
    from alnvid.callbacks import BootstrapAUC
    from alnvid.stats import bootstrap_auc_ci, delong_ci

    early, last = _Stage(0, 3), _Stage(2, 3)
    for stage in (early, last):
        BootstrapAUC(n_boot=200, seed=1).on_validation_epoch_end(stage, stage)
    labels = [o[1] for o in last.epoch_outputs["val"]]
    probs = [o[2] for o in last.epoch_outputs["val"]]
    delong, boot = delong_ci(labels, probs), bootstrap_auc_ci(labels, probs, 200, 1)
    assert early.logged == {"val_auc_delong_low": delong.ci_low, "val_auc_delong_high": delong.ci_high}
    assert last.logged == {**early.logged, "val_auc_boot_low": boot.ci_low, "val_auc_boot_high": boot.ci_high}


def test_protocol_time_tiny_runs_and_projects(load_benchmark):
    protocol_time = load_benchmark("protocol_time")
    rows = protocol_time.main(["--tiny", "--models", "tsm", "--warmup-epochs", "1", "--epochs", "1", "--json"])
    (row,) = rows
    assert row["model"] == "tsm" and row["device"] == "CPU" and row["precision"] == "32-true"
    assert row["epoch_wall_s"] >= row["step_sum_s"] > 0 and row["overhead_ratio"] >= 1
    assert row["clips_per_s"] == pytest.approx(8 / row["step_sum_s"])
    assert row["protocol_min"] == {1: pytest.approx(5 * 300 * row["epoch_wall_s"] / 60)}
    # N folds at a time: ceil(5 / N) rounds of 300 epochs at the slowest concurrent epoch time
    assert protocol_time.project([{"epoch_wall_s": 2.0}, {"epoch_wall_s": 3.0}], protocol_time.PROTOCOL, 2) == 45.0
