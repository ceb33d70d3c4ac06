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


@pytest.mark.slow
def test_a_truncated_pair_is_cut_from_the_end_of_the_longer_segment(tmp_path, tiny_bert_dir):
    """README, "Long inputs": --truncate cuts a pair from the end of the longer segment until the
    two are as long, then from both; each segment keeps its start and at least one piece."""
    from pathlib import Path

    corpus = tmp_path / "long.tsv"
    corpus.write_text("one two three four five six seven eight nine ten\tgood dog\n"
                      "one two three four five six\talpha beta gamma delta epsilon zeta\n"
                      "one two three four five six seven eight\tgo\n", encoding="utf-8")
    db = tmp_path / "t.db"
    run = headdb.ingest(db, corpus, model=str(tiny_bert_dir), max_length=10, truncate=True)
    assert run.truncated == 3
    con = connect(db, read_only=True)
    try:
        rows = con.execute("SELECT sentence_id, list(piece ORDER BY token_pos), list(segment ORDER BY token_pos) "
                           "FROM tokens WHERE run_id = ? GROUP BY ALL ORDER BY 1", [run.run_id]).fetchall()
    finally:
        con.close()
    got = {sid: {seg: [p for p, g in zip(pieces, segs) if g == seg] for seg in (0, 1)} for sid, pieces, segs in rows}
    assert got[0] == {0: "one two three four five".split(), 1: ["good", "dog"]}  # the short second stays whole
    assert got[1] == {0: "one two three".split(), 1: "alpha beta gamma delta".split()}  # as long: the odd piece to B
    assert got[2] == {0: "one two three four five six".split(), 1: ["go"]}
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert "A pair is cut\n  as the tokenizer's `longest_first` cuts it" in readme
