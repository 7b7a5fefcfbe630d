"""Delimited text files read strictly, and ids as the text they are compared by.

A data row with more fields than the header (an unquoted separator inside a value) is refused with a
one-line DataError naming the file and the row, never cut short; float ids holding integers are written as
integers ("16.0" -> "16"), other floats refused. Used by the log readers (`sessrec.data.readers`), the item
table readers of `sessrec extract` and the feature store.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sessrec.data.times import data_row
from sessrec.errors import DataError

CHUNK_ROWS = 1 << 20
"""Rows a text file is parsed in at a time (every field is parsed, only the wanted columns kept)."""


def text_options(sep: str, **opts: Any) -> dict[str, Any]:
    """pd.read_csv options of a delimited text file: UTF-8 with an optional byte-order mark (not part of
    the first column's name), the python engine for a multi-character separator (without pandas' warning)."""
    engine = {"engine": "python"} if len(sep) != 1 else {}
    return dict(sep=sep, encoding="utf-8-sig", **engine, **opts)


def header_names(path: Path, **opts: Any) -> list[str]:
    """The column names of a text file's header row (no data read)."""
    return [str(c) for c in pd.read_csv(path, nrows=0, dtype=str, **opts).columns]


def read_fields(
    path: Path, columns: Sequence[str], found: Sequence[str], header: bool, **opts: Any
) -> pd.DataFrame:
    """`columns` of a text file whose fields are named `found` (its header row when `header`, else given);
    `opts` go to pd.read_csv. DataError for a data row with more fields than `found`, which pandas'
    `usecols` would drop silently (a value cut at an unquoted separator): every field is parsed, in
    chunks of `CHUNK_ROWS` rows, and only `columns` are kept. A row with fewer fields reads as missing
    values, which the callers refuse where they matter."""
    names = None if header else list(found)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)  # a wider first row: pandas drops fields
        try:
            chunks = pd.read_csv(path, header=0 if header else None, names=names, index_col=False,
                                 chunksize=CHUNK_ROWS, **opts)  # fmt: skip
            parts = [chunk[list(columns)] for chunk in chunks]
        except pd.errors.ParserWarning:
            raise ragged_row(path, 1, len(found), header, opts) from None
        except pd.errors.ParserError as err:
            m = re.search(r"Expected \d+ fields in line (\d+), saw (\d+)", str(err))
            if m is None:
                raise
            row, fields = int(m.group(1)) - header, int(m.group(2))
            raise ragged_row(path, row, len(found), header, opts, fields) from None
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(columns), dtype=str)


def ragged_row(
    path: Path, row: int, found: int, header: bool, opts: dict[str, Any], fields: int = 0
) -> DataError:
    """The DataError for data row `row` (1-based) of a text file holding more fields than the `found`
    names of its header (or the given names); `fields` counted from the file when not given."""
    fields = fields or _row_fields(path, row, header, opts)
    has = f"{fields} fields" if fields else "more fields"
    names = f"the header has {found}" if header else f"{found} column names are given"
    why = "an unquoted separator inside a value? quote it"
    return DataError(f"{path}: data row {row} has {has}, {names} ({why})")


def _row_fields(path: Path, row: int, header: bool, opts: dict[str, Any]) -> int:
    """The number of fields of data row `row` (1-based) of a text file, or 0 when unreadable."""
    keep = {k: opts[k] for k in ("sep", "encoding", "engine") if k in opts}
    try:
        line = pd.read_csv(path, header=None, skiprows=row - 1 + header, nrows=1, dtype=str, **keep)
    except Exception:  # the error message then says "more fields"
        return 0
    return int(line.shape[1])


def id_text(values: pd.Series, path: Path, col: str) -> pd.Series:
    """Ids as the text they are compared by: float ids written as integers ("16.0" -> "16"; Parquet and
    pandas store integer ids with a gap as floats), missing ids kept missing; other dtypes unchanged.
    DataError for a float id that is not an integer below 2**53: ids must be text or integers."""
    if not pd.api.types.is_float_dtype(values):
        return values
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    present = ~np.isnan(numbers)
    with np.errstate(invalid="ignore"):
        bad = present & ~((numbers % 1 == 0) & (np.abs(numbers) < 2**53))  # inf % 1 is NaN: bad
    if bad.any():
        position = int(bad.argmax())
        example, row = float(numbers[position]), data_row(values, position)
        raise DataError(
            f"{path}: column '{col}' holds {int(bad.sum())} non-integer id(s), e.g. {example!r} "
            f"(data row {row}); ids must be text or integers"
        )
    text = np.full(len(numbers), None, dtype=object)
    text[present] = numbers[present].astype(np.int64).astype(str)
    return pd.Series(text, index=values.index, name=values.name, dtype="str")
