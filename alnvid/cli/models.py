"""`alnvid models`: the registered backbones."""
from __future__ import annotations

import typer
from rich.table import Table

from alnvid.cli._common import console, print_json


def models(json_output: bool = typer.Option(False, "--json", help="Print the registry as JSON.")) -> None:
    """List the backbones: name, video or static, input, default size, Grad-CAM layer."""
    from alnvid.models.registry import get_model_spec, list_models

    specs = [get_model_spec(name) for name in list_models()]
    if json_output:
        print_json([{"name": s.name, "kind": s.kind, "input": s.input_kind, "input_size": s.input_size,
                     "target_layer": s.target_layer, "description": s.description} for s in specs])
        return
    table = Table("name", "kind", "input", "size", "Grad-CAM layer", "description", title="Backbones")
    for s in specs:
        table.add_row(s.name, s.kind, s.input_kind, str(s.input_size), s.target_layer, s.description)
    console.print(table)
