"""`alnvid fit` and `alnvid predict`."""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Optional

import typer
from typer.models import OptionInfo

from alnvid.cli._common import CHECKPOINT_HELP, console, load_checkpoints, print_json, progress_bar, user_errors
from alnvid.errors import AlnvidError


class SharedOption(NamedTuple):
    """One option of `TRAINING_OPTIONS`: its type, its Typer option, and the configuration key it sets (None where
    `training_overrides` maps it itself: --logger, --seed, --allow-modality; or where it is not a setting)."""

    kind: Any
    option: OptionInfo
    key: str | None


def _option(kind: Any, *declarations: str, help: str, key: str | None = None, default: Any = None) -> SharedOption:
    return SharedOption(kind, typer.Option(default, *declarations, help=help), key)


TRAINING_OPTIONS: dict[str, SharedOption] = {
    "data": _option(Optional[Path], "--data", key="data.manifest",
                    help="Cohort manifest CSV (patient_id, path, label[, split, site, ...])."),
    "model": _option(Optional[str], "--model", key="model.name",
                     help="Backbone: tin, r2plus1d, resnet3d, r2plus1d_18, r3d_18, tsm, resnet50, inception_v3, "
                          "vgg19, vgg19_bn (see `alnvid models`). Default tin."),
    "frames": _option(Optional[int], "--frames", key="data.frames",
                      help="Clip length T, frames sampled over the whole loop. Default 16."),
    "batch_size": _option(Optional[int], "--batch-size", key="trainer.batch_size",
                          help="Clips (or images) per batch. Default 4."),
    "epochs": _option(Optional[int], "--epochs", key="trainer.epochs",
                      help="Training epochs. Default 300 (the study)."),
    "lr": _option(Optional[float], "--lr", key="optim.lr",
                  help="Adam learning rate. Default 1e-4 (the study)."),
    "weight_decay": _option(Optional[float], "--weight-decay", key="optim.weight_decay",
                            help="Adam weight decay. Default 0."),
    "schedule": _option(Optional[str], "--schedule", key="optim.schedule",
                        help="Learning-rate schedule: none (the study) or cosine."),
    "precision": _option(Optional[str], "--precision", key="trainer.precision",
                         help="auto (default: bf16-mixed on a GPU, 32-true on the CPU), 32-true, bf16-mixed or "
                              "16-mixed."),
    "accelerator": _option(Optional[str], "--accelerator", key="trainer.accelerator",
                           help="auto (GPU when present, default), gpu or cpu."),
    "devices": _option(Optional[str], "--devices", key="trainer.devices",
                       help="Devices per run: 1 (default), a count (2) or a list (0,1). Several train with DDP (batch"
                            " size per device); results equal one device's. Folds can also run as separate jobs with "
                            "`alnvid cv --fold K`."),
    "strategy": _option(Optional[str], "--strategy", key="trainer.strategy",
                        help="Lightning strategy for several devices: auto (default, = ddp) or a ddp variant such as "
                             "ddp_find_unused_parameters_true; spawn-based ones are refused."),
    "logger": _option(Optional[list[str]], "--logger",
                      help="Experiment logger under <out>/logs/: csv, tensorboard or mlflow (mlflow needs `pip "
                           "install mlflow`); repeat the option or give a comma list. Default none (epochs.csv is "
                           "always written)."),
    "workers": _option(Optional[int], "--workers", key="data.num_workers",
                       help="DataLoader worker processes. Default: min(8, cores) with a GPU, min(2, cores) on the "
                            "CPU."),
    "augment_on": _option(Optional[str], "--augment-on", key="data.augment_device",
                          help="Where training clips are augmented (flip, elastic, crop): auto (default: gpu when "
                               "training on a GPU, else cpu), cpu (albumentations in the loader workers) or gpu "
                               "(torch, on the training device after each batch's transfer; runs on a CPU too). The "
                               "two draw different augmentations."),
    "cache_dir": _option(Optional[str], "--cache-dir", key="data.cache_dir",
                         help="Where decoded, cropped frames are cached. Default .alnvid-cache."),
    "seed": _option(Optional[int], "--seed",
                    help="Seed for splits, sampling, augmentation and initialisation. Default 0."),
    "weights": _option(Optional[str], "--weights", key="model.weights",
                       help="Local weights file to start from (no downloads). Default: random initialisation, as in "
                            "the study."),
    "channels_last": _option(Optional[bool], "--channels-last/--no-channels-last", key="model.channels_last",
                             help="channels_last memory format (channels_last_3d for 3D CNNs). Default: on with a "
                                  "GPU, off on the CPU."),
    "intensity": _option(Optional[float], "--intensity", key="data.intensity",
                         help="Training: random brightness (± this fraction of white) and contrast (x 1 ± this) per "
                              "clip, as another scanner gain shows the same tissue. Default 0 (off, the study); the "
                              "CPU demo uses 0.2."),
    "zoom": _option(Optional[float], "--zoom", key="data.zoom",
                    help="Training: a random zoom per clip, the crop's side x (1 ± this) resized to the crop, as "
                         "another depth setting shows the same anatomy larger or smaller. Default 0 (off, the study)."),
    "input_norm": _option(Optional[str], "--input-norm", key="model.input_norm",
                          help="none (default: pixels 0-1, the study) or clip (each clip or image standardised over "
                               "its own pixels first, so another scanner's gain and dynamic range do not shift "
                               "predictions)."),
    "consensus": _option(Optional[str], "--consensus", key="model.consensus",
                         help="TIN and TSM: how per-frame logits become the clip's: mean (default: TSN's average, the"
                              " study) or max (the clip takes its most positive frame's logits: multiple-instance "
                              "learning, for evidence seen in part of the sweep)."),
    "patience": _option(Optional[int], "--patience", key="trainer.patience",
                        help="Stop after this many validations (epochs, unless --val-every) without a better "
                             "per-patient validation AUC."),
    "checkpoint_every": _option(Optional[float], "--checkpoint-every", key="trainer.checkpoint_every_s",
                                help="Seconds between saves of last.ckpt (weights and optimizer, for --resume); it is"
                                     " always saved after the final epoch. 0 saves every epoch. Default 60."),
    "selection": _option(Optional[str], "--selection", key="trainer.selection",
                         help="Model kept as best.ckpt: best (epoch of best per-patient validation AUC, the study; "
                              "validation/out-of-fold AUC then optimistic) or last (the final epoch of a count fixed "
                              "beforehand; unbiased). Default best."),
    "val_every": _option(Optional[int], "--val-every", key="trainer.val_every",
                         help="Validate every N epochs and after the last one (with --selection last the kept model "
                              "is the same, and validation's cost is saved). Default 1."),
    "eval_clips": _option(Optional[int], "--eval-clips", key="data.eval_clips",
                          help="Video models: score each video as the mean over K TSN clips spread over the loop "
                               "(validation, test, predict, explain). Default 1."),
    "eval_flip": _option(Optional[bool], "--eval-flip/--no-eval-flip", key="data.eval_flip",
                         help="Evaluation: also score each clip or image mirrored left-right and average the two "
                              "(test-time augmentation, twice the evaluation cost). Default off."),
    "still_frames": _option(Optional[str], "--still-frames", key="data.still_frames",
                            help="Static models without still images: middle frame, or all (T frames, averaged per "
                                 "video at evaluation)."),
    "allow_modality": _option(Optional[list[str]], "--allow-modality",
                              help="Also read DICOMs of this modality (e.g. CT); repeat for several. Default: "
                                   "ultrasound (US) only, anything else is refused."),
    "config": _option(Optional[Path], "--config",
                      help="YAML file with any of these settings (sections data, model, optim, trainer); command-line"
                           " options win."),
    "fast": _option(bool, "--fast", default=False,
                    help="Tiny settings for a smoke run on a CPU: T 8, 64 px, 3 epochs."),
    "compare_to": _option(Optional[str], "--compare-to",
                          help="Compare the (best) model's test predictions with this reference by DeLong's paired "
                               "test, into comparison_<split>.json: a run folder, a predictions CSV, or 'readers' "
                               "(the manifest's reader_<name> columns)."),
}

