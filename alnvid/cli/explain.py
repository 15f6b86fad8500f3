"""`alnvid explain`: Grad-CAM of a trained model on DICOMs or videos — keyframes, overlays, GIF/MP4, JSON."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from alnvid.cli._common import CHECKPOINT_HELP, console, load_checkpoints, print_json, progress_bar, user_errors
from alnvid.errors import AlnvidError


@user_errors
def explain(
    inputs: Optional[list[Path]] = typer.Argument(None, help="DICOM or video file(s) to explain."),
    checkpoint: list[Path] = typer.Option(..., "--checkpoint", "-c", help=CHECKPOINT_HELP),
    out: Path = typer.Option(Path("explain"), "--out", help="Folder for the PNG/GIF/MP4/NPZ/JSON artefacts."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Explain every row of this cohort manifest."),
    split: Optional[str] = typer.Option(None, "--split", help="With --manifest: only this split (e.g. test_a)."),
    multi_clip: bool = typer.Option(False, "--multi-clip", help="Overlapping clips over the whole loop, so every "
                                    "frame gets its own heatmap (slower)."),
    eval_clips: Optional[int] = typer.Option(None, "--eval-clips", help="Video models: score the video as the mean "
                                             "over K clips, as `predict --eval-clips K`, and explain those clips. "
                                             "Default: the run's setting (1 unless trained with --eval-clips)."),
    eval_flip: Optional[bool] = typer.Option(None, "--eval-flip/--no-eval-flip", help="Also score and explain each "
                                             "clip mirrored left-right (its heatmap mirrored back), as `predict "
                                             "--eval-flip`. Default: the run's setting."),
    per_clip: bool = typer.Option(True, "--per-clip/--per-frame", help="Channel weights: one per clip "
                                  "(pytorch-grad-cam; frames compared on one scale) or one per frame (mmaction2)."),
    target_class: int = typer.Option(1, "--target-class", help="Class whose logit is explained: 1 = metastasis."),
    top_k: int = typer.Option(3, "--top-k", help="How many keyframes to report."),
    gif: bool = typer.Option(True, "--gif/--no-gif", help="Write an animated GIF of the sweep with the heatmap."),
    mp4: bool = typer.Option(True, "--mp4/--no-mp4", help="Write an MP4 of the sweep with the heatmap."),
    name: Optional[str] = typer.Option(None, "--name", help="Base name of the output files (one input only). "
                                       "Default explain_<sha8 of the file>: file names may carry identity."),
    allow_modality: Optional[list[str]] = typer.Option(None, "--allow-modality", help="Also read DICOMs of this "
                                                        "modality (e.g. CT); default ultrasound (US) only."),
    skip_errors: bool = typer.Option(False, "--skip-errors", help="Go on past unreadable or unsuitable files and "
                                     "list them (row, patient, reason) in <out>/errors.csv. Default: stop at the "
                                     "first, writing nothing."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON (with --skip-errors: "
                                     "{explanations, errors})."),
) -> None:
    """Show where the model looked: Grad-CAM heatmaps over the sweep, the keyframe that drove the prediction and
    its hot region, written as overlay PNGs (imaging region only), a contact sheet, GIF/MP4 and JSON, with
    index.csv mapping each input to its files."""
    from alnvid.data.manifest import load_manifest
    from alnvid.inference import BatchInputs, explain_inputs

    inputs = list(inputs or [])
    if bool(inputs) == bool(manifest):
        raise AlnvidError("give either input file(s) or --manifest", fix="e.g. `alnvid explain scan.dcm -c best.ckpt`.")
    if name and (manifest or len(inputs) > 1):
        raise AlnvidError("--name needs exactly one input file", fix="leave --name out for several files.")
    if split and not manifest:
        raise AlnvidError("--split only applies with --manifest", fix="drop --split or pass --manifest.")
    if out.exists() and not out.is_dir():
        raise AlnvidError("--out is a file, not a folder", path=out, fix="give a folder for the artefacts.")
    allowed = list(allow_modality or [])
    if manifest:
        cohort = load_manifest(manifest, allow_modalities=allowed, check_files=not skip_errors)
        table = cohort.rows(split) if split else cohort.table
        if table.empty:
            raise AlnvidError(f"no rows in split {split!r}", path=manifest,
                              fix=f"use one of: {', '.join(cohort.splits)}.")
        batch = BatchInputs.from_manifest_rows(table)
    else:
        batch = BatchInputs.from_files(inputs)

    model = load_checkpoints(checkpoint, eval_clips=eval_clips, eval_flip=eval_flip)
    model.config.data.allow_modalities = allowed
    with progress_bar("Explaining", enabled=not json_output and len(batch) > 1) as update:
        results, index, errors = explain_inputs(
            model, batch, out, skip_errors=skip_errors, progress=update, multi_clip=multi_clip,
            per_clip_weights=per_clip, target_class=target_class, top_k=top_k, gif=gif, mp4=mp4, name=name)

    if json_output:
        records = [{"row": row, "patient_id": patient, **r.to_dict(), "out": str(out)}
                   for row, patient, r in zip(index["row"], index["patient_id"], results)]
        print_json({"explanations": records, "errors": errors.to_dict(orient="records")} if skip_errors else records)
        return
    if len(results) == 1 and errors.empty:
        _print_one(results[0], out)
        return
    view = Table(batch.row_name, "patient_id", "output", "P(metastasis)", "keyframe", "time (s)",
                 "heat box (x0,y0,x1,y1)")
    for row, patient, r in zip(index["row"], index["patient_id"], results):
        key = r.keyframe
        view.add_row(str(row), patient or "–", r.name, f"{r.prob:.3f}", str(key.frame_index) if key else "–",
                     f"{key.time_s:.2f}" if key and key.time_s is not None else "–", str(r.heat_box or "–"))
    console.print(view)
    if len(errors):
        console.print(f"[yellow]{len(errors)} of {len(batch)} input(s) skipped (listed in {out / 'errors.csv'}):[/]")
        for row in errors.itertuples():
            console.print(f"  {batch.row_name} {row.row} {row.patient_id}: {row.reason}")
    console.print(f"Artefacts in {out} (index.csv maps each input to its files)")


def _print_one(result, out: Path) -> None:
    call = "[red]metastasis[/]" if result.prob >= 0.5 else "[green]no metastasis[/]"
    models = f" (mean of {result.models} models)" if result.models > 1 else ""
    console.print(f"[bold]{result.model_name}[/]{models}: P(metastasis) = [bold]{result.prob:.3f}[/] ({call} at 0.5)")
    if not result.keyframes:
        console.print("[yellow]No positive Grad-CAM evidence for this class: the heatmap is empty.[/]")
    else:
        view = Table("rank", "frame (loop)", "time (s)", "heat mass")
        for rank, key in enumerate(result.keyframes, 1):
            view.add_row(str(rank), f"{key.frame_index} / {result.n_frames}",
                         f"{key.time_s:.2f}" if key.time_s is not None else "–", f"{key.heat_mass:.1f}")
        console.print(view)
        if result.heat_box is not None:
            console.print(f"Hot region on the keyframe (heat >= 0.5), original pixels x0,y0,x1,y1: {result.heat_box}")
    for kind, path in result.files.items():
        console.print(f"  {kind:8s} {path}")
    console.print(f"[dim]Files are named {result.name} (from the file's content hash), never from the input name.[/]")
