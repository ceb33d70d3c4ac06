"""End-to-end ingestion (slow: loads a tiny random-init BERT or the bundled real model)."""

from __future__ import annotations

import importlib
import os

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import headdb
from headdb.errors import HeaddbError, InputError, ModelError

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.slow

STORE_TABLES = {
    "corpora": "corpus_id, path, sha256, format, pairs, parser",
    "sentences": "*",
    "words": "*",
    "run_sentences": "*",
    "tokens": "*",
    "runs": "* EXCLUDE (started_at, finished_at)",
}


def table_rows(db: Path, table: str, cols: str = "*") -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT {cols} FROM {table} ORDER BY ALL").fetchall()
    finally:
        con.close()


def edges_array(db: Path, run_id: int | None = None) -> np.ndarray:
    """Every edge as a sorted structured array; weights as their float32 bit patterns."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        where = "" if run_id is None else f"WHERE run_id = {int(run_id)}"
        df = con.execute(f"SELECT run_id, sentence_id, layer, head, query_pos, key_pos, weight FROM edges {where} "
                         "ORDER BY run_id, sentence_id, layer, head, query_pos, key_pos").df()
    finally:
        con.close()
    out = df.drop(columns="weight").to_numpy(np.int64)
    bits = df["weight"].to_numpy(np.float32).view(np.int32).astype(np.int64)
    return np.column_stack([out, bits])


# --- (a) tiny random-init BERT --------------------------------------------------------------


def test_a_relative_model_folder_is_recorded_as_an_absolute_path(tmp_path, tiny_bert_dir, monkeypatch):
    """runs.model kept `./tiny-bert` as typed, which names nothing from another folder
    (runs.corpus_path was already absolute); so did runs.tokenizer, which compare's note names."""
    monkeypatch.chdir(tiny_bert_dir.parent)
    headdb.ingest(tmp_path / "rel.db", DATA / "sample.conllu", model=f"./{tiny_bert_dir.name}", limit=1)
    run = headdb.runs(tmp_path / "rel.db").iloc[0]
    assert run["model"] == str(tiny_bert_dir.resolve())
    assert run["tokenizer"] == f"BertTokenizer {tiny_bert_dir.resolve()}"


def test_tiny_bert_end_to_end(tmp_path, tiny_bert_dir):
    db = tmp_path / "tiny.db"
    seen = []
    r = headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), top_k=3, batch_size=2,
                      progress=seen.append)
    assert (r.run_id, r.sentences, r.skipped, r.truncated, r.resumed, r.already_done) == (1, 3, 0, 0, False, False)
    assert sum(n for n in seen if n) == 3  # the progress callback counts sentences
    run = headdb.runs(db).iloc[0]
    assert run["status"] == "done" and run["model"] == str(tiny_bert_dir)
    assert run["model_hash"].startswith("sha256:") and run["model_type"] == "bert"
    assert (run["n_layers"], run["n_heads"], run["max_length"], run["top_k"]) == (2, 4, 64, 3)
    assert run["attn_implementation"] == "eager" and run["corpus_format"] == "conllu"
    assert run["n_sentences"] == 3 and not pd.isna(run["finished_at"])  # NULL reads as NaT, which is not None
    lengths = dict(table_rows(db, "run_sentences", "sentence_id, n_tokens"))
    con = duckdb.connect(str(db), read_only=True)
    n_edges = con.execute("SELECT count(*) FROM edges").fetchone()[0]
    assert n_edges == r.edges == sum(2 * 4 * L * min(3, L) for L in lengths.values())
    # the tokens table agrees with the fast tokenizer, word by word
    pieces = con.execute("SELECT piece, word_pos, special FROM tokens WHERE sentence_id = 0 ORDER BY token_pos").fetchall()
    assert pieces[0] == ("[CLS]", None, "cls") and pieces[-1] == ("[SEP]", None, "sep")
    assert [p for p, w, _ in pieces if w == 2] == ["n", "'", "t"]
    words = con.execute("SELECT form, head_word_pos, deprel FROM words WHERE sentence_id = 0 ORDER BY word_pos").fetchall()
    assert words[1] == ("do", 3, "aux") and words[3] == ("know", None, "root")
    bad = con.execute("SELECT count(*) FROM attention_rows WHERE n_kept > 3 OR kept_mass > 1.000001").fetchone()[0]
    assert bad == 0
    con.close()
    # same settings again: already complete, nothing added
    again = headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), top_k=3, batch_size=2)
    assert again.already_done and again.run_id == 1
    assert len(edges_array(db)) == n_edges
    # --new-run makes a second, identical run
    third = headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), top_k=3, batch_size=2, new_run=True)
    assert third.run_id == 2
    e = edges_array(db)
    assert np.array_equal(e[e[:, 0] == 1][:, 1:], e[e[:, 0] == 2][:, 1:])


def test_tiny_bert_pairs_text_tsv_and_options(tmp_path, tiny_bert_dir):
    db = tmp_path / "tiny.db"
    m = str(tiny_bert_dir)
    p = headdb.ingest(db, DATA / "sample.conllu", pairs=True, model=m, dense=True)
    assert p.sentences == 1 and p.read_stats.odd_sentence_dropped
    con = duckdb.connect(str(db), read_only=True)
    (L,) = con.execute("SELECT n_tokens FROM run_sentences WHERE run_id = ?", [p.run_id]).fetchone()
    assert con.execute("SELECT count(*) FROM edges WHERE run_id = ?", [p.run_id]).fetchone()[0] == 2 * 4 * L * L
    segs = con.execute("SELECT DISTINCT segment FROM tokens WHERE run_id = ? AND segment IS NOT NULL ORDER BY 1",
                       [p.run_id]).fetchall()
    assert segs == [(0,), (1,)]
    assert con.execute("SELECT text_b, n_words_a, n_words_b FROM sentences s JOIN runs r USING (corpus_id) "
                       "WHERE r.run_id = ?", [p.run_id]).fetchone() == ("Sue likes coffee and Billtea", 5, 6)
    # segment B's heads point into segment B (word_pos is global over the pair)
    heads = con.execute("SELECT word_pos, segment, head_word_pos FROM words w JOIN runs r USING (corpus_id) "
                        "WHERE r.run_id = ? ORDER BY word_pos", [p.run_id]).fetchall()
    assert heads == [(0, 0, 3), (1, 0, 3), (2, 0, 3), (3, 0, None), (4, 0, 3),
                     (5, 1, 6), (6, 1, None), (7, 1, 6), (8, 1, 9), (9, 1, 6), (10, 1, 9)]
    # word pieces point at the word of their own segment
    bad = con.execute("SELECT count(*) FROM tokens t JOIN words w ON w.sentence_id = t.sentence_id "
                      "AND w.word_pos = t.word_pos JOIN runs r ON r.run_id = t.run_id AND r.corpus_id = w.corpus_id "
                      "WHERE t.run_id = ? AND t.segment <> w.segment", [p.run_id]).fetchone()[0]
    assert bad == 0
    con.close()
    dense_summary = headdb.summary(db, p.run_id)
    assert np.allclose(dense_summary["layers"]["kept_mass"], 1.0, atol=1e-5)
    t = headdb.ingest(db, DATA / "sample.txt", model=m)
    assert t.sentences == 3
    v = headdb.ingest(db, DATA / "sample.tsv", model=m, min_mass=0.5)
    assert v.sentences == 2
    runs = headdb.runs(db)
    assert list(runs["corpus_format"]) == ["conllu", "text", "tsv"]
    assert list(runs["status"]) == ["done"] * 3
    assert list(runs["pairs"]) == [True, False, True]  # a TSV file holds pairs
    # skipped vs truncated over-long inputs are recorded
    s = headdb.ingest(db, DATA / "sample.conllu", model=m, max_length=8)
    assert (s.sentences, s.skipped) == (1, 2)
    tr = headdb.ingest(db, DATA / "sample.conllu", model=m, max_length=8, truncate=True)
    assert (tr.sentences, tr.skipped, tr.truncated) == (3, 0, 2)
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT status, count(*), max(n_tokens) FROM run_sentences WHERE run_id = ? GROUP BY 1 ORDER BY 1",
                       [tr.run_id]).fetchall()
    assert rows == [("ok", 1, 8), ("truncated", 2, 8)]
    assert con.execute("SELECT truncate, max_length FROM runs WHERE run_id = ?", [tr.run_id]).fetchone() == (True, 8)
    assert con.execute("SELECT count(*) FROM tokens WHERE run_id = ?", [s.run_id]).fetchone()[0] == 8
    con.close()
    summary = headdb.summary(db, s.run_id)
    assert (summary["sentences"], summary["skipped"]) == (1, 2)


