"""Reading tables: a CSV or Parquet file through pyarrow into a compact frame, with one clear error for what is
wrong with the file (not found, not UTF-8, duplicate or nested columns, unreadable).
"""

from __future__ import annotations

import codecs
import csv
import errno
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl.errors import InputError

__all__ = ["read_table", "compact", "path_exists", "check_unique_names", "STREAM_CSV_BYTES", "CSV_BLOCK_BYTES"]

#: How much of a CSV the separator is sniffed from.
_SNIFF_BYTES = 1024
#: CSV files of this size or more are parsed and converted in blocks of CSV_BLOCK_BYTES (see :func:`_read_csv`).
STREAM_CSV_BYTES, CSV_BLOCK_BYTES = 256 << 20, 32 << 20
#: An error about many columns names this many of them (it stays one readable line).
_NAMED_COLUMNS = 10
#: ``pandas.api.types.infer_dtype`` kinds of an object column that hold numbers (or nothing).
_NUMBER_KINDS = ("boolean", "integer", "floating", "mixed-integer-float", "decimal", "empty")


def read_table(path: Path, target: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file through pyarrow into a compact frame (see :func:`compact`);
    the ``target`` column keeps its values and dtype exactly.

    A CSV may start with a UTF-8 byte order mark and use ``,``, ``;``, tab or ``|`` as separator
    (sniffed from its first KB); with ``;``, decimal commas are read as numbers.
    """
    if not path_exists(path):
        raise InputError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; give a table with a header row and data rows")
    import pyarrow as pa

    try:
        parquet = path.suffix.lower() in (".parquet", ".pq")
        columns = _columns([_read_parquet(path)], target, path) if parquet else _read_csv(path, target)
        return pd.DataFrame(columns, copy=False)
    except InputError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot be read as a table ({reason}); "
                         "give a UTF-8 CSV with a header row or a Parquet file") from None


def path_exists(path: Path) -> bool:
    """Whether ``path`` exists; an :class:`InputError` for a path the system refuses to look up at all
    (``Path.exists`` raises for a name too long for the file system, or a folder on the way that cannot be read)."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        fix = ("use a shorter file name or path" if exc.errno == errno.ENAMETOOLONG
               else "check the path and its folders' permissions")
        raise InputError(f"{path}: cannot be looked up ({exc.strerror}); {fix}") from None
    return True


def _columns(parts: Any, target: str | None, path: Path) -> dict[str, pd.Series]:
    """The columns of ``parts`` (a list of pyarrow tables, or a CSV stream reader), compact: numbers become
    float32 as each part arrives, text is dictionary-encoded at the end (pyarrow's hashing beats pandas'
    by 3x), the ``target`` keeps its values and dtype exactly."""
    import pyarrow as pa

    schema = parts.schema if hasattr(parts, "schema") else parts[0].schema
    check_unique_names(schema.names, path)
    _check_flat(schema, path)

    def as_text(spec: Any) -> bool:
        return spec.name == target or pa.types.is_string(spec.type) or pa.types.is_large_string(spec.type)

    kept: dict[str, list[Any]] = {name: [] for name in schema.names}
    for part in parts:
        for spec, column in zip(schema, part.columns, strict=True):
            kept[spec.name].append(column if as_text(spec) else
                                    _compact_column(column.to_pandas(date_as_object=False)))
    columns = {}
    for spec in schema:
        chunks = kept[spec.name]
        if spec.name == target:
            columns[spec.name] = pa.chunked_array(chunks, type=spec.type).to_pandas()
        elif as_text(spec):
            columns[spec.name] = pa.chunked_array(chunks, type=spec.type).dictionary_encode().to_pandas()
        elif not chunks:  # a CSV header without rows
            columns[spec.name] = _compact_column(pa.array([], type=spec.type).to_pandas(date_as_object=False))
        else:
            columns[spec.name] = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    return columns


def compact(frame: pd.DataFrame, target: str | None) -> pd.DataFrame:
    """The frame with float32 feature numbers (booleans as 0/1) and categorical text; ``target`` untouched.

    Dates and categoricals stay as they are. This halves the memory of a table of float64 numbers
    and makes text columns cost one small integer per row.
    """
    return pd.DataFrame({c: frame[c] if c == target else _compact_column(frame[c]) for c in frame.columns},
                        copy=False)


def _compact_column(values: pd.Series) -> pd.Series:
    kind = pd.api.types.infer_dtype(values, skipna=True) if values.dtype == object else None
    if (pd.api.types.is_numeric_dtype(values.dtype) and not isinstance(values.dtype, pd.CategoricalDtype)) \
            or kind in _NUMBER_KINDS:
        return pd.Series(values.to_numpy(dtype="float32", na_value=np.nan), index=values.index, name=values.name)
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        return values.astype("category")
    return values


