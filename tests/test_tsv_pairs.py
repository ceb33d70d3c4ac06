"""TSV sentence pairs end to end: both segments parsed, the run marked as pairs, block scored."""

from __future__ import annotations

import pytest

import headdb
from headdb.db import connect


@pytest.mark.slow
def test_tsv_pairs_are_pair_runs_with_block_samples(tmp_path, tiny_bert_dir):
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("A man is eating.\tSomeone eats food quickly.\nThe cat sleeps.\tA dog barks loudly.\n",
                      encoding="utf-8")
    db = tmp_path / "store.db"
    run = headdb.ingest(db, corpus, model=str(tiny_bert_dir), dense=True)
    con = connect(db, read_only=True)
    try:
        pairs, fmt = con.execute("SELECT pairs, corpus_format FROM runs WHERE run_id = ?", [run.run_id]).fetchone()
        segments = con.execute(
            "SELECT DISTINCT segment FROM words ORDER BY segment").fetchall()
        text_b = con.execute("SELECT text_b FROM sentences ORDER BY sentence_id").fetchall()
    finally:
        con.close()
    assert (pairs, fmt) == (True, "tsv")
    assert segments == [(0,), (1,)]
    assert text_b == [("Someone eats food quickly.",), ("A dog barks loudly.",)]
    scores = headdb.scores(db, run=run.run_id, roles=["block"])
    assert len(scores) == 2 * 4 * 2  # layers x heads x sentences of the tiny model
    assert (scores["n_queries"] > 0).all()


@pytest.mark.slow
def test_a_pairs_ingest_counts_pairs(tmp_path, tiny_bert_dir):
    """`headdb ingest --pairs --limit 3` read "stored 3 sentences" for 3 pairs (6 sentences)."""
    import subprocess
    import sys
    from pathlib import Path

    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("A man eats.\tSomeone eats.\nThe cat sleeps.\tA dog barks.\nIt rains.\tWe stay in.\n",
                      encoding="utf-8")
    proc = subprocess.run([str(Path(sys.executable).parent / "headdb"), "ingest", str(tmp_path / "p.db"), str(corpus),
                           "--model", str(tiny_bert_dir), "--limit", "2", "-q"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "stored 2 pairs, " in proc.stderr and " pairs/s); " in proc.stderr, proc.stderr
    assert headdb.ingest(tmp_path / "q.db", corpus, model=str(tiny_bert_dir)).pairs is True


@pytest.mark.slow
def test_classify_and_summary_count_the_pairs_of_a_pairs_run(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    """`headdb ingest` said "stored 2 pairs" and then `headdb classify`'s tables "n 2 sentences" and
    `headdb summary` "2 sentences" of the same 2 pairs."""
    from cli_helpers import run_main

    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("A man eats.\tSomeone eats.\nThe cat sleeps.\tA dog barks.\n", encoding="utf-8")
    db = tmp_path / "p.db"
    headdb.ingest(db, corpus, model=str(tiny_bert_dir), dense=True)
    code, out, err = run_main(capsys, monkeypatch, "classify", db, "--roles", "local,block")
    assert code == 0, err
    assert "tau 3, n 2 pairs" in out and " sentences" not in out, out
    code, out, err = run_main(capsys, monkeypatch, "summary", db)
    assert code == 0, err
    assert ": 2 pairs, " in out, out
    assert headdb.classify(db, roles="local", store=False).attrs["pairs"] is True
