"""The whole study protocol in one call, as `make demo` runs it on the built-in demo cohort:
demo cohort -> k-fold CV of a video and a static model -> video vs static comparison -> report -> Grad-CAM.

Three recipes (`DEMO_SETTINGS`): 'cpu' (the default without a GPU: a demo that learns in about 7 minutes on
2 cores with bf16, 11-14 in fp32), 'gpu' (the default with one: larger inputs, more epochs and patients, bf16) and
'study' (the study's protocol: T 16, 224 px, 300 epochs, 5 folds; hours on a GPU). A `--seed` drives the cohort, the
folds and the training, so another seed is an independent replication of the whole demo.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from alnvid.config import RunConfig
from alnvid.cv import CVResult, run_cv
from alnvid.data.datamodule import ProgressFn
from alnvid.data.demo import TEST_SHARE, make_demo_cohort, test_split_size
from alnvid.errors import AlnvidError
from alnvid.train import native_cpu_bf16
from alnvid.utils import atomic_write_text

COHORT_RECORD = "demo_cohort.json"
"""Written beside the cohort's manifest: the seed and size it was made with (a rerun must match them)."""


@dataclass(frozen=True)
class DemoSettings:
    """One demo recipe: the cohort's size, the folds, and the training settings it puts into each RunConfig."""

    name: str
    patients: int
    folds: int
    frames: int
    resize: int
    crop_size: int
    epochs: int
    lr: float
    schedule: str
    batch_size: int
    precision: str = "32-true"
    channels_last: bool = False
    elastic: bool = False
    workers: int = 0
    input_size: int | None = None
    """Side the crop is rescaled to for the network (None: the crop's own)."""
    intensity: float = 0.0
    test_model: str = "best_fold"
    """Whose test predictions are compared: 'best_fold' (the study) or 'ensemble' (`TrainerConfig.test_model`)."""
    selection: str = "best"
    """Each fold's kept epoch: 'best' validation AUC (the study) or 'last' (`TrainerConfig.selection`)."""
    val_every: int = 1
    """Validate every this many epochs and after the last (`TrainerConfig.val_every`); with 'last' selection the
    kept model does not depend on it."""
    parallel_folds: int | None = None
    """Folds trained at a time, each in its own process (None: `cv.auto_parallel_folds`)."""
    test_share: float = TEST_SHARE
    """Share of the cohort in each test split (`make_demo_cohort`): what the paired DeLong test's power rests on."""
    gradcam_export: bool = True
    """cv's Grad-CAM of the test splits' telling cases (`explain.export`). The demo recipes leave it out: it took
    about 80 s of a 15-minute CPU demo, whose own explanation and benchmarks/demo_validity.py cover Grad-CAM."""

    def test_patients(self) -> int:
        """Patients in the two test splits together."""
        return 2 * test_split_size(self.patients, self.test_share)

    @property
    def network_px(self) -> int:
        """The side of the network's input."""
        return self.input_size or self.crop_size

    def apply(self, config: RunConfig) -> RunConfig:
        data, trainer = config.data, config.trainer
        data.frames, data.resize, data.crop_size, data.elastic = self.frames, self.resize, self.crop_size, self.elastic
        data.input_size = self.network_px
        data.intensity = self.intensity
        data.num_workers = self.workers
        config.optim.lr, config.optim.schedule = self.lr, self.schedule
        trainer.epochs, trainer.batch_size, trainer.precision = self.epochs, self.batch_size, self.precision
        config.model.channels_last = self.channels_last
        config.trainer.test_model = self.test_model
        config.trainer.selection = self.selection
        config.trainer.val_every = self.val_every
        config.explain.gif = False
        config.explain.export = self.gradcam_export
        return config

    def describe(self) -> str:
        return (f"{self.name} settings ({self.patients} patients, {self.test_patients()} of them tested, "
                f"{self.folds} folds, T {self.frames}, "
                f"{self.network_px} px, {self.epochs} epochs, lr {self.lr:g} {self.schedule}, "
                f"batch {self.batch_size}, {self.precision}"
                f"{f', intensity ±{self.intensity:g}' if self.intensity else ''}, "
                f"{self.selection} epoch, "
                f"{f'validated every {self.val_every} epochs, ' if self.val_every > 1 else ''}"
                f"tested: {'fold ensemble' if self.test_model == 'ensemble' else 'best fold'})")

    def clips_per_s(self, device: str) -> float:
        """TIN's expected training throughput on 'cpu' (2 cores) or 'gpu', from `THROUGHPUT` scaled by frames x px²."""
        rate, frames, pixels, ceiling, _ = self._throughput(device)
        return min(ceiling, rate * frames * pixels ** 2 / (self.frames * self.network_px ** 2))

    def expected_minutes(self, device: str) -> float:
        """Rough training time of both models: TIN's training and validation clips (validation ~3 times cheaper),
        ResNet50 on stills (about T times cheaper than TIN), and each epoch's overhead."""
        development = self.patients - self.test_patients()
        trained = self.epochs * development * (self.folds - 1)
        validated = (self.epochs // self.val_every + (self.epochs % self.val_every > 0)) * development
        steps = (trained + validated / 3) * (1 + 1 / self.frames) / self.clips_per_s(device)
        return (steps + 2 * self.folds * self.epochs * self._throughput(device)[4]) / 60

    def _throughput(self, device: str) -> tuple[float, int, int, float, float]:
        """The `THROUGHPUT` row for this device and this recipe's precision (a CPU in bf16 has its own)."""
        return THROUGHPUT["cpu-bf16" if device == "cpu" and self.precision == "bf16-mixed" else device]


THROUGHPUT = {"cpu": (6.4, 8, 48, float("inf"), 0.0), "cpu-bf16": (10.4, 8, 48, float("inf"), 0.0),
              "gpu": (55.0, 16, 224, 100.0, 1.1)}
"""device -> (TIN training clips/s, at T, at px, ceiling, seconds per epoch outside training steps).
CPU: 6.4 clips/s in fp32, the whole CPU demo's effective rate on 2 idle cores (seeds 0-2: 9.9-10.3 minutes of TIN
and ResNet50 training, all overheads included, for 3,906 TIN-clip equivalents at T 8, 48 px, fused Adam, validated
every 5 epochs); 'cpu-bf16': the same in bf16-mixed, on a CPU that has bf16 in hardware (`native_cpu_bf16`;
seeds 0-2 on a Zen 4 EPYC: 5.9-6.2 minutes).
GPU: 55 clips/s and 1.1 s per epoch measured on an H200 (issue 10: batch 4, bf16, channels_last); the ceiling of
100 clips/s, where decoding and augmenting on the CPU would limit smaller clips, is assumed."""


DEMO_SETTINGS = {
    # lr, schedule and batch of the probe that learned on 2 cores (issue 9: fit --fast --epochs 12 --lr 5e-4).
    # Half the cohort is tested (42 + 42 patients): 84 develop the models, as 84 of 120 did before, and the paired
    # DeLong test gets the power that 36 test patients lacked (AUC standard error about 0.045 instead of 0.07).
    # bf16 where the CPU has it in hardware: TIN's folds 25 % faster, the AUCs within 0.01 (README, "The demo").
    # T 12: development seeds 7 and 8 gained +0.027 out of fold and +0.023 pooled for 9 % more time (README).
    "cpu": DemoSettings("demo CPU", patients=168, folds=3, frames=12, resize=72, crop_size=64, input_size=48,
                        epochs=20, lr=5e-4, schedule="cosine", batch_size=4,
                        precision="bf16-mixed" if native_cpu_bf16() else "32-true", intensity=0.2,
                        test_model="ensemble", selection="last", val_every=5, parallel_folds=3, test_share=0.25,
                        gradcam_export=False),
    # Measured once (seed 0, one H200, benchmarks/gpu_demo.sh): 5 min 49 s in all, TIN pooled test AUC 0.823 against
    # ResNet50's 0.570 (p < 0.0001); under-trained at 112 px after 20 epochs (README, "The demo").
    "gpu": DemoSettings("demo GPU", patients=160, folds=5, frames=8, resize=128, crop_size=112, epochs=20, lr=5e-4,
                        schedule="cosine", batch_size=8, precision="bf16-mixed", channels_last=True, workers=4,
                        intensity=0.2, test_model="ensemble", selection="last", val_every=5, gradcam_export=False),
    # The study's protocol (RunConfig's defaults), in bf16 with channels_last as measured in issue 10.
    "study": DemoSettings("study", patients=160, folds=5, frames=16, resize=256, crop_size=224, epochs=300, lr=1e-4,
                          schedule="none", batch_size=4, precision="bf16-mixed", channels_last=True, elastic=True,
                          workers=2),
}


def default_settings() -> str:
    """'gpu' where CUDA is available, else 'cpu'."""
    return "gpu" if torch.cuda.is_available() else "cpu"


def expected_duration(settings: str) -> str:
    """A sentence for the user before the run starts: the recipe and its rough training time on this machine."""
    recipe, device = DEMO_SETTINGS[settings], default_settings()
    minutes = recipe.expected_minutes(device)
    when = f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.0f} hours"
    return (f"{recipe.describe()}: training takes about {when} on this {device.upper()} (rough estimate, "
            f"{recipe.clips_per_s(device):.1f} TIN clips/s; the default patients and folds).")