"""The options `fit` and `cv` share, by name. `with_training_options` adds them to a command, and
`training_overrides` maps their values onto the configuration."""


def with_training_options(command: Callable) -> Callable:
    """Give a Typer command every `TRAINING_OPTIONS` option (--data and --model before its own options, the others
    after them), and pass their values to it as one dict, `training` (name -> value, None where not given), so that
    fit and cv declare the shared options once."""
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
           for name, p in inspect.signature(command, eval_str=True).parameters.items() if name != "training"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, (kind, option, _) in TRAINING_OPTIONS.items()]

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        training = {name: values.pop(name) for name in TRAINING_OPTIONS}
        return command(training=training, **values)

    wrapper.__signature__ = inspect.Signature(shared[:2] + own + shared[2:])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


def describe_runtime(runtime: dict) -> str:
    """One line for the settings a run chose for its machine, e.g. 'NVIDIA H100: bf16-mixed, channels_last, 8 workers'."""
    if not runtime:
        return "settings not recorded"
    layout = "channels_last" if runtime["channels_last"] else "default memory layout"
    workers = "in the loader workers" if runtime["workers"] else "in the training process"
    where = {"cpu": workers, "gpu": "on the GPU" if runtime["device"] != "CPU" else "after collation"}
    augment = f", augmentation {where[runtime['augment']]}" if "augment" in runtime else ""
    return f"{runtime['device']}: {runtime['precision']}, {layout}, {runtime['workers']} loader workers{augment}"


