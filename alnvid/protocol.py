"""The whole study protocol in one call, as `make demo` runs it on the built-in demo cohort:
demo cohort -> k-fold CV of a video and a static model -> video vs static comparison -> report -> Grad-CAM.

On a CPU it uses the `--fast` settings (minutes on 2 cores); on a GPU the study's (T 16, 224 px, 300 epochs).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from alnvid.config import RunConfig, fast
from alnvid.cv import CVResult, run_cv
from alnvid.data.datamodule import ProgressFn
from alnvid.data.demo import make_demo_cohort


@dataclass
class ProtocolResult:
    manifest: Path
    cv: dict[str, CVResult]
    report: Path
    explanation: Path | None
    settings: str
    steps: list[str] = field(default_factory=list)


def run_protocol(
    out: str | Path,
    *,
    fast_settings: bool | None = None,
    patients: int = 60,
    folds: int = 5,
    models: tuple[str, ...] = ("tin", "resnet50"),
    announce: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
) -> ProtocolResult:
    """Run (or resume: finished steps are kept) the protocol into `out`."""
    from alnvid.explain import explain_file
    from alnvid.models.trained import load_trained
    from alnvid.report import build_report

    out = Path(out)
    say = announce or (lambda message: None)
    fast_settings = (not torch.cuda.is_available()) if fast_settings is None else fast_settings
    manifest = out / "cohort" / "manifest.csv"
    if not manifest.is_file():
        say(f"Writing the demo cohort ({patients} patients, DICOM cine loops) to {manifest.parent}")
        make_demo_cohort(manifest.parent, patients=patients, frames=32 if fast_settings else 48)
    results = {}
    for model in models:
        config = RunConfig()
        if fast_settings:
            fast(config)
        config.data.manifest = str(manifest)
        config.data.cache_dir = str(out / "cache")
        config.model.name = model
        config.out = str(out / "runs" / f"{model}-cv")
        config.trainer.progress = announce is not None
        say(f"Cross-validating {model} ({folds} folds)")
        results[model] = run_cv(config, folds, progress=progress,
                                on_fold_start=lambda k, n, m=model: say(f"{m}: fold {k + 1} of {n}"))
    say("Comparing video and static models and writing the report")
    report = build_report(out / "runs", out / "report", manifest=manifest)
    video = results.get("tin") or next(iter(results.values()))
    best = load_trained(video.out / f"fold_{video.best_fold}" / "checkpoints" / "best.ckpt")
    example = first_test_video(manifest)
    explanation = None
    if example is not None:
        say(f"Explaining {example.name} with Grad-CAM")
        explanation = explain_file(best, example, out / "explain").files["json"]
    settings = "fast CPU settings (T 8, 64 px, 3 epochs)" if fast_settings else "study settings (T 16, 224 px, 300 epochs)"
    return ProtocolResult(manifest, results, report.out / "report.html", explanation, settings)


def first_test_video(manifest: Path) -> Path | None:
    """The first positive test-split video of a manifest: the protocol's Grad-CAM example."""

    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    tests = table[table["split"].str.startswith("test") & (table["label"] == "1")]
    return (manifest.parent / tests["path"].iloc[0]).resolve() if len(tests) else None