def test_tiny_roberta_positions_and_specials(tmp_path, tiny_roberta_dir):
    db = tmp_path / "roberta.db"
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("The cat sat on the mat.\tLoud dogs bark at night.\n")
    r = headdb.ingest(db, pairs, model=str(tiny_roberta_dir), top_k=2)
    assert (r.sentences, r.skipped) == (1, 0)
    con = duckdb.connect(str(db), read_only=True)
    # RoBERTa positions start after the padding index: 40 position embeddings hold 38 tokens
    assert con.execute("SELECT model_type, max_length FROM runs").fetchone() == ("roberta", 38)
    specials = [s for (s,) in con.execute("SELECT special FROM tokens WHERE special IS NOT NULL ORDER BY token_pos").fetchall()]
    assert specials == ["cls", "sep", "sep", "sep"]
    con.close()
    long = tmp_path / "long.txt"
    long.write_text(" ".join(["cat"] * 60) + "\nThe cat sat.\n")
    s = headdb.ingest(db, long, model=str(tiny_roberta_dir))
    assert (s.sentences, s.skipped) == (1, 1)
    t = headdb.ingest(db, long, model=str(tiny_roberta_dir), truncate=True)
    assert (t.sentences, t.truncated) == (2, 1)


def test_a_tokenizer_without_special_tokens_is_said(tmp_path, tiny_bert_dir, capsys, monkeypatch):
    """A tokenizer that adds no [CLS] or [SEP] was taken in silence: the delimiter roles then have
    no samples, and the two texts of a pair run into each other."""
    import json
    import shutil

    from cli_helpers import run_cli

    bare = tmp_path / "bare"
    shutil.copytree(tiny_bert_dir, bare)
    spec = json.loads((bare / "tokenizer.json").read_text())
    spec["post_processor"] = None  # nothing added around the words
    (bare / "tokenizer.json").write_text(json.dumps(spec))
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"  # BertTokenizer would add [CLS] and [SEP] itself
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    db = tmp_path / "b.db"
    assert headdb.ingest(db, DATA / "sample.conllu", model=str(bare)).no_special_tokens
    assert not headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir)).no_special_tokens
    said = "the tokenizer adds no special tokens (such as [CLS] and [SEP]): the delimiter roles have no samples"
    code, _, err = run_cli(["ingest", db, DATA / "sample.conllu", "--model", bare, "--new-run", "-q"], monkeypatch,
                           capsys)
    assert code == 0 and f"{said} in this run\n" in err, err
    code, _, err = run_cli(["ingest", db, DATA / "sample.tsv", "--model", bare, "-q"], monkeypatch, capsys)
    assert code == 0 and f"{said} in this run, and the two texts of a pair follow each other" in err, err
    code, _, err = run_cli(["ingest", db, DATA / "sample.tsv", "--model", tiny_bert_dir, "-q"], monkeypatch, capsys)
    assert code == 0 and "special tokens" not in err, err


def test_special_tokens_the_tokenizer_does_not_name_are_said(tmp_path, tiny_roberta_dir, capsys, monkeypatch):
    """A generic tokenizer whose config names no cls_token, bos_token, sep_token or eos_token
    adds <s> and </s> all the same: they were stored as 'other' in silence, and delimiter_cls and
    delimiter_sep had no samples."""
    import json
    import shutil

    from cli_helpers import run_cli

    generic = tmp_path / "generic"
    shutil.copytree(tiny_roberta_dir, generic)
    (generic / "special_tokens_map.json").unlink(missing_ok=True)
    (generic / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                                "pad_token": "<pad>", "unk_token": "<unk>"}))
    db = tmp_path / "g.db"
    r = headdb.ingest(db, DATA / "sample.tsv", model=str(generic))
    assert r.unnamed_specials == (("<s>", "</s>"), ("cls", "sep")) and not r.no_special_tokens
    assert headdb.ingest(db, DATA / "sample.tsv", model=str(tiny_roberta_dir)).unnamed_specials is None
    code, _, err = run_cli(["ingest", db, DATA / "sample.conllu", "--model", generic, "-q"], monkeypatch, capsys)
    assert code == 0 and ("the tokenizer adds the special tokens <s> </s> but names none of them [CLS] (cls_token or "
                          "bos_token) or [SEP] (sep_token or eos_token): they are stored as special 'other', and "
                          "delimiter_cls and delimiter_sep have no samples in this run") in err, err
    code, _, err = run_cli(["ingest", db, DATA / "sample.conllu", "--model", tiny_roberta_dir, "-q"], monkeypatch,
                           capsys)
    assert code == 0 and "special" not in err, err