COMMAND_KEYS = {"out": "out", "test_model": "trainer.test_model"}
"""Configuration keys of options that fit or cv declare themselves, beside `TRAINING_OPTIONS`."""


def training_overrides(**options) -> dict:
    """Map command-line options onto the configuration tree (paths as text, as the configuration keeps them)."""
    names = {name: shared.key for name, shared in TRAINING_OPTIONS.items() if shared.key} | COMMAND_KEYS
    overrides = {names[k]: str(v) if isinstance(v, Path) else v for k, v in options.items() if k in names}
    if options.get("logger"):
        overrides["trainer.loggers"] = ",".join(options["logger"])
    overrides["data.allow_modalities"] = list(options.get("allow_modality") or []) or None  # none given: keep
    if options.get("seed") is not None:
        overrides.update({"data.seed": options["seed"], "trainer.seed": options["seed"]})
    return overrides


@user_errors
@with_training_options
def fit(
    training: dict[str, Any],
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder for checkpoints, metrics, predictions, plots. "
                                       "Default runs/<model>."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    json_output: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Train one model: best and last checkpoints, per-epoch metrics, predictions and curves in --out.

    On a GPU the defaults are fast: bf16-mixed precision, channels_last memory format, min(8, cores) loader workers
    with pinned memory and prefetching, and augmentation on the GPU (opt out with --precision 32-true,
    --no-channels-last, --workers N, --augment-on cpu)."""
    from alnvid.config import resolve_config
    from alnvid.train import fit as run_fit
    from alnvid.train import is_global_zero

    settings = resolve_config(training["config"], fast_settings=training["fast"],
                              overrides=training_overrides(**training, out=out))
    if not settings.data.manifest:
        raise AlnvidError("no cohort given", fix="pass --data manifest.csv (or `alnvid demo-data` to make one).")
    if out is None:
        settings.out = f"runs/{settings.model.name}"
    settings.trainer.progress = not json_output
    with progress_bar("Caching videos", enabled=not json_output and is_global_zero()) as update:
        result = run_fit(settings, resume=resume, progress=update, compare_to=training["compare_to"])
    if not is_global_zero():
        return  # the other processes of a multi-device run: the first one reports
    summary = {"out": str(result.out), "best_checkpoint": str(result.best_checkpoint), "best_epoch": result.best_epoch,
               "val_auc": result.val_auc, "test_auc": result.test_auc,
               "predictions": {k: str(v) for k, v in result.predictions.items()}, "comparisons": result.comparisons,
               "runtime": result.runtime}
    if json_output:
        print_json(summary)
        return
    console.print(f"[bold green]Done.[/] Run folder: {result.out}")
    console.print(f"  ran on {describe_runtime(result.runtime)}")
    chosen = ("[yellow]optimistic[/]: the epoch was chosen on these patients" if settings.trainer.selection == "best"
              else "the last epoch")
    console.print(f"  epoch {result.best_epoch + 1} kept, validation AUC {result.val_auc:.3f} (per patient; {chosen})")
    for split, auc in result.test_auc.items():
        console.print(f"  {split}: AUC {auc:.3f}  ({result.predictions[split]})")
    print_comparisons(result.comparisons)


def print_comparisons(comparisons: dict[str, dict]) -> None:
    """One line per DeLong comparison with the --compare-to reference."""
    for split, result in comparisons.items():
        for name, test in result["comparisons"].items():
            console.print(f"  {split} vs {name}: AUC {test['auc1']:.3f} vs {test['auc2']:.3f}, difference "
                          f"{test['difference']:+.3f} (95% CI {test['ci_low']:+.3f} to {test['ci_high']:+.3f}), "
                          f"DeLong z = {test['statistic']:.2f}, p = {test['p_value']:.3g}  "
                          f"(comparison_{split}.json)")


@user_errors
def predict(
    inputs: list[Path] = typer.Argument(..., help="DICOM/video files, or one CSV with patient_id and path "
                                        "(label optional: new cases need none)."),
    checkpoint: Optional[list[Path]] = typer.Option(None, "--checkpoint", "-c", help=CHECKPOINT_HELP),
    model_file: Optional[Path] = typer.Option(None, "--model-file", help="Instead of --checkpoint: a model file "
                                              "written by `alnvid export` (ONNX or TorchScript, no Lightning)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write one row per video to this CSV, and one row per "
                                       "patient (mean over its videos, as fit does; the input of `alnvid stats`) "
                                       "beside it as <name>_patients.csv."),
    eval_clips: Optional[int] = typer.Option(None, "--eval-clips", help="Video models: mean over K clips spread "
                                             "over the loop. Default: the run's setting (1 unless trained with "
                                             "--eval-clips)."),
    eval_flip: Optional[bool] = typer.Option(None, "--eval-flip/--no-eval-flip", help="Also score each clip or "
                                             "image mirrored and average the two. Default: the run's setting."),
    allow_modality: Optional[list[str]] = TRAINING_OPTIONS["allow_modality"].option,
    skip_errors: bool = typer.Option(False, "--skip-errors", help="Go on past unreadable or unsuitable files and "
                                     "list them (row, patient, reason) in <out>_errors.csv beside --out. Default: "
                                     "stop at the first, writing nothing."),
    json_output: bool = typer.Option(False, "--json", help="Print the predictions as JSON (with --skip-errors: "
                                     "{predictions, errors})."),
) -> None:
    """Probability of ALN metastasis for new files, preprocessed exactly as in evaluation. Rows are identified by
    the CSV's patient_id, or for bare files by file_<sha8> of the content: never by file names."""
    from rich.table import Table

    from alnvid.inference import BatchInputs, patient_predictions, predict_inputs
    from alnvid.models.exported import load_exported
    from alnvid.utils import atomic_write_csv

    if bool(checkpoint) == (model_file is not None):
        raise AlnvidError("give the model as either --checkpoint or --model-file (exactly one)",
                          fix="--checkpoint RUN/checkpoints/best.ckpt, or --model-file model.onnx from `alnvid export`.")
    if out and out.is_dir():
        raise AlnvidError("--out is a folder", path=out, fix="give a CSV file name, e.g. --out predictions.csv.")
    if model_file:
        model = load_exported(model_file, eval_clips=eval_clips, eval_flip=eval_flip)
    else:
        model = load_checkpoints(checkpoint, eval_clips=eval_clips, eval_flip=eval_flip)
    model.config.data.allow_modalities = list(allow_modality or [])
    if len(inputs) == 1 and inputs[0].suffix.lower() == ".csv":
        batch = BatchInputs.from_csv(inputs[0], check_files=not skip_errors)
    else:
        batch = BatchInputs.from_files(inputs)
    with progress_bar("Predicting", enabled=not json_output) as update:
        predictions, errors = predict_inputs(model, batch, skip_errors=skip_errors, progress=update)
    errors_file = out.with_name(f"{out.stem}_errors.csv") if out and skip_errors else None
    if out:
        patients_out = out.with_name(f"{out.stem}_patients.csv")
        atomic_write_csv(predictions, out)
        atomic_write_csv(patient_predictions(predictions), patients_out)
    if errors_file:
        atomic_write_csv(errors, errors_file)
    if json_output:
        records = predictions.to_dict(orient="records")
        print_json({"predictions": records, "errors": errors.to_dict(orient="records")} if skip_errors else records)
        return
    view = Table(batch.row_name, "patient_id", "P(metastasis)", "call (P >= 0.5)")
    for row in predictions.itertuples():
        view.add_row(str(row.row), str(row.patient_id), f"{row.prob:.3f}",
                     "[red]metastasis[/]" if row.prob >= 0.5 else "[green]no metastasis[/]")
    console.print(view)
    if len(errors):
        console.print(f"[yellow]{len(errors)} of {len(batch)} input(s) skipped:[/]")
        for row in errors.itertuples():
            console.print(f"  {batch.row_name} {row.row} {row.patient_id}: {row.reason}")
    if out:
        console.print(f"Written to {out} (per video) and {patients_out} (per patient: give this one to "
                      "`alnvid stats`)" + (f"; skipped inputs: {errors_file}" if errors_file else ""))
