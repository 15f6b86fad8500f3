"""CSV tables (manifests, file lists, predictions) read as text in a known encoding, or refused clearly.

Excel and hospital systems save CSVs as UTF-8 with or without a BOM, UTF-16 (with a BOM) or a legacy 8-bit code
page. A BOM or valid UTF-8 says the encoding unambiguously; anything else (Latin-1, Windows-1252, ...) could be one
of several code pages, and decoding it with the wrong one would silently change patient ids and file names, so it
is refused with what to do.
"""
from __future__ import annotations

import codecs
import io
from pathlib import Path

import pandas as pd

from alnvid.errors import InputFileError

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),  # before UTF-16: they share a prefix
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
SAVE_AS_UTF8 = "save it as UTF-8 (in Excel: File > Save As > 'CSV UTF-8 (Comma delimited)')."


def check_table_path(path: Path, what: str) -> None:
    """Raise InputFileError when `path` is missing or a folder (`what` names the table, e.g. 'manifest')."""
    if path.is_dir():
        raise InputFileError(f"this is a folder, not a {what} CSV file", path=path,
                             fix=f"give the {what} file itself, e.g. {path / 'cohort.csv'}.")
    if not path.is_file():
        raise InputFileError(f"{what} file not found", path=path, fix="check the path.")


def read_text(path: Path, what: str = "CSV") -> str:
    """The file's text, decoded by its BOM, else as UTF-8; other encodings raise InputFileError."""
    check_table_path(path, what)
    data = path.read_bytes()
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise InputFileError(f"the {what} starts with a {encoding} byte-order mark but is not valid "
                                     f"{encoding} (byte {exc.start})", path=path, fix=SAVE_AS_UTF8) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        guess = "UTF-16 without a byte-order mark" if b"\x00" in data[:200] else "Latin-1 or Windows-1252"
        raise InputFileError(f"the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}; it looks "
                             f"like {guess}, which cannot be read without guessing the code page)",
                             path=path, fix=SAVE_AS_UTF8) from None


def read_csv_table(path: str | Path, what: str = "CSV", **options) -> pd.DataFrame:
    """pandas.read_csv of a UTF-8/UTF-16 (with BOM) file; unreadable CSV raises InputFileError naming the file."""
    path = Path(path)
    text = read_text(path, what)
    try:
        return pd.read_csv(io.StringIO(text), **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputFileError(f"not a readable CSV file ({type(exc).__name__}: {exc})", path=path,
                             fix="export it as comma-separated text with a header row.") from None
