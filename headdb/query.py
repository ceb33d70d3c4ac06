"""Ad-hoc SQL over the store, and exports to CSV / JSON / Parquet."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import pandas as pd

from headdb.db import connect
from headdb.errors import CLI_NAMES, DatabaseError, InputError, yes_no

EXPORT_FORMATS = ("csv", "json", "parquet")


def sql(db: str | Path, query: str, params: list | dict | None = None, *, write: bool = False) -> pd.DataFrame:
    """Run one SQL statement on the store and return its rows.

    Read-only unless ``write``. On a read-only connection the score views of the built-in
    roles (``scores_<role>``, ``sieve_<role>``) are available too. ``params``: values for the
    query's ``?`` / ``$1`` (a list) or ``$name`` (a dict) parameters, never spliced into its text.
    """
    write = yes_no("write", write)  # write="no" was taken as True
    with _executed(db, query, params, write) as (con, description):
        if description is None:
            return pd.DataFrame()
        types = [str(d[1]) for d in description]
        _readable(types, [str(d[0]) for d in description])
        if any(_exact_only(t) for t in types):
            table = _executed_arrow(query, write, con.to_arrow_table)
            return _exact_frame(table, types, [str(d[0]) for d in description])
        return _fetching(query, write, con.df)


@contextlib.contextmanager
def _store(db: str | Path, write: bool, capped: bool = False):
    """A connection to the store, read-only with the score views unless ``write``; closed on
    leaving, whatever happens. ``capped`` (a read-only one): DuckDB's memory, its cache of the
    blocks it reads included, capped as for classify's long reads (:func:`headdb.db.memory_limit_mb`):
    without a cap DuckDB keeps every block a streaming export reads, up to 80% of RAM, so
    ``sql --out`` of the edges grew with the store (peak RSS 341 MB for 19 M edges, 527 MB for
    57 M; a query that needs more spills to disk)."""
    if capped and not write:
        from headdb.db import connect_capped, memory_limit_mb

        con = connect_capped(db, memory_limit_mb())
    else:
        con = connect(db, read_only=not write, existing=True)
    try:
        if not write:
            try:
                from headdb.scores import register_views

                register_views(con)
            except ImportError:  # pragma: no cover - scores module absent in old checkouts
                pass
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def _executed(db: str | Path, query: str, params: list | dict | None, write: bool):
    """A connection to the store with ``query`` run on it (its first rows ready) and the result's
    description (None for a statement without rows)."""
    _one_statement(query)
    _check_params(query, params)
    with _store(db, write) as con:
        yield con, _execute(con, query, params, write)


def _execute(con, query: str, params: list | dict | None, write: bool):
    """Run ``query`` on ``con``: its result's description, or None for a statement without rows."""
    rel = _fetching(query, write, con.execute, query, _plain(params) or [])
    return None if rel is None else rel.description


def _sql_error(exc: Exception, query: str, write: bool) -> BaseException:
    """DuckDB's error as headdb's, with a hint; Ctrl-C inside a statement stays itself."""
    from headdb.db import interrupted

    if interrupted(exc):
        return exc
    return DatabaseError(f"SQL error: {str(exc).strip()}{_hint(str(exc), query, write)}")


def _fetching(query: str, write: bool, fetch, *args, **kwargs):
    """``fetch(*args, **kwargs)``: the query run, or rows of it running, whose errors (a failed
    cast in a later row) may come only now, as the query's own."""
    import duckdb

    try:
        return fetch(*args, **kwargs)
    except duckdb.Error as exc:
        raise _sql_error(exc, query, write) from None