@dataclass
class ProtocolResult:
    manifest: Path
    cv: dict[str, CVResult]
    report: Path
    explanation: Path | None
    settings: str
    comparisons: list = field(default_factory=list)
    """compare.PairResult of the video model against the static one, per test split and pooled."""


def run_protocol(
    out: str | Path,
    *,
    settings: str | None = None,
    seed: int = 0,
    patients: int | None = None,
    folds: int | None = None,
    models: tuple[str, ...] = ("tin", "resnet50"),
    announce: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
) -> ProtocolResult:
    """Run (or resume: finished steps are kept) the protocol into `out` with a `DEMO_SETTINGS` recipe."""
    from alnvid.compare import compare_runs
    from alnvid.explain import explain_file
    from alnvid.models.trained import load_models
    from alnvid.report import build_report
    from alnvid.runs import load_run, run_checkpoints

    name = settings or default_settings()
    if name not in DEMO_SETTINGS:
        raise AlnvidError(f"unknown demo settings {name!r}", fix=f"use one of: {', '.join(DEMO_SETTINGS)}.")
    recipe = DEMO_SETTINGS[name]
    patients = patients or recipe.patients
    folds = folds or recipe.folds
    out = Path(out)
    say = announce or (lambda message: None)
    manifest = out / "cohort" / "manifest.csv"
    _check_or_make_cohort(manifest, patients, seed, recipe.test_share, say)
    results = {}
    for model in models:
        config = recipe.apply(RunConfig())
        config.data.manifest = str(manifest)
        config.data.cache_dir = str(out / "cache")
        config.data.seed = config.trainer.seed = seed
        config.model.name = model
        config.out = str(out / "runs" / f"{model}-cv")
        config.trainer.progress = announce is not None
        say(f"Cross-validating {model} ({folds} folds)")
        results[model] = run_cv(config, folds, progress=progress, parallel_folds=recipe.parallel_folds,
                                on_fold_start=lambda k, n, m=model: say(f"{m}: fold {k + 1} of {n}"))
    say("Comparing video and static models and writing the report")
    report = build_report(out / "runs", out / "report", manifest=manifest)
    runs = [load_run(result.out) for result in results.values()]
    video, static = [r for r in runs if r.kind == "video"], [r for r in runs if r.kind == "static"]
    comparisons = compare_runs(video, static).pairs if video and static else []
    best_video = results.get("tin") or next(iter(results.values()))
    tested = load_models(run_checkpoints(best_video.out))  # the model behind the test predictions
    example = first_test_video(manifest)
    explanation = None
    if example is not None:
        say(f"Explaining {example.name} with Grad-CAM")
        explanation = explain_file(tested, example, out / "explain").files["json"]
    described = replace(recipe, patients=patients, folds=folds).describe()
    return ProtocolResult(manifest, results, report.out / "report.html", explanation, f"{described}, seed {seed}",
                          comparisons)


