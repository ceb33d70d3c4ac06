"""The store through SQLAlchemy (duckdb-engine) and the SQL / export API, on a real file."""

from __future__ import annotations


import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from sqlalchemy import text

import headdb
from cli_helpers import read_export
from headdb.db import connect
from headdb.errors import DatabaseError, InputError
from headdb.query import export


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "store.db"
    con = connect(path)
    con.execute("INSERT INTO edge_store (run_id, sentence_id, layer, head, query_pos, key_pos, weight) "
                "VALUES (1, 0, 0, 0, 0, 0, 0.75), (1, 0, 0, 0, 0, 1, 0.25), (1, 0, 1, 3, 1, 0, 0.5)")
    con.close()
    return path


def test_engine_reads_the_store_with_pandas(store):
    engine = headdb.engine(store)
    df = pd.read_sql("SELECT layer, sum(weight) AS mass FROM edges GROUP BY layer ORDER BY layer", engine)
    assert df["layer"].tolist() == [0, 1]
    assert df["mass"].tolist() == pytest.approx([1.0, 0.5])
    with engine.connect() as c:
        rows = c.execute(text("SELECT residual FROM attention_rows WHERE layer = 0")).fetchall()
    assert rows[0][0] == pytest.approx(0.0)
    engine.dispose()


@pytest.mark.parametrize("read_only", [True, False])
def test_engine_connections_draw_no_duckdb_progress_bar(store, read_only):
    """headdb's own connections turn DuckDB's progress bar off (it draws on stdout, into CSV a
    script writes there); an engine's kept DuckDB's default, which is on where Python runs without
    a script file (`python -c`, a notebook, the REPL), and reading a score view through it (several
    seconds on the bundled sample) drew the bar into stdout."""
    import subprocess
    import sys

    code = ("import sys, headdb\n"
            "from sqlalchemy import text\n"
            "engine = headdb.engine(sys.argv[1], read_only=sys.argv[2] == 'ro')\n"
            "with engine.connect() as c:\n"
            "    print(c.execute(text(\"SELECT current_setting('enable_progress_bar')\")).scalar())\n"
            "engine.dispose()\n"
            "import duckdb\n"
            "print(duckdb.connect().execute(\"SELECT current_setting('enable_progress_bar')\").fetchall()[0][0])\n")
    out = subprocess.run([sys.executable, "-c", code, str(store), "ro" if read_only else "rw"],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    # the engine's connection has it off; DuckDB's default there is on (what the test stands on)
    assert out.stdout.split() == ["False", "True"], out.stdout


def test_engine_is_read_only_by_default(store):
    engine = headdb.engine(store)
    with engine.connect() as c, pytest.raises(Exception, match="read-only"):
        c.execute(text("DELETE FROM runs"))
    engine.dispose()


def test_engine_on_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatabaseError, match="no such database"):
        headdb.engine(tmp_path / "missing.db")


def test_sql_binds_parameters_and_reports_errors(store, tmp_path):
    df = headdb.sql(store, "SELECT count(*) AS n FROM edges WHERE head = ?", [3])
    assert df["n"].tolist() == [1]
    # a value read from a DataFrame is a numpy scalar, which DuckDB refused (numpy.int32)
    import numpy as np

    for value in (np.int32(3), np.int64(3), np.int16(3)):
        assert headdb.sql(store, "SELECT count(*) AS n FROM edges WHERE head = ?", [value])["n"].tolist() == [1]
        assert headdb.sql(store, "SELECT count(*) AS n FROM edges WHERE head = $h", {"h": value})["n"].tolist() == [1]
    headdb.export_sql(store, "SELECT layer FROM edges WHERE head = $h AND weight > $w", tmp_path / "p.csv",
                      {"h": np.int32(3), "w": np.float32(0.25)})
    assert (tmp_path / "p.csv").read_text() == "layer\n1\n"
    with pytest.raises(DatabaseError, match="SQL error"):
        headdb.sql(store, "SELECT nope FROM edges")
    with pytest.raises(DatabaseError, match="SQL error"):
        headdb.sql(store, "DELETE FROM edges")  # read-only unless write=True
    assert headdb.sql(store, "SELECT count(*) AS n FROM edges")["n"].tolist() == [3]


@pytest.mark.parametrize("suffix", ["csv", "json", "parquet"])
def test_export_round_trips(tmp_path, suffix):
    df = pd.DataFrame({"layer": [0, 1], "weight": [0.5, 0.25]})
    out = export(df, tmp_path / f"x.{suffix}")
    back = read_export(out)
    assert back.to_dict("list") == df.to_dict("list")
    assert not list(tmp_path.glob("*.tmp"))


def test_export_refuses_unknown_extensions(tmp_path):
    with pytest.raises(InputError, match="xlsx"):
        export(pd.DataFrame({"a": [1]}), tmp_path / "x.xlsx")


def test_connections_draw_no_duckdb_progress_bar(store):
    # DuckDB's own bar goes to stdout and would corrupt `headdb sql --format csv` output
    from headdb.db import connect_restricted

    for open_it in (lambda: connect(store, read_only=True), lambda: connect_restricted(store)):
        con = open_it()  # one at a time: the restricted connection has settings of its own
        assert con.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0] is False
        con.close()


def test_runs_lists_a_killed_run_as_interrupted(store):
    # a process killed mid-ingest leaves status 'running'; while runs() can read the file no
    # ingest holds its write lock, so that run is shown as interrupted
    con = connect(store)
    for status in ("running", "done"):
        con.execute(
            "INSERT INTO runs (run_name, fingerprint, corpus_id, corpus_path, corpus_sha256, corpus_format, pairs, "
            "model, model_hash, model_type, tokenizer, n_layers, n_heads, dtype, attn_implementation, device, "
            "max_length, truncate, top_k, dense, batch_size, headdb_version, library_versions, status) "
            "VALUES (?, 'f', 1, 'c.conllu', 's', 'conllu', false, 'm', 'h', 'bert', 't', 2, 2, 'float32', 'eager', "
            "'cpu', 512, false, 8, false, 32, '0', '{}', ?)", [f"r-{status}", status])
    con.close()
    assert headdb.runs(store)["status"].tolist() == ["interrupted", "done"]
    assert headdb.summary(store, run="r-running")["status"] == "interrupted"  # summary says so too
    assert headdb.sql(store, "SELECT status FROM runs ORDER BY run_id")["status"].tolist() == ["running", "done"]


def test_commands_that_change_a_store_never_create_or_upgrade_one(tmp_path, capsys, monkeypatch):
    """drop, compact and sql --write need an existing headdb store at the current schema; they
    created a missing file, installed headdb's tables into another DuckDB file, or upgraded an
    older store unasked (only init and ingest create or upgrade)."""
    from cli_helpers import run_main

    db_module = __import__("headdb.db", fromlist=["list_migrations"])
    missing, foreign, old = tmp_path / "missing.db", tmp_path / "foreign.db", tmp_path / "old.db"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE mine (x INTEGER)")
    con.close()
    con = connect(old, migrate_schema=False)
    db_module.migrate(con, [m for m in db_module.list_migrations() if m.version < 5])
    con.close()
    for args in (["drop", "{db}", "1", "--yes"], ["compact", "{db}"], ["sql", "{db}", "DELETE FROM runs", "--write"]):
        for db, words in ((missing, "no such database"), (foreign, "not a headdb database"),
                          (old, "schema version 4 is older than")):
            code, _, err = run_main(capsys, monkeypatch, *[a.replace("{db}", str(db)) for a in args])
            assert code == 1 and words in err and err.startswith(f"error: {db}: "), (args, db, err)
    assert not missing.exists()
    con = duckdb.connect(str(foreign), read_only=True)
    assert [r[0] for r in con.execute("SHOW TABLES").fetchall()] == ["mine"]
    con.close()
    con = duckdb.connect(str(old), read_only=True)
    assert con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == 4
    con.close()
    with pytest.raises(DatabaseError, match="no such database"):
        headdb.drop_run(missing, 1)
    assert not missing.exists()