def test_ingest_errors_before_writing(tmp_path, tiny_bert_dir):
    db = tmp_path / "e.db"
    with pytest.raises(InputError, match="no such file"):
        headdb.ingest(db, tmp_path / "missing.conllu", model=str(tiny_bert_dir))
    with pytest.raises(ModelError, match="not a local folder"):
        headdb.ingest(db, DATA / "sample.conllu", model="no-such-org/no-such-model-xyz")
    with pytest.raises(ModelError, match="exceeds the model's maximum"):
        headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), max_length=100)
    with pytest.raises(ModelError, match="too small: an input needs at least 3 tokens"):
        headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), max_length=2)
    pairs_file = tmp_path / "p.tsv"
    pairs_file.write_text("The cat sat.\tIt slept.\n")
    with pytest.raises(ModelError, match="too small: a pair input needs at least 5 tokens"):
        headdb.ingest(db, pairs_file, model=str(tiny_bert_dir), max_length=4, truncate=True)
    # the Python API names its parameters (the CLI's flags: tests/test_cli.py)
    for bad_option, words in [({"top_k": -3}, "^top_k must be at least 1"), ({"top_k": 0}, "^top_k must be at least 1"),
                              ({"top_k": 2.5}, "^top_k must be a whole"),
                              ({"top_k": "4"}, "^top_k must be a whole"), ({"batch_size": 2.0}, "^batch_size must be a whole"),
                              ({"min_mass": 0}, "^min_mass must be"), ({"min_mass": 1.5}, "^min_mass must be"),
                              ({"min_mass": float("nan")}, "^min_mass must be"),
                              ({"batch_size": None}, "^batch_size must be a whole"),
                              ({"batch_size": 0}, "^batch_size must be at least 1, not 0$"),
                              ({"limit": 0}, "^limit must be at least 1, not 0$"),
                              ({"dense": True, "top_k": 4}, r"^dense=True keeps every key; it cannot be combined with top_k")]:
        with pytest.raises(InputError, match=words):
            headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), **bad_option)
    for name, words in [("", "non-empty"), ("  ", "non-empty"), ("12", "only digits"), ("a\nb", "one line"),
                        (" base", "begins or ends with a space"), ("-1", "begins with '-'")]:
        with pytest.raises(InputError, match=words):
            headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), run_name=name)
    # read more than once, a pipe (/dev/stdin) gave an empty run and a named pipe hung; a device
    # stands in for both here (a pipe would hang this test if the check went)
    with pytest.raises(InputError, match="is not a regular file"):
        headdb.ingest(db, os.devnull, format="conllu", model=str(tiny_bert_dir))
    with pytest.raises(InputError, match="is a directory"):
        headdb.ingest(db, tmp_path, format="conllu", model=str(tiny_bert_dir))
    with pytest.raises(InputError, match="^dense=True keeps every key; it cannot be combined with min_mass"):
        headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), dense=True, min_mass=0.5)
    with pytest.raises(InputError, match="^dense=True stores float32"):
        headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), dense=True, weight_bits=16)
    with pytest.raises(InputError, match="^weight_bits must be 32 or 16, not 8"):
        headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), weight_bits=8)
    bad = tmp_path / "bad.conllu"
    good = (DATA / "sample.conllu").read_text()
    bad.write_text(good + "1\tx\n\n")
    with pytest.raises(HeaddbError, match=rf"bad.conllu:{len(good.splitlines()) + 1}: expected 10"):
        headdb.ingest(db, bad, model=str(tiny_bert_dir))
    assert not db.exists() or table_rows(db, "runs") == []


# --- (b) the bundled real model: a dense ingest reproduces model(...).attentions ----------


