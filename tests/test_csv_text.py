"""CSV batches built column by column (query._csv_parts) against pandas' to_csv, which wrote them
before and writes the types the fast path leaves to it: the same bytes, batch by batch."""

from __future__ import annotations

import datetime
import decimal
import io
import uuid

import numpy as np
import pandas as pd
import pytest

import headdb
from headdb import query as q
from headdb.db import connect


def pandas_csv(frames: list[pd.DataFrame], types: list[str]) -> str:
    """The CSV that _CsvBatches wrote before: pandas' to_csv of each batch, the header first."""
    out = io.StringIO()
    for n, df in enumerate(frames):
        q._csv_ready(df, types).to_csv(out, index=False, header=n == 0, lineterminator="\n")
    return out.getvalue()


def batches_csv(frames: list[pd.DataFrame], types: list[str]) -> str:
    out = io.StringIO()
    writer = q._CsvBatches(out, types)
    for df in frames:
        writer.write(df)
    writer.finish()
    return out.getvalue()


def assert_same_csv(frames: list[pd.DataFrame], types: list[str] | None = None, fast: bool = True) -> None:
    """Both writers give the same text; ``fast``: without pandas (no column left to it)."""
    types = types or ["VARCHAR"] * frames[0].shape[1]
    assert batches_csv(frames, types) == pandas_csv(frames, types)
    if fast:
        assert all(q._csv_parts(q._csv_ready(df, types), True) is not None for df in frames), \
            [str(t) for t in frames[0].dtypes]


def random_bits(rng, n: int, dtype) -> np.ndarray:
    """Floats of every kind: any bit pattern (subnormals, NaN, infinities, -0.0 included)."""
    unsigned = np.uint32 if dtype == np.float32 else np.uint64
    return rng.integers(0, np.iinfo(unsigned).max, n, dtype=unsigned, endpoint=True).view(dtype)


def random_floats(rng, n: int, dtype) -> np.ndarray:
    """Floats as results hold them: any bit pattern, values of every size, integers, zeros."""
    with np.errstate(over="ignore"):  # float64's extremes as float32: infinities
        special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-4, 1e16, 2.0**-13, 2.0**19, 1e6, 1e-5, 0.1, 1 / 3,
                            16777216.0, 3.4e38, 1.5e-45, 5e-324, 1.7976931348623157e308], dtype=dtype)
    parts = [random_bits(rng, n, dtype),
             (rng.standard_normal(n) * 10.0 ** rng.integers(-12, 25, n)).astype(dtype),
             rng.random(n).astype(dtype),  # attention weights
             rng.integers(-10**6, 10**6, n).astype(dtype),  # integers: 3.0
             special]
    values = np.concatenate(parts)
    return values[rng.permutation(len(values))]


ALPHABET = ["a", "Z", "0", ",", '"', "\n", "\r", " ", "\t", "'", ";", "é", "\u2028", "\U0001d11e", "\x00", "\\"]


def random_texts(rng, n: int) -> list[str | None]:
    texts = ["".join(rng.choice(ALPHABET, rng.integers(0, 6))) for _ in range(n)]
    return [None if rng.random() < 0.1 else t for t in texts]