def test_sql_gives_whole_numbers_exactly_one_statement_and_any_value_as_json(store, capsys, monkeypatch):
    from cli_helpers import run_main

    con = connect(store)
    con.execute("INSERT INTO run_sentences (run_id, sentence_id, n_tokens, n_tokens_full, status) VALUES (1, 0, 5, 5, 'ok'), "
                "(1, 1, 7, 7, 'ok')")
    con.close()
    got = headdb.sql(store, "SELECT sum(n_tokens) AS s, 12345678901234567890::HUGEINT AS big, "
                            "NULL::HUGEINT AS none FROM run_sentences")
    total = headdb.sql(store, "SELECT n_tokens FROM run_sentences")["n_tokens"].sum()
    assert got["s"].tolist() == [total] and str(got["s"].dtype) == "int64"  # not 2009.0
    assert got["big"].tolist() == [12345678901234567890] and got["none"].isna().all()
    code, out, _ = run_main(capsys, monkeypatch, "sql", store, "SELECT sum(n_tokens) AS s FROM run_sentences", "-f", "csv")
    assert code == 0 and out == f"s\n{total}\n"
    code, out, err = run_main(capsys, monkeypatch, "sql", store, "SELECT '00000000-0000-0000-0000-000000000001'::UUID AS u",
                              "-f", "json")
    assert code == 0 and out == '[{"u":"00000000-0000-0000-0000-000000000001"}]\n', err
    code, _, err = run_main(capsys, monkeypatch, "sql", store, "SELECT '00000000-0000-0000-0000-000000000001'::UUID AS u",
                            "--out", store.parent / "u.json")
    assert code == 0 and '"u":"00000000-0000-0000-0000-000000000001"' in (store.parent / "u.json").read_text(), err
    for query, words in (("", "no SQL statement given"), ("  ;", "no SQL statement given"),
                         ("SELECT 1; SELECT 2", "one SQL statement at a time, not 2")):
        with pytest.raises(InputError, match=words):
            headdb.sql(store, query)


@pytest.mark.parametrize("name", ["a?b.db", "we#ird.db", "pct%20x.db"])
def test_engine_opens_the_file_it_is_given_and_twice_in_one_process(tmp_path, store, name):
    """The path was pasted into the engine's URL: '?', '#' and '%xx' made SQLAlchemy open (or
    create) another file. A second engine beside an open one failed on headdb's own check."""
    import shutil

    from sqlalchemy import text

    path = tmp_path / name
    shutil.copy(store, path)
    before = sorted(p.name for p in tmp_path.iterdir())
    first = headdb.engine(path)
    with first.connect() as con:
        assert con.execute(text("SELECT count(*) FROM edges")).scalar() == 3
        second = headdb.engine(path)  # while the first holds the file: a re-run notebook cell
        with second.connect() as con2:
            assert con2.execute(text("SELECT count(*) FROM edges")).scalar() == 3
    first.dispose()
    second.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_writable_engine_needs_a_headdb_store(tmp_path):
    foreign = tmp_path / "foreign.db"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE mine (x INTEGER)")
    con.close()
    with pytest.raises(DatabaseError, match="not a headdb database"):
        headdb.engine(foreign, read_only=False)
    with pytest.raises(DatabaseError, match="no such database"):
        headdb.engine(tmp_path / "missing.db", read_only=False)
    assert not (tmp_path / "missing.db").exists()
    con = duckdb.connect(str(foreign), read_only=True)
    assert [r[0] for r in con.execute("SHOW TABLES").fetchall()] == ["mine"]
    con.close()


def test_a_run_is_an_id_or_a_name_and_roles_are_never_empty(store):
    for run in (3.0, True):
        with pytest.raises(InputError, match="a run is its id"):
            headdb.summary(store, run=run)
    with pytest.raises(InputError, match="no roles selected"):
        from headdb.analysis import select_roles

        select_roles(["local"], "")


def test_a_bad_out_path_is_refused_before_any_work_and_leaves_nothing(store, tmp_path, capsys, monkeypatch):
    """A folder, a path under a file, or a place that takes no file (/proc) gave tracebacks, a
    stray x.tmp, and, for classify, results stored before the failure."""

    from cli_helpers import run_main
    from headdb.query import check_export

    (tmp_path / "file.csv").write_text("x")
    (tmp_path / "folder.csv").mkdir()
    for out, words in ((tmp_path / "folder.csv", "is a folder; name the file to write"),
                       (tmp_path / "file.csv" / "x.parquet", "is a file, not a folder"),
                       (tmp_path / "file.csv" / "deeper" / "x.json", "is a file, not a folder"),
                       (Path("/proc/headdb-x.csv"), "cannot write there")):
        with pytest.raises(InputError, match=words):
            check_export(out)
        code, out_text, err = run_main(capsys, monkeypatch, "sql", store, "SELECT 1 AS a", "--out", out)
        assert code == 1 and err.startswith(f"error: {out}: ") and words in err and out_text == "", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.csv", "folder.csv", "store.db"]
    assert not list((tmp_path / "folder.csv").iterdir())
    # a missing folder is created, as before
    assert check_export(tmp_path / "new" / "deep" / "x.csv") == "csv" and not (tmp_path / "new").exists()
    export(pd.DataFrame({"a": [1]}), tmp_path / "new" / "deep" / "x.csv")
    assert (tmp_path / "new" / "deep" / "x.csv").read_text() == "a\n1\n"
    # a failure while writing leaves no .tmp behind
    with pytest.raises(Exception):
        export(pd.DataFrame({"a": [object()]}), tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists() and not (tmp_path / "bad.parquet.tmp").exists()


def test_an_out_that_is_a_folder_is_named_so_whatever_its_name(store, tmp_path, capsys, monkeypatch):
    """A folder without an extension (or with another) was refused as "cannot export to 'no extension'"."""
    from cli_helpers import run_main
    from headdb.query import check_export

    (tmp_path / "results").mkdir()
    (tmp_path / "old.d").mkdir()
    for out, words in ((tmp_path / "results", "is a folder; name the file to write"),
                       (tmp_path / "old.d", "is a folder; name the file to write")):
        with pytest.raises(InputError, match=re.escape(words)):
            check_export(out)
        code, out_text, err = run_main(capsys, monkeypatch, "sql", store, "SELECT 1 AS a", "--out", out)
        assert code == 1 and words in err and out_text == "", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.d", "results", "store.db"]
    assert not list((tmp_path / "results").iterdir())


def test_an_out_ending_with_a_backslash_names_a_folder_on_windows(monkeypatch):
    """On Windows (os.sep "\\", os.altsep "/") `--out x.csv\\` was taken for the file x.csv, as
    `x.csv/` was before; elsewhere a backslash is a character of a file's name."""
    import os

    from headdb.cli import _export_file
    from headdb.errors import InputError

    assert _export_file("x.csv\\") == Path("x.csv\\")  # POSIX: a file named x.csv\
    monkeypatch.setattr(os, "sep", "\\")
    monkeypatch.setattr(os, "altsep", "/")
    for out in ("x.csv\\", "x.csv/"):
        with pytest.raises(InputError, match=f"ends with '{re.escape(out[-1])}', so it names a folder"):
            _export_file(out)


def test_an_out_ending_with_a_slash_names_a_folder_and_is_refused(store, tmp_path, capsys, monkeypatch):
    """`--out x.csv/` wrote the file x.csv (typer's Path drops the slash): a path that ends with
    `/` names a folder, and every command's --out of rows refuses it before any work."""
    from cli_helpers import run_main

    before = duckdb.connect(str(store), read_only=True)
    try:
        stored = before.execute("SELECT count(*) FROM classifications").fetchone()[0]
    finally:
        before.close()
    for args in (("sql", store, "SELECT 1 AS a"), ("classify", store, "-q"), ("accuracy", store, "-q"),
                 ("compare", store, "1", "1")):
        for out in (f"{tmp_path / 'x.csv'}/", f"{tmp_path / 'new'}/"):
            code, out_text, err = run_main(capsys, monkeypatch, *args, "--out", out)
            assert (code, out_text, err) == (
                1, "", f"error: {out}: ends with '/', so it names a folder; name the file to write\n"), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]
    after = duckdb.connect(str(store), read_only=True)
    try:
        assert after.execute("SELECT count(*) FROM classifications").fetchone()[0] == stored  # classify stored nothing
    finally:
        after.close()