@pytest.fixture(scope="module")
def real_model(default_model_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(default_model_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(default_model_dir)
    return model, tok, torch


def reference_attention(real_model, words_a: list[str], words_b: list[str] | None) -> np.ndarray:
    model, tok, torch = real_model
    enc = tok(words_a, words_b, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_attentions=True)
    return torch.stack(out.attentions, dim=1)[0].numpy(), tok.convert_ids_to_tokens(enc["input_ids"][0])


@pytest.mark.parametrize("batch_size", [1, 3], ids=["unpadded", "padded"])
@pytest.mark.parametrize("pairs", [False, True], ids=["single", "pair"])
def test_dense_ingest_reproduces_model_attentions(tmp_path, real_model, pairs, batch_size):
    """One input per batch gives model(...).attentions bit for bit; in padded batches the
    matrix products run on other shapes, which moves weights by float32 rounding (~2e-6)."""
    from headdb.resources import sample_corpus

    corpus = tmp_path / "some.conllu"  # sentences of different lengths, so batches are padded
    blocks = sample_corpus().read_text(encoding="utf-8").strip("\n").split("\n\n")[:10]
    corpus.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    db = tmp_path / "dense.db"
    r = headdb.ingest(db, corpus, pairs=pairs, dense=True, batch_size=batch_size)
    assert r.sentences == (5 if pairs else 10)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT dense, top_k FROM runs").fetchone() == (True, None)
    checked = 0
    for sid, L in con.execute("SELECT sentence_id, n_tokens FROM run_sentences ORDER BY 1").fetchall():
        words = con.execute("SELECT segment, form FROM words w JOIN runs r USING (corpus_id) "
                            "WHERE sentence_id = ? ORDER BY word_pos", [sid]).fetchall()
        a = [f for s, f in words if s == 0]
        b = [f for s, f in words if s == 1] or None
        assert (b is not None) == pairs
        ref, pieces = reference_attention(real_model, a, b)
        assert L == ref.shape[-1]
        stored = con.execute("SELECT piece FROM tokens WHERE sentence_id = ? ORDER BY token_pos", [sid]).fetchall()
        assert [p for (p,) in stored] == pieces
        e = con.execute("SELECT layer, head, query_pos, key_pos, weight FROM edges WHERE sentence_id = ?", [sid]).df()
        assert len(e) == ref.size  # every key of every row
        dense = np.full(ref.shape, np.nan, dtype=np.float32)
        dense[e["layer"], e["head"], e["query_pos"], e["key_pos"]] = e["weight"].to_numpy(np.float32)
        if batch_size == 1:
            assert np.array_equal(dense, ref)
        np.testing.assert_allclose(dense, ref, rtol=0, atol=1e-5)
        checked += 1
    residual = con.execute("SELECT max(residual), max(abs(kept_mass - 1)) FROM attention_rows").fetchone()
    assert residual[0] < 1e-5 and residual[1] < 1e-5
    con.close()
    assert checked == r.sentences


def test_topk_ingest_keeps_the_largest_keys(tmp_path, real_model):
    db = tmp_path / "k.db"
    headdb.ingest(db, DATA / "sample.conllu", top_k=4, batch_size=2)
    con = duckdb.connect(str(db), read_only=True)
    words = [f for (f,) in con.execute("SELECT form FROM words WHERE sentence_id = 1 ORDER BY word_pos").fetchall()]
    ref, _ = reference_attention(real_model, words, None)
    e = con.execute("SELECT layer, head, query_pos, key_pos, weight FROM edges WHERE sentence_id = 1").df()
    con.close()
    assert len(e) == ref.shape[0] * ref.shape[1] * ref.shape[2] * 4
    np.testing.assert_allclose(e["weight"].to_numpy(), ref[e["layer"], e["head"], e["query_pos"], e["key_pos"]],
                               rtol=0, atol=1e-5)  # padded batch: float32 rounding
    for (l, h, q), g in e.groupby(["layer", "head", "query_pos"]):
        row = ref[l, h, q]
        assert g["weight"].min() >= np.sort(row)[-4] - 1e-5


# --- (c) a crash in the middle of an ingest, then a re-run --------------------------------


def _store_snapshot(db: Path) -> dict:
    snap = {t: table_rows(db, t, cols) for t, cols in STORE_TABLES.items()}
    snap["edges"] = edges_array(db)
    return snap


def _assert_same_store(a: dict, b: dict) -> None:
    for t in STORE_TABLES:
        assert a[t] == b[t], t
    assert a["edges"].shape == b["edges"].shape
    assert np.array_equal(a["edges"], b["edges"])  # same rows, weights bit for bit
    assert len(np.unique(a["edges"][:, :6], axis=0)) == len(a["edges"])  # no duplicate edge


CRASH_OPTS = dict(limit=24, batch_size=4, top_k=5)  # the bundled sample and model; 6 batches


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    clean = tmp_path_factory.mktemp("clean") / "clean.db"
    headdb.ingest(clean, None, **CRASH_OPTS)
    return _store_snapshot(clean)


@pytest.mark.parametrize("where", ["between_batches", "inside_transaction"])
def test_crash_then_rerun_equals_uninterrupted(tmp_path, monkeypatch, uninterrupted, where):
    import importlib

    import headdb.store as store

    # every batch commits on its own here (grouped commits: the next test)
    monkeypatch.setattr(importlib.import_module("headdb.ingest"), "COMMIT_EDGES", 0)
    opts, corpus, expected = CRASH_OPTS, None, uninterrupted
    crashed = tmp_path / "crashed.db"
    calls = {"n": 0}
    if where == "between_batches":
        real = store.write_batches

        def flaky(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 4:
                raise RuntimeError("simulated crash")
            return real(*args, **kwargs)

        monkeypatch.setattr(store, "write_batches", flaky)
    else:
        real = store._insert

        def flaky(con, table, data, **kwargs):
            real(con, table, data, **kwargs)
            if table == "run_sentences":
                calls["n"] += 1
                if calls["n"] == 4:  # after tokens and run_sentences of batch 4, before its edges
                    raise KeyboardInterrupt

        monkeypatch.setattr(store, "_insert", flaky)
    with pytest.raises((RuntimeError, KeyboardInterrupt)):
        headdb.ingest(crashed, corpus, **opts)
    monkeypatch.undo()
    status, error = table_rows(crashed, "runs", "status, error")[0]
    assert (status, error) in (("failed", "simulated crash"), ("interrupted", "interrupted"))
    assert len(table_rows(crashed, "run_sentences")) == 3 * 4  # three batches committed
    assert len(np.unique(edges_array(crashed)[:, 1])) == 3 * 4  # and nothing of the fourth

    again = headdb.ingest(crashed, corpus, **opts)
    assert again.resumed and again.run_id == 1 and again.sentences == 24 - 12
    _assert_same_store(_store_snapshot(crashed), expected)
    assert table_rows(crashed, "runs", "status, error") == [("done", None)]


def test_rows_go_in_with_plain_inserts_only_where_nothing_of_them_is_stored_yet(tmp_path, monkeypatch, uninterrupted):
    """A fresh corpus and run skip INSERT OR IGNORE's look-up of stored keys; a second run over
    the same corpus, and a resumed run, keep it, and store each row once."""
    import importlib

    import headdb.store as store

    monkeypatch.setattr(importlib.import_module("headdb.ingest"), "COMMIT_EDGES", 0)
    real = store._insert
    calls: list[tuple[str, bool]] = []

    def recording(con, table, data, ignore=True):
        calls.append((table, ignore))
        if table == "run_sentences" and len(calls) == 4 * 4 and crash["on"]:
            raise RuntimeError("simulated crash")  # before batch 4's edges
        real(con, table, data, ignore=ignore)

    crash = {"on": False}
    monkeypatch.setattr(store, "_insert", recording)
    db = tmp_path / "store.db"
    headdb.ingest(db, None, **CRASH_OPTS)
    assert len(calls) == 6 * 4 and not any(ignore for _, ignore in calls)  # 6 batches, 4 tables each
    _assert_same_store(_store_snapshot(db), uninterrupted)

    # a second run over the same corpus: its sentences and words are stored; the run is new
    calls.clear()
    crash["on"] = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        headdb.ingest(db, None, new_run=True, **CRASH_OPTS)
    assert {(t, i) for t, i in calls} == {("sentences", True), ("words", True), ("tokens", False),
                                          ("run_sentences", False)}
    # resumed: what the run stored before the crash is looked for as well
    calls.clear()
    crash["on"] = False
    again = headdb.ingest(db, None, **CRASH_OPTS)
    assert again.resumed and again.run_id == 2 and again.sentences == 24 - 12
    assert {(t, i) for t, i in calls} == {("sentences", True), ("words", True), ("tokens", True),
                                          ("run_sentences", True)}
    assert table_rows(db, "sentences") == uninterrupted["sentences"]  # each sentence and word once
    assert table_rows(db, "words") == uninterrupted["words"]
    tokens = table_rows(db, "tokens")
    assert [r[1:] for r in tokens if r[0] == 2] == [r[1:] for r in tokens if r[0] == 1] == [
        r[1:] for r in uninterrupted["tokens"]]
    assert np.array_equal(edges_array(db, 2)[:, 1:], uninterrupted["edges"][:, 1:])


@pytest.mark.parametrize("overlap", [False, True], ids=["sequential", "writer-thread"])
def test_batches_commit_in_groups_of_commit_edges_and_a_crash_loses_only_the_open_group(
        tmp_path, monkeypatch, uninterrupted, overlap):
    """Batches commit together once they hold COMMIT_EDGES edges; a crash in a group keeps the
    groups before it, and the resume redoes the rest, batch for batch the same store. The same
    with the writer thread that a GPU ingest uses."""
    import importlib

    import headdb.store as store

    ingest_mod = importlib.import_module("headdb.ingest")
    monkeypatch.setattr(ingest_mod, "OVERLAP_WRITES", overlap)
    groups: list[int] = []
    real = store.write_batches

    def recording(con, run_id, corpus_id, parts, timings=None, **kwargs):
        groups.append(len(parts))
        if fail[0] and len(groups) == 2:
            raise RuntimeError("simulated crash")
        return real(con, run_id, corpus_id, parts, timings, **kwargs)

    monkeypatch.setattr(store, "write_batches", recording)
    fail = [False]
    # the default: the whole small run is far below COMMIT_EDGES, so one transaction at the end
    default_db = tmp_path / "default.db"
    headdb.ingest(default_db, None, **CRASH_OPTS)
    assert groups == [6]
    _assert_same_store(_store_snapshot(default_db), uninterrupted)
    # a quarter of the run's edges a group: several groups, some of several batches
    groups.clear()
    monkeypatch.setattr(ingest_mod, "COMMIT_EDGES", len(uninterrupted["edges"]) // 4)
    grouped_db = tmp_path / "grouped.db"
    headdb.ingest(grouped_db, None, **CRASH_OPTS)
    assert sum(groups) == 6 and len(groups) >= 3 and max(groups) >= 2, groups  # e.g. [3, 2, 1]
    _assert_same_store(_store_snapshot(grouped_db), uninterrupted)
    sizes = list(groups)
    # the second group fails: the first stays, whole; the resume stores exactly the rest
    groups.clear()
    fail[0] = True
    crashed = tmp_path / "crashed.db"
    with pytest.raises(RuntimeError):
        headdb.ingest(crashed, None, **CRASH_OPTS)
    fail[0] = False
    assert len(table_rows(crashed, "run_sentences")) == 4 * sizes[0]
    again = headdb.ingest(crashed, None, **CRASH_OPTS)
    assert again.resumed and again.sentences == 24 - 4 * sizes[0]
    _assert_same_store(_store_snapshot(crashed), uninterrupted)


def test_with_commit_edges_0_every_batch_commits_on_its_own_even_one_without_edges(tmp_path, tiny_bert_dir,
                                                                                    monkeypatch):
    """``COMMIT_EDGES`` 0: every batch is its own transaction, also a batch whose inputs were all
    skipped (over-long), which has no edges; and the progress callback counts every input,
    skipped ones too, as the bar's total does."""
    import headdb.store as store

    ingest_mod = importlib.import_module("headdb.ingest")
    monkeypatch.setattr(ingest_mod, "COMMIT_EDGES", 0)
    groups: list[list[int]] = []
    real = store.write_batches

    def recording(con, run_id, corpus_id, parts, timings=None, **kwargs):
        groups.append([len(batch) for batch, _ in parts])
        return real(con, run_id, corpus_id, parts, timings, **kwargs)

    monkeypatch.setattr(store, "write_batches", recording)
    seen: list = []
    r = headdb.ingest(tmp_path / "s.db", DATA / "sample.conllu", model=str(tiny_bert_dir), max_length=8,
                      batch_size=1, progress=seen.append)
    assert (r.sentences, r.skipped) == (1, 2)
    assert groups == [[1], [1], [1]]
    assert sum(n for n in seen if n) == 3


def _probe_writes(monkeypatch, probe) -> tuple[list, list[bool]]:
    """``probe()`` recorded at each ``store.write_batches`` call; setting the returned flag's
    ``[0]`` makes the writes fail (a simulated crash)."""
    import headdb.store as store

    seen: list = []
    fail = [False]
    real = store.write_batches

    def recording(con, run_id, corpus_id, parts, timings=None, **kwargs):
        seen.append(probe())
        if fail[0]:
            raise RuntimeError("simulated crash")
        return real(con, run_id, corpus_id, parts, timings, **kwargs)

    monkeypatch.setattr(store, "write_batches", recording)
    return seen, fail


@pytest.mark.parametrize("overlap", [False, True], ids=["sequential", "writer-thread"])
def test_writer_threads_shorten_the_switch_interval_while_they_run_and_restore_it(
        tmp_path, monkeypatch, uninterrupted, overlap):
    """DuckDB's Python client takes the GIL back between a query's tasks, so while writer
    threads run the ingest shortens Python's switch interval (ingest.GIL_SWITCH_US); afterwards,
    and after a failed ingest, the process has its own interval back. A sequential ingest on
    one thread leaves it alone."""
    import importlib
    import sys

    ingest_mod = importlib.import_module("headdb.ingest")
    monkeypatch.setattr(ingest_mod, "OVERLAP_WRITES", overlap)
    monkeypatch.setattr(ingest_mod, "READ_AHEAD", False)
    monkeypatch.setattr(ingest_mod, "GIL_SWITCH_US", 250)
    before = sys.getswitchinterval()
    seen, fail = _probe_writes(monkeypatch, sys.getswitchinterval)
    headdb.ingest(tmp_path / "a.db", None, **CRASH_OPTS)
    assert seen and set(seen) == ({250e-6} if overlap else {before})
    assert sys.getswitchinterval() == before
    _assert_same_store(_store_snapshot(tmp_path / "a.db"), uninterrupted)
    fail[0] = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        headdb.ingest(tmp_path / "b.db", None, **CRASH_OPTS)
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("order", ["first-in-first-out", "last-in-first-out"])
def test_overlapping_ingests_leave_the_process_its_own_switch_interval(order):
    """Two ingests in threads of one process: the interval stays short while either runs, and
    the process's own comes back when the last one ends, whichever ends first."""
    import importlib
    import sys

    ingest_mod = importlib.import_module("headdb.ingest")
    own = sys.getswitchinterval()
    a = ingest_mod._SwitchInterval(50)
    assert sys.getswitchinterval() == pytest.approx(50e-6)
    b = ingest_mod._SwitchInterval(50)
    none = ingest_mod._SwitchInterval(None)  # a sequential ingest joins nothing
    none.restore()
    first, second = (a, b) if order == "first-in-first-out" else (b, a)
    first.restore()
    first.restore()  # twice: no effect
    assert sys.getswitchinterval() == pytest.approx(50e-6)
    second.restore()
    assert sys.getswitchinterval() == own


@pytest.mark.parametrize("host_frozen", [False, True], ids=["host-froze-nothing", "host-froze-objects"])
def test_an_ingest_hides_the_objects_alive_at_its_start_from_the_collector_and_restores_it(
        tmp_path, monkeypatch, uninterrupted, host_frozen):
    """While it writes, an ingest has the objects alive at its start (the model among them)
    frozen out of the garbage collector's view; afterwards, and after a failed ingest, they are
    collected as before. Where the host program froze objects itself, the ingest leaves the
    collector alone: unfreezing would also take back the host's."""
    import gc
    import importlib

    monkeypatch.setattr(importlib.import_module("headdb.ingest"), "READ_AHEAD", False)
    gc.collect()
    if host_frozen:
        gc.freeze()
    try:
        before = gc.get_freeze_count()
        assert (before > 0) == host_frozen
        seen, fail = _probe_writes(monkeypatch, gc.get_freeze_count)
        headdb.ingest(tmp_path / "a.db", None, **CRASH_OPTS)
        assert seen
        if host_frozen:  # nothing more frozen (frozen objects that die still leave the count)
            assert max(seen) <= before
            assert 0 < gc.get_freeze_count() <= before  # and the host's stay frozen
        else:
            assert min(seen) > 10_000  # torch, transformers and the model at least
            assert gc.get_freeze_count() == 0
        _assert_same_store(_store_snapshot(tmp_path / "a.db"), uninterrupted)
        fail[0] = True
        with pytest.raises(RuntimeError, match="simulated crash"):
            headdb.ingest(tmp_path / "b.db", None, **CRASH_OPTS)
        assert (0 < gc.get_freeze_count() <= before) if host_frozen else gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("order", ["first-in-first-out", "last-in-first-out"])
def test_overlapping_ingests_unfreeze_the_heap_when_the_last_one_ends(order):
    """Two ingests in threads of one process: the heap stays frozen while either runs and is
    unfrozen when the last one ends, whichever ends first."""
    import gc
    import importlib

    ingest_mod = importlib.import_module("headdb.ingest")
    assert gc.get_freeze_count() == 0
    a = ingest_mod._FrozenHeap(True)
    frozen = gc.get_freeze_count()
    assert frozen > 0
    b = ingest_mod._FrozenHeap(True)
    off = ingest_mod._FrozenHeap(False)  # FREEZE_HEAP = False joins nothing
    off.restore()
    first, second = (a, b) if order == "first-in-first-out" else (b, a)
    first.restore()
    first.restore()  # twice: no effect
    assert gc.get_freeze_count() == frozen
    second.restore()
    assert gc.get_freeze_count() == 0


def test_several_writer_threads_store_the_same_and_a_crash_leaves_whole_groups(tmp_path, monkeypatch, uninterrupted):
    """With two writer threads (ingest.WRITERS) groups commit concurrently and may finish out of
    order: the store is the same as one writer's, and a crash leaves only whole groups, from
    which a resume completes exactly that store."""
    import importlib

    import headdb.store as store

    ingest_mod = importlib.import_module("headdb.ingest")
    monkeypatch.setattr(ingest_mod, "OVERLAP_WRITES", True)
    monkeypatch.setattr(ingest_mod, "WRITERS", 2)
    monkeypatch.setattr(ingest_mod, "COMMIT_EDGES", len(uninterrupted["edges"]) // 5)
    threads: set[str] = set()
    calls = {"n": 0, "fail": False}
    real = store.write_batches

    def recording(con, run_id, corpus_id, parts, timings=None, **kwargs):
        import threading

        threads.add(threading.current_thread().name)
        calls["n"] += 1
        if calls["fail"] and calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(con, run_id, corpus_id, parts, timings, **kwargs)

    monkeypatch.setattr(store, "write_batches", recording)
    db = tmp_path / "two.db"
    result = headdb.ingest(db, None, **CRASH_OPTS)
    assert calls["n"] >= 3 and threads <= {"headdb-writer-0", "headdb-writer-1"}, (calls, threads)
    assert result.sentences == 24 and result.edges == len(uninterrupted["edges"])
    _assert_same_store(_store_snapshot(db), uninterrupted)

    calls.update(n=0, fail=True)
    crashed = tmp_path / "crashed.db"
    with pytest.raises(RuntimeError):
        headdb.ingest(crashed, None, **CRASH_OPTS)
    calls["fail"] = False
    done = [r[0] for r in table_rows(crashed, "run_sentences", "sentence_id")]
    assert len(done) % 4 == 0 and len(done) < 24  # whole batches of 4, not all of them
    assert set(np.unique(edges_array(crashed)[:, 1]).tolist()) == set(done)  # edges of those alone
    again = headdb.ingest(crashed, None, **CRASH_OPTS)
    assert again.resumed and again.sentences == 24 - len(done)
    _assert_same_store(_store_snapshot(crashed), uninterrupted)


def test_ingest_bounds_duckdbs_memory(tmp_path, monkeypatch):
    """DuckDB caches the blocks it writes up to its memory limit (80% of RAM by default); an
    ingest sets one so that its memory does not grow with the store (docs/benchmarks.md)."""
    import importlib

    import headdb.store as store

    ingest_mod = importlib.import_module("headdb.ingest")
    seen = []
    real = store.write_batches

    def spy(con, *args, **kwargs):
        seen.append(con.execute("SELECT current_setting('memory_limit'), current_setting('threads')").fetchone())
        return real(con, *args, **kwargs)

    monkeypatch.setattr(store, "write_batches", spy)
    headdb.ingest(tmp_path / "m.db", None, limit=4, batch_size=4)
    limit, threads = seen[0]
    assert limit == f"{ingest_mod._memory_limit_mb(int(threads))}.0 MiB"
    assert ingest_mod._memory_limit_mb(2) == 256 and ingest_mod._memory_limit_mb(16) == 768
    assert ingest_mod._memory_limit_mb(16, cuda=True) == 16 * ingest_mod.GPU_MEMORY_MB_PER_THREAD


def test_ingest_hands_host_buffers_back_after_the_write(tmp_path, monkeypatch):
    """Edges whose arrays are views of a reusable buffer are released once stored, not before."""
    import importlib

    import headdb.model as model
    import headdb.store as store

    ingest_mod = importlib.import_module("headdb.ingest")
    events = []
    real_forward, real_write = model.AttentionModel.forward_edges, store.write_batches

    def forward_edges(self, *args, **kwargs):
        edges = real_forward(self, *args, **kwargs)
        edges.release = lambda: events.append("release")
        return edges

    def write_batches(*args, **kwargs):
        out = real_write(*args, **kwargs)
        events.append("write")
        return out

    monkeypatch.setattr(model.AttentionModel, "forward_edges", forward_edges)
    monkeypatch.setattr(store, "write_batches", write_batches)
    monkeypatch.setattr(ingest_mod, "COMMIT_EDGES", 0)  # a commit per batch
    ingest_mod.ingest(tmp_path / "r.db", None, limit=8, batch_size=4)
    assert events == ["write", "release", "write", "release"]


def test_reading_ahead_on_a_thread_stores_the_same_and_its_errors_reach_the_caller(tmp_path, monkeypatch):
    """With READ_AHEAD (on for CUDA) a thread reads and tokenizes the next window while the model
    runs: the store is the one the main thread alone makes; an error on that thread fails the
    run where it happened, stops the thread, and a resume completes the same store."""
    import importlib
    import threading

    import headdb.model as model

    ingest_mod = importlib.import_module("headdb.ingest")
    monkeypatch.setattr(ingest_mod, "WINDOW_BATCHES", 2)  # windows of 8 sentences: 3 of them
    monkeypatch.setattr(ingest_mod, "COMMIT_EDGES", 0)
    monkeypatch.setattr(ingest_mod, "READ_AHEAD", False)
    headdb.ingest(tmp_path / "plain.db", None, **CRASH_OPTS)
    expected = _store_snapshot(tmp_path / "plain.db")

    monkeypatch.setattr(ingest_mod, "READ_AHEAD", True)
    threads: set[str] = set()
    calls = {"n": 0, "fail": False}
    real = model.AttentionModel.encode

    def encode(self, sentences, truncate):
        threads.add(threading.current_thread().name)
        calls["n"] += 1
        if calls["fail"] and calls["n"] == 3:
            raise InputError("simulated bad window")
        return real(self, sentences, truncate)

    monkeypatch.setattr(model.AttentionModel, "encode", encode)
    result = headdb.ingest(tmp_path / "ahead.db", None, **CRASH_OPTS)
    assert threads == {"headdb-read-ahead"} and calls["n"] == 3
    assert result.sentences == 24 and "read_wait" in result.timings
    _assert_same_store(_store_snapshot(tmp_path / "ahead.db"), expected)

    calls.update(n=0, fail=True)
    crashed = tmp_path / "crashed.db"
    with pytest.raises(InputError, match="simulated bad window"):
        headdb.ingest(crashed, None, **CRASH_OPTS)
    assert not any(t.name == "headdb-read-ahead" for t in threading.enumerate())
    assert table_rows(crashed, "runs", "status, error") == [("failed", "simulated bad window")]
    assert len(table_rows(crashed, "run_sentences")) == 16  # the first two windows, not the third
    calls["fail"] = False
    again = headdb.ingest(crashed, None, **CRASH_OPTS)
    assert again.resumed and again.sentences == 8
    _assert_same_store(_store_snapshot(crashed), expected)


def test_weight_bits_16_through_the_cli_stores_the_float32_runs_weights_rounded_down(tmp_path, monkeypatch, capsys):
    """`--weight-bits 16`: the same edges as the float32 run of the same settings (a run of its
    own), each weight floor(w * 65535) / 65535 as the edges view reads it, in a smaller file;
    classify and the scores read it like any run."""
    from cli_helpers import run_main

    dbs = {}
    for bits in (32, 16):
        dbs[bits] = tmp_path / f"w{bits}.db"
        code, out, err = run_main(capsys, monkeypatch, "ingest", dbs[bits], "--limit", "40", "--weight-bits", bits, "-q")
        assert code == 0 and out.strip() == "1", err
    code, out, err = run_main(capsys, monkeypatch, "ingest", dbs[16], "--limit", "40", "--weight-bits", "16", "-q")
    assert code == 0 and out.strip() == "1" and "already complete" in err  # the same settings: the same run
    code, out, err = run_main(capsys, monkeypatch, "ingest", dbs[16], "--limit", "40", "-q")
    assert code == 0 and out.strip() == "2", err  # float32 is another run, not "already complete"
    code, out, _ = run_main(capsys, monkeypatch, "runs", dbs[16], "--format", "csv")
    import csv
    import io

    assert code == 0 and [r["weight_bits"] for r in csv.DictReader(io.StringIO(out))] == ["16", "32"]
    w32, w16 = edges_array(dbs[32], 1), edges_array(dbs[16], 1)
    assert np.array_equal(w32[:, :6], w16[:, :6])
    as_float = lambda a: a[:, 6].astype(np.uint32).view(np.float32)  # noqa: E731 - bit patterns, see edges_array
    expected = (np.floor(as_float(w32).astype(np.float64) * 65535) / 65535).astype(np.float32)
    np.testing.assert_array_equal(as_float(w16), expected)
    assert (as_float(w16) <= as_float(w32)).all() and (as_float(w16) < as_float(w32)).any()
    con = duckdb.connect(str(dbs[16]), read_only=True)
    try:
        # a 16-bit run's rows are in edge_store16 only
        assert con.execute("SELECT count(*) FROM edge_store WHERE run_id = 1").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM edge_store16 WHERE run_id = 1").fetchone()[0] == len(w16)
    finally:
        con.close()
    res32, res16 = headdb.classify(dbs[32], store=False), headdb.classify(dbs[16], run=1, store=False)
    keys = ["layer", "head", "role"]
    assert res16[keys].astype(str).equals(res32[keys].astype(str))
    tested = res32["mean"].notna()
    assert tested.sum() > 600 and res16["mean"].notna().equals(tested)
    assert (res16["mean"][tested] <= res32["mean"][tested] + 1e-12).all()
    np.testing.assert_allclose(res16["mean"][tested], res32["mean"][tested], atol=1e-3)


def test_a_run_name_names_one_run(tmp_path, tiny_bert_dir):
    db = tmp_path / "n.db"
    first = headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), limit=np.int64(3), run_name="A",
                          top_k=np.int32(8))  # numpy's integers are whole numbers too
    again = headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), limit=3, run_name="A")
    assert again.already_done and again.run_id == first.run_id  # the same settings: that run
    for other in ({"new_run": True}, {"top_k": 4}):
        with pytest.raises(InputError, match=f"run name 'A' is taken by run {first.run_id}; choose another"):
            headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), limit=3, run_name="A", **other)
    assert headdb.sql(db, "SELECT run_name FROM runs")["run_name"].tolist() == ["A"]
    assert headdb.sql(db, "SELECT count(*) AS n FROM corpora")["n"][0] == 1


