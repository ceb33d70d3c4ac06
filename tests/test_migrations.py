"""Migrations: golden schema, the upgrade path from 0001, checksums, and clear errors."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import duckdb
import pytest

from headdb.db import connect, init, list_migrations, migrate, schema_version
from headdb.errors import DatabaseError

sys.path.insert(0, str(Path(__file__).parent))
from schema_dump import schema_text  # noqa: E402

GOLDEN_SCHEMA = Path(__file__).parent / "golden" / "schema.sql"


def _fresh(tmp_path: Path) -> Path:
    db = tmp_path / "fresh.db"
    init(db)
    return db


def test_fresh_schema_matches_golden(tmp_path, update_golden):
    """Regenerate with: .venv/bin/python -m pytest tests/test_migrations.py --update-golden"""
    con = duckdb.connect(str(_fresh(tmp_path)))
    text = schema_text(con)
    con.close()
    if update_golden:
        GOLDEN_SCHEMA.write_text(text)
    assert text == GOLDEN_SCHEMA.read_text(), (
        "the migrated schema differs from tests/golden/schema.sql; if the change is intended, "
        "regenerate it with `.venv/bin/python -m pytest tests/test_migrations.py --update-golden`"
    )


def test_each_migration_applied_once_with_checksum(tmp_path):
    db = tmp_path / "x.db"
    migrations = list_migrations()
    assert init(db) == [m.version for m in migrations]
    assert init(db) == []  # second time: nothing to do
    con = connect(db)  # connect migrates too; must be a no-op now
    rows = con.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version").fetchall()
    con.close()
    assert rows == [(m.version, m.name, m.checksum) for m in migrations]
    assert len({r[0] for r in rows}) == len(rows)


def _seed_v1(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("INSERT INTO corpora (path, sha256, format, pairs, parser) VALUES ('c.conllu', 'abc', 'conllu', false, 'gold')")
    con.execute("INSERT INTO sentences VALUES (1, 0, 'doc', 's1', 1, 'Hello world', NULL, 2, NULL)")
    con.execute("INSERT INTO words VALUES (1, 0, 0, 0, 'Hello', 'hello', 'INTJ', 'UH', 1, 'discourse'),"
                " (1, 0, 1, 0, 'world', 'world', 'NOUN', 'NN', NULL, 'root')")
    con.execute(
        "INSERT INTO runs (run_name, fingerprint, corpus_id, corpus_path, corpus_sha256, corpus_format, pairs, model,"
        " model_hash, model_type, tokenizer, n_layers, n_heads, dtype, attn_implementation, device, max_length,"
        " truncate, top_k, min_mass, dense, sentence_limit, batch_size, headdb_version, library_versions, status)"
        " VALUES ('r', 'fp', 1, 'c.conllu', 'abc', 'conllu', false, 'm', 'h', 'bert', 'tok', 1, 1, 'float32',"
        " 'eager', 'cpu', 512, false, 8, NULL, false, NULL, 32, '0.0', '{}', 'done')")
    con.execute("INSERT INTO run_sentences VALUES (1, 0, 4, 4, 'ok')")
    con.execute("INSERT INTO tokens VALUES (1, 0, 0, '[CLS]', NULL, NULL, 'cls'), (1, 0, 1, 'hello', 0, 0, NULL),"
                " (1, 0, 2, 'world', 1, 0, NULL), (1, 0, 3, '[SEP]', NULL, NULL, 'sep')")
    con.execute("INSERT INTO edges VALUES (1, 0, 0, 0, 0, 1, 0.75), (1, 0, 0, 0, 0, 0, 0.25)")


def test_upgrade_from_first_migration_keeps_data(tmp_path):
    db = tmp_path / "old.db"
    con = duckdb.connect(str(db))
    assert migrate(con, list_migrations()[:1]) == [1]
    _seed_v1(con)
    before = {t: con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall()
              for t in ("corpora", "sentences", "words", "runs", "run_sentences", "tokens", "edges")}
    con.close()

    latest = len(list_migrations())
    applied = init(db)
    assert applied == list(range(2, latest + 1))

    con = duckdb.connect(str(db))
    assert schema_version(con) == latest
    added = {"runs": " EXCLUDE (weight_bits)"}  # columns later migrations added
    for table, rows in before.items():
        assert con.execute(f'SELECT *{added.get(table, "")} FROM "{table}" ORDER BY ALL').fetchall() == rows, table
    assert con.execute("SELECT weight_bits FROM runs").fetchall() == [(32,)]  # earlier runs stored float32
    assert con.execute("SELECT count(*) FROM edge_store").fetchone()[0] == 2  # float32 runs stay in edge_store
    assert con.execute("SELECT count(*) FROM edge_store16").fetchone()[0] == 0
    # the upgraded schema is the same as a fresh one
    upgraded = schema_text(con)
    # sequences keep counting where the old data left off
    assert con.execute(
        "INSERT INTO corpora (path, sha256, format, pairs, parser) VALUES ('d', 'def', 'text', false, 'p') RETURNING corpus_id"
    ).fetchone()[0] == 2
    assert con.execute("SELECT residual FROM attention_rows").fetchall() == [(0.0,)]
    con.close()
    fresh = duckdb.connect(str(_fresh(tmp_path)))
    assert upgraded == schema_text(fresh)
    fresh.close()


def _copy_migrations(tmp_path: Path) -> Path:
    """A writable copy of the shipped migrations folder."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for m in list_migrations():
        shutil.copy(m.path, folder / m.path.name)
    return folder


