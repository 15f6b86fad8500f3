"""One dataclass tree holds every setting of a run; it is saved as YAML in each run folder.

Defaults are the study's protocol (clip length 16, batch 4, 300 epochs, Adam lr 1e-4, 256 px resize and
224 px crop); `fast()` gives tiny settings for smoke runs on a laptop CPU. Speed settings that depend on the
machine (precision, memory format, loader workers, where clips are augmented) default to 'auto' and are fixed
when a run starts (`alnvid.train.resolve_auto`), so each run's saved config.yaml holds the values it used.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alnvid.errors import AlnvidError


@dataclass
class DataConfig:
    """Where the cohort is and how videos become tensors."""

    manifest: str = ""
    cache_dir: str = ".alnvid-cache"
    frames: int = 16
    """Clip length T: frames sampled TSN-style over the whole loop."""
    resize: int = 256
    """Side of the square the cropped imaging region is resized to (and cached at)."""
    crop_size: int = 224
    """Side of the (random in training, centre at evaluation) crop fed to the network."""
    input_size: int | None = None
    """Network input side; None = the model's default (299 for InceptionV3), else the crop is rescaled."""
    augment: bool = True
    elastic: bool = True
    intensity: float = 0.0
    """Training only: each clip's brightness shifted by up to ± this fraction of white and its contrast scaled by
    1 ± this, alike on every frame, as scanners set to another gain or dynamic range show the same tissue.
    0 = off (the study)."""
    zoom: float = 0.0
    """Training: a random zoom per clip, the crop's side scaled by 1 ± this before it is resized to the crop size
    (as another depth setting shows the same anatomy at another scale). 0: off (the study)."""
    augment_device: str = "auto"
    """Where training clips are augmented: 'cpu' (albumentations, in the loader workers), 'gpu' (alnvid.data.
    gpu_augment, on the training device after each batch's transfer; it runs on a CPU too) or 'auto' (gpu when the
    run trains on a GPU). The two draw different random augmentations, so it changes results."""
    mask_overlays: bool = True
    """Blank burned-in annotations (text, calipers) inside the imaging region."""
    allow_modalities: list[str] = field(default_factory=list)
    """DICOM modalities read besides ultrasound (US), e.g. ["CT"]; anything else is refused as not an ultrasound."""
    still_frames: str = "middle"
    """Static models without a still image: 'middle' frame of the loop, or 'all' (T frames, averaged per video at evaluation)."""
    eval_clips: int = 1
    """Video models at evaluation (validation, test, predict, explain): a video's probability is the mean over this
    many TSN clips, each taking the same relative offset in every segment of the loop (1 = segment centres)."""
    eval_flip: bool = False
    """Evaluation (validation, test, predict, explain): each clip or image is also scored mirrored left-right, as
    training's random flip shows it, and the probabilities of both are averaged (test-time augmentation; off in the
    study). Twice the evaluation cost."""
    fold: int | None = None
    num_folds: int = 5
    val_fraction: float = 0.2
    """Share of training patients held out for validation when there is neither a fold nor a 'val' split."""
    num_workers: int | None = None
    """DataLoader worker processes; None = auto: min(8, cores) with a GPU, min(2, cores) on the CPU alone."""
    pin_memory: bool = True
    seed: int = 0


    def __post_init__(self) -> None:
        _choice("data.still_frames", self.still_frames, ("middle", "all"))
        _choice("data.augment_device", self.augment_device, ("auto", "cpu", "gpu"))
        if not 0 <= self.zoom < 1:
            raise AlnvidError(f"data.zoom is {self.zoom!r}", fix="use a fraction from 0 (off) to below 1, e.g. 0.1.")
        if not isinstance(self.eval_clips, int) or self.eval_clips < 1:
            raise AlnvidError(f"data.eval_clips is {self.eval_clips!r}", fix="use a whole number of clips, 1 or more.")


INPUT_NORMS = ("none", "clip")
CONSENSUS = ("mean", "max")
"""How a clip's per-frame logits become its logits (`ModelConfig.consensus`)."""


