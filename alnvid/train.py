"""`fit`: train one model on a cohort and leave a complete, resumable run folder.

Run folder: config.yaml (resolved settings), provenance.json, checkpoints/best.ckpt (the selected model: best
per-patient validation AUROC, or the last epoch with `trainer.selection='last'`) and checkpoints/last.ckpt,
epochs.csv (per-epoch metrics; validation AUROC and its CIs per patient), predictions_<split>.csv for validation
and every test split (patient_id, label, prob; the mean over a patient's videos) with
predictions_<split>_videos.csv beside each (one row per manifest line: patient_id, line, label, prob), curves.png
(loss and accuracy per epoch, train vs validation), gradcam/<split>/ (heatmaps of the most confident cases and the
errors), summary.json and, with `trainer.loggers`, logs/<logger>/. Every file is written atomically; `resume=True`
continues from last.ckpt after a crash, with the same result-changing settings only.

With several devices (Lightning's DDP, each device a process running this code) every process evaluates a
shard; the predictions are gathered (`alnvid.models.module.gather_rows`) so scores, checkpoint selection
and CSVs equal a one-device run's, and only the first process (global rank 0) writes files.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import math
import shutil
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only

from alnvid.callbacks import (BootstrapAUC, DeLongComparison, EpochHistory, EpochSeed, PeriodicCheckpoint,
                              ProvenanceRecord, ValidationSchedule)
from alnvid.config import RunConfig, changed_result_settings
from alnvid.data.crop import Box
from alnvid.data.datamodule import (
    CohortDataModule,
    ProgressFn,
    StillDataModule,
    VideoDataModule,
)
from alnvid.data.manifest import Manifest, load_manifest
from alnvid.errors import AlnvidError
from alnvid.models.module import ALNClassifier, gather_rows
from alnvid.models.registry import check_consensus, get_model_spec
from alnvid.models.trained import network_input_size, require_motion
from alnvid.plots import plot_training_curves
from alnvid.stats import auc
from alnvid.stats.predictions import patient_level
from alnvid.utils import atomic_write_csv, atomic_write_text, available_cores


@dataclass
class FitResult:
    """Where a finished run left its artefacts, and its headline numbers."""

    out: Path
    best_checkpoint: Path
    best_epoch: int
    val_auc: float
    predictions: dict[str, Path] = field(default_factory=dict)
    test_auc: dict[str, float] = field(default_factory=dict)
    comparisons: dict[str, dict] = field(default_factory=dict)
    """Paired DeLong comparisons with the `compare_to` reference, by test split (comparison_<split>.json)."""
    runtime: dict[str, Any] = field(default_factory=dict)
    """What the run used: device, precision, channels_last, workers, augment (the 'auto' settings as resolved)."""


@dataclass(frozen=True)
class Hardware:
    """What the 'auto' settings depend on: a CUDA GPU for this run (and its name and bf16 support), CPU cores."""

    gpu: bool
    name: str = "CPU"
    bf16: bool = False
    cores: int = 1
    free_gib: float = 0.0
    """Free GPU memory when detected (0 without a GPU)."""


def detect_hardware(accelerator: str = "auto") -> Hardware:
    """The machine as this run would use it: a CUDA GPU when the accelerator is auto/gpu/cuda and one is present."""
    cores = available_cores()
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return Hardware(gpu=True, name=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported(), cores=cores,
                        free_gib=torch.cuda.mem_get_info(0)[0] / 2**30)
    return Hardware(gpu=False, cores=cores)


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX: e.g. AMD EPYC since Zen 4, Intel
    Xeon since Cooper Lake). There bf16-mixed trains the CPU demo's TIN and ResNet50 1.3 and 1.2 times as fast as
    fp32 per step, and the whole demo 1.6 times (on a Zen 4 EPYC); elsewhere torch emulates bf16."""
    return any(getattr(torch.cpu, probe, lambda: False)()
               for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_auto(config: RunConfig, hardware: Hardware | None = None, *, processes: int = 1) -> dict[str, Any]:
    """Fix the settings left to the machine, in place, and return what the run uses.

    With a GPU: bf16-mixed precision (16-mixed where the GPU lacks bf16), channels_last memory format,
    min(8, cores) loader workers and augmentation on the GPU. On the CPU: 32-true, the default layout, min(2, cores)
    workers (the CPU also runs the model) and augmentation in the workers. ``processes`` runs share the cores
    (parallel folds): each gets at least one worker.
    Settings given explicitly (e.g. ``--precision 32-true``) are kept.
    """
    hardware = hardware or detect_hardware(config.trainer.accelerator)
    if config.trainer.precision == "auto":
        config.trainer.precision = ("bf16-mixed" if hardware.bf16 else "16-mixed") if hardware.gpu else "32-true"
    if config.model.channels_last is None:
        config.model.channels_last = hardware.gpu
    if config.data.num_workers is None:
        config.data.num_workers = max(1, min(8 if hardware.gpu else 2, hardware.cores // max(1, processes)))
    if config.data.augment_device == "auto":
        config.data.augment_device = "gpu" if hardware.gpu else "cpu"
    return {"device": hardware.name, "precision": config.trainer.precision,
            "channels_last": config.model.channels_last, "workers": config.data.num_workers,
            "augment": config.data.augment_device}


def build_datamodule(config: RunConfig, manifest: Manifest, progress: ProgressFn | None = None) -> CohortDataModule:
    """The DataModule matching the model's input kind (clips for video models, images for static ones)."""
    spec = get_model_spec(config.model.name)
    kind = VideoDataModule if spec.input_kind == "clip" else StillDataModule
    return kind(manifest, config.data, batch_size=config.trainer.batch_size,
                input_size=network_input_size(config.data, spec),
                progress=progress)


def build_module(config: RunConfig) -> ALNClassifier:
    module = ALNClassifier(
        model_name=config.model.name,
        num_classes=config.model.num_classes,
        num_frames=config.data.frames,
        lr=config.optim.lr,
        weight_decay=config.optim.weight_decay,
        schedule=config.optim.schedule,
        epochs=config.trainer.epochs,
        weights=config.model.weights,
        channels_last=config.model.channels_last,
        input_norm=config.model.input_norm,
        consensus=config.model.consensus,
    )
    module.run_config = config.to_dict()
    return module


def build_module_shape(config: RunConfig) -> ALNClassifier:
    """The run's module with its parameters on the meta device: their sizes, without initialising or loading them
    (fast, and no random numbers drawn)."""
    shape = copy.deepcopy(config)
    shape.model.weights = None
    with torch.device("meta"):
        return build_module(shape)


def fit(
    config: RunConfig,
    *,
    resume: bool = False,
    progress: ProgressFn | None = None,
    extra_callbacks: list[L.Callback] | None = None,
    compare_to: str | Path | None = None,
) -> FitResult:
    """Train, keep the best and last checkpoints, and predict every evaluated split with the best model.

    With `compare_to` (a run folder, a predictions CSV or "readers"), the best model's test predictions are
    compared with it by DeLong's paired test (see callbacks.DeLongComparison); the reference is checked first.
    """
    out = Path(config.out).absolute()
    last = out / "checkpoints" / "last.ckpt"
    if (out / "summary.json").exists() and not resume:
        raise AlnvidError("this run folder already holds a finished run", path=out,
                          fix="choose another --out, or pass --resume to continue it.")
    check_consensus(config.model.name, config.model.consensus)
    manifest = load_manifest(config.data.manifest, allow_modalities=config.data.allow_modalities)
    config.data.manifest = str(manifest.path)  # absolute, so reports find it from anywhere
    runtime = resolve_auto(config)  # before a resumed run's saved settings are compared with these
    if resume and last.exists() and (out / "config.yaml").is_file():
        differ = changed_result_settings(RunConfig.load(out / "config.yaml"), config)
        if differ:
            raise AlnvidError(f"this run was started with other settings ({', '.join(differ)})", path=out,
                              fix="resume with the run's own settings (its config.yaml), or start a new --out.")
    comparison = DeLongComparison(compare_to, out, manifest=manifest) if compare_to else None
    loggers = build_loggers(config.trainer.loggers, out / "logs")
    datamodule = build_datamodule(config, manifest, progress)  # forms the folds or hold-out, or says why not
    check_disk_space(out, build_module_shape(config))  # before the cache fill, which can take long
    check_inputs(datamodule, config)  # every file decoded and usable before anything is written

    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    module = build_module(config)
    module.test_split_names = datamodule.test_split_names
    check_disk_space(out, module)  # again, now that the cache has taken its space
    best, *stopping = selection_callbacks(config, out / "checkpoints")
    callbacks = [best, *stopping, EpochHistory(out / "epochs.csv"), EpochSeed(config.trainer.seed),
                 ProvenanceRecord(out / "provenance.json", config.trainer.seed, manifest.sha256),
                 BootstrapAUC(n_boot=500), *(extra_callbacks or []), *([comparison] if comparison else [])]
    if config.trainer.val_every > 1:
        callbacks.append(ValidationSchedule(config.trainer.val_every))
    if config.trainer.progress:
        callbacks.append(L.pytorch.callbacks.RichProgressBar(leave=True))
    trainer = build_trainer(config, callbacks, loggers)
    if is_global_zero():
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.yaml")
    with warnings.catch_warnings(), interrupts_raised(trainer):
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume and last.exists() else None)
        best_path = Path(best.best_model_path or last)
        best_module = ALNClassifier.load_from_checkpoint(best_path, map_location="cpu", weights=None)
        predictions = predict_splits(trainer, best_module, datamodule, out)
    if config.explain.export and is_global_zero():
        export_test_cases(best_module, datamodule, config, out / "gradcam")

    best_epoch = int(torch.load(best_path, map_location="cpu", weights_only=False)["epoch"])
    if is_global_zero():
        plot_training_curves(pd.read_csv(out / "epochs.csv"), out / "curves.png", title=config.model.name)
    result = FitResult(
        out=out,
        best_checkpoint=best_path,
        best_epoch=best_epoch,
        val_auc=prediction_auc(read_predictions(predictions["val"])),  # per patient, like the test AUCs
        predictions=predictions,
        test_auc={split: prediction_auc(read_predictions(path)) for split, path in predictions.items() if split != "val"},
        comparisons=comparison.results if comparison else {},
        runtime=runtime,
    )
    summary = {"model": config.model.name, "selection": config.trainer.selection, "best_epoch": result.best_epoch,
               "val_auc": result.val_auc, "val_auc_optimistic": config.trainer.selection == "best",
               "test_auc": result.test_auc, "best_checkpoint": str(best_path.relative_to(out)), "runtime": runtime,
               "predictions": {k: str(v.relative_to(out)) for k, v in predictions.items()}}
    if is_global_zero():
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return result


def is_global_zero() -> bool:
    """Whether this is the process that writes files: the only one, or rank 0 of a distributed run.

    Lightning reads the rank from the environment its DDP launcher gives each process, so this holds before
    the Trainer starts as well.
    """
    return rank_zero_only.rank == 0


LOGGER_PACKAGES = {"csv": None, "tensorboard": "tensorboard", "mlflow": "mlflow"}


def build_loggers(names: list[str], folder: Path) -> list:
    """Lightning's loggers named in `trainer.loggers`, each writing under `folder` (<run>/logs/<name>/)."""
    from lightning.pytorch import loggers

    for name in names:
        package = LOGGER_PACKAGES[name]
        if package and importlib.util.find_spec(package) is None and not (
                name == "tensorboard" and importlib.util.find_spec("tensorboardX")):
            raise AlnvidError(f"--logger {name} needs the {package} package, which is not installed",
                              fix=f"pip install {package} (into this environment), or leave {name} out of --logger.")
    built = []
    for name in dict.fromkeys(names):
        if name == "csv":
            built.append(loggers.CSVLogger(folder, name="csv"))
        elif name == "tensorboard":
            built.append(loggers.TensorBoardLogger(folder, name="tensorboard", default_hp_metric=False))
        else:
            built.append(loggers.MLFlowLogger(experiment_name="alnvid", run_name=folder.parent.name,
                                              tracking_uri=(folder / "mlflow").as_uri()))
    return built


def build_trainer(config: RunConfig, callbacks: list[L.Callback], loggers: list) -> L.Trainer:
    """The run's Trainer; settings Lightning rejects, and distributed set-ups whose results could not be
    gathered, are refused with the option to change."""
    settings = config.trainer
    try:
        trainer = L.Trainer(
            max_epochs=settings.epochs,
            accelerator=settings.accelerator,
            devices=settings.devices,
            strategy=settings.strategy,
            precision=settings.precision,
            callbacks=callbacks,
            logger=loggers or False,
            default_root_dir=Path(config.out).absolute(),
            enable_progress_bar=settings.progress,
            enable_model_summary=False,
            limit_train_batches=settings.limit_train_batches if settings.limit_train_batches < 1 else None,
            log_every_n_steps=1,
            num_sanity_val_steps=0,
            check_val_every_n_epoch=settings.val_every,
        )
    except (MisconfigurationException, ValueError) as error:
        raise AlnvidError(f"the trainer settings are not usable here: {error}",
                          fix="check --accelerator, --devices, --strategy and --precision.") from None
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = trainer.strategy.launcher
    if trainer.num_devices * trainer.num_nodes > 1 and launcher is not None \
            and not isinstance(launcher, _SubprocessScriptLauncher):
        raise AlnvidError(f"--strategy {settings.strategy} runs the devices in spawned processes whose predictions "
                          "cannot be gathered back into this run's results",
                          fix="use --strategy ddp (the default for several devices), or --devices 1.")
    return trainer


CHECKPOINT_COPIES = 7
"""A training run's checkpoints at their largest, in copies of the weights: best.ckpt (1), last.ckpt (the weights
and Adam's two moments: 3) and the next last.ckpt, written beside it before it is replaced (3)."""


def check_disk_space(out: Path, module: torch.nn.Module, runs: Sequence[Path] | None = None, later: int = 0) -> None:
    """Refuse to start a run whose checkpoints would not fit on the disk of `out`, rather than fail during training.
    `runs` are the run folders that train `module` at once (cv's parallel folds, under `out`; default: `out`
    alone), and `later` the runs that train after them, once the earlier ones have left only their best.ckpt (one
    copy of the weights each). The checkpoints already in `runs` (resumed runs') count as room, as they are
    replaced. Only the process that writes files checks: under DDP its Trainer starts the others later, once it
    has passed here."""
    if not is_global_zero():
        return
    runs = list(runs or [out])
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    folder = next(path for path in (out, *out.parents) if path.exists())
    existing = sum(path.stat().st_size for run in runs for path in (run / "checkpoints").glob("*.ckpt"))
    free, needed = shutil.disk_usage(folder).free + existing, (len(runs) * CHECKPOINT_COPIES + later) * weights
    if free < needed:
        at_once = f" ({len(runs)} folds training at once)" if len(runs) > 1 else ""
        raise AlnvidError(f"{free / 1e9:.2f} GB are free on the disk of the run folder, and the run's checkpoints "
                          f"need about {needed / 1e9:.2f} GB while it trains{at_once}", path=folder,
                          fix="free space on that disk, or give --out a folder on another one"
                          f"{', or train fewer folds at a time (--parallel-folds)' if len(runs) > 1 else ''}.")


def check_inputs(datamodule: CohortDataModule, config: RunConfig) -> None:
    """Decode every file of the cohort into the cache (a bad file fails here, naming it) and refuse the files the
    model cannot use, e.g. a single frame for a video model."""
    datamodule.prepare_data()
    spec = get_model_spec(config.model.name)
    table = datamodule.manifest.table
    boxes = table["crop_box"] if "crop_box" in table.columns else [""] * len(table)
    for path, box in zip(table["path"], boxes):
        require_motion(spec, datamodule.cache.load(path, box=Box.optional(box)), path, config.data.frames)


@contextmanager
def interrupts_raised(trainer: L.Trainer) -> Iterator[None]:
    """Let Ctrl-C reach the caller as KeyboardInterrupt.

    Lightning catches it, shuts down gracefully, ignores SIGINT from then on and calls `sys.exit(1)`; the command
    line could then neither tell an interruption from a failure nor say how to resume.
    """
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    except SystemExit:
        if not trainer.interrupted:
            raise
        raise KeyboardInterrupt from None
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)


MONITOR = "val_auc"
"""What checkpoint selection and early stopping monitor: the per-patient validation AUROC (ALNClassifier)."""


def selection_callbacks(config: RunConfig, folder: Path) -> list[L.Callback]:
    """The checkpoint that keeps the selected model as best.ckpt, the one that keeps last.ckpt, then early stopping
    if asked.

    'best': the epoch of highest per-patient validation AUC. 'last': the final epoch, chosen before training, so
    the validation patients play no part in choosing the model. best.ckpt holds the weights and the run's settings
    only (portable, a third of the size); last.ckpt adds the optimizer state, for resume, every
    `trainer.checkpoint_every_s` seconds and at the end.
    """
    if config.trainer.selection == "best":
        best = L.pytorch.callbacks.ModelCheckpoint(dirpath=folder, filename="best", monitor=MONITOR, mode="max",
                                                   save_weights_only=True, enable_version_counter=False)
    else:  # written once, after the final epoch, rather than overwritten after every one
        best = PeriodicCheckpoint(dirpath=folder, filename="best", save_weights_only=True,
                                  enable_version_counter=False, every_s=math.inf)
    callbacks: list[L.Callback] = [
        best,
        # A save_top_k=0 checkpoint would write last.ckpt only at the end: this one keeps a recent epoch.
        PeriodicCheckpoint(dirpath=folder, filename="last", enable_version_counter=False,
                           every_s=config.trainer.checkpoint_every_s),
    ]
    if config.trainer.patience:
        callbacks.append(L.pytorch.callbacks.EarlyStopping(MONITOR, mode="max", patience=config.trainer.patience))
    return callbacks


def predict_splits(trainer: L.Trainer, module: ALNClassifier, datamodule: CohortDataModule, out: Path) -> dict[str, Path]:
    """Write predictions_<split>.csv (one row per patient: mean probability of its videos) for val and tests, and
    predictions_<split>_videos.csv (one row per video, by manifest line) beside each.

    Under DDP every process predicts a shard: the rows are gathered, the first process writes them, and the
    others wait until the files are there.
    """
    written = {}
    for split in ["val", *datamodule.test_split_names]:
        batches = trainer.predict(module, dataloaders=datamodule.split_dataloader(split))
        rows = gather_rows([row for batch in batches for row in batch], key=lambda row: row["line"])
        path = out / f"predictions_{split}.csv"
        if is_global_zero():
            videos = pd.DataFrame(rows, columns=list(VIDEO_COLUMNS[:-1])).assign(split=split)
            atomic_write_csv(videos, video_predictions_path(path))
            atomic_write_csv(patient_level(videos).assign(split=split), path)
        written[split] = path
    trainer.strategy.barrier("predictions written")
    return written


VIDEO_COLUMNS = ("patient_id", "line", "label", "prob", "split")
"""A per-video predictions file's columns; `line` is the video's line in the manifest."""


def video_predictions_path(patient_predictions: Path) -> Path:
    """The per-video file beside a per-patient predictions_<split>.csv: predictions_<split>_videos.csv."""
    return patient_predictions.with_name(f"{patient_predictions.stem}_videos.csv")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A predictions CSV written by a run; patient ids stay text (an id like 007 keeps its zeros)."""
    return pd.read_csv(path, dtype={"patient_id": str, "split": str})


def export_test_cases(module: ALNClassifier, datamodule: CohortDataModule, config: RunConfig, out: Path) -> None:
    """Grad-CAM artefacts of each test split's most confident cases and errors (see alnvid.explain.export)."""
    from alnvid.explain.export import GradCAMExport

    exporter = GradCAMExport(out, config, top_n=config.explain.top_n, gif=config.explain.gif)
    for split, rows in datamodule.test_rows.items():
        exporter.export(module, rows, split)


def prediction_auc(predictions: pd.DataFrame) -> float:
    """AUC of a predictions table (label, prob); NaN where it holds one class only."""
    if predictions["label"].nunique() < 2:
        return float("nan")
    return auc(predictions["label"].to_numpy(), predictions["prob"].to_numpy())