def _read_parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    # A frame saved with its index keeps it as a column; it is not data.
    index = [c for c in (table.schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)]
    return table.drop_columns(index)


def _read_csv(path: Path, target: str | None) -> dict[str, pd.Series]:
    """The file's compact columns (see :func:`_columns`). A file of :data:`STREAM_CSV_BYTES` or more is
    converted block by block as pyarrow's parser yields them, so that a parsed copy of the whole file never
    exists (the 4.8 GB CSV of 8M rows: 2.85 GB peak, against 10.5 GB read at once); the parse is then
    single-threaded. Smaller files, files where that fails (a later block that does not fit the types
    inferred from the first, quoted line breaks) and ``;``-separated files (decimal commas) are read at once."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    delimiter = _sniff_delimiter(path)
    _check_csv_header(path, delimiter)
    convert = pacsv.ConvertOptions(strings_can_be_null=True)

    def parse(newlines_in_values: bool) -> Any:
        return pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=newlines_in_values)

    if delimiter != ";" and path.stat().st_size >= STREAM_CSV_BYTES:
        try:
            reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                    parse_options=parse(False), convert_options=convert)
            _check_utf8(reader.schema, path)
            return _columns(reader, target, path)
        except pa.ArrowInvalid:
            pass  # what was converted so far is dropped; the whole read below decides
    try:
        table = pacsv.read_csv(path, parse_options=parse(False), convert_options=convert)
    except pa.ArrowInvalid:  # quoted line breaks need the slower serial parser; a ragged file fails again
        table = pacsv.read_csv(path, parse_options=parse(True), convert_options=convert)
    _check_utf8(table.schema, path)
    return _columns([_decimal_commas(table) if delimiter == ";" else table], target, path)


def _check_utf8(schema: Any, path: Path) -> None:
    """InputError when pyarrow read a column as binary: text that is not UTF-8."""
    import pyarrow as pa

    if any(pa.types.is_binary(t) for t in schema.types):  # pyarrow's type for text that is not UTF-8
        raise _not_utf8(path)


def _decimal_commas(table: Any) -> Any:
    """Text columns of ``;``-separated files that are numbers written with a decimal comma, as numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, column in enumerate(table.columns):
        if pa.types.is_string(column.type):
            try:
                numbers = pc.cast(pc.replace_substring(column, ",", "."), pa.float64())
            except pa.ArrowInvalid:
                continue
            table = table.set_column(i, table.field(i).with_type(pa.float64()), numbers)
    return table


def _sniff_delimiter(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    try:  # an incremental decoder does not fail on a character cut at the end of the sample
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _SNIFF_BYTES)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    text = text.removeprefix("\ufeff")
    sample = text[: text.rfind("\n") + 1] or text  # whole lines only
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:  # one column, or too little text to tell
        return ","


def _not_utf8(path: Path) -> InputError:
    """The error for a file that is not UTF-8, naming the first bad line (read in 1 MB chunks)."""
    decoder, line = codecs.getincrementaldecoder("utf-8")(), 1
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk[: max(exc.start, 0)].count(b"\n")
                break
            line += chunk.count(b"\n")
    return InputError(f"{path}: cannot be read as a table: line {line} is not UTF-8 text; "
                      "save it as UTF-8 (a spreadsheet's \"CSV UTF-8\") or as Parquet")


def _check_csv_header(path: Path, delimiter: str) -> None:
    """Reject duplicate header names, which would otherwise be renamed or lost."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh, delimiter=delimiter), None)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    if not header:
        raise InputError(f"{path}: the file is empty; give a table with a header row and data rows")
    check_unique_names(header, path)


def _check_flat(schema: Any, path: Path) -> None:
    """Reject Parquet columns of lists, structs or maps: no model reads them, and pandas cannot even hash them."""
    import pyarrow as pa

    nested = [f"{spec.name!r} ({str(spec.type).split('<')[0]})" for spec in schema if pa.types.is_nested(spec.type)]
    if nested:
        named = ", ".join(nested[:_NAMED_COLUMNS]) + (f" and {len(nested) - _NAMED_COLUMNS} more"
                                                     if len(nested) > _NAMED_COLUMNS else "")
        raise InputError(f"{path}: column(s) {named} hold lists, structs or maps, which models cannot read; "
                         "flatten them into plain columns of numbers or text, or drop them")


def check_unique_names(names: list[str], source: Path | str) -> None:
    seen: set[str] = set()
    dupes = sorted({str(n) for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dupes:
        raise InputError(f"{source}: duplicate column names {dupes}; rename them so each is unique")