def _check_or_make_cohort(manifest: Path, patients: int, seed: int, test_share: float,
                          say: Callable[[str], None]) -> None:
    """Write the demo cohort, or check that the one already there was made with this seed, size and test share."""
    wanted = {"seed": seed, "patients": patients, "test_share": test_share}
    record = manifest.parent / COHORT_RECORD
    if manifest.is_file():
        found = json.loads(record.read_text()) if record.is_file() else {}
        made = {"test_share": TEST_SHARE, **found} if found else {}  # older records: the share was fixed
        if {key: made.get(key) for key in wanted} != wanted:
            raise AlnvidError(f"this folder holds a demo cohort made with {made or 'other settings'}, not {wanted}",
                              path=manifest.parent,
                              fix="use another --out for another seed, cohort size or settings.")
        return
    say(f"Writing the demo cohort ({patients} patients, seed {seed}, DICOM cine loops) to {manifest.parent}")
    atomic_write_text(record, json.dumps(wanted, indent=2))  # first: the manifest is what marks the cohort done
    make_demo_cohort(manifest.parent, patients=patients, frames=32, seed=seed, test_share=test_share)


def first_test_video(manifest: Path) -> Path | None:
    """The first positive test-split video of a manifest: the protocol's Grad-CAM example."""

    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    tests = table[table["split"].str.startswith("test") & (table["label"] == "1")]
    return (manifest.parent / tests["path"].iloc[0]).resolve() if len(tests) else None



