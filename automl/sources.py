"""Where a table comes from beyond a built-in name: a file, a folder of files, a glob pattern, the newest N days of
them, or a SQL query on a database URL.

:class:`Source` is the one value that says what to read: the dataset argument with ``--query``,
``--newest-days`` and ``--date-column``, checked when built. :func:`read` reads it (each file through
:func:`automl.tables.read_table`); :func:`fingerprint` says cheaply whether what it reads has changed (the
files' paths, sizes and modification times, or a checksum the database computes), for caches; :func:`provenance`
describes what was read, for ``run.json``. Credentials stay out of files: a database URL may hold ``${ENV_VAR}``
placeholders, expanded only to connect, and is written everywhere with its password masked (:func:`mask_url`).

Imported by ``--help`` (through :mod:`automl.config`): pandas, pyarrow and SQLAlchemy load inside the functions.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Source", "as_source", "is_database_url", "mask_url", "expand_url", "is_table_file", "table_files", "read",
           "newest_rows", "fingerprint", "provenance", "describe", "TABLE_SUFFIXES", "KINDS"]

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
#: What a dataset can be (``provenance``'s ``kind``); ``builtin`` and ``frame`` are :mod:`automl.data`'s.
KINDS = ("builtin", "file", "folder", "glob", "sql", "frame")
#: A query is named in errors by this many first characters.
QUERY_SHOWN = 80
#: Rows fetched (and compacted) at a time: a query's result never exists whole as Python objects.
CHUNK_ROWS = 100_000
#: Seconds to wait for a PostgreSQL server (libpq waits forever by default); the URL's ``connect_timeout`` wins.
CONNECT_TIMEOUT = 10
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: A URL, or a whole URL in an environment variable (``${DATABASE_URL}``: no part of it on the command line).
_URL = re.compile(rf"[A-Za-z][A-Za-z0-9+.-]*://|{_PLACEHOLDER.pattern}$")
_SELECT = re.compile(r"[\s(]*(select|with)\b", re.IGNORECASE)
_FROM_TABLE = re.compile(r"\bfrom\s+([\w.\"]+)", re.IGNORECASE)
#: An order-independent checksum of a query's rows, computed by PostgreSQL: no row leaves the server, no sort, no
#: string of the whole result (``string_agg`` would build one, and fails past 1 GB).
_PG_CHECKSUM = ("SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0) "
                "FROM ({query}) AS t")


def is_database_url(text: str) -> bool:
    """Whether ``text`` is a URL (``postgresql://…``, ``sqlite:///…``, or ``${VAR}`` holding one) rather than a name
    or a path."""
    return bool(_URL.match(text))


def mask_url(url: str) -> str:
    """The URL with its password as ``***``: how a database URL is written anywhere (logs, errors, ``run.json``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if _PLACEHOLDER.fullmatch(url):
        return url  # the variable's name, never its value
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not parsed: show no more than the scheme
        return f"{url.split('://')[0]}://…"
    return shown.replace("%24%7B", "${").replace("%7D", "}")  # placeholders as the user wrote them


def expand_url(url: str) -> str:
    """The URL with each ``${NAME}`` replaced by the environment variable NAME (in the user, password, host,
    database or query parameters; or a whole URL ``${DATABASE_URL}``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    def expand(text: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise InputError(f"{mask_url(url)}: the URL names ${{{name}}}, which is not set in the environment; "
                                 f"export {name}, or leave it out of the URL (libpq reads PGUSER, PGPASSWORD, "
                                 "~/.pgpass)")
            return os.environ[name]

        return _PLACEHOLDER.sub(value, text)

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return expand(url)  # a whole URL from the environment; a bad one fails when connecting
    return parsed.set(**{part: expand(getattr(parsed, part)) for part in ("username", "password", "host", "database")
                         if getattr(parsed, part)},
                      query={key: expand(value) if isinstance(value, str) else value
                             for key, value in parsed.query.items()}).render_as_string(hide_password=False)


@dataclass(frozen=True, repr=False)
class Source:
    """What to read: the dataset argument (a built-in name, a file, a folder, a glob pattern or a database URL)
    and the options that say which part of it; checked when built (an :class:`InputError` naming the value)."""

    location: str
    #: The SELECT whose rows are the table, run on the database URL ``location`` (``--query``).
    query: str | None = None
    #: Only the newest N days (``--newest-days``): the rows within N days of ``date_column``'s newest date, or
    #: without a date column the files modified in the last N days.
    newest_days: float | None = None
    date_column: str | None = None

    def __post_init__(self) -> None:
        days, sql = self.newest_days, is_database_url(self.location)
        if days is not None and not 0 < days < math.inf:
            raise InputError(f"--newest-days must be a positive number of days, but got newest_days={days!r}")
        if self.date_column is not None and days is None:
            raise InputError(f"--date-column {self.date_column!r} needs --newest-days N: it keeps the rows within "
                             "N days of the column's newest date")
        if self.query is not None:
            if not sql:
                raise InputError(f"--query needs a database URL as the dataset (postgresql://user@host:5432/db), "
                                 f"but got dataset={self.location!r}")
            query = self.query.strip().rstrip(";").rstrip()  # it is wrapped in a subquery for the checksum
            if not _SELECT.match(query):
                raise InputError(f"--query must be a SELECT (or WITH … SELECT), but got "
                                 f"query={self.query[:QUERY_SHOWN]!r}")
            object.__setattr__(self, "query", query)
        elif sql:
            raise InputError(f"{mask_url(self.location)}: a database URL needs --query 'SELECT …' saying what to read")
        if sql and days is not None and self.date_column is None:
            raise InputError(f"--newest-days {days:g} without --date-column picks files by modification time, which "
                             "a query has not; add --date-column COL")

    def __repr__(self) -> str:  # a URL's password stays out of logs and tracebacks
        return (f"Source({self.shown!r}, query={self.query!r}, newest_days={self.newest_days!r}, "
                f"date_column={self.date_column!r})")

    @property
    def kind(self) -> str:
        """``sql``, ``folder``, ``glob`` or ``file`` (a built-in name looks like a file here: :mod:`automl.data`
        looks names up first)."""
        if is_database_url(self.location):
            return "sql"
        if os.path.isdir(self.location):
            return "folder"
        return "glob" if glob.has_magic(self.location) and not os.path.exists(self.location) else "file"

    @property
    def shown(self) -> str:
        """The location as written in logs and errors: a database URL's password masked."""
        return mask_url(self.location) if self.kind == "sql" else self.location

    @property
    def name(self) -> str:
        """A name for the dataset (the default project): the file's or folder's, the pattern's, the table queried."""
        if self.kind == "sql":
            table = _FROM_TABLE.search(self.query or "")
            if table:
                return table.group(1).replace('"', "").rpartition(".")[2]
            return self.shown.rpartition("/")[2].partition("?")[0] or "query"
        path = Path(self.location)
        if self.kind == "folder":
            return path.resolve().name
        stem = re.sub(r"[*?\[\]]", "", path.stem)
        return stem.strip("-_. ") or path.parent.resolve().name


def as_source(source: Source | str) -> Source:
    """``source`` as a :class:`Source` (a plain dataset argument has no options)."""
    return source if isinstance(source, Source) else Source(str(source))


def is_table_file(path: Path) -> bool:
    """A CSV or Parquet file that a folder or glob source reads."""
    # Hidden files are editors' locks and writers' partial files (".~lock.a.csv#", ".a.csv.tmp"), not data.
    return path.suffix.lower() in TABLE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def table_files(source: Source) -> list[Path]:
    """The files a file, folder or glob source reads, in name order (a folder's own files: not its subfolders');
    with ``newest_days`` and no ``date_column``, those modified in the last N days."""
    if source.kind == "folder":
        found = [p for p in Path(source.location).iterdir() if is_table_file(p)]
        if not found:
            raise InputError(f"{source.location}: no .csv, .parquet or .pq file in it; put the tables there "
                             "(subfolders are not read)")
    elif source.kind == "glob":
        found = [Path(p) for p in glob.glob(source.location) if is_table_file(Path(p))]
        if not found:
            raise InputError(f"{source.location}: matches no .csv, .parquet or .pq file; check the pattern (quote "
                             "it in the shell, so that automl, not the shell, expands it)")
    else:
        found = [Path(source.location)]
        if not found[0].exists():
            return found  # read_table says the file is not found
    found.sort(key=str)
    if source.newest_days is None or source.date_column is not None:
        return found
    since = time.time() - source.newest_days * 86400
    recent = [p for p in found if p.stat().st_mtime >= since]
    if not recent:
        newest = max(found, key=lambda p: p.stat().st_mtime)
        raise InputError(f"{source.location}: no file modified in the last {source.newest_days:g} days (the newest, "
                         f"{newest.name}, on {_modified(newest)[:10]}); raise --newest-days or add --date-column COL")
    return recent


def _modified(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")


def read(source: Source, target: str | None) -> tuple[pd.DataFrame, list[Path]]:
    """The table a file, folder, glob or query source holds, compact (see :func:`automl.tables.compact`), and the
    files read (none for a query); ``date_column``'s window is not applied yet (:func:`newest_rows`)."""
    if source.kind == "sql":
        return _read_sql(source, target), []
    files = table_files(source)
    return _read_files(files, target), files


def _read_files(files: list[Path], target: str | None) -> pd.DataFrame:
    """The files' tables one below the other; each file must have the first one's columns (in any order)."""
    import pandas as pd

    from automl.tables import compact, read_table

    frames: list[pd.DataFrame] = []
    for path in files:
        frame = read_table(path, target)
        if frames:
            columns = list(frames[0].columns)
            missing = [c for c in columns if c not in frame.columns]
            extra = [c for c in frame.columns if c not in columns]
            if missing or extra:
                how = "; ".join(f"{what} {', '.join(map(repr, names[:5]))}{' …' if len(names) > 5 else ''}"
                                for what, names in (("lacks", missing), ("adds", extra)) if names)
                raise InputError(f"{path}: its columns differ from those of {files[0]} ({how}); give every file "
                                 "the same columns, or read them separately")
            frame = frame[columns]
        frames.append(frame)
    if len(frames) == 1:
        return frames[0]
    # Text columns whose files saw different values concatenate as plain objects: compacted again, to categories.
    return compact(pd.concat(frames, ignore_index=True), target)


@contextmanager
def _connection(source: Source) -> Iterator[Any]:
    """A read-only connection to the source's database, closed after; one line for a URL that does not parse,
    a driver that is not installed, a server that does not answer."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    shown, expanded = source.shown, expand_url(source.location)
    try:
        url = make_url(expanded)
        timeout = {"connect_timeout": CONNECT_TIMEOUT} if url.get_backend_name() == "postgresql" and \
            "connect_timeout" not in url.query else {}
        engine = create_engine(url, poolclass=NullPool, connect_args=timeout)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise InputError(f"{shown}: not a database URL SQLAlchemy reads ({_first_line(exc)}); write it as "
                         "dialect://user@host:port/database, e.g. postgresql://user@host:5432/db") from None
    except ModuleNotFoundError as exc:
        raise InputError(f"{shown}: the database driver {exc.name!r} is not installed; install it "
                         "(psycopg2-binary for PostgreSQL)") from None
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            raise InputError(f"{shown}: cannot connect ({_first_line(exc)}); check that the database server is "
                             "running and that the URL, user and password (PGPASSWORD, or ${VAR} in the URL) are "
                             "right") from None
        with connection:
            yield connection.execution_options(postgresql_readonly=True)
    finally:
        engine.dispose()


@contextmanager
def _query_errors(source: Source) -> Iterator[None]:
    """A query the database refuses becomes one line naming the query and the database's reason."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        raise InputError(f"--query {str(source.query)[:QUERY_SHOWN]!r} failed on {source.shown}: "
                         f"{_first_line(exc)}; fix the query") from None


def _first_line(exc: BaseException) -> str:
    """The driver's own message (SQLAlchemy's adds the statement and a link), first line."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _statement(query: str) -> Any:
    """The query as SQLAlchemy text, run as written: colons escaped (not bind parameters); SQLAlchemy escapes
    ``%`` for drivers that format parameters (psycopg2 would read ``LIKE 'a%'`` as one)."""
    from sqlalchemy import text

    return text(query.replace(":", "\\:"))


def _read_sql(source: Source, target: str | None) -> pd.DataFrame:
    """The query's rows, fetched through a server-side cursor and compacted :data:`CHUNK_ROWS` at a time."""
    import pandas as pd

    from automl.tables import check_unique_names, compact

    chunks = []
    with _connection(source) as connection, _query_errors(source):
        result = connection.execution_options(stream_results=True).execute(_statement(str(source.query)))
        columns = list(result.keys())
        check_unique_names(columns, source.shown)
        while rows := result.fetchmany(CHUNK_ROWS):
            # coerce_float: NUMERIC values arrive as Decimal objects; as floats they are numbers to pandas.
            chunks.append(compact(pd.DataFrame.from_records(rows, columns=columns, coerce_float=True), target))
    if not chunks:
        return pd.DataFrame({c: pd.Series(dtype="float32") for c in columns})
    return chunks[0] if len(chunks) == 1 else compact(pd.concat(chunks, ignore_index=True), target)


def _sql_checksum(source: Source) -> str | None:
    """``rows:sum`` of the query's result as PostgreSQL computes it; None for other databases."""
    with _connection(source) as connection, _query_errors(source):
        if connection.dialect.name != "postgresql":
            return None
        rows, total = connection.execute(_statement(_PG_CHECKSUM.format(query=source.query))).one()
    return f"{rows}:{total}"


def newest_rows(frame: pd.DataFrame, source: Source, where: str) -> pd.DataFrame:
    """The rows whose ``date_column`` lies within ``newest_days`` days of its newest date (a row without a date
    cannot be placed in the window and is dropped); the frame itself without a date column."""
    import pandas as pd

    column = source.date_column
    if column is None:
        return frame
    if column not in frame.columns:
        raise InputError(f"{where}: --date-column {column!r} not found; columns are: "
                         f"{', '.join(map(str, frame.columns))}")
    dates = _as_dates(frame[column], column, where)
    if dates.isna().all():
        raise InputError(f"{where}: --date-column {column!r} is empty in every row; choose a column of dates")
    keep = (dates >= dates.max() - pd.Timedelta(days=float(source.newest_days or 0))).to_numpy()
    return frame[keep].reset_index(drop=True)


def _as_dates(values: pd.Series, column: str, where: str) -> pd.Series:
    """The column as dates: date/time columns as they are, text parsed (each distinct value once, as UTC)."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    text = values if isinstance(values.dtype, pd.CategoricalDtype) else None
    if text is None and pd.api.types.is_numeric_dtype(values.dtype):
        raise InputError(f"{where}: --date-column {column!r} holds numbers, not dates; choose a column of dates "
                         "such as 2026-12-01 (counts of seconds or days are not read as dates)")
    text = text if text is not None else values.astype("category")
    categories = text.cat.categories.astype(str)
    parsed = pd.to_datetime(pd.Series(categories), errors="coerce", format="mixed", utc=True)
    if parsed.isna().any():
        bad = categories[int(np.argmax(parsed.isna().to_numpy()))]
        row = int(np.argmax((text.astype(str) == bad).to_numpy()))
        raise InputError(f"{where}: --date-column {column!r} holds {bad!r} in row {values.index[row] + 1}, not a "
                         "date; fix it, leave it blank, or choose another column")
    stamps = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    codes = text.cat.codes.to_numpy()
    return pd.Series(np.where(codes >= 0, stamps[codes], np.datetime64("NaT")), index=values.index)


def _file_facts(files: list[Path]) -> list[dict[str, Any]]:
    return [{"path": str(p.resolve()), "bytes": p.stat().st_size, "modified": _modified(p)} for p in files]


def _digest(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(source: Source) -> str | None:
    """A cheap digest of what :func:`read` would read, for caches: the files' paths, sizes and modification times
    (never their bytes: a folder may hold gigabytes), or the masked URL, the query and a checksum of its rows
    that PostgreSQL computes. None when that cannot be told (another database, a source that fails to read):
    then nothing is cached, and reading says what is wrong."""
    try:
        if source.kind == "sql":
            state: Any = _sql_checksum(source)
            if state is None:
                return None
        else:
            state = [[str(p.resolve()), st.st_size, st.st_mtime_ns] for p in table_files(source)
                     for st in [p.stat()]]
    except (InputError, OSError):
        return None
    return _digest([source.kind, source.shown, source.query, source.newest_days, source.date_column, state])


def provenance(kind: str, location: str, source: Source | None, files: list[Path], rows_read: int, rows: int,
               source_fingerprint: str | None) -> dict[str, Any]:
    """What was read, as plain JSON: ``kind`` (one of :data:`KINDS`), ``location`` (a path, pattern, name, or a
    database URL with its password masked), ``files`` (path, bytes, modified), ``query``, ``newest_days``,
    ``date_column``, ``rows_read``, ``rows`` (after the date window) and the source's ``fingerprint``."""
    return {"kind": kind, "location": location, "files": _file_facts(files),
            "query": source.query if source else None, "newest_days": source.newest_days if source else None,
            "date_column": source.date_column if source else None, "rows_read": int(rows_read), "rows": int(rows),
            "fingerprint": source_fingerprint}


def describe(read_: dict[str, Any]) -> str:
    """One line for the event log: what a :func:`provenance` says was read."""
    if read_["kind"] == "sql":
        what = f"query {str(read_['query'])[:QUERY_SHOWN]!r} on {read_['location']}: {read_['rows_read']:,} rows"
    else:
        size = sum(f["bytes"] for f in read_["files"])
        what = f"{len(read_['files'])} file(s) of {read_['location']} ({size:,} bytes): {read_['rows_read']:,} rows"
    if read_["date_column"] is not None:
        what += (f", {read_['rows']:,} within {read_['newest_days']:g} days of the newest "
                 f"{read_['date_column']!r}")
    elif read_["newest_days"] is not None:
        what += f" (files modified in the last {read_['newest_days']:g} days)"
    return what