def test_exports_keep_infinities_and_integers_beyond_64_bits(store, tmp_path, capsys, monkeypatch):
    """JSON has no infinity: pandas wrote null, the same as NaN, so compare's t = -inf (every
    sentence moved alike) read as "no test". Parquet failed on a 128-bit sum beyond int64."""
    import json

    from cli_helpers import run_main

    q = ("SELECT 'inf'::DOUBLE AS up, '-inf'::DOUBLE AS down, 'nan'::DOUBLE AS nan, 1.5::DOUBLE AS x, "
         "sum(v) AS big FROM (SELECT 9223372036854775807::BIGINT AS v UNION ALL SELECT 9223372036854775807::BIGINT)")
    code, out, _ = run_main(capsys, monkeypatch, "sql", store, q, "-f", "json")
    assert json.loads(out) == [{"up": "Infinity", "down": "-Infinity", "nan": None, "x": 1.5,
                                "big": 18446744073709551614}]
    assert float(json.loads(out)[0]["down"]) == float("-inf")
    # floats exactly (pandas kept 15 significant digits: 0.1 + 0.2 came out as 0.3); times as ISO 8601
    code, exact, _ = run_main(capsys, monkeypatch, "sql", store, "SELECT 0.1::DOUBLE + 0.2 AS f, 1/3 AS third, "
                              "TIMESTAMP '2026-11-27 21:00:00.5' AS t, [1, 2] AS l, 'é' AS s", "-f", "json")
    assert json.loads(exact) == [{"f": 0.1 + 0.2, "third": 1 / 3, "t": "2026-11-27T21:00:00.500000", "l": [1, 2],
                                  "s": "é"}]
    # a NULL inside a list (a numpy masked array: it crashed the writer, and pandas wrote the root's
    # NULL head as 2), intervals as ISO 8601, nanosecond times, FLOAT by its own shortest text
    code, odd, err = run_main(capsys, monkeypatch, "sql", store, "SELECT [2, NULL, 3] AS heads, "
                              "INTERVAL 1 DAY + INTERVAL 1 SECOND AS i, [TIMESTAMP_NS '2024-01-01 00:00:00.000000001', "
                              "NULL] AS ts, 0.48921964::FLOAT AS w", "-f", "json")
    assert code == 0, err
    assert json.loads(odd) == [{"heads": [2, None, 3], "i": "P1DT0H0M1S", "ts": ["2024-01-01T00:00:00.000000001",
                                                                               None], "w": 0.48921964}]
    with pytest.raises(InputError, match="more than one column named a; JSON records need distinct names"):
        export(pd.DataFrame([[1, 2]], columns=["a", "a"]), tmp_path / "dup.json")
    assert not (tmp_path / "dup.json").exists()
    df = headdb.sql(store, q)
    export(df, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == json.loads(out)
    export(df, tmp_path / "x.parquet")
    back = duckdb.sql(f"SELECT big::VARCHAR, typeof(big), up, down FROM '{tmp_path / 'x.parquet'}'").fetchall()
    assert back == [("18446744073709551614", "DECIMAL(38,0)", float("inf"), float("-inf"))]
    # the largest 128-bit integers (39 digits): UHUGEINT's top half read negative, and Parquet
    # as decimal256, which DuckDB reads back as a DOUBLE; the digits go as text instead
    top = headdb.sql(store, "SELECT 340282366920938463463374607431768211455::UHUGEINT AS u, 7::UHUGEINT AS small")
    assert top["u"].tolist() == [2**128 - 1] and top["small"].tolist() == [7]
    export(top, tmp_path / "h.parquet")
    back = duckdb.sql(f"SELECT u, small FROM '{tmp_path / 'h.parquet'}'").fetchall()
    assert back == [(str(2**128 - 1), 7)]
    export(df, tmp_path / "x.csv")
    assert (tmp_path / "x.csv").read_text() == "up,down,nan,x,big\ninf,-inf,,1.5,18446744073709551614\n"


def test_engine_reflects_the_store_and_has_the_score_views(store):
    """A BI tool reflects tables and columns (with SQLAlchemy 2.0.45+ duckdb-engine 0.17 reflected
    none: pg_catalog.pg_collation); the score views the README names are there on every connection."""
    import sqlalchemy

    engine = headdb.engine(store)
    try:
        inspector = sqlalchemy.inspect(engine)
        assert {"runs", "edge_store", "head_tests"} <= set(inspector.get_table_names())
        assert "edges" in inspector.get_view_names()
        assert [c["name"] for c in inspector.get_columns("edges")][:3] == ["run_id", "sentence_id", "layer"]
        assert inspector.get_foreign_keys("edge_store") is not None
        assert len(pd.read_sql_table("edges", engine)) == 3
        for _ in range(2):  # each pooled connection registers them
            with engine.connect() as c:
                assert c.execute(text("SELECT count(*) FROM scores_local")).scalar() == 0
                assert c.execute(text("SELECT count(*) FROM sieve_delimiter")).scalar() == 0
    finally:
        engine.dispose()



def test_engine_reflects_the_score_views_it_lists(store):
    """duckdb-engine lists the TEMP views scores_<role> and sieve_<role> among the view names but
    read their columns through pg_catalog, which lacks the temp schema: get_columns,
    read_sql_table and MetaData.reflect(views=True) (what a BI tool does with each view it lists)
    failed with NoSuchTableError."""
    import sqlalchemy

    engine = headdb.engine(store)
    try:
        inspector = sqlalchemy.inspect(engine)
        assert {"scores_local", "sieve_local"} <= set(inspector.get_view_names())
        assert [c["name"] for c in inspector.get_columns("scores_local")] == [
            "run_id", "layer", "head", "sentence_id", "score", "score_upper", "n_queries"]
        assert [c["name"] for c in inspector.get_columns("sieve_delimiter")] == [
            "run_id", "sentence_id", "query_pos", "key_pos"]
        metadata = sqlalchemy.MetaData()
        metadata.reflect(engine, views=True)
        assert {"edges", "head_tests", "scores_obj", "sieve_obj"} <= set(metadata.tables)
        scores = metadata.tables["scores_local"]
        assert isinstance(scores.c.score.type, sqlalchemy.Float)
        with engine.connect() as c:
            assert c.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(scores)
                             .where(scores.c.run_id == 1)).scalar() == 0
        assert list(pd.read_sql_table("scores_local", engine).columns)[:2] == ["run_id", "layer"]
    finally:
        engine.dispose()



def test_engine_gives_the_score_views_as_views_not_as_tables(store):
    """The TEMP score views' columns were added to every get_multi_columns, also that of tables
    alone (an inspector's default): scores_local read as a table beside edges and runs."""
    import sqlalchemy
    from sqlalchemy.engine.reflection import ObjectKind

    engine = headdb.engine(store)
    try:
        inspector = sqlalchemy.inspect(engine)
        tables = {key[1] for key in inspector.get_multi_columns()}
        assert "runs" in tables and not {t for t in tables if t.startswith(("scores_", "sieve_"))}, tables
        views = {key[1] for key in inspector.get_multi_columns(kind=ObjectKind.VIEW)}
        assert {"edges", "scores_local", "sieve_local"} <= views and "runs" not in views
        assert [c["name"] for c in inspector.get_columns("scores_local")][:2] == ["run_id", "layer"]
    finally:
        engine.dispose()


UNION = ("SELECT range AS i, CASE WHEN range = 1 THEN union_value(s := 'x') WHEN range = 2 THEN NULL "
         "ELSE union_value(k := range::INT) END::UNION(k INT, s VARCHAR) AS un FROM range(3)")


def test_sql_gives_a_union_column_and_parquet_refuses_it(store, tmp_path, capsys, monkeypatch):
    """A UNION column ended every `headdb sql` in pyarrow's traceback (an empty table of its
    schema: sparse_union is not implemented); as Parquet, which has no union type, its members'
    values of two types did too."""
    from cli_helpers import run_main
    from headdb.query import export_sql

    assert headdb.sql(store, UNION)["un"].tolist() == [0, "x", None]
    code, out, err = run_main(capsys, monkeypatch, "sql", store, UNION, "--format", "csv")
    assert (code, out) == (0, "i,un\n0,0\n1,x\n2,\n"), err
    code, out, err = run_main(capsys, monkeypatch, "sql", store, UNION, "--format", "json")
    assert code == 0 and __import__("json").loads(out) == [{"i": 0, "un": 0}, {"i": 1, "un": "x"}, {"i": 2, "un": None}]
    code, out, err = run_main(capsys, monkeypatch, "sql", store, UNION)
    assert code == 0 and "x" in out, err
    code, out, err = run_main(capsys, monkeypatch, "sql", store, UNION, "--out", tmp_path / "u.parquet")
    assert code == 1 and "Parquet has no union type, and un is a UNION" in err and "Traceback" not in err
    assert not (tmp_path / "u.parquet").exists()
    with pytest.raises(InputError, match="un::VARCHAR"):
        export_sql(store, UNION, tmp_path / "u.parquet")
    with pytest.raises(InputError, match="cannot write the rows as Parquet"):
        export(headdb.sql(store, UNION), tmp_path / "u.parquet")



