"""`alnvid demo-data`: write the built-in synthetic breast-ultrasound video cohort."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from alnvid.cli._common import console, user_errors


@user_errors
def demo_data(
    out: Path = typer.Argument(..., help="Folder to write videos/, stills/, manifest.csv and demo_truth.csv into."),
    patients: int = typer.Option(60, "--patients", help="Number of synthetic patients (at least 6)."),
    frames: int = typer.Option(32, "--frames", help="Frames per cine loop (at least 8)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    frame_size: tuple[int, int] = typer.Option((320, 400), "--frame-size", help="Frame rows and columns."),
    test_share: float = typer.Option(0.15, "--test-share", help="Share of the patients in each test split "
                                     "(test_a on scanner A, test_b on scanner B); the rest is train."),
) -> None:
    """Write a synthetic ALN cohort (DICOM cine loops from two scanners, keyframes, reader calls) for demos."""
    import csv

    from alnvid.data.demo import make_demo_cohort

    manifest = make_demo_cohort(out, patients=patients, frames=frames, seed=seed, frame_size=frame_size,
                                test_share=test_share)
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    splits = Counter(row["split"] for row in rows)
    positives = sum(row["label"] == "1" for row in rows)
    console.print(f"[bold green]Manifest:[/] {manifest}", highlight=False)
    console.print(f"{len(rows)} patients ({positives} with ALN metastasis), {frames} frames each; "
                  + ", ".join(f"{name} {splits[name]}" for name in ("train", "test_a", "test_b"))
                  + f"; ground truth in {manifest.parent / 'demo_truth.csv'}", highlight=False)