def test_edge_cases_of_every_kind_of_column_are_written_as_pandas_wrote_them():
    nulls = [1, None, 3]
    frames = [
        pd.DataFrame({"i8": np.int8([-128, 0, 127]), "u64": np.uint64([0, 2**63, 2**64 - 1]),
                      "i64": np.int64([-(2**63), 0, 2**63 - 1]), "b": [True, False, True],
                      "f16": np.float16([0.1, np.nan, -np.inf]), "f32": np.float32([0.25195312, np.nan, -0.0]),
                      "f64": [1e16, 1e-5, 0.1 + 0.2]}),
        pd.DataFrame({"Int32": pd.array(nulls, "Int32"), "UInt64": pd.array([2**64 - 1, None, 0], "UInt64"),
                      "boolean": pd.array([True, None, False], "boolean"),
                      "str": pd.array(["a,b", None, 'say "x"'], "str"),
                      "string": pd.array(["line\nbreak", pd.NA, "cr\rhere"], "string"),
                      "python": pd.array(["a", None, ""], "string[python]"),
                      "object": np.array(["", None, "é\U0001d11e"], dtype=object),
                      "category": pd.Categorical(["x,y", None, "x,y"]),
                      "enum_ints": pd.Categorical([1, 2, None])}),
        # values pandas writes as str() of them (DECIMALs, 128-bit integers, TIME, UUID, BLOB)
        pd.DataFrame({"decimal": [decimal.Decimal("1.50"), None, decimal.Decimal("NaN")],
                      "hugeint": np.array([2**100, None, -(2**70)], dtype=object),
                      "time": [datetime.time(10, 0), None, datetime.time(0, 0, 0, 5)],
                      "uuid": [uuid.UUID(int=1), None, uuid.UUID(int=2**128 - 1)],
                      "blob": [b"a,b", bytearray(b"\x00"), None],
                      "mixed": np.array([1.5, np.float32(0.1), pd.NA], dtype=object),
                      "nat": np.array([pd.NaT, "t", float("nan")], dtype=object)}),
        # nested values as JSON text (text_ready); an all-NULL column; timestamps and dates
        pd.DataFrame({"list": [[1, None, 3], None, {"k": "v,w"}], "null": [None, None, None],
                      "stamp": pd.to_datetime(["2024-01-01", None, "2024-01-01 10:00:00.5"], format="ISO8601"),
                      "date": pd.to_datetime(["2024-01-01", "1999-12-31", None]),
                      "tz": pd.to_datetime(["2024-01-01 00:00:00+01:00", None, None], utc=True)}),
        # names that need quoting, repeated names
        pd.DataFrame([[1, 2, 3, 4]], columns=["a,b", 'q"', "new\nline", "a,b"]),
    ]
    for df in frames:
        types = ["DATE" if c == "date" else "VARCHAR" for c in df.columns]
        assert_same_csv([df, df.iloc[1:], df.iloc[:0]], types)


def test_a_row_of_one_empty_field_is_quoted_as_pythons_csv_writes_it():
    """Python's csv writer writes a row whose only field is empty as "": the row is not blank."""
    for values in (["", None, "a", ""], pd.array(["", None], "str"), np.array(["", np.nan], dtype=object)):
        df = pd.DataFrame({"t": values})
        assert_same_csv([df, df])
        assert batches_csv([df], ["VARCHAR"]).startswith('t\n""\n')
    assert_same_csv([pd.DataFrame({"f": np.float32([np.nan, 1])}), pd.DataFrame({"f": np.float32([np.nan])})])
    assert_same_csv([pd.DataFrame({"": ["x", ""]})])  # an empty name: the header is "" too


def test_random_results_are_written_as_pandas_wrote_them(monkeypatch):
    rng = np.random.default_rng(20240611)
    n = 3000
    ints = rng.integers(-(2**63), 2**63 - 1, n, endpoint=True)
    frames = []
    for part in range(3):
        f32, f64 = random_floats(rng, n, np.float32)[:n], random_floats(rng, n, np.float64)[:n]
        texts = random_texts(rng, n)
        frames.append(pd.DataFrame({
            "run_id": np.int32(part), "i64": ints, "i16": rng.integers(-(2**15), 2**15, n).astype(np.int16),
            # few distinct values (each written once), at the ends of their types
            "i8": rng.integers(-128, 128, n).astype(np.int8), "low": rng.integers(-(2**63), -(2**63) + 50, n),
            "high": rng.integers(2**64 - 50, 2**64, n, dtype=np.uint64), "layer": rng.integers(0, 12, n),
            "weight": f32, "f64": f64, "flag": rng.random(n) < 0.5,
            "Int64": pd.array(np.where(rng.random(n) < 0.2, None, ints).tolist(), "Int64"),
            "str": pd.array(texts, "str"), "object": np.array(texts[::-1], dtype=object)}))
    assert_same_csv(frames)
    for column in ("weight", "f64", "str", "object"):  # one column: an empty field quoted
        assert_same_csv([df[[column]] for df in frames])
    monkeypatch.setattr(q, "_arrow_float32_agrees", lambda: False)  # another pyarrow: numpy writes every float
    assert_same_csv([df[["weight"]] for df in frames])