def test_sql_gives_a_blob_as_duckdbs_text_of_it(store, tmp_path, capsys, monkeypatch):
    """A BLOB came out as Python's text of it (`bytearray(b'\\x00A\\n')`) in the table, CSV and
    JSON: no tool reads that back. It is DuckDB's text now (`\\x00A\\x0A`), every byte as
    `value::VARCHAR` writes it; from Python and in Parquet it stays bytes."""
    import json

    from cli_helpers import run_main

    every = "SELECT from_hex(string_agg(printf('%02X', i), '' ORDER BY i)) AS b FROM range(256) t(i)"
    duckdb_text = duckdb.connect().execute(f"SELECT b::VARCHAR FROM ({every})").fetchone()[0]
    assert headdb.sql(store, every)["b"][0] == bytes(range(256))
    code, out, err = run_main(capsys, monkeypatch, "sql", store, every, "--format", "json")
    assert code == 0 and json.loads(out) == [{"b": duckdb_text}], err
    code, out, err = run_main(capsys, monkeypatch, "sql", store, every, "--format", "csv")
    assert code == 0 and list(__import__("csv").reader(out.splitlines())) == [["b"], [duckdb_text]], err
    query = "SELECT from_hex('00410A') AS b, [from_hex('41FF'), NULL] AS l"
    code, out, err = run_main(capsys, monkeypatch, "sql", store, query)
    assert code == 0 and "\\x00A\\x0A" in out and '["A\\\\xFF",null]' in out, out
    code, out, err = run_main(capsys, monkeypatch, "sql", store, query, "--out", tmp_path / "b.parquet")
    assert code == 0, err
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "b.parquet").to_pylist() == [{"b": b"\x00A\n", "l": [b"A\xff", None]}]


@pytest.mark.parametrize("query", ["SELECT TIMETZ '01:02:03+05' AS t, [1] AS l", "SELECT [TIMETZ '01:02:03+05'] AS t",
                                   "SELECT TIMETZ '01:02:03+05' AS t"])
def test_sql_refuses_a_time_with_time_zone_it_cannot_give_as_it_is(store, tmp_path, query, capsys, monkeypatch):
    """Beside a list (through Arrow) a TIME WITH TIME ZONE lost its offset: 01:02:03+05 came out
    as 01:02:03 in the table, CSV, JSON and Parquet; alone, DuckDB's DataFrames refused the type."""
    from cli_helpers import run_main

    with pytest.raises(InputError, match=r"^t is TIME WITH TIME ZONE, .* \(t::VARCHAR\)$"):
        headdb.sql(store, query)
    for args in ([], ["-f", "csv"], ["-f", "json"], ["--out", tmp_path / "t.parquet"]):
        code, out, err = run_main(capsys, monkeypatch, "sql", store, query, *args)
        assert code == 1 and "t is TIME WITH TIME ZONE" in err and "01:02:03" not in out, (args, out, err)
    assert not (tmp_path / "t.parquet").exists()
    code, out, err = run_main(capsys, monkeypatch, "sql", store, "SELECT TIMETZ '01:02:03+05'::VARCHAR AS t, [1] AS l",
                              "-f", "csv")
    assert (code, out) == (0, "t,l\n01:02:03+05,[1]\n"), err


EXOTIC = r"""SELECT * FROM (VALUES
    (1, [1, NULL, 3], 12345678901234567890.123456789::DECIMAL(38,9), INTERVAL '1 month 2 days 3 seconds',
     {'a': 1}, MAP {'k': 1}, '0101'::BIT, 9007199254740993::BIGINT, 1::HUGEINT),
    (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 2)) t(i, l, d, iv, s, m, bt, big, h)"""


def test_sql_keeps_duckdbs_values_as_they_are(store, tmp_path, capsys, monkeypatch):
    """DuckDB's DataFrames turned a NULL inside a list into a numpy mask (0 in Parquet, "--" in
    CSV), DECIMALs into floats, INTERVALs into days (a month is not 30 days), BIT into its
    bytes, and, beside a 128-bit sum, integers with NULLs into floats; a repeated name lost a column."""
    import decimal

    from cli_helpers import run_main

    df = headdb.sql(store, EXOTIC)
    assert list(df.columns) == ["i", "l", "d", "iv", "s", "m", "bt", "big", "h"]
    assert list(headdb.sql(store, "SELECT [1] AS x, 2 AS x").columns) == ["x", "x_1"]  # both kept, as DuckDB names them
    first = df.iloc[0].tolist()
    assert first[1] == [1, None, 3] and first[2] == decimal.Decimal("12345678901234567890.123456789")
    assert first[3:7] == ["P1M2DT0H0M3S", {"a": 1}, {"k": 1}, "0101"]
    assert first[7] == 9007199254740993 and str(df.dtypes.iloc[7]) == "Int64" and df.iloc[1, 7] is pd.NA
    back = {}
    for suffix in ("csv", "json", "parquet"):
        export(df, tmp_path / f"x.{suffix}")
    back["csv"] = (tmp_path / "x.csv").read_text().splitlines()[1]
    assert back["csv"] == ('1,"[1,null,3]",12345678901234567890.123456789,P1M2DT0H0M3S,"{""a"":1}","{""k"":1}",0101,'
                           "9007199254740993,1")
    record = __import__("json").loads((tmp_path / "x.json").read_text())[0]
    assert record["l"] == [1, None, 3] and record["d"] == "12345678901234567890.123456789"
    parquet = duckdb.sql(f"SELECT l, d, big FROM '{tmp_path / 'x.parquet'}'").fetchall()
    assert parquet[0] == ([1, None, 3], decimal.Decimal("12345678901234567890.123456789"), 9007199254740993)
    code, out, err = run_main(capsys, monkeypatch, "sql", store, EXOTIC, "--format", "csv")
    assert code == 0 and out.splitlines()[1].startswith('1,"[1,null,3]",12345678901234567890.123456789,P1M2DT0H0M3S'), err
    code, out, err = run_main(capsys, monkeypatch, "sql", store, "SELECT [1, NULL] AS l, INTERVAL 1 MONTH AS iv, "
                              "MAP {'k': 1} AS m, 1::HUGEINT AS h", "--out", tmp_path / "y.parquet")
    assert code == 0, err


#: One column of each kind whose value :func:`headdb.sql` converts, over 5,000 rows: more than two
#: batches of 2,048, with columns NULL throughout the first batch (DECIMAL) or the last (integers,
#: BOOLEAN), maps whose keys change between batches (a Parquet struct gains a field), and a
#: 128-bit column that needs decimal128 in the second batch and text (39 digits) in the third.
MIXED = """SELECT range AS i, CASE WHEN range % 3 = 0 THEN NULL ELSE [range, NULL, 3] END AS l,
    CASE WHEN range < 2100 THEN NULL ELSE (range * 1.5)::DECIMAL(38,9) END AS d,
    to_months(range::INTEGER) + INTERVAL 1 SECOND AS iv, {'a': range} AS s,
    CASE WHEN range < 2048 THEN MAP {'k': range} ELSE MAP {'j': range} END AS m, '0101'::BIT AS bt,
    CASE WHEN range > 4500 THEN NULL ELSE range END AS ni,
    CASE WHEN range = 4999 THEN 340282366920938463463374607431768211455::UHUGEINT
         WHEN range = 3000 THEN 12345678901234567890123::UHUGEINT ELSE range::UHUGEINT END AS wide,
    DATE '2024-01-01' + range::INTEGER AS dt, range::FLOAT / 3 AS f32, range / 3 AS f64, 'é"' || range AS txt,
    CASE WHEN range > 4000 THEN NULL ELSE range % 2 = 0 END AS b FROM range(5000)"""
#: The same kinds through DuckDB's own DataFrames (no column needs Arrow), NULLs in one batch only.
PLAIN = """SELECT range AS i, CASE WHEN range > 4500 THEN NULL ELSE range::INTEGER END AS ni, range / 3 AS f64,
    range::FLOAT / 3 AS f32, 'é"' || range AS txt, DATE '2024-01-01' + range::INTEGER AS dt,
    CASE WHEN range > 4000 THEN NULL ELSE range % 2 = 0 END AS b,
    CASE WHEN range < 2048 THEN NULL ELSE '00000000-0000-0000-0000-000000000001'::UUID END AS u FROM range(5000)"""