def test_a_default_run_name_never_takes_a_name_given_by_hand(tmp_path, tiny_bert_dir):
    """A run named "run-2" by hand and then a run without a name (id 2) were both "run-2", and
    `--run run-2` found neither (ambiguous)."""
    db = tmp_path / "n.db"
    named = headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), limit=2, run_name="run-2")
    unnamed = headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), limit=2, top_k=4)
    assert (named.run_id, unnamed.run_id) == (1, 2) and unnamed.run_name == "run-2-2"
    assert headdb.sql(db, "SELECT run_name FROM runs ORDER BY run_id")["run_name"].tolist() == ["run-2", "run-2-2"]
    con = duckdb.connect(str(db), read_only=True)
    from headdb.store import resolve_run

    assert [resolve_run(con, n) for n in ("run-2", "run-2-2")] == [1, 2]
    con.close()


def _conllu(*sentences: list[str]) -> str:
    out = []
    for forms in sentences:
        out += [f"{i}\t{f}\t_\tX\tX\t_\t{0 if i == 1 else 1}\t{'root' if i == 1 else 'dep'}\t_\t_"
                for i, f in enumerate(forms, start=1)]
        out.append("")
    return "\n".join(out) + "\n"


def test_words_the_tokenizer_drops_are_counted(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    """U+FE0F ("I ❤️ you" split by spaCy) and a lone combining accent get no word piece: stored,
    and said in the run summary instead of silently missing from word-level roles."""
    from cli_helpers import run_main

    corpus = tmp_path / "odd.conllu"
    corpus.write_text(_conllu(["I", "\u2764", "\ufe0f", "you"], ["e", "\u0301", "x"], ["plain", "words"]))
    r = headdb.ingest(tmp_path / "a.db", corpus, model=str(tiny_bert_dir))
    assert r.pieceless_words == 2 and r.sentences == 3
    con = duckdb.connect(str(tmp_path / "a.db"), read_only=True)
    assert con.execute("SELECT count(*) FROM words w WHERE NOT EXISTS (SELECT 1 FROM tokens t WHERE "
                       "t.sentence_id = w.sentence_id AND t.word_pos = w.word_pos)").fetchone()[0] == 2
    con.close()
    code, _, err = run_main(capsys, monkeypatch, "ingest", tmp_path / "b.db", corpus, "--model", tiny_bert_dir, "-q")
    assert code == 0 and "2 words got no word piece from the tokenizer" in err and "they are stored" in err, err
    one = tmp_path / "one.conllu"
    one.write_text(_conllu(["I", "\u2764", "\ufe0f", "you"], ["plain", "words"]))
    code, _, err = run_main(capsys, monkeypatch, "ingest", tmp_path / "c.db", one, "--model", tiny_bert_dir, "-q")
    assert code == 0 and "1 word got no word piece" in err and "it is stored, and word-level roles and accuracy " \
        "leave it out" in err, err


def test_a_model_failing_mid_ingest_is_one_line_and_the_run_resumes(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    """A torch error in the forward pass printed a traceback; it is now one line naming where."""
    from cli_helpers import run_main
    from headdb.model import AttentionModel

    real = AttentionModel.forward_edges
    calls = {"n": 0}

    def fails_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise IndexError("index out of range in self")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AttentionModel, "forward_edges", fails_second)
    monkeypatch.setattr(importlib.import_module("headdb.ingest"), "COMMIT_EDGES", 0)  # a commit per batch
    db = tmp_path / "f.db"
    code, _, err = run_main(capsys, monkeypatch, "ingest", db, DATA / "sample.conllu", "--model", tiny_bert_dir,
                            "--batch-size", "1", "-q")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {tiny_bert_dir}: the model failed on a batch of 1 inputs, the first at line ")
    assert "IndexError: index out of range in self (the run is marked failed" in err
    assert headdb.runs(db)[["status", "n_sentences"]].values.tolist() == [["failed", 1]]
    monkeypatch.setattr(AttentionModel, "forward_edges", real)
    assert headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), batch_size=1).resumed
    assert headdb.runs(db)[["status", "n_sentences"]].values.tolist() == [["done", 3]]


