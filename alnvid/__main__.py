"""`python -m alnvid ...` runs the command line, as `alnvid ...` does (and as DDP relaunches it per device)."""
from alnvid.cli.main import app

app()