@pytest.mark.parametrize("query", [MIXED, PLAIN], ids=["arrow", "dataframe"])
def test_sql_out_writes_batch_by_batch_what_the_whole_result_gave(store, tmp_path, query, capsys, monkeypatch):
    """--out held the whole result (19 M rows for the edges of an EWT run) before writing it. In
    batches, a batch's types come from its own values (a column NULL throughout, a map's keys,
    a 128-bit column's widths): the file is still the one the whole result gave, CSV and JSON
    byte for byte, Parquet the same types and values."""
    import pyarrow.parquet as pq

    from cli_helpers import run_main
    from headdb.query import export_sql

    whole = headdb.sql(store, query)
    for fmt in ("csv", "json", "parquet"):
        export(whole, tmp_path / f"whole.{fmt}")
        counts = []
        assert export_sql(store, query, tmp_path / f"batches.{fmt}", batch_rows=2048, progress=counts.append) == 5000
        steps = [b - a for a, b in zip([0, *counts], counts)]
        assert len(counts) >= 3 and counts[-1] == 5000 and max(steps) <= 2048, counts  # three batches at least
        if fmt == "parquet":
            got, want = pq.read_table(tmp_path / "batches.parquet"), pq.read_table(tmp_path / "whole.parquet")
            assert got.schema.remove_metadata() == want.schema.remove_metadata()
            assert got.to_pylist() == want.to_pylist()
            assert pq.ParquetFile(tmp_path / "batches.parquet").num_row_groups == len(counts)
        else:
            got = (tmp_path / f"batches.{fmt}").read_bytes()
            assert got == (tmp_path / f"whole.{fmt}").read_bytes(), fmt
        code, _, err = run_main(capsys, monkeypatch, "sql", store, query, "--out", tmp_path / f"cli.{fmt}")
        assert code == 0 and err == f"wrote 5,000 rows to {tmp_path / f'cli.{fmt}'}\n", err
    assert (tmp_path / "cli.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert (tmp_path / "cli.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
    twice = query.replace("SELECT range AS i,", "SELECT range AS i, range AS i,")  # a repeated name is kept
    export(headdb.sql(store, twice), tmp_path / "twice.csv")
    export_sql(store, twice, tmp_path / "twice-batches.csv", batch_rows=2048)
    assert (tmp_path / "twice-batches.csv").read_bytes() == (tmp_path / "twice.csv").read_bytes()
    # the second is i_1 as DuckDB's DataFrames call it, also through Arrow (where both stayed i)
    assert (tmp_path / "twice.csv").read_text().startswith("i,i_1,")
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name or ".wider" in p.name) == []


@pytest.mark.parametrize("query", [MIXED, PLAIN], ids=["arrow", "dataframe"])
def test_sql_stdout_writes_csv_and_json_batch_by_batch(store, tmp_path, query, capsys, monkeypatch):
    """`headdb sql -f csv` and `-f json` held the whole result before printing it (1.5 GB of RSS
    for the edges of an EWT run) and printed CSV timestamps in pandas' per-column format. They
    now write a batch at a time: CSV the bytes that --out writes, JSON the one line that the
    whole result gave, without ever asking for the whole result."""
    import importlib

    from cli_helpers import run_main
    from headdb.query import json_text, write_sql

    q = importlib.import_module("headdb.query")
    whole = headdb.sql(store, query)
    monkeypatch.setattr(q, "_BATCH_ROWS", {"csv": 2048, "json": 2048, "parquet": 2048})
    code, _, err = run_main(capsys, monkeypatch, "sql", store, query, "--out", tmp_path / "out.csv")
    assert code == 0, err

    def whole_result(*args, **kwargs):
        raise AssertionError("the whole result was asked for")

    monkeypatch.setattr(q, "sql", whole_result)
    written = []
    for cls in (q._CsvBatches, q._JsonBatches):
        monkeypatch.setattr(cls, "write", lambda self, df, _w=cls.write: (written.append(len(df)), _w(self, df))[1])
    code, out, err = run_main(capsys, monkeypatch, "sql", store, query, "-f", "csv")
    assert code == 0 and out == (tmp_path / "out.csv").read_text(encoding="utf-8"), err
    assert written == [2048, 2048, 904]
    code, out, err = run_main(capsys, monkeypatch, "sql", store, query, "--format", "json")
    assert code == 0 and out == json_text(whole) + "\n", err
    assert written == [2048, 2048, 904] * 2
    with pytest.raises(InputError, match="csv or json"):
        write_sql(store, query, __import__("io").StringIO(), "parquet")


@pytest.mark.parametrize("names", [["i", "i", "i", "i_1", "I"], ["i_1", "i", "i"], ["A", "a", "a_1", "a"], ["x"]])
def test_repeated_column_names_are_made_distinct_as_duckdbs_dataframes_make_them(store, names):
    """A result that repeats a name kept it twice where it came through Arrow (a 128-bit or
    nested column) and got DuckDB's i_1 through DuckDB's DataFrames: one query, two sets of
    columns (in CSV and Parquet too). Both now carry DuckDB's names."""
    from headdb.query import distinct_names

    select = ", ".join(f'{n} AS "{c}"' for n, c in enumerate(names))
    want = list(duckdb.sql(f"SELECT {select}").df().columns)
    assert distinct_names(names) == want
    assert list(headdb.sql(store, f"SELECT {select}").columns) == want
    assert list(headdb.sql(store, f"SELECT {select}, 1::HUGEINT AS h").columns) == [*want, "h"]


def test_sql_table_shows_the_first_max_rows_and_says_the_result_has_more(store, capsys, monkeypatch):
    """A table is for a reader: `headdb sql STORE "SELECT * FROM edges"` drew every one of an EWT
    run's 19 M edges (minutes and gigabytes) before anything showed. It shows the first
    --max-rows (1,000), asks DuckDB for one row more, not for the whole result, and says that
    there are more; --max-rows 0 shows them all; CSV and JSON are not cut."""
    import importlib
    import re

    from cli_helpers import run_main
    from headdb.query import sql_head

    q = importlib.import_module("headdb.query")

    def shown(out: str) -> list[int]:
        return [int(m.group(1)) for m in re.finditer(r"^│\s*(\d+)\s*│$", out, flags=re.M)]

    def whole_result(*args, **kwargs):
        raise AssertionError("the whole result was asked for")

    with monkeypatch.context() as m:
        m.setattr(q, "sql", whole_result)
        code, out, err = run_main(capsys, monkeypatch, "sql", store, "SELECT range AS i FROM range(1500)")
        assert code == 0 and shown(out) == list(range(1000)), err
        assert err == ("(the first 1,000 rows; the result has more: --max-rows 0 shows them all, --format csv or "
                       "json or --out writes them all)\n")
        code, out, err = run_main(capsys, monkeypatch, "sql", store, "SELECT range AS i FROM range(1000)")
        assert code == 0 and shown(out) == list(range(1000)) and err == "", err
        code, out, err = run_main(capsys, monkeypatch, "sql", store, "SELECT range AS i FROM range(1500)",
                                  "--max-rows", "2")
        assert code == 0 and shown(out) == [0, 1] and "the first 2 rows;" in err, err
    code, out, err = run_main(capsys, monkeypatch, "sql", store, "SELECT range AS i FROM range(1500)", "--max-rows", "0")
    assert code == 0 and shown(out) == list(range(1500)) and err == "", err
    code, out, err = run_main(capsys, monkeypatch, "sql", store, "SELECT range AS i FROM range(1500)", "-f", "csv")
    assert code == 0 and out.splitlines() == ["i", *map(str, range(1500))], err
    code, _, err = run_main(capsys, monkeypatch, "sql", store, "SELECT 1", "--max-rows", "-1")
    assert code == 2 and "Invalid value for '--max-rows'" in err, err
    df, more = sql_head(store, "SELECT count(*) AS n FROM edges", 1)
    assert df["n"].tolist() == [3] and not more
    with pytest.raises(InputError, match="at least 1"):
        sql_head(store, "SELECT 1", 0)