def test_float32_text_from_pyarrow_is_numpys_in_its_range():
    """pyarrow's float32 text is used only where it is numpy's: a sample of every float32 from
    2**-13 to 2**19 that is not an integer, of either sign (all 536 M were compared once: 0 differed)."""
    rng = np.random.default_rng(7)
    low, high = (int(np.float32(x).view(np.uint32)) for x in q._ARROW_FLOAT32)
    values = rng.integers(low, high, 200_000, dtype=np.uint32).view(np.float32)
    values = np.concatenate([values, -values, np.float32([2.0**-13, np.nextafter(np.float32(2.0**19), 0)])])
    assert q._arrow_float32_agrees()
    assert q._float_text(values).to_pylist() == values.astype(str).tolist()


def test_types_the_fast_path_does_not_know_are_left_to_pandas(tmp_path):
    frames = [pd.DataFrame({"td": pd.to_timedelta([1, None], unit="s"), "i": [1, 2]}),
              pd.DataFrame({"c": np.complex128([1 + 2j, np.nan])}),
              pd.DataFrame({"F": pd.array([0.1, None], "Float64")}),
              pd.DataFrame({0: [1, 2]}), pd.DataFrame(index=[0, 1])]
    for df in frames:
        assert q._csv_parts(df, True) is None
        assert_same_csv([df, df], ["VARCHAR"] * df.shape[1], fast=False)
    mixed = [pd.DataFrame({"x": [1.5, None], "y": ["a", "b,"]}), frames[0][["td"]].set_axis(["x"], axis=1).assign(y="c"),
             pd.DataFrame({"x": np.arange(100), "y": "é"})]  # to a file: pandas' text between the bytes of the others
    path = tmp_path / "mixed.csv"
    writer = q._CsvBatches(path, ["VARCHAR", "VARCHAR"])
    for df in mixed:
        writer.write(df)
    writer.close()
    assert path.read_bytes() == pandas_csv(mixed, ["VARCHAR", "VARCHAR"]).encode("utf-8")
    lone = pd.DataFrame({"t": pd.Series(["a\ud800", "b,"], dtype=object)})  # no UTF-8: pyarrow refuses it
    with pytest.raises(UnicodeError):
        q._csv_parts(lone, True)
    assert_same_csv([lone], fast=False)


def test_csv_lines_end_in_a_newline_where_os_linesep_is_windows(tmp_path, monkeypatch, capsys):
    """pandas ends its lines in os.linesep: on Windows export() wrote "\r\n", export_sql "\n"
    in the batches built here and "\r\n" in those pandas wrote (one file of both), and
    `--format csv` "\r\r\n" (stdout as text turns each "\n" into "\r\n" there)."""
    import os

    from headdb.cli import _print_df

    monkeypatch.setattr(os, "linesep", "\r\n")
    mixed = [pd.DataFrame({"x": [1.5, None], "y": ["a", "b,"]}),
             pd.DataFrame({"x": pd.to_timedelta([1, None], unit="s"), "y": "c"})]  # left to pandas
    path = tmp_path / "mixed.csv"
    writer = q._CsvBatches(path, ["VARCHAR", "VARCHAR"])
    for df in mixed:
        writer.write(df)
    writer.close()
    whole = pd.concat([mixed[0], mixed[1].astype({"x": str})], ignore_index=True)
    headdb.export(whole, tmp_path / "whole.csv")
    _print_df(whole, "csv")
    for text in (path.read_bytes(), (tmp_path / "whole.csv").read_bytes(), capsys.readouterr().out.encode()):
        assert b"\r" not in text and text.count(b"\n") == 5, text


@pytest.fixture(scope="module")
def values_store(tmp_path_factory):
    """A store with a table of random values and edge cases of DuckDB's types."""
    path = tmp_path_factory.mktemp("csv") / "store.db"
    connect(path).close()
    rng = np.random.default_rng(11)
    n = 5000
    table = pd.DataFrame({"i": np.arange(n), "f32": random_floats(rng, n, np.float32)[:n],
                          "f64": random_floats(rng, n, np.float64)[:n],
                          "txt": [t if t is None else t.replace("\x00", "") for t in random_texts(rng, n)]})
    con = duckdb_connect(path)
    con.register("frame", table)
    con.execute("CREATE TABLE t AS SELECT i::INTEGER AS i, f32::FLOAT AS f32, f64, txt FROM frame")
    con.close()
    return path


