"""Reading delimited text files row by row, keeping each row's line number for error messages.

pandas' own readers either stop at the first bad line or drop bad lines silently (and the C
engine fills short rows with NaN), so neither can both name the line of every malformed row
and count the rows it skipped. Here plain delimited files are split with vectorized string
operations and CSV files that use quoting go through the `csv` module, which tracks lines.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from batch.data import DatasetError

log = logging.getLogger(__name__)


@dataclass
class RawRows:
    """String fields of one file's rows, with the 1-based line on which each row starts."""

    path: Path
    fields: pd.DataFrame  # one str column per field, named by the header or by position
    lines: np.ndarray  # int64, same length as `fields`

    def keep(self, mask: np.ndarray) -> RawRows:
        return RawRows(self.path, self.fields[mask].reset_index(drop=True), self.lines[mask])


class RowErrors:
    """Applies the malformed-row rule of one load: raise on the first bad row, or skip and count.

    Parameters
    ----------
    skip_malformed
        False: the first malformed row raises `DatasetError` naming file, line and problem.
        True: malformed rows are dropped and counted in `skipped`.
    """

    def __init__(self, skip_malformed: bool) -> None:
        self.skip_malformed = skip_malformed
        self.skipped = 0
        self._examples: list[str] = []

    def reject(
        self, rows: RawRows, bad: np.ndarray, reason: str, values: pd.Series | None = None
    ) -> RawRows:
        """Drop the rows flagged in `bad` (or raise for the first one).

        `reason` may contain ``{value}``, filled with the first bad row's entry of `values`.
        """
        bad = np.asarray(bad, dtype=bool)
        if not bad.any():
            return rows
        first = int(np.flatnonzero(bad)[0])
        value = "" if values is None else values.iloc[first]
        shown = repr(value) if isinstance(value, str) else str(value)
        message = f"{location(rows.path, int(rows.lines[first]))}: {reason.format(value=shown)}"
        if not self.skip_malformed:
            raise DatasetError(
                f"{message} (pass skip_malformed=True / --skip-malformed to skip such rows)"
            )
        count = int(bad.sum())
        self.skipped += count
        if len(self._examples) < 3:
            self._examples.append(message)
        return rows.keep(~bad)

    def log_summary(self, name: str) -> None:
        if self.skipped:
            log.warning(
                "%s: skipped %d malformed row(s), e.g. %s",
                name,
                self.skipped,
                "; ".join(self._examples),
            )


def location(path: Path, line: int) -> str:
    """`file:line` for a text file; parquet rows are reported as `file: row N`."""
    if path.suffix.lower() == ".parquet":
        return f"{path}: row {line}"
    return f"{path}:{line}"


def read_text(path: Path, encoding: str) -> str:
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise DatasetError(f"missing file {path}") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not valid {encoding} text") from None


def read_delimited(
    path: Path,
    *,
    sep: str,
    n_fields: int,
    errors: RowErrors,
    encoding: str = "utf-8",
    header: bool = False,
    names: Sequence[str] | None = None,
) -> RawRows:
    """Split a file without quoting (MovieLens .data/.item/.dat files) into string fields.

    Rows with a field count other than `n_fields` are malformed; blank lines are ignored,
    as pandas does. With `header`, the first line names the fields and is not a row.
    """
    text = read_text(path, encoding)
    # str.split("\n") rather than splitlines(): latin-1 text may hold \x85 or \x1c, which
    # splitlines() would treat as line breaks.
    lines = pd.Series(text.split("\n"), dtype="str").str.removesuffix("\r")
    numbers = np.arange(1, len(lines) + 1, dtype=np.int64)
    if header:
        names = _header_names(path, lines.iloc[0] if len(lines) else "", sep)
        n_fields = len(names)
        lines, numbers = lines.iloc[1:], numbers[1:]
    nonblank = (lines.str.strip() != "").to_numpy()
    lines, numbers = lines[nonblank].reset_index(drop=True), numbers[nonblank]
    rows = RawRows(path, lines.to_frame("line"), numbers)
    counts = lines.str.count(re.escape(sep)).to_numpy() + 1
    rows = errors.reject(
        rows,
        counts != n_fields,
        f"expected {n_fields} fields separated by {sep!r}, got {{value}}",
        pd.Series(counts),
    )
    fields = rows.fields["line"].str.split(sep, n=n_fields - 1, expand=True, regex=False)
    if fields.shape[1] < n_fields:  # only when no row is left
        fields = pd.DataFrame({i: pd.Series([], dtype="str") for i in range(n_fields)})
    fields.columns = list(names) if names is not None else list(range(n_fields))
    return RawRows(path, fields.astype("str"), rows.lines)


def read_csv_rows(path: Path, *, errors: RowErrors, encoding: str = "utf-8") -> RawRows:
    """Read a CSV file with a header line into string fields, honouring quotes.

    A file without any quote character takes the fast vectorized path of `read_delimited`.
    """
    text = read_text(path, encoding)
    if '"' not in text:
        return read_delimited(
            path, sep=",", n_fields=0, errors=errors, encoding=encoding, header=True
        )
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    names: list[str] | None = None
    records: list[list[str]] = []
    starts: list[int] = []
    previous_end = 0
    try:
        for record in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not record or not any(field.strip() for field in record):
                continue
            if names is None:
                names = [name.strip() for name in record]
                continue
            if len(record) != len(names):
                bad = RawRows(path, pd.DataFrame({"n": [len(record)]}), np.array([start]))
                errors.reject(
                    bad,
                    np.array([True]),
                    f"expected {len(names)} fields separated by ',', got {{value}}",
                    bad.fields["n"],
                )
                continue
            records.append(record)
            starts.append(start)
    except csv.Error as exc:
        raise DatasetError(f"{path}:{reader.line_num}: {exc}") from None
    if names is None:
        raise DatasetError(f"{path}: empty file (expected a header line)")
    fields = pd.DataFrame(records, columns=names, dtype="str") if records else _empty(names)
    return RawRows(path, fields, np.asarray(starts, dtype=np.int64))


def _header_names(path: Path, line: str, sep: str) -> list[str]:
    names = [name.strip() for name in line.split(sep)]
    if not any(names):
        raise DatasetError(f"{path}: empty file (expected a header line)")
    return names


def _empty(names: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype="str") for name in names})