def _no_load(*args, **kwargs):
    raise AssertionError("the model or the parser was loaded")


def test_a_finished_run_is_found_before_the_model_and_the_parser_load(tmp_path, tiny_bert_dir, monkeypatch):
    """Re-running a finished ingest took 5-10 s to say "already complete": the run's fingerprint
    was computed only once the model and spaCy had loaded. It is now read from their files."""
    model_module = importlib.import_module("headdb.model")
    parse_module = importlib.import_module("headdb.parse")
    db = tmp_path / "again.db"
    firsts = {fmt: headdb.ingest(db, DATA / f"sample.{fmt}", model=str(tiny_bert_dir), top_k=3, limit=2,
                                 run_name=f"first-{fmt}") for fmt in ("conllu", "txt")}
    monkeypatch.setattr(model_module, "AttentionModel", _no_load)
    monkeypatch.setattr(parse_module, "SpacyParser", _no_load)
    for fmt, first in firsts.items():
        for name in (None, f"first-{fmt}"):
            again = headdb.ingest(db, DATA / f"sample.{fmt}", model=str(tiny_bert_dir), top_k=3, limit=2, run_name=name)
            assert again.already_done and (again.run_id, again.run_name) == (first.run_id, first.run_name)
    # anything else goes on to load the model: other settings, --new-run, a run to resume
    for other in ({"top_k": 4}, {"max_length": 40}, {"new_run": True}):
        with pytest.raises(AssertionError, match="was loaded"):
            headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), **({"top_k": 3} | other), limit=2)
    con = duckdb.connect(str(db))
    con.execute("UPDATE runs SET status = 'interrupted' WHERE run_id = ?", [firsts["conllu"].run_id])
    con.close()
    with pytest.raises(AssertionError, match="was loaded"):
        headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), top_k=3, limit=2)