def test_edited_applied_migration_is_an_error(tmp_path):
    folder = _copy_migrations(tmp_path)
    db = tmp_path / "x.db"
    con = duckdb.connect(str(db))
    migrate(con, list_migrations(folder))
    first = sorted(folder.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(DatabaseError, match=r"0001.*edited after it was applied") as info:
        migrate(con, list_migrations(folder))
    assert first.name in str(info.value)
    con.close()


def test_database_newer_than_code_is_an_error(tmp_path):
    db = tmp_path / "x.db"
    init(db)
    con = duckdb.connect(str(db))
    latest = len(list_migrations())
    con.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (?, 'future', 'x')", [latest + 1])
    con.close()
    with pytest.raises(DatabaseError, match="newer than this headdb"):
        init(db)
    with pytest.raises(DatabaseError, match="newer than this headdb"):
        connect(db)
    # an older headdb (knowing fewer migrations) also refuses the current database
    con = duckdb.connect(str(tmp_path / "y.db"))
    migrate(con)
    with pytest.raises(DatabaseError, match="newer than this headdb"):
        migrate(con, list_migrations()[:1])
    con.close()


def test_failing_migration_rolls_back(tmp_path):
    folder = _copy_migrations(tmp_path)
    n = len(list_migrations())
    (folder / f"{n + 1:04d}_broken.sql").write_text("CREATE TABLE half_done (x INTEGER);\nSELECT * FROM no_such_table;\n")
    con = duckdb.connect(str(tmp_path / "x.db"))
    with pytest.raises(DatabaseError, match="migration failed"):
        migrate(con, list_migrations(folder))
    assert schema_version(con) == n
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'half_done'").fetchone()[0] == 0
    con.close()


def test_badly_named_or_gapped_migrations_are_errors(tmp_path):
    (tmp_path / "0001_ok.sql").write_text("SELECT 1;")
    (tmp_path / "0003_gap.sql").write_text("SELECT 1;")
    with pytest.raises(DatabaseError, match="without gaps"):
        list_migrations(tmp_path)
    (tmp_path / "Bad-Name.sql").write_text("SELECT 1;")
    with pytest.raises(DatabaseError, match="NNNN_slug.sql"):
        list_migrations(tmp_path)


def test_read_only_connect_errors(tmp_path):
    with pytest.raises(DatabaseError, match="no such database"):
        connect(tmp_path / "missing.db", read_only=True)
    assert not (tmp_path / "missing.db").exists()

    other = tmp_path / "other.db"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    with pytest.raises(DatabaseError, match="not a headdb database"):
        connect(other, read_only=True)

    old = tmp_path / "old.db"
    con = duckdb.connect(str(old))
    migrate(con, list_migrations()[:1])
    con.close()
    with pytest.raises(DatabaseError, match=r"older than .*headdb init"):
        connect(old, read_only=True)
    # the read-only attempt changed nothing
    con = duckdb.connect(str(old), read_only=True)
    assert schema_version(con) == 1
    con.close()

    notdb = tmp_path / "notes.txt"
    notdb.write_text("just some text, not a database\n" * 10)
    with pytest.raises(DatabaseError):
        connect(notdb, read_only=True)
    with pytest.raises(DatabaseError):
        connect(notdb)


def test_engine_reads_the_store(tmp_path):
    pd = pytest.importorskip("pandas")
    from headdb.db import engine

    db = _fresh(tmp_path)
    eng = engine(db)
    with eng.connect() as c:
        df = pd.read_sql("SELECT count(*) AS n FROM edges", c)
    eng.dispose()
    assert int(df["n"][0]) == 0


def test_upgrade_to_rle_row_keys_keeps_every_edge_in_its_order(tmp_path):
    """Migration 0006 rebuilds edge_store with RLE named for the row keys: every row, both
    weight kinds, in the same physical order (what resume and the scoring pieces rely on)."""
    db = tmp_path / "v5.db"
    con = duckdb.connect(str(db))
    assert migrate(con, list_migrations()[:5]) == [1, 2, 3, 4, 5]
    con.execute("INSERT INTO edge_store SELECT 1 + (i >= 200000)::INTEGER, i // 576, (i // 96) % 6, (i // 8) % 12, "
                "(i // 8) % 9, i % 8, CASE WHEN i < 200000 THEN (i % 97) / 97.0 END, "
                "CASE WHEN i >= 200000 THEN i % 65536 END FROM range(300000) r(i)")
    before = con.execute("SELECT * FROM edge_store").fetchall()
    assert migrate(con, list_migrations()[:6]) == [6]
    assert con.execute("SELECT * FROM edge_store").fetchall() == before
    con.execute("CHECKPOINT")
    _assert_rle_row_keys(con, "edge_store")
    con.close()


def _assert_rle_row_keys(con, table, one_value=()):
    """The row keys are stored with RLE (or as a constant segment); ``one_value``: columns
    with a single value in the table, which DuckDB stores as Constant only."""
    used = dict(con.execute(
        f"SELECT column_name, list(DISTINCT compression) FROM pragma_storage_info('{table}') "
        "WHERE segment_type <> 'VALIDITY' GROUP BY column_name").fetchall())
    for column in ("run_id", "sentence_id", "layer", "head", "query_pos"):
        assert set(used[column]) <= {"RLE", "Constant"}, (table, column, used[column])
        assert column in one_value or "RLE" in used[column], (table, column, used[column])


def test_upgrade_to_a_table_per_weight_kind_keeps_every_edge_in_its_order(tmp_path):
    """Migration 0007 moves 16-bit runs to edge_store16 and drops edge_store's weight16 (a NULL
    column slowed every append): each kind's rows keep their physical order, and the edges view
    gives every row with the same FLOAT weight as before."""
    db = tmp_path / "v6.db"
    con = duckdb.connect(str(db))
    assert migrate(con, list_migrations()[:6]) == [1, 2, 3, 4, 5, 6]
    con.execute("INSERT INTO edge_store SELECT 1 + (i >= 200000)::INTEGER, i // 576, (i // 96) % 6, (i // 8) % 12, "
                "(i // 8) % 9, i % 8, CASE WHEN i < 200000 THEN (i % 97) / 97.0 END, "
                "CASE WHEN i >= 200000 THEN i % 65536 END FROM range(300000) r(i)")
    # rows written by hand: both weights (the old view read weight), and neither (a NULL weight)
    con.execute("INSERT INTO edge_store VALUES (9, 0, 0, 0, 0, 1, 0.5, 7), (9, 0, 0, 0, 0, 2, NULL, NULL)")
    keys = "run_id, sentence_id, layer, head, query_pos, key_pos"
    before32 = con.execute(f"SELECT {keys}, weight FROM edge_store WHERE weight IS NOT NULL OR weight16 IS NULL"
                           ).fetchall()
    before16 = con.execute(f"SELECT {keys}, weight16 FROM edge_store WHERE weight IS NULL AND weight16 IS NOT NULL"
                           ).fetchall()
    edges_before = con.execute("SELECT * FROM edges ORDER BY ALL").fetchall()
    con.close()
    assert len(before32) == 200002 and len(before16) == 100000
    assert init(db) == list(range(7, len(list_migrations()) + 1))
    con = duckdb.connect(str(db))
    assert con.execute("SELECT * FROM edge_store").fetchall() == before32
    assert con.execute("SELECT * FROM edge_store16").fetchall() == before16
    assert "weight16" not in [r[0] for r in con.execute("DESCRIBE edge_store").fetchall()]
    assert con.execute("SELECT * FROM edges ORDER BY ALL").fetchall() == edges_before
    con.execute("CHECKPOINT")
    _assert_rle_row_keys(con, "edge_store", one_value=("run_id",))
    _assert_rle_row_keys(con, "edge_store16", one_value=("run_id",))  # run 2 only
    con.close()


def test_a_store_one_migration_behind_or_ahead_is_refused_read_only(tmp_path):
    """A read-only connection never upgrades, so it refuses a store missing only the latest
    migration (the test above covers one with the first alone), and one with a migration this
    headdb does not know, which a writable connection refuses through migrate()."""
    migrations = list_migrations()
    behind = tmp_path / "behind.db"
    con = duckdb.connect(str(behind))
    migrate(con, migrations[:-1])
    con.close()
    with pytest.raises(DatabaseError, match=f"schema version {len(migrations) - 1} is older than {len(migrations)}"):
        connect(behind, read_only=True)
    ahead = tmp_path / "ahead.db"
    init(ahead)
    con = duckdb.connect(str(ahead))
    con.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (?, 'future', 'x')",
                [len(migrations) + 1])
    con.close()
    for read_only, existing in ((True, False), (False, True)):
        with pytest.raises(DatabaseError, match=f"schema version {len(migrations) + 1}, newer than this headdb"):
            connect(ahead, read_only=read_only, existing=existing)