def _executed_arrow(query: str, write: bool, fetch, *args):
    """``fetch(*args)``: the rows of a result already executed, as Arrow (``to_arrow_table`` or
    ``to_arrow_reader`` of its connection), without DuckDB's warning that this makes "an extra
    copy of the rows": they are those of the query's result, copied once."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _fetching(query, write, fetch, *args)


def _plain(params: list | dict | None) -> list | dict | None:
    """``params`` with numpy scalars (a value read from a DataFrame, ``df["run_id"][0]``) as the
    Python values DuckDB takes: it refused them ("Unable to transform python value of type
    numpy.int32")."""
    import numpy as np

    def plain(v):
        return v.item() if isinstance(v, np.generic) else v

    if isinstance(params, dict):
        return {k: plain(v) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return [plain(v) for v in params]
    return params


def _check_params(query: str, params: list | dict | None) -> None:
    """Named parameters (``$run``) given and used alike, or InputError naming the one that is
    not: a typo (``--param rnu=3``) would otherwise say only that a value is missing."""
    import duckdb

    if params is not None and not isinstance(params, (list, tuple, dict)):  # DuckDB said "Prepared parameters
        # can only be passed as a list or a dictionary" for a string, and an int was a TypeError here
        raise InputError(f"params must be a list (for ? or $1) or a dict (for $name), not {params!r}")
    if isinstance(params, (list, tuple)) and params:
        return  # positional values: DuckDB counts them
    try:
        used = set().union(*(s.named_parameters for s in duckdb.extract_statements(query)))
    except duckdb.Error:  # a syntax error: DuckDB reports it when the query runs
        return
    used = {name.lower(): name for name in used}  # DuckDB's names ignore case, as its identifiers do
    given = {str(name).lower(): name for name in params or {}}
    named = sorted(name for key, name in used.items() if not key.isdigit())

    cli = CLI_NAMES.get()  # from Python the message names params, not the command line's --param

    def listing() -> str:
        if not used:
            return "it has no parameters"
        if not named:
            how = "as --param 1=VALUE" if cli else "in a list, params=[...]"
            return f"its parameters are numbered (? or $1): give them {how}, or name them $name"
        return "its parameters: " + ", ".join(f"${n}" for n in named)

    for key in sorted(set(given) - set(used)):
        raise InputError(f"a value is given for ${given[key]}, which the query does not use ({listing()})")
    for key in sorted(set(used) - set(given)):  # a numbered one (? is $1) too: DuckDB named no option
        python = f"params=[...] or {{{used[key]!r}: ...}}" if key.isdigit() else f"params={{{used[key]!r}: ...}}"
        how = f"--param {used[key]}=VALUE" if cli else python
        raise InputError(f"the query uses ${used[key]}, which has no value: give it as {how}")


#: DuckDB's 128-bit integers (sum() of integers gives HUGEINT), which its DataFrames turn into
#: floats: 2009.0, and 12345678901234567890 rounded.
_WIDE_INTEGERS = ("HUGEINT", "UHUGEINT")


def _exact_only(duckdb_type: str) -> bool:
    """Types whose values DuckDB's DataFrames change: 128-bit integers and DECIMALs become floats,
    INTERVALs lose their months, BIT its bits, and lists hold numpy masked arrays (a NULL inside
    became 0 in Parquet and "--" in CSV)."""
    return duckdb_type in _WIDE_INTEGERS or duckdb_type in ("INTERVAL", "BIT") or duckdb_type.startswith("DECIMAL") \
        or _nested(duckdb_type)


def _readable(types: list[str], names: list[str]) -> None:
    """Refuse a result with a TIME WITH TIME ZONE column, whose values DuckDB's Python client
    cannot hand over as they are: its DataFrames refuse the type ("Unsupported type"), and
    through Arrow, beside a list or a 128-bit column, each value lost its offset (01:02:03+05
    came out as 01:02:03, in the table, CSV, JSON and Parquet alike)."""
    timetz = [name for name, kind in zip(names, types) if "TIME WITH TIME ZONE" in kind]
    if timetz:
        raise InputError(f"{', '.join(timetz)} is TIME WITH TIME ZONE, which DuckDB's Python client cannot give "
                         f"with its offset; cast it in the query ({timetz[0]}::VARCHAR)")


def _nested(duckdb_type: str) -> bool:
    """Lists and fixed-size arrays (``INTEGER[]``, ``INTEGER[2]``), structs, maps and unions."""
    return duckdb_type.startswith(("STRUCT(", "MAP(", "UNION(")) or duckdb_type.endswith("]")


def _one_statement(query: str) -> None:
    """Refuse an empty query, or several statements (only the last one's rows would show)."""
    import duckdb

    if not isinstance(query, str):  # DuckDB's "extract_statements(): incompatible function arguments"
        raise InputError(f"query must be one SQL statement as text, not {query!r}")
    try:
        n = len(duckdb.extract_statements(query))
    except duckdb.Error:  # a syntax error: DuckDB reports it when the query runs
        return
    if n == 0:
        raise InputError("no SQL statement given")
    if n > 1:
        raise InputError(f"one SQL statement at a time, not {n}; run them one by one")


def _exact_frame(table, types: list[str], names: list[str]) -> pd.DataFrame:
    """A result from Arrow (``types``: its DuckDB column types; ``names``: its column names, which
    Arrow makes distinct), every value as DuckDB holds it.
    128-bit integers: int64 where every value fits, Python ints otherwise (UHUGEINT comes as the
    same 128 bits as HUGEINT: above 2**127 it read negative). DECIMALs: Python Decimals. Lists,
    structs, maps and unions: Python lists, dicts and values, a NULL inside as None. INTERVALs:
    ISO 8601 text (P1M2DT0H0M3S; months are not days). BIT: its bits as text. Integers with NULLs:
    pandas' nullable integers (not floats)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = {}  # by position: a result may repeat a name
    for name, column in enumerate(table.columns):
        kind = types[name]
        if kind == "INTERVAL":
            columns[name] = pd.Series([None if v is None else _iso_interval(v) for v in column.to_pylist()], dtype=object)
            continue
        if kind == "BIT":  # DuckDB's bytes: the number of padding bits, then the bits
            columns[name] = pd.Series([None if v is None else "".join(f"{b:08b}" for b in v[1:])[v[0]:]
                                       for v in column.to_pylist()], dtype=object)
            continue
        if _nested(kind) or (pa.types.is_decimal(column.type) and column.type.scale > 0):
            columns[name] = pd.Series([_python(v, kind.startswith("MAP(")) for v in column.to_pylist()], dtype=object)
            continue
        if kind == "UHUGEINT":
            columns[name] = pd.Series([None if v is None else int(v) % 2**128 for v in column.to_pylist()],
                                      dtype=object)
            if all(v is None or v < 2**63 for v in columns[name]):
                columns[name] = pd.Series(columns[name].tolist(), dtype="Int64") if columns[name].isna().any() \
                    else columns[name].astype("int64")
            continue
        if pa.types.is_decimal(column.type) and column.type.scale == 0:
            try:
                ints = pc.cast(column, pa.int64())
            except (pa.ArrowInvalid, OverflowError):  # beyond 64 bits
                columns[name] = pd.Series([None if v is None else int(v) for v in column.to_pylist()], dtype=object)
                continue
            columns[name] = pd.Series(ints.to_pylist(), dtype="Int64") if ints.null_count else ints.to_pandas()
        elif pa.types.is_integer(column.type) and column.null_count:
            columns[name] = column.to_pandas(types_mapper=lambda t: pd.Int64Dtype() if pa.types.is_integer(t) else None)
        else:
            columns[name] = column.to_pandas()
    frame = pd.DataFrame(columns)
    frame.columns = distinct_names(names)
    return frame


def distinct_names(names: list[str]) -> list[str]:
    """Column names made distinct as DuckDB's own DataFrames make them (a repeated ``i`` becomes
    ``i_1``, ``i_2``; names compare without case), so that a result has the same columns whether
    it comes through DuckDB's DataFrames or through Arrow, which keeps a repeated name."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        low = name.lower()
        if low not in seen:
            seen[low] = 1
            out.append(name)
            continue
        renamed = f"{name}_{seen[low]}"
        while renamed.lower() in seen:  # taken by a column of that name: the next number
            seen[low] += 1
            renamed = f"{name}_{seen[low]}"
        seen[renamed.lower()] = 1
        out.append(renamed)
    return out


def text_ready(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its nested values (lists, dicts: what :func:`sql` gives for DuckDB's lists,
    structs and maps) as JSON text (``[1,null,3]``), and its BLOBs as DuckDB's text of them
    (``\\xAA\\x00A``), for CSV and the terminal: Python's text of them (``[1, None, 3]``,
    ``bytearray(b'\\xaa\\x00A')``) is no format another tool reads."""
    import json

    def text(v):
        if isinstance(v, (list, dict)):
            return json.dumps(_json_value(v), ensure_ascii=False, separators=(",", ":"))
        return blob_text(v) if isinstance(v, (bytes, bytearray)) else v

    nested = [i for i in range(df.shape[1]) if df.dtypes.iloc[i] == object
              and any(isinstance(v, (list, dict, bytes, bytearray)) for v in df.iloc[:, i])]
    if not nested:
        return df
    out = df.copy()
    for i in nested:
        out.isetitem(i, [text(v) for v in df.iloc[:, i]])
    return out


#: each byte as DuckDB writes a BLOB as text: printable ASCII as itself, but for the backslash and
#: the quotes; any other byte as \xHH
_BLOB_BYTES = [chr(b) if 32 <= b < 127 and chr(b) not in "\\'\"" else f"\\x{b:02X}" for b in range(256)]


def blob_text(value: bytes | bytearray) -> str:
    """A BLOB as DuckDB's ``value::VARCHAR`` gives it (``\\xAA\\x00A``)."""
    return "".join(map(_BLOB_BYTES.__getitem__, value))


def _iso_interval(v) -> str:
    """An Arrow MonthDayNano as ISO 8601 (P14M2DT0H0M3.5S): months, days and time kept apart,
    as DuckDB keeps them."""
    rest = pd.Timedelta(days=v.days, nanoseconds=v.nanoseconds).isoformat()  # P1DT0H0M1S, as pandas writes it
    return rest if v.months == 0 else f"P{v.months}M{rest[1:]}"


def _python(v, is_map: bool = False):
    """A nested value from Arrow's to_pylist: maps (lists of key/value pairs) as dicts."""
    if is_map and isinstance(v, list):
        return {key: value for key, value in v}
    return v


def _hint(message: str, query: str, write: bool) -> str:
    """What to do about the errors a user of the store meets most."""
    import re

    if "read-only mode" in message and not write:
        return " (the store opens read-only; add --write, or write=True, to change it)"
    if re.search(r"Table with name (scores|sieve)_\w+ does not exist", message):
        if write:
            return (" (the views scores_<role> and sieve_<role> are on the read-only connection: leave out --write, "
                    "or write=False)")
        return (" (the views scores_<role> and sieve_<role> are those of the built-in roles; "
                "headdb.scores(db, run, roles, roles_dir) scores your own)")
    if "Parser Error" in message and _names_a_file(query):  # `headdb sql DB query.sql`
        how = f'`headdb sql DB "$(cat {query.strip()})"`' if CLI_NAMES.get() else f"Path({query.strip()!r}).read_text()"
        # on a line of its own, below DuckDB's pointer into the query
        return f"\n(the query is SQL text, and {query.strip()} is a file: to run the SQL in it, pass its text: {how})"
    writes_edges = re.search(r"\b(update|into|from)\s+(main\.)?\"?edges\b", query, re.I)
    if ("base table" in message or "is not an table" in message) and writes_edges:
        return (" (edges is a view that reads the tables edge_store (float32 weights) and edge_store16 "
                "(16-bit weights); delete, update or insert rows of edge_store or edge_store16"
                # DuckDB binds before it checks the mode: the read-only store would be the next error
                + ("" if write else ", with --write, or write=True: the store opens read-only") + ")")
    return ""


def _names_a_file(query: str) -> bool:
    import os.path

    return "\n" not in query.strip() and os.path.isfile(query.strip())


def check_export(out: str | Path, db: str | Path | None = None) -> str:
    """The export format named by ``out``'s extension (csv, json or parquet), once it is clear that
    the file can be written there, or InputError; the commands call it before any work, so that
    a bad ``--out`` never comes after the results are stored. ``db``: the store the command reads,
    which the export must not replace (``headdb sql s.parquet ... --out s.parquet`` put the rows
    in place of the store)."""
    import os

    text = str(out)
    if isinstance(out, str) and text.endswith(tuple({"/", os.sep, os.altsep} - {None})):
        # Path drops the separator: export(df, "x.csv/") wrote the file x.csv (as --out did, cli._export_file)
        raise InputError(f"ends with '{text[-1]}', so it names a folder; name the file to write", text)
    out = Path(out)
    if out.is_dir():  # before the extension: a folder `results` was "cannot export to 'no extension'"
        raise InputError("is a folder; name the file to write", out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"cannot export to {out.suffix or 'no extension'!r}; use .csv, .json or .parquet", out)
    _check_not_the_store(out, db)
    folder = out.absolute().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # the root exists
    if not existing.is_dir():
        raise InputError(f"cannot write there: {existing} is a file, not a folder", out)
    if existing == folder:  # try it: permissions, read-only or virtual file systems (/proc)
        probe = _aside(out, ".tmp")
        try:
            probe.open("wb").close()
            probe.unlink()
        except OSError as exc:
            raise InputError(f"cannot write there: {exc.strerror or exc}", out) from None
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot create its folder: {existing} is not writable", out)
    return fmt


def _check_not_the_store(out: Path, db: str | Path | None) -> None:
    """InputError where ``out``, or a file its export writes on the way (``.tmp``; Parquet's
    ``.tmp.wider``), is the database file ``db``: the export would replace, truncate or remove it."""
    import os

    if not isinstance(db, (str, Path)) or str(db) == ":memory:":
        return
    store = Path(db)
    tmp = _aside(out, ".tmp")
    for path in (out, tmp, _aside(tmp, ".wider")):
        try:
            same = os.path.samefile(path, store)
        except OSError:  # one of them is missing: the same path, or not the same file
            same = path.absolute() == store.absolute()
        if same:
            where = "is" if path == out else f"would be written through {path.name}, which is"
            raise InputError(f"{where} the database file {db}; name another file to write", out)


def _aside(path: Path, suffix: str) -> Path:
    """The file an export writes on the way to ``path``: ``OUT.tmp`` (:func:`_whole_file`), and
    the rewritten ``OUT.tmp.wider`` of a Parquet schema that widens (:class:`_ParquetBatches`),
    which :func:`_check_not_the_store` keeps off the store."""
    return path.with_name(path.name + suffix)


def json_text(df: pd.DataFrame, indent: int | None = None) -> str:
    """``df`` as a JSON array of records (:func:`json_records`)."""
    import json

    return json.dumps(json_records(df), indent=indent, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def json_records(df: pd.DataFrame) -> list[dict]:
    """``df`` as JSON-ready records, every float exact: the shortest text that reads back as
    the same double (Python's repr; pandas' to_json keeps at most 15 significant digits, so
    0.1 + 0.2 came out as 0.3). JSON has no number for infinities: they are the strings
    "Infinity" and "-Infinity" (pandas wrote null, the same as NaN, where compare's t = +-inf,
    p = 0 would read as "no test"); JavaScript's Number() and Python's float() read them back.
    NaN and missing values are null; times are ISO 8601; other values (UUIDs, blobs) their text."""
    columns = [str(c) for c in df.columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:  # a JSON record holds each name once: the later column silently replaced the earlier
        raise InputError(f"the result has more than one column named {', '.join(repeated)}; JSON records need "
                         "distinct names (rename them with AS)")
    values = [_json_column(df.iloc[:, i]) for i in range(len(columns))]
    return [dict(zip(columns, row)) for row in zip(*values)] if columns else [{} for _ in range(len(df))]


def _json_column(col: pd.Series) -> list:
    """A column's values for JSON: plain numbers by numpy's tolist() (fast: a 300,000-row
    export took 3.2 s cell by cell), anything else, and every non-finite float, value by value."""
    import numpy as np

    kind = col.dtype.kind if isinstance(col.dtype, np.dtype) else None
    if kind in ("i", "u", "b"):
        return col.to_numpy().tolist()
    if kind == "f":
        arr = col.to_numpy()
        # a FLOAT column (edges.weight) by its own shortest text, as CSV gives it (0.48921964), not
        # by the double's (0.48921963572502136): the same value either way
        out = [float(x) for x in arr.astype(str)] if arr.dtype == np.float32 else arr.tolist()
        if not np.isfinite(arr).all():
            for i in np.flatnonzero(~np.isfinite(arr)).tolist():
                out[i] = _json_value(out[i])
        return out
    return [_json_value(v) for v in col.tolist()]


def _json_value(v):
    import datetime
    import decimal
    import math

    import numpy as np

    if v is None or v is pd.NA or v is pd.NaT or v is np.ma.masked:  # masked: a NULL inside a DuckDB list
        return None
    if isinstance(v, np.datetime64):
        return None if np.isnat(v) else pd.Timestamp(v).isoformat()  # nanoseconds too (item() gave an int)
    if isinstance(v, np.timedelta64):
        return None if np.isnat(v) else pd.Timedelta(v).isoformat()
    if isinstance(v, np.generic):
        v = v.item()
        if v is None:
            return None
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return v if math.isfinite(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, (bytes, bytearray)):  # a BLOB: DuckDB's text of it
        return blob_text(v)
    if isinstance(v, decimal.Decimal):  # a number where a double holds it exactly, else its digits as text
        if v == v.to_integral_value():
            return int(v)
        return float(v) if decimal.Decimal(float(v)) == v or decimal.Decimal(repr(float(v))) == v.normalize() \
            else str(v)
    if isinstance(v, datetime.timedelta):  # an INTERVAL: ISO 8601, as pandas wrote it (P1DT0H0M1S)
        return pd.Timedelta(v).isoformat()
    if isinstance(v, pd.DateOffset):  # an INTERVAL with months, through Arrow
        kw = v.kwds
        return (f"P{kw.get('months', 0)}M{kw.get('days', 0)}DT"
                f"{pd.Timedelta(kw.get('nanoseconds', 0), unit='ns').total_seconds():g}S")
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return str(v)


def _parquet_table(df: pd.DataFrame):
    """``df`` as an Arrow table for Parquet, with columns of Python integers beyond 64 bits (what
    :func:`sql` gives for large 128-bit results) as exact decimals: decimal128(38, 0), which
    DuckDB reads back as an exact DECIMAL; a column with a value of 39 digits (the largest
    128-bit integers) as the digits' text."""
    import decimal

    import pyarrow as pa

    wide = {c for c in df.columns if df[c].dtype == object and _big_ints(df[c])}
    if not wide:
        try:
            return pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            # a column of values of several types (a UNION's members): pyarrow's traceback
            raise InputError(f"cannot write the rows as Parquet: {exc}; cast the column to one type in "
                             "the query, or write .csv or .json") from None
    arrays, names = [], []
    for c in df.columns:
        if c in wide:
            digits = max(len(str(abs(v))) for v in df[c] if v is not None)
            if digits <= 38:
                arrays.append(pa.array([None if v is None else decimal.Decimal(v) for v in df[c]],
                                       pa.decimal128(38, 0)))
            else:  # decimal256 would be exact in pyarrow, but DuckDB reads it as DOUBLE: digits as text
                arrays.append(pa.array([None if v is None else str(v) for v in df[c]], pa.string()))
        else:
            arrays.append(pa.Array.from_pandas(df[c]))
        names.append(str(c))
    return pa.Table.from_arrays(arrays, names=names)


def _big_ints(col: pd.Series) -> bool:
    """Python integers (no booleans) or None only, one of them beyond int64."""
    values = [v for v in col if v is not None]
    return bool(values) and all(isinstance(v, int) and not isinstance(v, bool) for v in values) \
        and any(not -(2**63) <= v < 2**63 for v in values)


def export(df: pd.DataFrame, out: str | Path) -> Path:
    """Write a DataFrame as CSV, JSON (records, :func:`json_text`: exact floats, infinities as
    "Infinity" and "-Infinity", values JSON has no type for, such as UUIDs, as text) or Parquet
    (integers beyond 64 bits as exact decimals, or as text from 39 digits), chosen by the file
    extension. The file appears whole or not at all; a failure leaves nothing behind."""
    if not isinstance(df, pd.DataFrame):  # "'str' object has no attribute 'columns'", after the file was begun
        raise InputError(f"export writes a pandas DataFrame (what sql(), classify() and the analysis functions "
                         f"return), not {type(df).__name__}; for a query's rows use export_sql(db, query, out)")
    fmt = check_export(out)
    out = Path(out)
    with _whole_file(out) as tmp:
        if fmt == "csv":
            # lines end in "\n" everywhere (pandas ends them in os.linesep: "\r\n" on Windows, where
            # export_sql's batches ended in "\n", the ones pandas wrote in "\r\n")
            text_ready(df).to_csv(tmp, index=False, lineterminator="\n")
        elif fmt == "json":
            tmp.write_text(json_text(df, indent=1) + "\n", encoding="utf-8")
        else:
            import pyarrow.parquet as pq

            pq.write_table(_parquet_table(df), tmp)
    return out


@contextlib.contextmanager
def _whole_file(out: Path):
    """Where to write ``out``: ``OUT.tmp``, put in its place once the block ends, so that the file
    appears whole or not at all. An error or Ctrl-C removes it and the folders made for it (an
    earlier file of that name stays as it was); an OSError becomes InputError naming ``out``."""
    tmp = _aside(out, ".tmp")
    missing = [p for p in (out.absolute().parent, *out.absolute().parent.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        tmp.replace(out)  # never leave half a file under the real name
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        for folder in missing:  # deepest first; one that holds something else now stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, OSError):
            raise InputError(f"cannot write the export: {exc.strerror or exc}", out) from None
        raise


#: Rows in a batch of :func:`export_sql`. Parquet: a row group each, of pyarrow's default size
#: (1,048,576 rows: the edges of an EWT run in groups of DuckDB's 131,072 rows took 28% more
#: space). CSV: DuckDB's Arrow batch (64 vectors of 2,048 rows). JSON records take about 1.8 KB
#: a row in Python: 8 vectors.
_BATCH_ROWS = {"csv": 2048 * 64, "parquet": 2048 * 512, "json": 2048 * 8}


def export_sql(db: str | Path, query: str, out: str | Path, params: list | dict | None = None, *,
               write: bool = False, batch_rows: int | None = None,
               progress: Callable[[int], None] | None = None) -> int:
    """Run one SQL statement, as :func:`sql` does, and write its rows to ``out``, as :func:`export`
    writes :func:`sql`'s DataFrame, a batch at a time: memory holds a batch, not the result
    (``SELECT * FROM edges`` of an EWT run is 19 M rows). Returns the number of rows written;
    ``progress(rows)`` is called after each batch. The file appears whole or not at all: an error
    or Ctrl-C leaves nothing behind, and an earlier file of that name as it was.

    The file is :func:`export`'s, whatever the batches: CSV and JSON byte for byte, with one
    exception: in CSV a timestamp's text is its own (``2024-01-01 00:00:00``, fractions by value),
    where pandas chose one format for a column (dates only where every value was midnight, one
    number of fraction digits), which could change from batch to batch. Parquet: the same column
    types and values, in row groups of the batches (of pyarrow's own size, so that the edges of
    an EWT run came out byte for byte the same)."""
    _check_batch_rows(batch_rows)
    fmt = check_export(out, db)
    out = Path(out)
    rows = batch_rows or _BATCH_ROWS[fmt]
    _one_statement(query)
    write = yes_no("write", write)
    _check_params(query, params)
    with _whole_file(out) as tmp:
        return _write_rows(db, query, params, write, rows, lambda types: _WRITERS[fmt](tmp, types), progress)


def sql_head(db: str | Path, query: str, rows: int, params: list | dict | None = None, *,
             write: bool = False) -> tuple[pd.DataFrame, bool]:
    """The first ``rows`` rows of one SQL statement, as :func:`sql` gives them, and whether the
    result has more; DuckDB is asked for one row more, not for the whole result (the terminal
    table of ``headdb sql``)."""
    if rows < 1:
        raise InputError(f"rows must be at least 1, not {rows!r}")
    _one_statement(query)
    _check_params(query, params)
    with _store(db, write) as con:
        _, frames = _batches(con, query, params, write, rows + 1)
        try:
            first = next(frames)
        finally:
            frames.close()
    return first.iloc[:rows], len(first) > rows


def write_sql(db: str | Path, query: str, file: TextIO, format: str = "csv", params: list | dict | None = None, *,
              write: bool = False, batch_rows: int | None = None,
              progress: Callable[[int], None] | None = None) -> int:
    """Run one SQL statement, as :func:`sql` does, and write its rows to ``file``, an open text
    stream (``headdb sql -f csv`` and ``-f json`` write to stdout this way), a batch at a time:
    memory holds a batch, not the result. ``format``: ``csv``, the bytes :func:`export_sql` writes
    to a .csv file, or ``json``, :func:`json_text`'s one line (an array of records) and a newline.
    Returns the number of rows written. Unlike a file, a stream keeps what was written before an
    error in a later row."""
    if format not in ("csv", "json"):
        raise InputError(f"format must be csv or json, not {format!r}")
    _check_batch_rows(batch_rows)
    _one_statement(query)
    write = yes_no("write", write)
    _check_params(query, params)
    make = (lambda types: _CsvBatches(file, types)) if format == "csv" else (lambda types: _JsonBatches(file, types, None))
    return _write_rows(db, query, params, write, batch_rows or _BATCH_ROWS[format], make, progress)


def _check_batch_rows(batch_rows: int | None) -> None:
    if batch_rows is not None and batch_rows < 1:  # 0 or less never filled a batch: it looped for ever
        raise InputError(f"batch_rows must be at least 1, not {batch_rows!r}")


def _write_rows(db: str | Path, query: str, params: list | dict | None, write: bool, rows: int,
                make_writer: Callable, progress: Callable[[int], None] | None) -> int:
    """The rows of ``query`` on the store, ``rows`` at a time, through the batch writer that
    ``make_writer(types)`` gives; returns how many."""
    written = 0
    with _store(db, write, capped=True) as con:
        types, frames = _batches(con, query, params, write, rows)
        try:
            writer = make_writer(types)
            try:
                for df in frames:
                    writer.write(df)
                    written += len(df)
                    if progress is not None:
                        progress(written)
                writer.finish()
            finally:
                writer.close()
        finally:
            # the reader, before its connection closes, also where the file could not be opened:
            # a generator never closed kept it, and so the store, open while its error was kept
            frames.close()
    return written


def _batches(con, query: str, params: list | dict | None, write: bool, rows: int):
    """The result's column types, and its rows ``rows`` at a time, each batch as :func:`sql` gives
    the whole result: DuckDB's DataFrames (``fetch_df_chunk`` of the running query), or
    :func:`_exact_frame` of its Arrow batches. Those come from a relation where the statement is a
    SELECT (the reader of an executed result holds a copy of every row: a peak of 1.2 GB for the
    edges of an EWT run beside a 128-bit column, 0.5 GB from a relation); a statement that writes
    runs once."""
    import duckdb

    try:
        select = duckdb.extract_statements(query)[-1].type == duckdb.StatementType.SELECT
    except duckdb.Error:  # a syntax error: DuckDB reports it when the query runs
        select = False
    if select:
        rel = _fetching(query, write, con.sql, query, params=_plain(params) or None)  # bound, not yet run
        types = [str(d[1]) for d in rel.description]
        _readable(types, [str(d[0]) for d in rel.description])
        if any(_exact_only(t) for t in types):
            reader = _fetching(query, write, rel.to_arrow_reader, rows)
            return types, _arrow_frames(reader, query, write, types, [str(d[0]) for d in rel.description], rows)
    description = _execute(con, query, params, write)
    if description is None:
        return [], (df for df in [pd.DataFrame()])  # a statement without rows: as sql() gives it
    types = [str(d[1]) for d in description]
    _readable(types, [str(d[0]) for d in description])
    if any(_exact_only(t) for t in types):
        reader = _executed_arrow(query, write, con.to_arrow_reader, rows)
        return types, _arrow_frames(reader, query, write, types, [str(d[0]) for d in description], rows)
    return types, _data_frames(con, query, write, rows)


def _data_frames(con, query: str, write: bool, rows: int) -> Iterator[pd.DataFrame]:
    """The executed query's rows as DuckDB's DataFrames, ``rows`` at a time (DuckDB's chunks can
    be a few rows short: joined, as Parquet's row groups are then those of the whole result); the
    first even when empty, as it carries the columns."""
    vectors = max(1, rows // 2048)  # DuckDB's vectors of 2,048 rows
    held: list[pd.DataFrame] = []  # fetched, not yet given
    first = True
    while True:
        df = _fetching(query, write, con.fetch_df_chunk, vectors)
        done = not len(df)
        if done and first and not held:
            yield df
            return
        if not done:
            held.append(df)
        while held and (done or sum(map(len, held)) >= rows):
            whole = held[0] if len(held) == 1 else pd.concat(held, ignore_index=True)
            yield whole.iloc[:rows]
            held, first = ([whole.iloc[rows:]] if len(whole) > rows else []), False
        if done:
            return


def _arrow_frames(reader, query: str, write: bool, types: list[str], names: list[str],
                  rows: int) -> Iterator[pd.DataFrame]:
    """The reader's rows as :func:`_exact_frame` gives them, ``rows`` at a time; the first even
    when empty, as it carries the columns."""
    import pyarrow as pa

    try:
        # the reader's batches are smaller than asked (122,880 rows: a row group of DuckDB's): joined
        # to ``rows`` (a Parquet row group each; in groups of 122,880 the file took 25% more space)
        # (an empty table from its batches: Schema.empty_table() is not implemented for a UNION's
        # sparse union, and `headdb sql` of one ended in pyarrow's traceback)
        held, first = pa.Table.from_batches([], schema=reader.schema), True
        while True:
            batch = _fetching(query, write, _next_batch, reader)
            if batch is not None:
                held = pa.concat_tables([held, pa.Table.from_batches([batch])])
            while len(held) >= rows or (batch is None and (len(held) or first)):
                yield _exact_frame(held.slice(0, rows), types, names)
                held, first = held.slice(rows), False
            if batch is None:
                return
    finally:
        reader.close()


def _next_batch(reader):
    """The reader's next batch, or None at its end. DuckDB's error in a later row (a failed cast,
    error()) comes through Arrow's stream as an OSError holding DuckDB's message: raised as
    DuckDB's, so that it reads as the query's error, not as a file that could not be written."""
    import duckdb

    try:
        return reader.read_next_batch()
    except StopIteration:
        return None
    except OSError as exc:
        raise duckdb.Error(str(exc)) from None


def _csv_ready(df: pd.DataFrame, types: list[str]) -> pd.DataFrame:
    """:func:`text_ready`, with timestamps as their own text (``2024-01-01 00:00:00``; a DATE,
    which DuckDB's DataFrames hold as a timestamp, as ``2024-01-01``): pandas formats a column
    of them alike, by its values, so that two batches of one column came out in two formats."""
    df = text_ready(df)
    stamps = [i for i in range(df.shape[1]) if getattr(df.dtypes.iloc[i], "kind", "") == "M"]
    if not stamps:
        return df
    df = df.copy()
    for i in stamps:
        column = df.iloc[:, i]
        if types[i] == "DATE":
            df.isetitem(i, column.dt.strftime("%Y-%m-%d"))
        else:
            df.isetitem(i, pd.Series([None if v is pd.NaT else str(v) for v in column], dtype=object,
                                     index=column.index))
    return df


def _csv_parts(df: pd.DataFrame, header: bool) -> list | None:
    """The text that ``df.to_csv(index=False, header=header)`` writes, byte for byte, as UTF-8
    (the header's bytes, then the rows' as a pyarrow Buffer), built a column at a time with
    numpy and pyarrow.compute (pandas writes row by row through Python's csv module: 93% of
    ``headdb sql --out x.csv``'s time); None where a column is of a type this does not know
    (timedeltas, complex numbers, pandas' float extension arrays ...: pandas writes those). As
    pandas does: NULLs empty, floats as numpy's text (``values.astype(str)``), other values as
    ``str()`` of them, a field quoted where Python's csv writer quotes it, and a row of one
    empty field as ``""``."""
    import csv
    import io

    import pyarrow.compute as pc

    if df.shape[1] == 0 or isinstance(df.columns, pd.MultiIndex) or not all(isinstance(c, str) for c in df.columns):
        return None
    columns = []
    for i in range(df.shape[1]):
        column = _csv_column(df.iloc[:, i])
        if column is None:
            return None
        columns.append(column)
    if df.shape[1] == 1:  # Python's csv writer quotes a row's only field when it is empty
        columns[0] = pc.if_else(pc.equal(columns[0], _large("")), _large('""'), columns[0])
    parts = []
    if header:
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow(list(df.columns))
        parts.append(line.getvalue().encode("utf-8"))
    if len(df):
        columns[-1] = pc.binary_join_element_wise(columns[-1], _large("\n"), _large(""))
        parts.append(_values_buffer(pc.binary_join_element_wise(*columns, _large(","))))
    return parts


def _large(text: str):
    """``text`` as a pyarrow large_string scalar, the type of :func:`_csv_column`'s arrays."""
    import pyarrow as pa

    return pa.scalar(text, pa.large_string())


def _values_buffer(rows):
    """A large_string array's values end to end: the slice of its data buffer that holds them."""
    import numpy as np

    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)[rows.offset:rows.offset + len(rows) + 1]
    return rows.buffers()[2][int(offsets[0]):int(offsets[-1])]


def _csv_column(column: pd.Series):
    """The CSV fields of a column, quoted where Python's csv writer quotes them, as a pyarrow
    large_string array without NULLs (a NULL is empty, pandas' ``na_rep``); None for a type
    pandas is left to write. The fields are what pandas gives its csv writer: floats as
    ``values.astype(str)``, other values as themselves (its ``str()``)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    dtype = column.dtype
    if isinstance(dtype, np.dtype):
        values = column.to_numpy()
        if dtype.kind == "f":
            return _float_text(values)
        if dtype.kind in "iu":
            return _int_text(values)
        if dtype.kind == "b":
            return pc.if_else(pa.array(values), _large("True"), _large("False"))
        if dtype.kind == "O":
            return _quoted(_object_text(values))
        return None
    if isinstance(dtype, pd.StringDtype):
        return _quoted(pc.fill_null(_arrow_array(column.array).cast(pa.large_string()), _large("")))
    if isinstance(dtype, pd.BooleanDtype):
        return pc.fill_null(pc.if_else(_arrow_array(column.array), _large("True"), _large("False")), _large(""))
    if isinstance(dtype, (pd.Int8Dtype, pd.Int16Dtype, pd.Int32Dtype, pd.Int64Dtype,
                          pd.UInt8Dtype, pd.UInt16Dtype, pd.UInt32Dtype, pd.UInt64Dtype)):
        return pc.fill_null(pc.cast(_arrow_array(column.array), pa.large_string()), _large(""))
    if isinstance(dtype, pd.CategoricalDtype) and getattr(dtype.categories.dtype, "kind", "") not in "Mm":
        return _quoted(_object_text(np.asarray(column.array.astype(object))))  # as pandas writes them
    return None


def _int_text(values):
    """numpy integers as their digits. Where they take few distinct values (layers, heads,
    positions), each is written once and taken from there: 2.3 times as fast as writing every one."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(values) >= 64:
        low, high = int(values.min()), int(values.max())
        if high - low < len(values) // 4:
            base = np.uint64 if values.dtype.kind == "u" else np.int64  # the offsets never overflow there
            digits = pc.cast(pa.array(np.arange(high - low + 1, dtype=base) + base(low)), pa.large_string())
            return pc.take(digits, pa.array(values.astype(base) - base(low)))
    return pc.cast(pa.array(values), pa.large_string())


def _arrow_array(values):
    """A pandas extension array as one pyarrow array."""
    import pyarrow as pa

    arrow = pa.array(values)
    return arrow.combine_chunks() if isinstance(arrow, pa.ChunkedArray) else arrow


def _object_text(values):
    """Python objects' CSV text: empty where pandas' isna, the string itself, or ``str()`` of any
    other value (Python's csv writer's own rule)."""
    import numpy as np
    import pyarrow as pa

    missing = pd.isna(values)
    present = values[~missing] if missing.any() else values
    if pd.api.types.infer_dtype(present, skipna=False) not in ("string", "empty"):
        present = np.array([v if isinstance(v, str) else str(v) for v in present], dtype=object)
    if not missing.any():
        return pa.array(present, pa.large_string())
    text = np.full(len(values), "", dtype=object)
    text[~missing] = present
    return pa.array(text, pa.large_string())


def _quoted(text):
    """Text fields as Python's csv writer writes them: in quotes, a quote doubled, where the field
    holds a character that it quotes (the delimiter, the quote, the line terminator)."""
    import pyarrow.compute as pc

    special = pc.match_substring_regex(text, _csv_specials())
    if not pc.any(special).as_py():
        return text
    quoted = pc.binary_join_element_wise(_large('"'), pc.replace_substring(text, '"', '""'), _large('"'), _large(""))
    return pc.if_else(special, quoted, text)


@functools.cache
def _csv_specials() -> str:
    """An RE2 character class of the ASCII characters for which Python's csv writer (as pandas
    sets it up: QUOTE_MINIMAL, "\\n" between lines) quotes a field, asked of it: a comma, a
    quote and a newline (a carriage return too from Python 3.12 on)."""
    import csv
    import io

    special = []
    for c in map(chr, range(128)):
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow([f"a{c}b"])
        if line.getvalue().startswith('"'):
            special.append(f"\\x{{{ord(c):02x}}}")
    return "[" + "".join(special) + "]"


#: The float32 values whose text pyarrow's cast gives as numpy does (:func:`_float_text`), where
#: they are not integers (pyarrow writes 1 where numpy writes 1.0): from 2**-13 (below 1e-4 numpy
#: writes 9.9e-05 where pyarrow writes 0.000099) to 2**19 (from about 1e6 numpy writes 1.0485761e+06
#: where pyarrow writes 1048576.1)
_ARROW_FLOAT32 = (2.0**-13, 2.0**19)


def _float_text(values):
    """numpy floats as pandas writes them: ``values.astype(str)`` (float32 as float32's shortest
    text: 0.25195312, not 0.251953125), NaN empty, as pyarrow strings. For float32 in
    :data:`_ARROW_FLOAT32`, pyarrow's cast gives the same text 7 times as fast, and is used
    there (every such value was compared; :func:`_arrow_float32_agrees` checks it again)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    nan = np.isnan(values)
    if values.dtype == np.float32 and _arrow_float32_agrees():
        size = np.abs(values)
        with np.errstate(invalid="ignore"):  # NaN: numpy's own
            numpy_own = ~((size >= _ARROW_FLOAT32[0]) & (size < _ARROW_FLOAT32[1])) | (values == np.trunc(values))
        text = pc.cast(pa.array(values), pa.large_string())
        if numpy_own.any():
            rest = values[numpy_own].astype(str)
            rest[nan[numpy_own]] = ""
            text = pc.replace_with_mask(text, pa.array(numpy_own), pa.array(rest, pa.large_string()))
        return text
    text = values.astype(str)
    text[nan] = ""
    return pa.array(text, pa.large_string())


def _arrow_float32_bits() -> tuple[int, int]:
    """The bit patterns (uint32) of the positive float32 in :data:`_ARROW_FLOAT32`, as a range."""
    import numpy as np

    low, high = (int(np.float32(x).view(np.uint32)) for x in _ARROW_FLOAT32)
    return low, high


def _arrow_float32_differs(values):
    """Where pyarrow's text of float32 ``values`` is not numpy's, as a boolean array (``values``
    hold no integers: :func:`_float_text` takes those from numpy)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrow = pc.cast(pa.array(values), pa.large_string())
    return ~pc.equal(arrow, pa.array(values.astype(str), pa.large_string())).to_numpy(zero_copy_only=False).astype(bool)


@functools.cache
def _arrow_float32_agrees() -> bool:
    """Whether pyarrow's text of float32 in :data:`_ARROW_FLOAT32` is numpy's, on a sample of
    them (``python -m benchmarks.csv_floats`` compared every one with the versions of the time;
    another numpy or pyarrow may write floats otherwise: then numpy writes them all)."""
    import numpy as np

    rng = np.random.default_rng(0)
    values = rng.integers(*_arrow_float32_bits(), 20_000, dtype=np.uint32).view(np.float32)
    values = np.concatenate([values, -values, np.float32([0.1, 0.5, 0.25195312, 1.5, 524287.97, 0.00012207031])])
    values = values[values != np.trunc(values)]
    return not _arrow_float32_differs(values).any()


class _TextBatches:
    """A batch writer of text to ``target``: a path, opened here and closed by :meth:`close`, or
    an open text stream, left open."""

    _newline: str | None = None

    def __init__(self, target, types: list[str]):
        self._types = types
        self._own = isinstance(target, (str, Path))
        self._file = open(target, "w", encoding="utf-8", newline=self._newline) if self._own else target

    def close(self) -> None:
        if self._own:
            self._file.close()


class _CsvBatches(_TextBatches):
    """CSV as :func:`export` writes it (pandas' ``to_csv``), the header with the first batch: the
    text built column by column (:func:`_csv_parts`), or by pandas where a column is of a type
    that it does not know."""

    _newline = ""

    def __init__(self, target, types: list[str]):
        super().__init__(target, types)
        self._header = True

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow as pa

        df = _csv_ready(df, self._types)
        try:
            parts = _csv_parts(df, self._header)
        except (pa.ArrowException, UnicodeError):  # text pyarrow does not hold (a lone surrogate): as pandas fares
            parts = None
        if parts is None:
            df.to_csv(self._file, index=False, header=self._header, lineterminator="\n")
        elif self._own:  # a file of ours, UTF-8 without newline translation: the bytes as they are
            self._file.flush()  # after what pandas wrote to it
            for part in parts:
                self._file.buffer.write(part)
        else:
            self._file.write("".join(str(part, "utf-8") for part in parts))
        self._header = False

    def finish(self) -> None:
        pass


class _JsonBatches(_TextBatches):
    """JSON as :func:`export` writes it (:func:`json_text` with an indent of 1: an array of
    records), the records of each batch as they come; with ``indent`` None, as :func:`json_text`
    gives it without one (one line), and a newline."""

    def __init__(self, target, types: list[str], indent: int | None = 1):
        super().__init__(target, types)
        self._started = False
        self._indent = indent

    def write(self, df: pd.DataFrame) -> None:
        import json

        records = json_records(df)  # a repeated column name fails here, with the first (maybe empty) batch
        if not records:
            return
        text = json.dumps(records, indent=self._indent, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        if self._indent is None:  # "[...]": the records, without the brackets, go on one line
            self._file.write(("," if self._started else "[") + text[1:-1])
        else:  # without "[\n" and "\n]"
            self._file.write((",\n" if self._started else "[\n") + text[2:-2])
        self._started = True

    def finish(self) -> None:
        if self._indent is None:
            self._file.write("]\n" if self._started else "[]\n")
        else:
            self._file.write("\n]\n" if self._started else "[]\n")


class _ParquetBatches:
    """Parquet as :func:`export` writes it (:func:`_parquet_table`), a row group per batch.

    A batch's Arrow types come from its values, as the whole result's did: a column that is NULL
    throughout a batch has none, integers with NULLs are int64, a 128-bit column is int64 until a
    value needs decimal128(38, 0), and text from 39 digits, a map's struct has the keys its rows
    have. The file's schema widens as the whole result's would have (Arrow's permissive
    unification: NULL to any type, narrower to wider, struct fields added; integers to text):
    the rows written so far are rewritten into the wider schema, once per widening."""

    def __init__(self, path: Path, types: list[str]):
        self._path = path  # where the file ends up
        self._at = path  # where it is being written
        self._types = types
        self._schema = None
        self._writer = None

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            _no_unions(df, self._types)
        table = _parquet_table(df)
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self._at, table.schema)
        else:
            wider = _wider_schema(self._schema, table.schema)
            if wider is not None:
                self._rewrite(wider)
            table = _conform(table, self._schema)
        self._writer.write_table(table)

    def _rewrite(self, schema) -> None:
        import pyarrow.parquet as pq

        self._writer.close()
        written, self._at = self._at, _aside(self._path, ".wider") if self._at == self._path else self._path
        self._writer = pq.ParquetWriter(self._at, schema)
        self._schema = schema
        source = pq.ParquetFile(written)
        try:
            for group in range(source.num_row_groups):
                self._writer.write_table(_conform(source.read_row_group(group), schema))
        finally:
            source.close()
        written.unlink()

    def finish(self) -> None:
        if self._writer is None:  # no batch at all: pandas' empty frame
            self.write(pd.DataFrame())
        self._writer.close()
        self._writer = None
        if self._at != self._path:
            self._at.replace(self._path)
            self._at = self._path

    def close(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        finally:  # after a failure: the rewritten file, if any (the caller removes the other)
            _aside(self._path, ".wider").unlink(missing_ok=True)


_WRITERS = {"csv": _CsvBatches, "json": _JsonBatches, "parquet": _ParquetBatches}


def _no_unions(df: pd.DataFrame, types: list[str]) -> None:
    """Refuse a result with a UNION column for Parquet, which has no union type: its values of
    several types ended in pyarrow's traceback, or, where a first batch held one member's values,
    in a file typed by that member until a later batch failed."""
    unions = [str(name) for name, kind in zip(df.columns, types) if "UNION(" in kind]
    if unions:
        raise InputError(f"Parquet has no union type, and {', '.join(unions)} is a UNION; cast it in the query "
                         f"({unions[0]}::VARCHAR), or write .csv or .json")


def _wider_schema(schema, batch):
    """``schema`` widened to hold ``batch``'s types too, column by column (names may repeat), or
    None where it holds them already."""
    import pyarrow as pa

    fields, wider = [], False
    for old, new in zip(schema, batch):
        if old.type == new.type:
            fields.append(old)
            continue
        try:
            field = pa.unify_schemas([pa.schema([old]), pa.schema([new.with_name(old.name)])],
                                     promote_options="permissive").field(0)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            numbers = (pa.types.is_integer, pa.types.is_decimal, pa.types.is_string)
            if not {pa.types.is_string(old.type), pa.types.is_string(new.type)} == {True, False} \
                    or not all(any(f(t) for f in numbers) for t in (old.type, new.type)):
                raise DatabaseError(f"column {old.name!r} of the result has values of type {old.type} and of "
                                    f"{new.type}; CAST it in the query to export it") from None
            field = old.with_type(pa.string())  # 128-bit integers from 39 digits on: the digits as text
        wider = wider or field.type != old.type
        fields.append(field)
    return pa.schema(fields, metadata=schema.metadata) if wider else None


def _conform(table, schema):
    """``table`` with ``schema``'s types (those :func:`_wider_schema` gives)."""
    import pyarrow as pa

    columns = [column if column.type == field.type else column.cast(field.type)
               for column, field in zip(table.columns, schema)]
    return pa.Table.from_arrays(columns, schema=schema)