def test_sql_out_writes_a_timestamp_as_itself_in_every_batch(store, tmp_path):
    """pandas wrote a CSV column of timestamps in one format chosen from its values: dates alone
    where all were midnight, else as many fraction digits as the most precise needed; two
    batches of one column came out in two formats."""
    from headdb.query import export_sql

    query = ("SELECT CASE WHEN range < 2048 THEN TIMESTAMP '2024-01-01' + INTERVAL (range) DAY "
             "ELSE TIMESTAMP '2024-01-01 10:00:00.5' END AS t, DATE '2024-01-01' AS d, "
             "CASE WHEN range = 4999 THEN NULL ELSE TIMESTAMPTZ '2024-01-01 10:00:00+00' END AS tz FROM range(5000)")
    for rows in (2048, 10_000):
        export_sql(store, query, tmp_path / f"{rows}.csv", batch_rows=rows)
    lines = (tmp_path / "2048.csv").read_text().splitlines()
    assert (tmp_path / "2048.csv").read_bytes() == (tmp_path / "10000.csv").read_bytes()
    assert lines[:2] == ["t,d,tz", "2024-01-01 00:00:00,2024-01-01,2024-01-01 10:00:00+00:00"]
    assert lines[-2:] == ["2024-01-01 10:00:00.500000,2024-01-01,2024-01-01 10:00:00+00:00",
                          "2024-01-01 10:00:00.500000,2024-01-01,"]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_sql_out_leaves_the_old_file_on_an_error_or_ctrl_c_in_any_batch(store, tmp_path, fmt):
    """Written batch by batch, the file still appears whole or not at all: Ctrl-C after any batch
    (after the second and the third, the Parquet file was rewritten into a wider schema) leaves
    the earlier export of that name as it was, and no temporary file."""
    from headdb.query import export_sql

    out = tmp_path / f"x.{fmt}"
    out.write_text("earlier")
    for stop in (1, 2049, 4097, 5000):

        def interrupt(rows):
            if rows >= stop:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            export_sql(store, MIXED, out, batch_rows=2048, progress=interrupt)
        assert out.read_text() == "earlier"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db", f"x.{fmt}"], stop
    with pytest.raises(DatabaseError, match="Could not convert string 'x' to INT32"):
        export_sql(store, "SELECT (CASE WHEN range = 4000 THEN 'x' ELSE range::VARCHAR END)::INTEGER AS v "
                          "FROM range(5000)", out, batch_rows=2048)
    assert out.read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db", f"x.{fmt}"]


def test_sql_params_are_values_never_sql_and_name_what_is_wrong(store, tmp_path, capsys, monkeypatch):
    """--param NAME=VALUE gives $NAME its value as text, which DuckDB casts as it casts a quoted
    literal: to the type the query compares it with (run_id = $run), text where the column is text."""
    from cli_helpers import run_main

    q = "SELECT count(*) AS n FROM edges WHERE layer = $layer AND weight > $w"
    code, out, err = run_main(capsys, monkeypatch, "sql", store, q, "--param", "layer=0", "--param", "$w=0.5",
                              "-f", "csv")
    assert (code, out) == (0, "n\n1\n"), err
    code, out, err = run_main(capsys, monkeypatch, "sql", store, "SELECT $s AS s, $s = '0' AS same, typeof($s) AS t, "
                              "$n::INTEGER + 1 AS n", "--param", "s=0", "--param", "n=41", "-f", "json")
    assert code == 0 and out == '[{"s":"0","same":true,"t":"VARCHAR","n":42}]\n', err
    # a value is never SQL: quotes and '=' are part of it
    code, out, err = run_main(capsys, monkeypatch, "sql", store, "SELECT $s AS s", "--param", "s=x' OR '1'='1",
                              "--out", tmp_path / "s.csv")
    assert code == 0 and (tmp_path / "s.csv").read_text() == "s\nx' OR '1'='1\n", err
    assert headdb.sql(store, "SELECT count(*) AS n FROM edges WHERE head = $h", {"h": 3})["n"].tolist() == [1]
    assert headdb.sql(store, "SELECT $Layer AS x", {"layer": "0"})["x"].tolist() == ["0"]  # names ignore case
    for args, words in ((["--param", "layer"], "'layer' is not NAME=VALUE"),
                        (["--param", "=0"], "'=0' is not NAME=VALUE"),
                        (["--param", "layer=0", "--param", "layer=1"], "$layer is given twice")):
        code, out, err = run_main(capsys, monkeypatch, "sql", store, q, *args)
        assert code == 2 and "--param" in err and words in err and out == "", err
    for args, words in (([], "the query uses $layer, which has no value: give it as --param layer=VALUE"),
                        (["--param", "layer=0"], "the query uses $w, which has no value"),
                        (["--param", "layr=0", "--param", "w=0"],
                         "a value is given for $layr, which the query does not use (its parameters: $layer, $w)")):
        code, out, err = run_main(capsys, monkeypatch, "sql", store, q, *args)
        assert code == 1 and err.startswith(f"error: {words}") and out == "", err
    code, _, err = run_main(capsys, monkeypatch, "sql", store, "SELECT 1 AS one", "--param", "x=1")
    assert code == 1 and "a value is given for $x, which the query does not use (it has no parameters)" in err
    code, _, err = run_main(capsys, monkeypatch, "sql", store, "SELECT ? AS one", "--param", "x=1")
    assert code == 1 and "its parameters are numbered (? or $1): give them as --param 1=VALUE" in err, err
    code, _, err = run_main(capsys, monkeypatch, "sql", store, "SELECT ? AS one")  # no --param at all
    assert code == 1 and err.startswith("error: the query uses $1, which has no value: give it as --param 1=VALUE"), err
    code, out, _ = run_main(capsys, monkeypatch, "sql", store, "SELECT ? AS one", "--param", "1=7", "-f", "csv")
    assert code == 0 and out == "one\n7\n"
    with pytest.raises(InputError, match=r"\$1, which has no value.*params=\[\.\.\.\]"):
        headdb.sql(store, "SELECT ? AS one")
    # from Python the messages name params, never the command line's --param
    for query, params, words in ((q, None, "the query uses $layer, which has no value: give it as params={'layer': ...}"),
                                 ("SELECT ? AS one", None, "give it as params=[...] or {'1': ...}"),
                                 ("SELECT ? AS one", {"x": 1}, "give them in a list, params=[...], or name them $name")):
        with pytest.raises(InputError) as raised:
            headdb.sql(store, query, params)
        assert words in str(raised.value) and "--param" not in str(raised.value), raised.value
    assert headdb.sql(store, "SELECT ? AS one", [7])["one"].tolist() == [7]
    code, _, err = run_main(capsys, monkeypatch, "sql", store, q, "--param", "layer=zero", "--param", "w=0")
    assert code == 1 and "Could not convert string 'zero' to INT16" in err, err  # layer is a SMALLINT
    assert not (tmp_path / "x.csv").exists()


def test_sql_out_reports_an_error_in_a_later_arrow_batch_as_the_querys(store, tmp_path, capsys, monkeypatch):
    """A column that goes through Arrow (a 128-bit sum, a map) streams from DuckDB's Arrow reader,
    which raises a later row's error (error(), a failed cast) as an OSError: it read as
    "OUT: cannot write the export: Invalid Input Error: boom", naming the file, not the query."""
    from cli_helpers import run_main
    from headdb.query import export_sql

    query = ("SELECT range::HUGEINT AS h, CASE WHEN range >= 4000 THEN error('boom') ELSE range END AS v "
             "FROM range(5000)")
    for fmt in ("csv", "json", "parquet"):
        out = tmp_path / f"x.{fmt}"
        with pytest.raises(DatabaseError, match="^SQL error: Invalid Input Error: boom"):
            export_sql(store, query, out, batch_rows=2048)
        code, _, err = run_main(capsys, monkeypatch, "sql", store, query, "--out", out)
        assert code == 1 and err.startswith("error: SQL error: Invalid Input Error: boom"), err
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]


