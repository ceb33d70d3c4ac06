"""`headdb drop` deletes one run and all its rows in one transaction; `headdb compact` rewrites
the store without the freed space, with the same schema, rows and sequences."""

from __future__ import annotations

import duckdb
import pytest

import headdb
from cli_helpers import run_main
from schema_dump import schema_text

from conftest import DATA

RUN_TABLES = ["classifications", "edge_store", "edge_store16", "head_tests", "run_sentences", "sentence_scores", "tokens", "runs"]


def _counts(db, run_id: int) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t} WHERE run_id = ?", [run_id]).fetchone()[0]
                for t in RUN_TABLES}
    finally:
        con.close()


def _checksum(db, run_id: int) -> tuple:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*), sum(weight::DOUBLE * (key_pos + 1) * (layer + 1)) FROM edges "
                           "WHERE run_id = ?", [run_id]).fetchone()
    finally:
        con.close()


def test_drop_a_run_then_compact(tmp_path, tiny_bert_dir, capsys, monkeypatch):
    db = tmp_path / "s.db"
    first = headdb.ingest(db, DATA / "sample.conllu", model=tiny_bert_dir, top_k=3, progress=False).run_id
    second = headdb.ingest(db, DATA / "sample.conllu", model=tiny_bert_dir, top_k=5, progress=False).run_id
    headdb.classify(db, run=first)
    headdb.classify(db, run=second)
    before = _counts(db, first)
    assert all(before[t] > 0 for t in RUN_TABLES if t != "edge_store16")
    assert before["edge_store16"] == 0  # a float32 run's edges are all in edge_store
    kept = (_counts(db, second), _checksum(db, second))

    code, out, err = run_main(capsys, monkeypatch, "drop", db, str(first))  # without --yes: only says
    assert code == 0 and "nothing deleted" in out and f"edge_store {before['edge_store']:,}" in out
    assert _counts(db, first) == before

    code, out, err = run_main(capsys, monkeypatch, "drop", db, str(first), "--yes")
    assert code == 0 and f"deleted run {first}" in out, err
    assert _counts(db, first) == {t: 0 for t in RUN_TABLES}
    assert (_counts(db, second), _checksum(db, second)) == kept
    assert headdb.sql(db, "SELECT count(*) AS n FROM words")["n"][0] > 0  # the corpus stays

    con = duckdb.connect(str(db), read_only=True)
    schema = schema_text(con)
    con.close()
    size = db.stat().st_size
    code, out, err = run_main(capsys, monkeypatch, "compact", db)
    assert code == 0 and "compacted" in out, err
    assert db.stat().st_size < size
    assert not (tmp_path / "s.db.compact-tmp").exists()
    con = duckdb.connect(str(db), read_only=True)
    assert schema_text(con) == schema
    con.close()
    assert (_counts(db, second), _checksum(db, second)) == kept
    # the sequences came along: a new run gets a new id, and the dropped run's ingest starts afresh
    third = headdb.ingest(db, DATA / "sample.conllu", model=tiny_bert_dir, top_k=3, progress=False)
    assert third.run_id == second + 1 and not third.resumed
    assert _checksum(db, third.run_id)[0] == before["edge_store"]
    # a 16-bit run's edges are in edge_store16, and go with it
    sixteen = headdb.ingest(db, DATA / "sample.conllu", model=tiny_bert_dir, top_k=3, weight_bits=16,
                            progress=False).run_id
    counts16 = _counts(db, sixteen)
    assert counts16["edge_store16"] == before["edge_store"] and counts16["edge_store"] == 0
    code, out, err = run_main(capsys, monkeypatch, "drop", db, str(sixteen), "--yes")
    assert code == 0 and f"deleted run {sixteen}" in out and f"edge_store16 {before['edge_store']:,}" in out, err
    assert _counts(db, sixteen) == {t: 0 for t in RUN_TABLES}
    assert (_counts(db, second), _checksum(db, second)) == kept

    code, out, err = run_main(capsys, monkeypatch, "drop", db, "no-such-run", "--yes")
    assert code == 1 and "no run 'no-such-run'" in err


def test_compact_leaves_a_busy_store_as_it_was(tmp_path, tiny_bert_dir):
    db = tmp_path / "s.db"
    headdb.ingest(db, DATA / "sample.conllu", model=tiny_bert_dir, top_k=3, progress=False)
    data = db.read_bytes()
    reader = duckdb.connect(str(db), read_only=True)  # another reader: compact cannot take the file
    try:
        with pytest.raises(headdb.errors.HeaddbError):
            headdb.compact(db)
    finally:
        reader.close()
    assert db.read_bytes() == data and not (tmp_path / "s.db.compact-tmp").exists()