# ---------------------------------------------------------------------------------------------- validity


def keyframe_hit(keyframe: int | None, first: int | None, last: int | None) -> bool:
    """The keyframe (loop frame index) lies in the frames where the evidence is visible, ends included."""
    return None not in (keyframe, first, last) and first <= keyframe <= last


def boxes_overlap(a: tuple[int, ...] | None, b: tuple[int, ...] | None) -> bool:
    """Two (x0, y0, x1, y1) boxes, x1/y1 exclusive, share at least one pixel."""
    if a is None or b is None:
        return False
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def score_explanations(truth: pd.DataFrame, sha_to_patient: dict[str, str], explained: list[dict]) -> pd.DataFrame:
    """One row per explanation (`alnvid explain --json` items), matched to `demo_truth.csv` by the file's sha256.

    Columns: patient_id, split, label, prob, keyframe, heat_box, node_first_frame, node_last_frame, node_box,
    keyframe_hit, pointing_hit. `split` is taken from each item's 'split' key (added by the caller).
    """
    truth = truth.set_index(truth["patient_id"].astype(str))
    rows = []
    for item in explained:
        patient = sha_to_patient.get(item["file_sha256"])
        if patient is None or patient not in truth.index:
            raise AlnvidError(f"an explained file (sha256 {item['file_sha256'][:12]}…) is not in the demo cohort",
                              fix="explain the videos of the cohort whose demo_truth.csv you score against.")
        row = truth.loc[patient]
        first, last = _int_or_none(row["node_first_frame"]), _int_or_none(row["node_last_frame"])
        node_box = _box_or_none(row["node_box"])
        keyframe = item["keyframe"]["frame_index"] if item.get("keyframe") else None
        heat = tuple(item["heat_box"]) if item.get("heat_box") else None
        rows.append({"patient_id": patient, "split": item.get("split", ""), "label": int(row["label"]),
                     "prob": float(item["probability"]), "keyframe": keyframe, "heat_box": heat,
                     "node_first_frame": first, "node_last_frame": last, "node_box": node_box,
                     "keyframe_hit": keyframe_hit(keyframe, first, last),
                     "pointing_hit": boxes_overlap(heat, node_box)})
    return pd.DataFrame(rows)


def summarise_validity(scored: pd.DataFrame) -> pd.DataFrame:
    """Per split and pooled: patients, positives, AUC of the explained probabilities, and the keyframe and
    pointing hit rates on the truly positive patients (whose evidence the truth locates)."""
    from alnvid.stats import auc

    rows = []
    for split, part in [*scored.groupby("split", sort=True), ("pooled", scored)]:
        positive = part[part["label"] == 1]
        two_classes = part["label"].nunique() == 2
        rows.append({"split": split, "patients": len(part), "positives": len(positive),
                     "auc": auc(part["label"].to_numpy(), part["prob"].to_numpy()) if two_classes else float("nan"),
                     "keyframe_hits": int(positive["keyframe_hit"].sum()),
                     "pointing_hits": int(positive["pointing_hit"].sum()),
                     "keyframe_hit_rate": positive["keyframe_hit"].mean() if len(positive) else float("nan"),
                     "pointing_hit_rate": positive["pointing_hit"].mean() if len(positive) else float("nan")})
    return pd.DataFrame(rows)


def _int_or_none(value) -> int | None:
    return None if pd.isna(value) or value == "" else int(value)


def _box_or_none(value) -> tuple[int, ...] | None:
    return None if pd.isna(value) or value == "" else tuple(int(v) for v in str(value).split(","))