def test_an_out_that_is_the_store_is_refused_and_the_store_kept(store, tmp_path, capsys, monkeypatch):
    """A store may have any name: `headdb sql s.parquet ... --out s.parquet` put the rows in its
    place (classify --out s.parquet its tests, after storing them), and a store named s.csv.tmp
    was emptied and removed by --out s.csv, whose temporary file that is. Refused before any work."""
    import hashlib

    from cli_helpers import run_main
    from headdb.query import check_export, export_sql

    named = tmp_path / "s.parquet"
    named.write_bytes(store.read_bytes())
    beside = tmp_path / "s.csv.tmp"
    beside.write_bytes(store.read_bytes())
    digest = hashlib.sha256(store.read_bytes()).hexdigest()
    cases = [(named, named, f"is the database file {named}"),
             (named, tmp_path / "." / "s.parquet", f"is the database file {named}"),
             (beside, tmp_path / "s.csv", f"would be written through s.csv.tmp, which is the database file {beside}")]
    for db, out, words in cases:
        for args in (["sql", db, "SELECT 1 AS a"], ["classify", db], ["compare", db, "1", "2"], ["accuracy", db]):
            code, _, err = run_main(capsys, monkeypatch, *args, "--out", out)
            assert code == 1 and err.startswith(f"error: {out}: {words}; name another file to write"), (args, err)
        with pytest.raises(InputError, match="name another file to write"):
            export_sql(db, "SELECT 1 AS a", out)
        with pytest.raises(InputError, match="name another file to write"):
            headdb.classify(db, out=out)
        with pytest.raises(InputError, match="name another file to write"):
            check_export(out, db)
        assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv.tmp", "s.parquet", "store.db"]
    assert check_export(tmp_path / "other.parquet", named) == "parquet"  # another file is fine


def test_sql_out_that_fails_leaves_no_folder_it_made(store, tmp_path):
    """--out makes the folders it names once the query has its first rows; an error in a later
    batch left them behind, empty (the whole result was computed before any folder was made)."""
    from headdb.query import export_sql

    query = "SELECT CASE WHEN range >= 4000 THEN error('boom') ELSE range END AS v FROM range(5000)"
    (tmp_path / "kept").mkdir()
    for fmt in ("csv", "parquet"):
        with pytest.raises(DatabaseError, match="boom"):
            export_sql(store, query, tmp_path / "kept" / "new" / "deeper" / f"x.{fmt}", batch_rows=2048)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "store.db"]
        assert not list((tmp_path / "kept").iterdir())
    assert export_sql(store, "SELECT 1 AS a", tmp_path / "kept" / "new" / "x.csv") == 1  # made where it works
    assert (tmp_path / "kept" / "new" / "x.csv").read_text() == "a\n1\n"


def test_sql_out_that_fails_before_its_first_batch_lets_the_store_go(store, tmp_path, monkeypatch):
    """The Arrow reader of a query is made before the output file is opened; where that failed,
    the reader was left to the garbage collector, and the store stayed open in this process as
    long as the error was kept (a notebook keeps the last one): a writer was refused."""
    import headdb.query as query

    def no_room(path, types):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(query._WRITERS, "csv", no_room)
    with pytest.raises(InputError, match="No space left on device") as kept:
        query.export_sql(store, "SELECT range::HUGEINT AS h FROM range(5000)", tmp_path / "x.csv")
    connect(store, read_only=False, existing=True).close()  # the store is free while the error is held
    assert kept.value is not None and not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("rows", [0, -1])
def test_export_sql_refuses_a_batch_of_no_rows(store, tmp_path, rows):
    """batch_rows of 0 or less never filled a batch: the export looped for ever."""
    from headdb.query import export_sql

    with pytest.raises(InputError, match=f"batch_rows must be at least 1, not {rows}"):
        export_sql(store, "SELECT 1 AS a UNION ALL SELECT 2", tmp_path / "x.csv", batch_rows=rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]
    from headdb.query import write_sql

    stream = __import__("io").StringIO()
    with pytest.raises(InputError, match=f"batch_rows must be at least 1, not {rows}"):
        write_sql(store, "SELECT 1 AS a UNION ALL SELECT 2", stream, "json", batch_rows=rows)
    assert stream.getvalue() == ""


def test_a_missing_score_view_says_where_the_score_views_are(store, capsys, monkeypatch):
    """`headdb sql --help` offers the views scores_<role>: with --write, or for a role of the
    user's own, DuckDB's error said only that no such table exists (`Did you mean "roles"?`)."""
    from cli_helpers import run_main

    code, _, err = run_main(capsys, monkeypatch, "sql", store, "SELECT count(*) FROM scores_local", "--write")
    assert code == 1 and err.startswith("error: SQL error: Catalog Error: Table with name scores_local does not "
                                        "exist!") and err.endswith(
        " (the views scores_<role> and sieve_<role> are on the read-only connection: leave out --write, or "
        "write=False)\n"), err
    with pytest.raises(DatabaseError) as caught:
        headdb.sql(store, "SELECT * FROM sieve_previous")
    assert str(caught.value).endswith(" (the views scores_<role> and sieve_<role> are those of the built-in roles; "
                                      "headdb.scores(db, run, roles, roles_dir) scores your own)")
    assert headdb.sql(store, "SELECT count(*) AS n FROM scores_local")["n"].tolist() == [0]  # read-only: there


def test_sql_exports_cap_duckdbs_memory_so_it_does_not_grow_with_the_store(store, tmp_path, monkeypatch):
    """`headdb sql --out` and `-f csv|json` (``export_sql``, ``write_sql``) ran on a connection of
    DuckDB's defaults, which keeps every block a scan reads cached up to 80% of RAM: exporting the
    edges took a peak RSS of 341 MB for 19 M edges and 527 MB for 57 M (EWT dev three times over),
    growing with the store. The streaming exports now read with DuckDB's memory capped, as
    classify's and accuracy's long reads are (``headdb.db.memory_limit_mb``)."""
    import io

    import headdb.db

    monkeypatch.setattr(headdb.db, "memory_limit_mb", lambda: 321)
    query = "SELECT current_setting('memory_limit') AS m, count(*) AS n FROM edges"
    headdb.export_sql(store, query, tmp_path / "m.csv")
    text_out = (tmp_path / "m.csv").read_text()
    assert "321" in text_out, text_out
    buf = io.StringIO()
    headdb.write_sql(store, query, buf, "csv")
    assert "321" in buf.getvalue(), buf.getvalue()
    assert buf.getvalue().splitlines()[1].endswith(",3")
    # --write keeps DuckDB's defaults (a writable connection of the user's settings)
    buf = io.StringIO()
    headdb.write_sql(store, query, buf, "csv", write=True)
    assert "321" not in buf.getvalue()


def test_params_of_another_type_are_named(store, tmp_path):
    """``params=3`` failed with "'int' object is not iterable" and ``params='3'`` with DuckDB's
    "Prepared parameters can only be passed as a list or a dictionary" dressed as an SQL error."""
    assert headdb.sql(store, "SELECT ? AS v", (3,))["v"].tolist() == [3]  # a tuple is a list
    for params in (3, "3", {3}):
        for call in (lambda: headdb.sql(store, "SELECT ? AS v", params),
                     lambda: headdb.export_sql(store, "SELECT ? AS v", tmp_path / "v.csv", params),
                     lambda: headdb.write_sql(store, "SELECT ? AS v", __import__("io").StringIO(), "csv", params)):
            with pytest.raises(InputError, match=r"^params must be a list \(for \? or \$1\) or a dict \(for \$name\), "
                                                 f"not {re.escape(repr(params))}$"):
                call()
    assert not (tmp_path / "v.csv").exists()


def test_drop_run_of_none_deletes_nothing(store):
    """``drop_run(db, None)`` (a notebook's ``run = None``) deleted the latest finished run, as
    ``run=None`` means for every reading function: a deletion names its run."""
    from handmade_store import add_corpus, add_run

    con = connect(store)
    add_corpus(con, 1)
    add_run(con, 1, 2, 4, 1)
    con.close()
    for dry_run in (True, False):
        with pytest.raises(InputError, match="^drop_run deletes the run it is given: pass its id or name, not None$"):
            headdb.drop_run(store, None, dry_run=dry_run)
    assert headdb.sql(store, "SELECT count(*) AS n FROM runs")["n"].tolist() == [1]
    assert headdb.sql(store, "SELECT count(*) AS n FROM edges")["n"].tolist() == [3]