@dataclass
class ModelConfig:
    """Which backbone, and optional local weights (nothing is downloaded)."""

    name: str = "tin"
    num_classes: int = 2
    weights: str | None = None
    channels_last: bool | None = None
    """channels_last (channels_last_3d for 3D CNNs) memory format; None = auto: on with a GPU, off on the CPU."""
    input_norm: str = "none"
    """'none': the network sees pixels scaled to 0-1 (the study). 'clip': each clip (or image) is first standardised
    to zero mean and unit variance over its own pixels, so that a scanner's gain and dynamic range, which differ
    between hospitals, do not shift the prediction. Part of the network: predict, explain and export apply it."""
    consensus: str = "mean"
    """How TIN and TSM pool their per-frame logits into a clip's: 'mean' (TSN, the study) or 'max' (the clip takes
    the logits of its most positive frame: multiple-instance learning, for evidence seen in part of the sweep)."""

    def __post_init__(self) -> None:
        _choice("model.input_norm", self.input_norm, INPUT_NORMS)
        _choice("model.consensus", self.consensus, CONSENSUS)


@dataclass
class OptimConfig:
    """Adam, as in the study, with optional weight decay and cosine schedule."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "none"
    """'none' (the study) or 'cosine' (annealed to 0 over the epochs)."""

    def __post_init__(self) -> None:
        _choice("optim.schedule", self.schedule, ("none", "cosine"))


LOGGERS = ("csv", "tensorboard", "mlflow")
TEST_MODELS = ("best_fold", "ensemble")


@dataclass
class TrainerConfig:
    """Lightning Trainer settings."""

    epochs: int = 300
    batch_size: int = 4
    precision: str = "auto"
    """'auto' (bf16-mixed on a GPU that has bf16, else 16-mixed; 32-true on the CPU), or any Lightning precision."""
    accelerator: str = "auto"
    devices: str = "1"
    """Devices per run: 1 (default), a count ("2") or a list ("0,1"). Several run Lightning's DDP, whose
    predictions are gathered from every device; batch_size is per device. Folds can also run as separate
    jobs (`alnvid cv --fold K`)."""
    strategy: str = "auto"
    """Lightning strategy for several devices: auto (= ddp) or ddp variants launched as processes of this
    command; spawn-based ones (ddp_spawn, ddp_fork, ddp_notebook) are refused."""
    seed: int = 0
    patience: int | None = None
    """Stop early after this many validations without a better per-patient validation AUC (epochs, or
    patience x val_every epochs with `val_every`; None = train all epochs)."""
    selection: str = "best"
    """Which epoch's model is kept (checkpoints/best.ckpt) and predicts: 'best' per-patient validation AUC (the
    study; validation and out-of-fold AUCs are then optimistic), or 'last' (a fixed epoch count chosen beforehand;
    validation and out-of-fold AUCs are unbiased)."""
    test_model: str = "best_fold"
    """`alnvid cv`: whose test predictions are the run's (listed in cv_summary.json; comparisons and the report
    use them): 'best_fold', the fold of best validation AUC (the study), or 'ensemble', the mean
    probability of every fold's model, which does not stake the result on a choice made on a few validation
    patients. Both are always written and printed. The Grad-CAM cases `cv` exports, and `predict`, `explain` and
    `export` given the cv folder, use the one chosen here."""
    limit_train_batches: float = 1.0
    val_every: int = 1
    """Validate every this many epochs, and always after the final one (1: every epoch, the study). epochs.csv
    leaves the other epochs' validation columns empty. With selection 'best' or patience only validated epochs
    can be chosen or counted; with 'last' the kept model is the same, and validating less often saves its cost
    (about an eighth of TIN's time on the CPU demo, where each epoch validated 28 patients after training 56)."""
    checkpoint_every_s: float = 60.0
    """last.ckpt (weights and optimizer state, for resuming) is written after an epoch once this many seconds have
    passed since the previous one, and after the final epoch; 0 writes it every epoch. Saving a 280 MB checkpoint
    after every few-second epoch costs more than the little training a resume would repeat."""
    progress: bool = True
    loggers: list[str] = field(default_factory=list)
    """Experiment loggers writing under <run>/logs/: any of csv, tensorboard, mlflow (epochs.csv is always kept)."""

    def __post_init__(self) -> None:
        if isinstance(self.loggers, str):  # "csv,tensorboard" from a command line or YAML
            self.loggers = [name.strip() for name in self.loggers.split(",") if name.strip()]
        for name in self.loggers:
            _choice("trainer.loggers", name, LOGGERS)
        _choice("trainer.selection", self.selection, ("best", "last"))
        _choice("trainer.test_model", self.test_model, TEST_MODELS)
        if isinstance(self.val_every, bool) or not isinstance(self.val_every, int) or self.val_every < 1:
            raise AlnvidError(f"trainer.val_every is {self.val_every!r}",
                              fix="use a whole number of epochs, 1 (every epoch) or more.")
        if self.selection == "last" and self.patience:
            raise AlnvidError("trainer.patience (early stopping) selects on the validation set, trainer.selection "
                              "'last' must not", fix="drop --patience, or use --selection best.")


@dataclass
class ExplainConfig:
    """Grad-CAM export of the test sets' telling cases at the end of a run (into gradcam/<split>/)."""

    export: bool = True
    top_n: int = 3
    """Most confident true positives and true negatives per split; every error is exported as well."""
    gif: bool = True


@dataclass
class RunConfig:
    """The whole configuration of one training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    out: str = "runs/run"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        from alnvid.utils import atomic_write_text

        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "configuration") -> RunConfig:
        """Build from nested dicts; unknown keys are an error (a typo must not be silently ignored)."""
        return _from_dict(cls, values, source, prefix="")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise AlnvidError("configuration file not found", path=path, fix="check the path given to --config.")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise AlnvidError(f"not valid YAML ({exc})", path=path, fix="fix the YAML syntax.") from None
        if not isinstance(values, dict):
            raise AlnvidError("expected a mapping of sections (data, model, optim, trainer)", path=path)
        return cls.from_dict(values, source=str(path))


NEUTRAL_SETTINGS = {"data.cache_dir", "data.num_workers", "data.pin_memory", "model.channels_last",
                    "trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.progress",
                    "trainer.checkpoint_every_s", "trainer.test_model",
                    "trainer.loggers", "explain.export", "explain.top_n",
                    "explain.gif", "out"}
"""Settings that leave a run's predictions as they are (where files go, speed, hardware; `test_model` only picks
which of a cross-validation's finished predictions it reports); every other setting changes results."""


def changed_result_settings(saved: RunConfig, wanted: RunConfig) -> list[str]:
    """The settings (dotted names) that differ between two runs and change results (all but NEUTRAL_SETTINGS)."""
    def flat(values: dict, prefix: str = "") -> dict[str, Any]:
        out = {}
        for key, value in values.items():
            out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
        return out

    a, b = flat(saved.to_dict()), flat(wanted.to_dict())
    for values in (a, b):  # a run saved before augment_device existed (never resolved) augmented on the CPU
        if values.get("data.augment_device") == "auto":
            values["data.augment_device"] = "cpu"
    differ = sorted(k for k in a.keys() | b.keys() if k not in NEUTRAL_SETTINGS and a.get(k) != b.get(k))
    if all(c.trainer.selection == "last" and not c.trainer.patience for c in (saved, wanted)):
        differ = [k for k in differ if k != "trainer.val_every"]  # the kept model does not depend on it
    return differ


def fast(config: RunConfig) -> RunConfig:
    """Tiny settings for smoke runs: a few epochs of short, small clips on the CPU, no Grad-CAM GIFs."""
    config.data.frames = 8
    config.data.resize = 80
    config.data.crop_size = 64
    config.data.input_size = 64
    config.data.elastic = False
    config.data.num_workers = 0
    config.trainer.epochs = 3
    config.trainer.batch_size = 4
    config.explain.gif = False
    return config


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AlnvidError(f"{name} is {value!r}", fix=f"use one of: {', '.join(choices)}.")


def _from_dict(cls: type, values: dict[str, Any], source: str, prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise AlnvidError(
            f"unknown setting(s) {', '.join(prefix + k for k in unknown)}",
            path=source,
            fix=f"valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(fields)}.",
        )
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise AlnvidError(f"'{prefix}{name}' must be a mapping", path=source)
            kwargs[name] = _from_dict(type(default), value, source, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def resolve_config(config_file: str | Path | None, *, fast_settings: bool, overrides: dict[str, Any]) -> RunConfig:
    """Defaults, then the YAML file, then `--fast`, then each option given on the command line ('data.frames': 8).

    Options left as None were not given and keep the value from the earlier layers.
    """
    config = RunConfig.load(config_file) if config_file else RunConfig()
    if fast_settings:
        fast(config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        *sections, name = dotted.split(".")
        target: Any = config
        for section in sections:
            target = getattr(target, section)
        if not hasattr(target, name):
            raise AlnvidError(f"unknown setting {dotted}")
        setattr(target, name, value)
        if hasattr(target, "__post_init__"):
            target.__post_init__()  # the same checks as a value read from a file
    return config
