"""Ad-hoc SQL over the store, and exports to CSV / JSON / Parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from headdb.db import connect
from headdb.errors import DatabaseError, InputError

EXPORT_FORMATS = ("csv", "json", "parquet")


def sql(db: str | Path, query: str, params: list | dict | None = None, *, write: bool = False) -> pd.DataFrame:
    """Run one SQL statement on the store and return its rows.

    Read-only unless ``write``. On a read-only connection the score views of the built-in
    roles (``scores_<role>``, ``sieve_<role>``) are available too.
    """
    import duckdb

    _one_statement(query)
    con = connect(db, read_only=not write, existing=True)
    try:
        if not write:
            try:
                from headdb.scores import register_views

                register_views(con)
            except ImportError:  # pragma: no cover - scores module absent in old checkouts
                pass
        try:
            rel = con.execute(query, params or [])
        except duckdb.Error as exc:
            raise DatabaseError(f"SQL error: {str(exc).strip()}{_hint(str(exc), query, write)}") from None
        if rel is None or rel.description is None:
            return pd.DataFrame()
        types = [str(d[1]) for d in rel.description]
        if any(_exact_only(t) for t in types):
            import warnings

            with warnings.catch_warnings():  # "an extra copy of the rows": the rows of a query's result, once
                warnings.simplefilter("ignore", UserWarning)
                table = rel.to_arrow_table()
            return _exact_frame(table, types, [str(d[0]) for d in rel.description])
        return rel.df()
    finally:
        con.close()


#: DuckDB's 128-bit integers (sum() of integers gives HUGEINT), which its DataFrames turn into
#: floats: 2009.0, and 12345678901234567890 rounded.
_WIDE_INTEGERS = ("HUGEINT", "UHUGEINT")


def _exact_only(duckdb_type: str) -> bool:
    """Types whose values DuckDB's DataFrames change: 128-bit integers and DECIMALs become floats,
    INTERVALs lose their months, BIT its bits, and lists hold numpy masked arrays (a NULL inside
    became 0 in Parquet and "--" in CSV)."""
    return duckdb_type in _WIDE_INTEGERS or duckdb_type in ("INTERVAL", "BIT") or duckdb_type.startswith("DECIMAL") \
        or _nested(duckdb_type)


def _nested(duckdb_type: str) -> bool:
    """Lists and fixed-size arrays (``INTEGER[]``, ``INTEGER[2]``), structs, maps and unions."""
    return duckdb_type.startswith(("STRUCT(", "MAP(", "UNION(")) or duckdb_type.endswith("]")


def _one_statement(query: str) -> None:
    """Refuse an empty query, or several statements (only the last one's rows would show)."""
    import duckdb

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
    frame.columns = names
    return frame


def text_ready(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its nested values (lists, dicts: what :func:`sql` gives for DuckDB's lists,
    structs and maps) as JSON text (``[1,null,3]``), for CSV and the terminal: Python's text of
    them (``[1, None, 3]``) is no format another tool reads."""
    import json

    nested = [i for i in range(df.shape[1]) if df.dtypes.iloc[i] == object
              and any(isinstance(v, (list, dict)) for v in df.iloc[:, i])]
    if not nested:
        return df
    out = df.copy()
    for i in nested:
        out.isetitem(i, [json.dumps(_json_value(v), ensure_ascii=False, separators=(",", ":"))
                         if isinstance(v, (list, dict)) else v for v in df.iloc[:, i]])
    return out


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
    writes_edges = re.search(r"\b(update|into|from)\s+(main\.)?\"?edges\b", query, re.I)
    if ("base table" in message or "is not an table" in message) and writes_edges:
        return (" (edges is a view that reads the tables edge_store (float32 weights) and edge_store16 "
                "(16-bit weights); delete, update or insert rows of edge_store or edge_store16)")
    return ""


def check_export(out: str | Path) -> str:
    """The export format named by ``out``'s extension (csv, json or parquet), once it is clear that
    the file can be written there, or InputError; the commands call it before any work, so that
    a bad ``--out`` never comes after the results are stored."""
    import os

    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"cannot export to {out.suffix or 'no extension'!r}; use .csv, .json or .parquet", out)
    if out.is_dir():
        raise InputError("is a folder; name the file to write", out)
    folder = out.absolute().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # the root exists
    if not existing.is_dir():
        raise InputError(f"cannot write there: {existing} is a file, not a folder", out)
    if existing == folder:  # try it: permissions, read-only or virtual file systems (/proc)
        probe = out.with_name(out.name + ".tmp")
        try:
            probe.open("wb").close()
            probe.unlink()
        except OSError as exc:
            raise InputError(f"cannot write there: {exc.strerror or exc}", out) from None
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot create its folder: {existing} is not writable", out)
    return fmt


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
        return pa.Table.from_pandas(df, preserve_index=False)
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
    out = Path(out)
    fmt = check_export(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        if fmt == "csv":
            text_ready(df).to_csv(tmp, index=False)
        elif fmt == "json":
            tmp.write_text(json_text(df, indent=1) + "\n", encoding="utf-8")
        else:
            import pyarrow.parquet as pq

            pq.write_table(_parquet_table(df), tmp)
        tmp.replace(out)  # never leave half a file under the real name
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write the export: {exc.strerror or exc}", out) from None
        raise
    return out