def test_the_model_and_the_parser_read_from_their_files_match_the_loaded_ones(tiny_bert_dir, tiny_roberta_dir,
                                                                              default_model_dir, tmp_path):
    """What a finished run is found by before anything loads must be what the loaded model and
    parser give, or a re-run would miss its run (or find another one)."""
    from headdb.model import AttentionModel, peek
    from headdb.parse import DEFAULT_PIPELINE, SpacyParser, peek_description

    for folder in (tiny_bert_dir, tiny_roberta_dir, default_model_dir):
        for requested in (None, 20):
            am = AttentionModel(str(folder), max_length=requested)
            assert peek(str(folder), requested) == (am.model_hash, am.max_length, am.tokenizer_hash,
                                                        am.config_hash)
    assert peek(str(tiny_bert_dir), 65) is None  # beyond the model's 64: the load refuses it
    assert peek("no-such-org/no-such-model", None) is None  # not at hand: never downloaded
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    assert peek(str(bare), None) is None  # no tokenizer config, no weights
    with SpacyParser(DEFAULT_PIPELINE, processes=1) as parser:
        assert peek_description(DEFAULT_PIPELINE) == parser.description
    assert peek_description("no_such_pipeline") is None


def test_a_pairs_sent_key_is_both_sent_ids_joined_as_the_schema_says():
    """sentences.sent_key of a pair is its two CoNLL-U sent_ids joined by ' | ' (the schema's
    comment, migration 0001), one segment's where only it has one, NULL where neither has;
    every word's head_word_pos counts over the whole input."""
    from headdb.corpus import Segment, Sentence, Word
    from headdb.store import sentence_tables

    def seg(key, line):
        return Segment((Word("a"), Word("b", head=0)), "a b", line, sent_key=key)

    st, wt = sentence_tables(1, [Sentence(0, (seg("x-1", 1), seg("x-2", 5))), Sentence(1, (seg(None, 9), seg("y-2", 12))),
                                 Sentence(2, (seg(None, 20), seg(None, 23)))])
    assert st.column("sent_key").to_pylist() == ["x-1 | x-2", "y-2", None]
    assert wt.column("head_word_pos").to_pylist()[:4] == [None, 0, None, 2]