def duckdb_connect(path):
    import duckdb

    return duckdb.connect(str(path))


#: DuckDB's types through its DataFrames: NULLs in some batches only; an enum; a column NULL in
#: every row; an all-empty text column
PLAIN = """SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE i::BIGINT * 1000003 END AS n, f32, f64, txt,
    i % 2 = 0 AS b, CASE WHEN i > 4000 THEN NULL ELSE i % 3 = 0 END AS nb, (i % 200 - 100)::TINYINT AS t8,
    (i * 12345)::UBIGINT AS ub, NULL AS nothing, '' AS empty, DATE '2024-01-01' + i AS d,
    TIMESTAMP '2024-01-01' + to_microseconds(i * 1000) AS ts, TIME '10:00:00' AS tm,
    CASE WHEN i % 5 = 0 THEN NULL ELSE 'ab'::BLOB END AS bl, uuid() IS NOT NULL AS has_uuid,
    CASE WHEN i % 2 = 0 THEN 'x' ELSE 'y,z' END::ENUM('x', 'y,z') AS en
    FROM t ORDER BY i"""
#: Through Arrow (headdb's exact path): 128-bit integers, DECIMALs, lists, structs, maps, INTERVAL, BIT
EXACT = """SELECT i, f32, txt, sum(i) OVER (ORDER BY i) AS huge, (i * 1.5)::DECIMAL(38,9) AS dc,
    CASE WHEN i % 3 = 0 THEN NULL ELSE [i, NULL] END AS l, {'a': txt} AS s, MAP {'k,': f32} AS m,
    to_months(i) AS iv, '0101'::BIT AS bt, CASE WHEN i > 4000 THEN NULL ELSE i END AS ni,
    CASE WHEN i = 4999 THEN 340282366920938463463374607431768211455::UHUGEINT ELSE i::UHUGEINT END AS wide
    FROM t ORDER BY i"""


@pytest.mark.parametrize("query", [PLAIN, EXACT, "SELECT txt FROM t", "SELECT f32 FROM t WHERE false"],
                         ids=["dataframe", "arrow", "one-column", "no-rows"])
def test_sql_exports_are_the_bytes_pandas_wrote(values_store, tmp_path, query, monkeypatch):
    """export_sql and write_sql through the column-by-column writer against the same batches
    through pandas (the writer before it)."""
    fast = io.StringIO()
    assert headdb.write_sql(values_store, query, fast, "csv", batch_rows=2048) in (0, 5000)
    q.export_sql(values_store, query, tmp_path / "fast.csv", batch_rows=2048)
    taken = []
    real = q._csv_parts
    monkeypatch.setattr(q, "_csv_parts", lambda df, header: taken.append(real(df, header) is not None))
    reference = io.StringIO()
    headdb.write_sql(values_store, query, reference, "csv", batch_rows=2048)
    assert fast.getvalue() == reference.getvalue()
    assert (tmp_path / "fast.csv").read_bytes() == reference.getvalue().encode("utf-8")
    assert taken and all(taken), taken  # no batch was left to pandas


def test_numbers_and_text_are_not_written_by_pandas(values_store, monkeypatch):
    """pandas wrote every batch row by row through Python's csv module: 93% of the time of
    `headdb sql --out x.csv` (19 M edges of an EWT run in 32-38 s)."""
    def refuse(*args, **kwargs):
        raise AssertionError("pandas' to_csv was called")

    monkeypatch.setattr(pd.DataFrame, "to_csv", refuse)
    out = io.StringIO()
    headdb.write_sql(values_store, "SELECT i, f32, f64, txt, i % 2 = 0 AS b FROM t", out, "csv", batch_rows=2048)
    assert out.getvalue().startswith("i,f32,f64,txt,b\n0,") and out.getvalue().count("\n") >= 5001
