"""Reliability (#6): hostile role files are refused with ``path:line`` and change nothing.

The contract (headdb.roles): ``load_roles(roles_dir)`` raises :class:`headdb.errors.RoleError`
with ``.path`` and ``.line``. Role SQL is parsed and DESCRIBEd on an in-memory store that cannot
reach files or the network; it runs on real data only on a read-only, restricted connection.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest

from headdb.errors import RoleError

HEADER = "-- name: {name}\n-- description: a test role\n-- level: token\n"
GOOD_BODY = "SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos FROM tokens\n"

# name: (file body after the 3-line header, expected line, words in the message)
BAD_BODIES = {
    "syntax error": ("SELECT run_id, sentence_id, query_pos key_pos FROM FROM tokens\n", 4, "syntax error"),
    "missing column": ("SELECT run_id, sentence_id, token_pos AS query_pos FROM tokens\n", None,
                       "exactly the columns"),
    "extra column": ("SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos, 1 AS n FROM tokens\n",
                     None, "exactly the columns"),
    "wrong column names": ("SELECT run_id, sentence_id, token_pos AS q, token_pos AS k FROM tokens\n", None,
                           "exactly the columns"),
    "columns out of order": ("SELECT sentence_id, run_id, token_pos AS query_pos, token_pos AS key_pos FROM tokens\n",
                             None, "exactly the columns"),
    "wrong types": ("SELECT run_id, sentence_id, piece AS query_pos, token_pos AS key_pos FROM tokens\n", None,
                    "must be integers"),
    "float column": ("SELECT run_id, sentence_id, token_pos * 1.5 AS query_pos, token_pos AS key_pos FROM tokens\n",
                     None, "must be integers"),
    "unknown table": ("SELECT run_id, sentence_id, query_pos, key_pos\nFROM no_such_table\n", 5, "does not bind"),
    "unknown column": ("SELECT run_id, sentence_id, query_pos, key_pos FROM tokens\nWHERE nonsense > 0\n", None,
                       "does not bind"),
    "several statements": (GOOD_BODY.rstrip("\n") + ";\nSELECT 1;\n", 5, "exactly one SELECT"),
    "select then drop": (GOOD_BODY.rstrip("\n") + "; DROP TABLE edges;\n", 4, "exactly one SELECT"),
    "INSERT": ("INSERT INTO edges SELECT * FROM edges\n", 4, "not a INSERT"),
    "UPDATE": ("UPDATE edges SET weight = 0\n", 4, "not a UPDATE"),
    "DELETE": ("DELETE FROM edges\n", 4, "not a DELETE"),
    "DROP": ("DROP TABLE edges\n", 4, "not a DROP"),
    "CREATE": ("CREATE TABLE x AS SELECT 1\n", 4, "not a CREATE"),
    "COPY": ("COPY edges TO '/tmp/headdb-stolen.csv'\n", 4, "not a COPY"),
    "ATTACH": ("ATTACH '/tmp/headdb-other.db' AS other\n", 4, "not a ATTACH"),
    "INSTALL": ("INSTALL httpfs\n", 4, "not a"),
    "LOAD": ("LOAD httpfs\n", 4, "not a"),
    "PRAGMA": ("PRAGMA database_list\n", 4, "not a PRAGMA"),
    "SET": ("SET enable_external_access = true\n", 4, "not a"),
    "comment then DROP": ("--\n-- harmless\n/* still harmless */ DROP TABLE edges\n", 6, "not a DROP"),
    "comment line right after the header": ("-- harmless\nDROP TABLE edges\n", 4, "expected a header line"),
    "reads a file": ("SELECT run_id, sentence_id, query_pos, key_pos FROM read_csv('/etc/passwd')\n", None,
                     "not through read_csv()"),
    "reads the network": ("SELECT run_id, sentence_id, query_pos, key_pos\nFROM read_parquet('https://example.com/x.parquet')\n",
                          None, "not through read_parquet()"),
    "reads a file in a scalar subquery": ("SELECT run_id, sentence_id, query_pos, key_pos FROM tokens\n"
                                          "WHERE (SELECT count(*) FROM read_text('/etc/passwd')) > 0\n", None,
                                          "not through read_text()"),
    "reads the attention": ("SELECT run_id, sentence_id, query_pos, key_pos\nFROM edges\n", 5,
                            "never mention attention"),
    # it said "(a CTE of your own by that name: rename it)" of the store's own edges
    "reads the attention, qualified": ("SELECT run_id, sentence_id, query_pos, key_pos\nFROM main.\"EDGES\"\n", 5,
                                       "uses 'edges': read the tokens, words and their syntax instead"),
    # DESCRIBE and SUMMARIZE give their query no position: the mention was put on line 1, the header
    "SUMMARIZE the attention": ("SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos FROM tokens\n"
                                "WHERE (SELECT count(*) FROM (SUMMARIZE edges)) > 0\n", 5, "uses 'edges'"),
    "DESCRIBE the attention": ("SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos FROM tokens\n"
                               "WHERE (SELECT count(*) FROM (DESCRIBE edges)) > 0\n", 5, "uses 'edges'"),
    "filters by weight": ("SELECT t.run_id, t.sentence_id, t.token_pos AS query_pos, t.token_pos AS key_pos\n"
                          "FROM tokens t\nWHERE EXISTS (SELECT 1 FROM attention_rows a WHERE a.\"layer\" = 0)\n", 6,
                          "never mention attention"),
    "filters by model": ("SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, q.token_pos AS key_pos\n"
                         "FROM tokens q JOIN runs r USING (run_id)\nWHERE r.model_type = 'bert'\n", 6,
                         "uses 'model_type'"),
    # the model's columns of runs without naming them: the whole row, `*`, COLUMNS(), `#n`
    # (all accepted, and struct_extract(r, 'model_type') read the model on the store)
    "whole row of runs": ("SELECT t.run_id, t.sentence_id, t.token_pos AS query_pos, t.token_pos AS key_pos\n"
                          "FROM tokens t JOIN runs r USING (run_id)\nWHERE struct_extract(r, 'model_type') = 'bert'\n",
                          6, "reads the whole row 'r' of runs"),
    "star of runs": ("SELECT t.run_id, t.sentence_id, t.token_pos AS query_pos, t.token_pos AS key_pos\nFROM tokens t\n"
                     "JOIN (SELECT * EXCLUDE (run_name) FROM runs) r USING (run_id)\n", 6, "`*` or COLUMNS()"),
    "COLUMNS of runs": ("SELECT t.run_id, t.sentence_id, t.token_pos AS query_pos, t.token_pos AS key_pos\nFROM tokens t\n"
                        "JOIN (SELECT run_id, COLUMNS('n_la.*') AS x FROM runs) r USING (run_id) WHERE r.x > 0\n", 6,
                        "`*` or COLUMNS()"),
    "column number of runs": ("SELECT t.run_id, t.sentence_id, t.token_pos AS query_pos, t.token_pos AS key_pos\n"
                              "FROM tokens t JOIN (SELECT run_id, #13 AS x FROM runs) r USING (run_id)\nWHERE r.x > 0\n",
                              5, "runs with #13"),
    # DuckDB's catalog views: the edges' row counts (duckdb_tables.estimated_size, pg_class.reltuples)
    "catalog view": ("SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos FROM tokens\n"
                     "WHERE token_pos < (SELECT max(estimated_size) FROM duckdb_tables)\n", 5, "not 'duckdb_tables'"),
    "pg_catalog": ("SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos FROM tokens\n"
                   "WHERE token_pos < (SELECT max(reltuples) FROM pg_catalog.pg_class)\n", 5, "not 'pg_class'"),
    "information_schema": ("SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos FROM tokens\n"
                           "WHERE token_pos < (SELECT count(*) FROM information_schema.columns)\n", 5, "not 'columns'"),
    "undeclared variable": ("SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos FROM tokens\n"
                            "WHERE token_pos < getvariable('window')\n", 5, "does not declare"),
    "empty body": ("", 3, "no SQL statement"),
    "only a semicolon": (";\n", None, ""),
}


def write_role(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.sql"
    path.write_text(text, encoding="utf-8")
    return path


def refused(folder: Path) -> RoleError:
    from headdb.roles import load_roles

    with pytest.raises(RoleError) as info:
        load_roles(folder)
    err = info.value
    assert "\n" not in str(err)
    return err


@pytest.mark.parametrize("case", list(BAD_BODIES), ids=list(BAD_BODIES))
def test_hostile_role_body_is_refused_with_path_and_line(tmp_path, case):
    body, line, words = BAD_BODIES[case]
    path = write_role(tmp_path / "roles", "hostile", HEADER.format(name="hostile") + body)
    err = refused(tmp_path / "roles")
    assert err.path == str(path)
    assert err.line is not None and err.line >= 1
    if line is not None:
        assert err.line == line, str(err)
    assert str(err).startswith(f"{path}:{err.line}: ")
    assert words in str(err)
    assert not Path("/tmp/headdb-stolen.csv").exists() and not Path("/tmp/headdb-other.db").exists()


BAD_HEADERS = {
    "unknown key": ("-- name: r\n-- description: d\n-- level: token\n-- layer: 3\n" + GOOD_BODY, 4, "unknown header key"),
    "duplicate key": ("-- name: r\n-- description: d\n-- level: token\n-- level: word\n" + GOOD_BODY, 4,
                      "duplicate header key 'level' (first set on line 3)"),
    "missing description": ("-- name: r\n-- level: token\n" + GOOD_BODY, 1, "missing header key 'description'"),
    "missing name": ("-- description: d\n-- level: token\n" + GOOD_BODY, 1, "missing header key 'name'"),
    "no header": (GOOD_BODY, 1, "missing header key"),
    # a blank line ended the header: the key below it is named where it is (it said "missing
    # header key 'level': a role file starts with `-- level: ...`", at line 1)
    "key after a blank line": ("-- name: r\n-- description: d\n\n-- level: token\n" + GOOD_BODY, 4,
                               "header key 'level' is set after the header ended: a blank line"),
    "key after the bare --": ("-- name: r\n-- description: d\n--\n-- level: token\n" + GOOD_BODY, 4,
                              "header key 'level' is set after the header ended"),
    "name differs from file": ("-- name: other\n-- description: d\n-- level: token\n" + GOOD_BODY, 1,
                               "must equal the file name"),
    "bad level": ("-- name: r\n-- description: d\n-- level: sentence\n" + GOOD_BODY, 3, "level must be"),
    "tau not a number": ("-- name: r\n-- description: d\n-- level: token\n-- tau: high\n" + GOOD_BODY, 4,
                         "tau must be a number"),
    "tau infinite": ("-- name: r\n-- description: d\n-- level: token\n-- tau: inf\n" + GOOD_BODY, 4,
                     "tau must be a number"),
    "params unreadable": ("-- name: r\n-- description: d\n-- level: token\n-- params: k; DROP TABLE x\n" + GOOD_BODY,
                          4, "params are"),
    "params twice": ("-- name: r\n-- description: d\n-- level: token\n-- params: k=1, k=2\n" + GOOD_BODY, 4,
                     "set twice"),
    # a trailing comma promises a parameter that is not there
    "params trailing comma": ("-- name: r\n-- description: d\n-- level: token\n-- params: k=1, \n" + GOOD_BODY, 4,
                              "cannot read 'k=1,'"),
    "header line malformed": ("-- name: r\n-- description: d\n-- level token\n" + GOOD_BODY, 3,
                              "expected a header line"),
    "empty description": ("-- name: r\n-- description:\n-- level: token\n" + GOOD_BODY, 2, "description is empty"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS), ids=list(BAD_HEADERS))
def test_hostile_role_header_is_refused_with_path_and_line(tmp_path, case):
    text, line, words = BAD_HEADERS[case]
    path = write_role(tmp_path / "roles", "r", text)
    err = refused(tmp_path / "roles")
    assert (err.path, err.line) == (str(path), line), str(err)
    assert words in str(err)


def test_name_clashing_with_a_builtin_role_is_refused(tmp_path):
    path = write_role(tmp_path / "roles", "local", HEADER.format(name="local") + GOOD_BODY)
    err = refused(tmp_path / "roles")
    assert (err.path, err.line) == (str(path), 1)
    assert "clashes with the built-in role" in str(err)


@pytest.mark.parametrize("stem", ["Bad", "x'; DROP TABLE edges; --", "1role", "r-x"])
def test_role_names_outside_the_safe_alphabet_are_refused(tmp_path, stem):
    path = write_role(tmp_path / "roles", stem, HEADER.format(name=stem) + GOOD_BODY)
    err = refused(tmp_path / "roles")
    assert err.path == str(path) and err.line == 1
    assert "must be lower case letters" in str(err)


def test_invalid_utf8_role_file(tmp_path):
    """A file saved as Latin-1 is named at its line and byte, as a corpus file is (the message
    gave the codec's position in the whole file and no line); a byte-order mark counts as bytes."""
    folder = tmp_path / "roles"
    folder.mkdir()
    path = folder / "r.sql"
    path.write_bytes(HEADER.format(name="r").encode() + b"SELECT \xff\n")
    err = refused(folder)
    assert err.path == str(path) and "cannot read the role file" in str(err)
    assert err.line == 4 and "invalid UTF-8 at byte 7 of the line" in str(err)
    # past the text reader's first buffer (8 KiB), where its offset counted from the buffer
    path.write_bytes(b"\xef\xbb\xbf" + HEADER.format(name="r").encode() + b"-- " + b"x" * 9000 + b"\n"
                     + b"-- caf\xe9\n" + GOOD_BODY.encode())
    err = refused(folder)
    assert str(err) == f"{path}:5: cannot read the role file: invalid UTF-8 at byte 6 of the line; save it as UTF-8"


def test_a_good_role_next_to_the_bad_one_does_not_load_either(tmp_path):
    """Loading is all or nothing: one bad file fails the whole folder."""
    folder = tmp_path / "roles"
    write_role(folder, "good", HEADER.format(name="good") + GOOD_BODY)
    write_role(folder, "zbad", HEADER.format(name="zbad") + "DROP TABLE edges\n")
    refused(folder)
    from headdb.roles import load_roles

    (folder / "zbad.sql").unlink()
    assert "good" in [r.name for r in load_roles(folder)]


def test_classify_with_a_hostile_role_leaves_the_database_unchanged(tmp_path, monkeypatch, capsys):
    """Through the CLI: one `error: path:line:` line, and the store's tables as before."""
    from headdb import cli
    from headdb.db import init

    db = tmp_path / "store.db"
    init(db)

    def snapshot():
        con = duckdb.connect(str(db), read_only=True)
        try:
            names = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
            return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
        finally:
            con.close()

    before = snapshot()
    path = write_role(tmp_path / "roles", "evil", HEADER.format(name="evil") + "DROP TABLE edges\n")
    monkeypatch.setattr(sys, "argv", ["headdb", "classify", str(db), "--roles-dir", str(tmp_path / "roles")])
    monkeypatch.setitem(cli._state, "debug", False)
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert err.startswith(f"error: {path}:4: ") and err.count("\n") == 1, err
    assert snapshot() == before


def test_role_sql_runs_only_on_a_restricted_read_only_connection(tmp_path):
    """Even SQL that got past the loader could not write or reach out where roles run."""
    from headdb.db import connect_restricted, init

    db = tmp_path / "store.db"
    init(db)
    con = connect_restricted(db)
    try:
        for statement in ("DROP TABLE edges", "CREATE TABLE x (i INTEGER)", "INSERT INTO runs DEFAULT VALUES",
                          "SELECT * FROM read_csv('/etc/passwd')", "COPY edges TO '/tmp/headdb-stolen.csv'",
                          "SET enable_external_access = true", "ATTACH ':memory:' AS other",
                          "INSTALL httpfs", "LOAD httpfs", "SET memory_limit = '64GB'", "SET threads = 1"):
            with pytest.raises(duckdb.Error):
                con.execute(statement)
        assert con.execute("SELECT current_setting('lock_configuration')").fetchone()[0] is True
    finally:
        con.close()
    con = connect_restricted(db, memory_limit_mb=300)  # the cap classify gives it
    try:
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0].startswith("300.0 MiB")
    finally:
        con.close()
    assert not Path("/tmp/headdb-stolen.csv").exists()