@pytest.mark.parametrize("truncate", [False, True])
def test_a_writer_thread_counts_what_it_stores_as_the_main_thread_does(tmp_path, tiny_bert_dir, monkeypatch,
                                                                        truncate):
    """The ingest's counts (inputs stored, skipped, truncated, words without a piece, special ids
    in words) are the same whether the main thread writes or a writer thread does (a GPU's
    ingest, where they add up under a lock); words that a truncation cut off are not counted as
    words without a piece."""
    import headdb.model

    ingest_mod = importlib.import_module("headdb.ingest")
    align = headdb.model.align

    def marking(*args, **kwargs):  # one special id in each input's words, as a word "<s>" gets in some vocabularies
        out = align(*args, **kwargs)
        for e in out:
            if e.status != "skipped":
                e.special_in_words = 1
        return out

    monkeypatch.setattr(headdb.model, "align", marking)
    corpus = tmp_path / "c.conllu"
    corpus.write_text(_conllu(["I", "\u2764", "\ufe0f", "you"], ["cat"] * 30, ["plain", "words"], ["a", "b"]))
    counts = {}
    for overlap in (False, True):
        monkeypatch.setattr(ingest_mod, "OVERLAP_WRITES", overlap)
        r = headdb.ingest(tmp_path / f"{overlap}.db", corpus, model=str(tiny_bert_dir), max_length=16,
                          truncate=truncate, batch_size=1)
        counts[overlap] = (r.sentences, r.skipped, r.truncated, r.pieceless_words, r.special_in_words, r.edges)
    stored = 4 if truncate else 3
    assert counts[False][:5] == (stored, 4 - stored, int(truncate), 1, stored) and counts[False][5] > 0
    assert counts[True] == counts[False]


def test_a_run_records_the_dtype_and_device_it_ran_with_and_its_corpus_as_an_absolute_path(
        tmp_path, tiny_bert_dir, monkeypatch):
    """runs.dtype and runs.device are what the ingest ran with (``compare`` and ``runs`` read them);
    a corpus given by a relative path is recorded absolute, in runs as in corpora."""
    db = tmp_path / "d.db"
    monkeypatch.chdir(DATA)
    for dtype in ("bfloat16", "float32"):
        headdb.ingest(db, "sample.conllu", model=str(tiny_bert_dir), limit=1, dtype=dtype)
    corpus = str((DATA / "sample.conllu").resolve())
    assert table_rows(db, "runs", "run_id, dtype, device, corpus_path") == [(1, "bfloat16", "cpu", corpus),
                                                                           (2, "float32", "cpu", corpus)]
    assert table_rows(db, "corpora", "path") == [(corpus,)]


def test_another_batch_size_or_window_is_another_run(tmp_path, tiny_bert_dir, monkeypatch):
    """Batches are cut by the batch size and the window (``WINDOW_BATCHES``): another of either
    makes other batches, so it is a new run, neither the finished one nor one to resume."""
    db = tmp_path / "b.db"
    first = headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), batch_size=1)
    other = headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), batch_size=2)
    monkeypatch.setattr(importlib.import_module("headdb.ingest"), "WINDOW_BATCHES", 1)
    window = headdb.ingest(db, DATA / "sample.conllu", model=str(tiny_bert_dir), batch_size=1)
    assert [(r.run_id, r.already_done, r.resumed) for r in (first, other, window)] == [
        (1, False, False), (2, False, False), (3, False, False)]
    assert table_rows(db, "runs", "run_id, batch_size") == [(1, 1), (2, 2), (3, 1)]


def test_max_length_takes_every_length_from_the_smallest_input_to_the_models_own_maximum(tiny_bert_dir):
    """``max_length`` may be the model's own maximum (tiny BERT: 64 position embeddings) and the
    special tokens and one piece (3), the bounds included; one past either is refused."""
    from headdb.model import AttentionModel

    natural = AttentionModel(str(tiny_bert_dir)).max_length
    assert natural == 64
    for length in (natural, 3):
        assert AttentionModel(str(tiny_bert_dir), max_length=length).max_length == length
    with pytest.raises(ModelError, match="65 exceeds the model's maximum of 64"):
        AttentionModel(str(tiny_bert_dir), max_length=natural + 1)
    with pytest.raises(ModelError, match="2 is too small"):
        AttentionModel(str(tiny_bert_dir), max_length=2)