def test_boolean_options_are_true_or_false(store, tmp_path):
    """Boolean options were taken by truth: ``ingest(dense='no')`` made a dense run,
    ``pairs='no'`` a pair run, ``sql(..., write='no')`` wrote and ``drop_run(dry_run=0)``
    deleted; ``ingest(device=0)`` failed in DuckDB ("Could not convert string 'cpu' to INT32")
    and ``progress='yes'`` drew a bar. Each is now an InputError naming the parameter, before
    the store is opened; numpy's booleans count as booleans."""
    import io

    import numpy as np

    corpus = Path(__file__).parent / "data" / "sample.conllu"
    db = tmp_path / "new.db"
    for name in ("pairs", "dense", "truncate", "download", "new_run"):
        with pytest.raises(InputError, match=f"^{name} must be True or False, not 'no'$"):
            headdb.ingest(db, corpus, **{name: "no"})
    with pytest.raises(InputError, match=r"^device must be text: cpu or cuda\[:N\], not 0$"):
        headdb.ingest(db, corpus, device=0)
    with pytest.raises(InputError, match="^progress must be a callable progress.sentences., True"):
        headdb.ingest(db, corpus, progress="yes")
    assert not db.exists()
    calls = {"classify": lambda v: headdb.classify(store, store=v),
             "sql": lambda v: headdb.sql(store, "DELETE FROM edge_store", write=v),
             "export_sql": lambda v: headdb.export_sql(store, "SELECT 1 AS x", tmp_path / "x.csv", write=v),
             "write_sql": lambda v: headdb.write_sql(store, "SELECT 1 AS x", io.StringIO(), write=v),
             "drop_run": lambda v: headdb.drop_run(store, 1, dry_run=v),
             "engine": lambda v: headdb.engine(store, read_only=v),
             "report": lambda v: headdb.report(store, out=tmp_path / "r", accuracy=v)}
    words = {"classify": "store", "drop_run": "dry_run", "engine": "read_only", "report": "accuracy"}
    for name, call in calls.items():
        # None too, where the option has no "unset" (report's accuracy: None is "when the corpus has relations")
        for value in ("no", 0, 1.0) + (() if name == "report" else (None,)):
            with pytest.raises(InputError, match=f"^{words.get(name, 'write')} must be True or False, not {value!r}$"):
                call(value)
    assert headdb.sql(store, "SELECT count(*) AS n FROM edge_store", write=np.False_)["n"].tolist() == [3]
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "r").exists()


def test_the_store_is_named_by_its_path(store, tmp_path, monkeypatch):
    """``headdb.init(con)`` with an open connection created a file named
    ``<_duckdb.DuckDBPyConnection object at 0x...>``; runs(con) or runs(None) said "no such
    database (create it with `headdb init None`)", and sql, summary, compact, drop_run and engine
    failed with "expected str, bytes or os.PathLike object". The store is its path, else an
    InputError that says so (and where an open connection does go)."""
    monkeypatch.chdir(tmp_path)
    con = duckdb.connect(str(store), read_only=True)
    try:
        calls = [headdb.init, headdb.runs, headdb.summary, lambda d: headdb.sql(d, "SELECT 1"), headdb.compact,
                 lambda d: headdb.drop_run(d, 1), headdb.engine, headdb.classify, headdb.scores,
                 lambda d: headdb.ingest(d, Path(__file__).parent / "data" / "sample.conllu"), headdb.connect]
        for db in (con, None, 5):
            for call in calls:
                with pytest.raises(InputError, match=r"^the store is its file's path \(a str or pathlib.Path\), "
                                                     f"not {re.escape(repr(db))}"):
                    call(db)
        with pytest.raises(InputError, match="an open connection goes only to the analysis functions"):
            headdb.runs(con)
    finally:
        con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]


def test_a_query_that_is_not_text_is_named(store, tmp_path):
    """sql(db, None) failed with DuckDB's "extract_statements(): incompatible function arguments"."""
    import io

    for query in (None, 5):
        for call in (lambda: headdb.sql(store, query), lambda: headdb.export_sql(store, query, tmp_path / "q.csv"),
                     lambda: headdb.write_sql(store, query, io.StringIO())):
            with pytest.raises(InputError, match=f"^query must be one SQL statement as text, not {query!r}$"):
                call()


def test_the_python_api_refuses_an_out_ending_with_a_slash(store, tmp_path):
    """headdb.export(df, "x.csv/"), export_sql and classify(out=) wrote the file x.csv (Path drops
    the slash), where `--out x.csv/` was refused: the API refuses it as the command line does."""
    import pandas as pd

    import headdb
    from headdb.errors import InputError

    out = f"{tmp_path / 'x.csv'}/"
    for call in (lambda: headdb.export(pd.DataFrame({"a": [1]}), out),
                 lambda: headdb.export_sql(store, "SELECT 1 AS a", out),
                 lambda: headdb.classify(store, out=out)):
        with pytest.raises(InputError, match="ends with '/', so it names a folder"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]


def test_a_write_statement_without_write_is_refused_and_changes_nothing(store):
    """sql() and the streaming writers open the store read-only unless write=True: a DELETE of a
    table (not the edges view, which DuckDB refuses in any mode) fails with the hint, and the rows
    stay."""
    import io

    query = "DELETE FROM edge_store WHERE layer = 1 RETURNING layer"
    for call in (lambda: headdb.sql(store, query), lambda: headdb.write_sql(store, query, io.StringIO())):
        with pytest.raises(DatabaseError, match="read-only.*add --write, or write=True"):
            call()
    assert headdb.sql(store, "SELECT count(*) AS n FROM edge_store")["n"].tolist() == [3]
    assert headdb.sql(store, query, write=True)["layer"].tolist() == [1]
    assert headdb.sql(store, "SELECT count(*) AS n FROM edge_store")["n"].tolist() == [2]


def test_the_memory_cap_is_per_thread_with_a_floor(monkeypatch):
    """DuckDB's cap for headdb's long reads grows with the cores, and never below MEMORY_MB_MIN."""
    import headdb.db as db

    monkeypatch.setattr(db.os, "cpu_count", lambda: 1)
    assert db.memory_limit_mb() == db.MEMORY_MB_MIN
    many = db.MEMORY_MB_MIN // db.MEMORY_MB_PER_THREAD * 4
    monkeypatch.setattr(db.os, "cpu_count", lambda: many)
    assert db.memory_limit_mb() == many * db.MEMORY_MB_PER_THREAD > db.MEMORY_MB_MIN
    monkeypatch.setattr(db.os, "cpu_count", lambda: None)  # unknown: one core
    assert db.memory_limit_mb() == db.MEMORY_MB_MIN


@pytest.mark.parametrize("batch_rows", [1000, 3000])
def test_sql_out_of_duckdbs_dataframes_in_batches_not_of_whole_vectors(store, tmp_path, batch_rows):
    """DuckDB's DataFrame chunks come in vectors of 2,048 rows: a batch size that is not a
    multiple of that cuts a chunk, and the rest goes into the next batch (batch_rows=2048 of the
    tests above never cut one). The file is the whole result's, in batches of at most batch_rows."""
    from headdb.query import export_sql

    whole = headdb.sql(store, PLAIN)
    export(whole, tmp_path / "whole.csv")
    counts = []
    assert export_sql(store, PLAIN, tmp_path / "batches.csv", batch_rows=batch_rows, progress=counts.append) == 5000
    steps = [b - a for a, b in zip([0, *counts], counts)]
    assert counts[-1] == 5000 and max(steps) == batch_rows, counts
    assert (tmp_path / "batches.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


@pytest.mark.parametrize("column", ["range::INTEGER", "range::HUGEINT"], ids=["dataframe", "arrow"])
def test_an_empty_result_is_written_as_export_writes_it(store, tmp_path, column):
    """A result without rows still has its columns: CSV its header, Parquet its schema, JSON an
    empty array, from DuckDB's DataFrames and from Arrow (a 128-bit column) alike, to a file and
    to a stream."""
    import io

    import pyarrow.parquet as pq

    from headdb.query import export_sql, json_text

    query = "SELECT " + column + " AS n, 'x' AS t FROM range(3) WHERE range > 5"
    whole = headdb.sql(store, query)
    assert list(whole.columns) == ["n", "t"] and whole.empty
    for fmt in ("csv", "json", "parquet"):
        export(whole, tmp_path / f"whole.{fmt}")
        assert export_sql(store, query, tmp_path / f"batches.{fmt}") == 0
        if fmt == "parquet":
            got, want = pq.read_table(tmp_path / "batches.parquet"), pq.read_table(tmp_path / "whole.parquet")
            assert got.schema.names == want.schema.names == ["n", "t"] and got.num_rows == 0
        else:
            assert (tmp_path / f"batches.{fmt}").read_bytes() == (tmp_path / f"whole.{fmt}").read_bytes(), fmt
    assert (tmp_path / "whole.csv").read_text() == "n,t\n"
    for fmt, want in (("csv", "n,t\n"), ("json", json_text(whole) + "\n")):
        buf = io.StringIO()
        assert headdb.write_sql(store, query, buf, fmt) == 0
        assert buf.getvalue() == want, fmt
