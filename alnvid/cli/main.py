"""The `alnvid` command: each sub-command is a thin layer over a library function."""
from __future__ import annotations

import typer

from alnvid.cli import (
    cohort,
    compare,
    cv,
    demo,
    demo_data,
    explain,
    export,
    models,
    report,
    stats,
    train,
)
from alnvid.utils import quiet_libraries

app = typer.Typer(
    name="alnvid",
    help="Predict axillary lymph-node metastasis from breast ultrasound videos: build, validate, compare and "
    "explain video and static CNNs.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", help="Also show the libraries' own log messages.")) -> None:
    """Predict axillary lymph-node metastasis from breast ultrasound videos."""
    if not verbose:
        quiet_libraries()


app.command("demo")(demo.demo)
app.command("demo-data")(demo_data.demo_data)
app.add_typer(cohort.app, name="cohort")
app.command("models")(models.models)
app.command("fit")(train.fit)
app.command("cv")(cv.cv)
app.command("predict")(train.predict)
app.command("explain")(explain.explain)
app.command("export")(export.export)
app.command("stats")(stats.stats)
app.command("compare")(compare.compare)
app.command("report")(report.report)


if __name__ == "__main__":  # python -m alnvid.cli.main, as python -m alnvid
    app()