def test_roles_are_checked_on_a_store_that_cannot_reach_files_either(tmp_path):
    """The in-memory store the loader DESCRIBEs roles on is shut off as the one they run on: a
    role that got past the checks of what it names could not read a file while it binds."""
    from headdb.roles import validation_connection

    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    con = validation_connection()
    try:
        for statement in (f"DESCRIBE SELECT * FROM read_csv('{secret}')", f"SELECT * FROM read_csv('{secret}')",
                          "SET enable_external_access = true", "SET memory_limit = '64GB'"):
            with pytest.raises(duckdb.Error):
                con.execute(statement)
    finally:
        con.close()


@pytest.mark.slow
def test_duplicate_pairs_are_refused_on_data_and_nothing_is_stored(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    """Duplicates can only be seen on data: classify refuses the role with path:line and stores nothing."""
    from headdb import cli
    from headdb.ingest import ingest

    db = tmp_path / "store.db"
    ingest(db, Path(__file__).parent / "data" / "sample.conllu", model=str(tiny_bert_dir))
    body = ("SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos FROM tokens\n"
            "UNION ALL\n"
            "SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos FROM tokens\n")
    path = write_role(tmp_path / "roles", "twice", HEADER.format(name="twice") + body)

    def counts():
        con = duckdb.connect(str(db), read_only=True)
        try:
            names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                               "WHERE table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
            return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
        finally:
            con.close()

    before = counts()
    monkeypatch.setattr(sys, "argv", ["headdb", "classify", str(db), "--roles-dir", str(tmp_path / "roles"),
                                      "--roles", "twice"])
    monkeypatch.setitem(cli._state, "debug", False)
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert err.startswith(f"error: {path}:") and "pair once" in err and err.count("\n") == 1, err
    assert counts() == before


def test_a_table_alias_named_head_is_not_a_model_head(tmp_path):
    """The mention check reads DuckDB's parse tree: `words AS head` is a table alias, fine; a
    column named head, a table of attention, or SQL run from a string is refused."""
    from headdb.errors import RoleError
    from headdb.roles import load_roles

    header = "-- name: {name}\n-- description: test\n-- level: word\n"
    ok = ("SELECT d.corpus_id, d.sentence_id, d.word_pos AS query_word_pos, head.word_pos AS key_word_pos\n"
          "FROM words AS d JOIN words AS head\n"
          "  ON head.corpus_id = d.corpus_id AND head.sentence_id = d.sentence_id AND head.word_pos = d.head_word_pos\n"
          "WHERE d.deprel = 'edges'\n")
    folder = tmp_path / "ok"
    write_role(folder, "heads_ok", header.format(name="heads_ok") + ok)
    assert [r.name for r in load_roles(folder, "heads_ok")] == ["heads_ok"]
    rows = ("SELECT w.corpus_id, w.sentence_id, w.word_pos AS query_word_pos, r.i::INTEGER AS key_word_pos\n"
            "FROM words AS w, range(0, 3) AS r(i), unnest([1]) AS u(x)\nWHERE r.i < w.word_pos\n")
    write_role(folder, "rows_ok", header.format(name="rows_ok") + rows)  # functions that make rows from values
    assert [r.name for r in load_roles(folder, "rows_ok")] == ["rows_ok"]
    bad = {
        "column_head": ("SELECT corpus_id, sentence_id, word_pos AS query_word_pos, word_pos AS key_word_pos\n"
                        "FROM (SELECT *, 1 AS head FROM words) AS w\nWHERE w.head = 1\n", "uses 'head'", 6),
        "query_table": ("SELECT corpus_id, sentence_id, word_pos AS query_word_pos, word_pos AS key_word_pos\n"
                        "FROM words\nWHERE word_pos IN (SELECT query_pos FROM query_table('edges'))\n", "query_table()", 6),
        # SQL from a string by another name: it read the real edges (48 of 72 heads "had" the role)
        "json_exec": ("SELECT corpus_id, sentence_id, word_pos AS query_word_pos, word_pos AS key_word_pos\n"
                      "FROM words\nWHERE word_pos IN (SELECT query_pos FROM json_execute_serialized_sql(\n"
                      "json_serialize_sql('SELECT query_pos FROM edges WHERE layer = 0')))\n",
                      "json_execute_serialized_sql()", 6),
        "storage_info": ("SELECT corpus_id, sentence_id, word_pos AS query_word_pos, word_pos AS key_word_pos\n"
                         "FROM words, (SELECT count(*) AS n FROM pragma_storage_info('edge_store')) AS s\n",
                         "pragma_storage_info()", 5),
        "results": ("SELECT corpus_id, sentence_id, word_pos AS query_word_pos, word_pos AS key_word_pos\n"
                    "FROM words\nWHERE word_pos < (SELECT max(n_significant) FROM role_summary)\n",
                    "uses 'role_summary'", 6),
    }
    for name, (body, message, line) in bad.items():
        folder = tmp_path / name
        write_role(folder, name, header.format(name=name) + body)
        with pytest.raises(RoleError) as info:
            load_roles(folder, name)
        assert message in str(info.value) and f":{line}:" in str(info.value), str(info.value)


def test_runs_read_by_its_columns_names_is_fine(tmp_path):
    """Only the model's columns of runs are off limits: `*` of other tables beside it, and the
    columns of runs by name, pass."""
    from headdb.roles import load_roles

    bodies = {
        "star_beside": "WITH x AS (SELECT * FROM tokens)\nSELECT x.run_id, x.sentence_id, x.token_pos AS query_pos, "
                       "x.token_pos AS key_pos\nFROM x JOIN runs r USING (run_id) WHERE r.corpus_id > 0\n",
        "star_other": "SELECT run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos FROM (\n"
                      "SELECT t.* FROM tokens t JOIN runs r ON r.run_id = t.run_id AND r.corpus_id = 1)\n",
        "named": "WITH rr AS (SELECT run_id, corpus_id FROM runs)\nSELECT * FROM (SELECT t.run_id, t.sentence_id, "
                 "t.token_pos AS query_pos, t.token_pos AS key_pos FROM tokens t JOIN rr USING (run_id))\n",
    }
    for name, body in bodies.items():
        write_role(tmp_path / "roles", name, HEADER.format(name=name) + body)
    assert [r.name for r in load_roles(tmp_path / "roles", list(bodies))] == list(bodies)


def test_without_a_parse_tree_the_mention_check_reads_every_identifier(tmp_path, monkeypatch):
    """Where DuckDB cannot serialise the parse tree, every identifier counts as a table and a
    column name: stricter (the alias `head` is refused then), never weaker."""
    import json

    from headdb.errors import RoleError
    from headdb.roles import load_roles

    def broken(*args, **kwargs):
        raise ValueError("no parse tree")

    monkeypatch.setattr(json, "loads", broken)
    body = ("SELECT d.corpus_id, d.sentence_id, d.word_pos AS query_word_pos, head.word_pos AS key_word_pos\n"
            "FROM words AS d JOIN words AS head ON head.word_pos = d.head_word_pos\n")
    folder = tmp_path / "r"
    write_role(folder, "strict", "-- name: strict\n-- description: test\n-- level: word\n" + body)
    with pytest.raises(RoleError) as info:
        load_roles(folder, "strict")
    assert "uses 'head'" in str(info.value) and ":4:" in str(info.value)


@pytest.mark.parametrize("level,body,words", [
    ("token", "SELECT run_id, sentence_id, token_pos AS query_pos, NULL::SMALLINT AS key_pos FROM tokens\n",
     "holds a NULL"),
    ("word", "SELECT corpus_id, sentence_id, word_pos AS query_word_pos, word_pos + 50 AS key_word_pos FROM words\n",
     "names a word its sentence does not have"),
])
def test_sieves_with_nulls_or_missing_words_are_refused_on_data_and_nothing_is_stored(tmp_path, level, body, words):
    """NULL positions counted in |S_i| (or dropped a query), and word pairs naming no word dropped
    out: wrong scores without a word. Now refused with path:line, and nothing is stored."""
    import numpy as np

    import headdb
    from role_reference import build_store, dirichlet_attention, simple_seq

    seqs = [simple_seq([1, 2, 1], [1, None, 1], ["nsubj", "root", "obj"]) for _ in range(3)]
    db = tmp_path / "s.db"
    build_store(db, seqs, [dirichlet_attention(np.random.default_rng(1), 1, 2, q.length) for q in seqs])
    path = write_role(tmp_path / "roles", "bad", HEADER.replace("token", level).format(name="bad") + body)
    with pytest.raises(RoleError) as info:
        headdb.classify(db, roles="local,bad", roles_dir=tmp_path / "roles")
    assert str(info.value).startswith(f"{path}:4: ") and words in str(info.value)
    assert headdb.sql(db, "SELECT (SELECT count(*) FROM head_tests) + (SELECT count(*) FROM sentence_scores) AS n"
                      )["n"][0] == 0


@pytest.mark.parametrize("level,where,parameter", [
    ("token", "WHERE run_id = $run_id", "$run_id"),
    ("token", "WHERE token_pos < ?", "?"),
    ("word", "WHERE corpus_id = (SELECT corpus_id FROM runs WHERE run_id = $1)", "$1"),
])
def test_a_role_with_a_prepared_statement_parameter_is_told_how_roles_get_the_run(tmp_path, monkeypatch, level,
                                                                                  where, parameter):
    """`$run_id` or `?` in a role got DuckDB's 'Values were not provided for the following
    parameters: run_id' and no hint: roles take no parameters; they return every run's pairs, and
    their own values come from `-- params:` through getvariable()."""
    import importlib

    import numpy as np

    import headdb
    from headdb.roles import load_roles
    from role_reference import build_store, dirichlet_attention, simple_seq

    seqs = [simple_seq([1, 2, 1], [1, None, 1], ["nsubj", "root", "obj"]) for _ in range(3)]
    db = tmp_path / "s.db"
    build_store(db, seqs, [dirichlet_attention(np.random.default_rng(1), 1, 2, q.length) for q in seqs])
    columns = ("run_id, sentence_id, token_pos AS query_pos, token_pos AS key_pos\nFROM tokens" if level == "token"
               else "corpus_id, sentence_id, word_pos AS query_word_pos, word_pos AS key_word_pos\nFROM words")
    path = write_role(tmp_path / "roles", "byrun", HEADER.replace("token", level).format(name="byrun")
                      + f"SELECT {columns}\n{where}\n")
    said = (f"{path}:6: the role uses the parameter {parameter}, which nothing binds: a role's SQL takes no "
            "parameters; it returns its pairs for every run (token level: run_id from tokens; word level: corpus_id "
            "from words) and headdb keeps those of the run it classifies. A value of the role's own goes in its "
            "`-- params:` line (`-- params: name=value`), read as getvariable('name')")
    with pytest.raises(RoleError) as info:
        headdb.classify(db, roles="local,byrun", roles_dir=tmp_path / "roles")
    assert str(info.value) == said
    assert headdb.sql(db, "SELECT (SELECT count(*) FROM head_tests) + (SELECT count(*) FROM sentence_scores) AS n"
                      )["n"][0] == 0
    # where the parse tree cannot be read, DuckDB's own refusal says the same (at the SELECT, unnamed)
    monkeypatch.setattr(importlib.import_module("headdb.roles"), "_references", lambda con, sql: None)
    with pytest.raises(RoleError) as info:
        load_roles(tmp_path / "roles", ["byrun"])
    assert str(info.value) == said.replace(f"the parameter {parameter}", "prepared-statement parameters").replace(
        f"{path}:6:", f"{path}:4:")


def test_a_role_nested_too_deeply_for_pythons_recursion_is_checked_the_strict_way(tmp_path):
    """An expression of 600 terms (DuckDB takes up to 1000 levels) made json.loads of its parse
    tree raise RecursionError: a traceback from `headdb classify` and `headdb roles list`. Such a
    role is now checked by its identifiers, as where there is no parse tree: classified when it
    keeps the contract, refused with path:line when it names attention."""
    import numpy as np

    import headdb
    from headdb.roles import load_roles
    from role_reference import build_store, dirichlet_attention, simple_seq

    deep = "token_pos" + " + 0" * 600
    write_role(tmp_path / "roles", "deep", HEADER.format(name="deep") + "SELECT run_id, sentence_id, token_pos AS "
               f"query_pos,\n  {deep} AS key_pos\nFROM tokens\n")
    seqs = [simple_seq([1, 2, 1], [1, None, 1], ["nsubj", "root", "obj"]) for _ in range(3)]
    db = tmp_path / "s.db"
    build_store(db, seqs, [dirichlet_attention(np.random.default_rng(1), 1, 2, q.length) for q in seqs])
    tests = headdb.classify(db, roles="deep", roles_dir=tmp_path / "roles")
    assert list(tests["n"]) == [3, 3] and np.isfinite(tests["mean"]).all()
    path = write_role(tmp_path / "evil", "deep", HEADER.format(name="deep") + "SELECT run_id, sentence_id, "
                      f"token_pos AS query_pos,\n  {deep} AS key_pos\nFROM tokens\nWHERE sentence_id IN "
                      "(SELECT sentence_id FROM edges WHERE weight > 0.5)\n")
    with pytest.raises(RoleError) as info:
        load_roles(tmp_path / "evil", "deep")
    assert str(info.value).startswith(f"{path}:7: roles never mention attention"), str(info.value)
