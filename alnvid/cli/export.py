"""`alnvid export`: a run's model (one checkpoint, or a cross-validation's fold ensemble) as one ONNX or
TorchScript file for deployment."""
from __future__ import annotations

from pathlib import Path

import typer

from alnvid.cli._common import console, load_checkpoints, print_json, user_errors
from alnvid.errors import AlnvidError


@user_errors
def export(
    checkpoint: list[Path] = typer.Argument(..., help="A run's checkpoints/best.ckpt (it carries the run's "
                                            "settings), or a run folder (a cv folder gives its test model: the best "
                                            "fold, or every fold with --test-model ensemble). Several checkpoints of "
                                            "one recipe export as one file that averages their probabilities."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (ONNX Runtime, opset 17) or torchscript."),
    out: Path = typer.Option(..., "--out", help="File to write, e.g. tin.onnx or tin.pt."),
    json_output: bool = typer.Option(False, "--json", help="Print the export report and metadata as JSON."),
) -> None:
    """Export a trained model with its preprocessing metadata; run it with `alnvid predict --model-file FILE`.

    The file maps a batch of clips (N, 3, T, H, W) or images (N, 3, H, W) in [0, 1] to softmax probabilities
    (N, 2), column 1 = P(metastasis); the batch size is dynamic. An ensemble's file outputs the mean of its members'
    probabilities. It is checked against PyTorch before it is kept."""
    from alnvid.models.exported import FORMATS, export_model

    if fmt not in FORMATS:
        raise AlnvidError(f"unknown --format {fmt!r}", fix=f"use --format {' or --format '.join(FORMATS)}.")
    if out.is_dir():
        raise AlnvidError("--out is a folder", path=out, fix="give a file name, e.g. --out model.onnx.")
    report = export_model(load_checkpoints(checkpoint), fmt, out)
    if json_output:
        print_json(report)
        return
    meta = report["metadata"]
    members = f" (mean of {meta['members']} models)" if meta["members"] > 1 else ""
    console.print(f"[bold green]Exported[/] {meta['model_name']}{members} as {fmt} to {out}")
    console.print(f"  input {meta['input_layout']}; T = {meta['frames']}, {meta['input_size']} px")
    console.print(f"  matches PyTorch within {report['max_abs_difference']:.1e}")
