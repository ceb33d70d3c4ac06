"""Syntactic head accuracy (Clark et al. 2019) on a hand-made store with known answers."""

from __future__ import annotations

import contextlib
import importlib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import headdb
from cli_helpers import run_main
from handmade_store import build_accuracy_store
from headdb.accuracy import REPORT_SPLIT, SELECTION_SPLIT
from headdb.cli import app
from role_reference import build_store, dirichlet_attention, simple_seq

accuracy_mod = importlib.import_module("headdb.accuracy")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_accuracy_store(tmp_path_factory.mktemp("acc") / "a.db")


def _classified_copy(store, db):
    """A copy ``db`` of ``store`` with a classification of its run (the report reads one)."""
    import shutil

    from handmade_store import add_classification
    from headdb.db import connect

    shutil.copy(store, db)
    con = connect(db)
    try:
        add_classification(con, 1, ["local"], {}, 1, 2)
    finally:
        con.close()
    return db


def test_word_attention_sums_to_and_averages_from(store):
    # s0 head 0 ("to-head"): dog -> barks puts 0.3 on each of bar, ##ks and 0.4 on The
    df = headdb.sql(store, "SELECT key_word_pos, weight FROM word_attention WHERE run_id = 1 AND sentence_id = 0 "
                           "AND layer = 0 AND head = 0 AND query_word_pos = 1 ORDER BY key_word_pos")
    assert df["key_word_pos"].tolist() == [0, 2]
    assert df["weight"].tolist() == pytest.approx([0.4, 0.6])  # sum over pieces: barks wins over The
    # barks (2 pieces) -> dog: mean over its pieces
    df = headdb.sql(store, "SELECT key_word_pos, weight FROM word_attention WHERE run_id = 1 AND sentence_id = 0 "
                           "AND layer = 0 AND head = 0 AND query_word_pos = 2 ORDER BY key_word_pos")
    assert df["weight"].tolist() == pytest.approx([0.4, 0.6])
    top = headdb.sql(store, "SELECT key_word_pos FROM word_attention_top WHERE run_id = 1 AND sentence_id = 0 "
                            "AND layer = 0 AND head = 0 ORDER BY query_word_pos")
    assert top["key_word_pos"].tolist() == [1, 2, 1]


# (head, relation, direction) -> (selection accuracy, report accuracy), worked out by hand. head->dep
# is Clark et al.'s transposed map: per dependent, the word that attends to it most. In "Dogs often
# bark" (head 1 "to-head") bark has two dependents: the column of Dogs is topped by bark (0.6: right),
# that of often by Dogs and bark at 0.4 each (tie: the lower word, Dogs: wrong). The head's own
# most-attended word (the definition before) would have got nsubj right and det wrong here.
GOLDEN = {
    (0, "det", "dep->head"): (1.0, 1.0), (0, "nsubj", "dep->head"): (0.5, 1.0),
    (0, "advmod", "dep->head"): (0.0, 1.0), (0, "all", "dep->head"): (0.5, 1.0),
    (1, "det", "dep->head"): (1.0, 1.0), (1, "nsubj", "dep->head"): (1.0, 0.0),
    (1, "advmod", "dep->head"): (1.0, 0.0), (1, "all", "dep->head"): (1.0, 0.25),
    (0, "det", "head->dep"): (1.0, 1.0), (0, "nsubj", "head->dep"): (0.0, 0.5),
    (0, "advmod", "head->dep"): (0.0, 0.0), (0, "all", "head->dep"): (0.25, 0.5),
    (1, "det", "head->dep"): (1.0, 1.0), (1, "nsubj", "head->dep"): (0.5, 0.0),
    (1, "advmod", "head->dep"): (0.0, 0.0), (1, "all", "head->dep"): (0.5, 0.25),
}


def clark_reference(store, run: int = 1) -> dict:
    """Clark et al.'s predictors, in numpy over the stored edges, independent of the SQL: per
    (sentence, layer, head) the token map pooled to words (to a word: the sum over its pieces; from
    a word: the mean), special tokens, the diagonal and other segments out; dep->head takes the
    argmax of the dependent's row, head->dep of its column (their transposed map); np.argmax takes
    the first of equal maxima; a row or column with no stored edge predicts nothing (wrong).
    Returns (head, relation, direction, split) -> accuracy."""
    toks = headdb.sql(store, f"SELECT sentence_id, token_pos, word_pos, segment FROM tokens WHERE run_id = {run}")
    edges = headdb.sql(store, "SELECT sentence_id, layer, head, query_pos, key_pos, weight FROM edges "
                              f"WHERE run_id = {run}")
    words = headdb.sql(store, "SELECT sentence_id, word_pos, head_word_pos, deprel FROM words "
                              "WHERE head_word_pos IS NOT NULL")
    counts: dict = {}
    for (sid, _layer, head), e in edges.groupby(["sentence_id", "layer", "head"]):
        t = toks[toks.sentence_id == sid].sort_values("token_pos")
        n_words = int(t.word_pos.max()) + 1
        pool = np.zeros((n_words, len(t)))  # word x token: 1 where the token is a piece of the word
        for i, w in enumerate(t.word_pos):
            if not pd.isna(w):
                pool[int(w), i] = 1
        a = np.zeros((len(t), len(t)))
        stored = np.zeros((len(t), len(t)), dtype=bool)
        a[e.query_pos.to_numpy(), e.key_pos.to_numpy()] = e.weight.to_numpy(dtype=float)
        stored[e.query_pos.to_numpy(), e.key_pos.to_numpy()] = True
        m = pool @ a @ pool.T / pool.sum(axis=1, keepdims=True)
        seg = t.groupby("word_pos").segment.first().reindex(range(n_words)).to_numpy()
        keep = ((pool @ stored @ pool.T) > 0) & (seg[:, None] == seg[None, :])
        np.fill_diagonal(keep, False)
        m = np.where(keep, m, -np.inf)
        for w in words[words.sentence_id == sid].itertuples():
            dep, gov = int(w.word_pos), int(w.head_word_pos)
            for direction, line in (("dep->head", m[dep, :]), ("head->dep", m[:, dep])):
                right = bool(np.isfinite(line).any()) and int(np.argmax(line)) == gov
                for rel in (w.deprel.split(":")[0], "all"):
                    c = counts.setdefault((head, rel, direction, "selection" if sid % 2 == 0 else "report"), [0, 0])
                    c[0] += 1
                    c[1] += right
    return {k: c / n for k, (n, c) in counts.items()}


def _by_split(df: pd.DataFrame) -> dict:
    out = {}
    for r in df.itertuples():
        out[(r.head, r.relation, r.direction, "selection")] = r.select_accuracy
        out[(r.head, r.relation, r.direction, "report")] = r.report_accuracy
    return out


def test_head_accuracy_golden(store):
    df = headdb.head_accuracy(store)
    got = {(r.head, r.relation, r.direction): (r.select_accuracy, r.report_accuracy) for r in df.itertuples()}
    assert got == GOLDEN
    n = {(r.relation): (r.n_select, r.n_report) for r in df.itertuples()}
    assert n == {"det": (1, 1), "nsubj": (2, 2), "advmod": (1, 1), "all": (4, 4)}  # advmod:emph -> advmod


def test_head_accuracy_is_clarks_in_both_directions(store):
    """head->dep was the head word's own most-attended word (of a head's several dependents at most
    one right); it is now Clark et al.'s transposed map, as the numpy reference computes it."""
    ref = clark_reference(store)
    assert _by_split(headdb.head_accuracy(store)) == ref
    assert ref[(1, "advmod", "head->dep", "selection")] != ref[(1, "nsubj", "head->dep", "selection")]


def test_head_to_dep_of_a_dependent_no_word_attends_to_is_wrong(store, tmp_path):
    """In a sparse run a dependent whose pieces no stored edge points to has no column to take the
    argmax of: it predicts nothing and counts as wrong, as dep->head does for a row without edges."""
    import shutil

    db = tmp_path / "sparse.db"
    shutil.copy(store, db)
    # "The" (token 1) of sentence 0: no head attends to it any more; its own row stays
    headdb.sql(db, "DELETE FROM edge_store WHERE sentence_id = 0 AND key_pos = 1", write=True)
    got = _by_split(headdb.head_accuracy(db))
    assert got == clark_reference(db)
    assert got[(0, "det", "head->dep", "selection")] == 0.0  # was 1.0: The's column was topped by dog
    assert got[(0, "det", "dep->head", "selection")] == 1.0  # The's row still finds dog


def test_offset_baselines_golden(store):
    df = headdb.offset_baselines(store).set_index(["offset", "relation", "direction"])
    assert df.loc[(1, "all", "dep->head"), "select_accuracy"] == 0.75
    assert df.loc[(2, "nsubj", "dep->head"), "report_accuracy"] == 0.5
    assert df.loc[(1, "all", "head->dep"), "report_accuracy"] == 0.75
    # both directions predict each dependent's head, so an offset (head = dependent + offset) scores alike
    dep_head = df.xs("dep->head", level="direction")
    assert dep_head.equals(df.xs("head->dep", level="direction"))
    assert df.loc[(3, "all", "dep->head"), "select_accuracy"] == 0.0


def test_accuracy_selects_on_even_reports_on_odd(store):
    df = headdb.accuracy(store, min_count=1)
    run_name = headdb.runs(store)["run_name"].iloc[-1]
    most = int(df[["n_select", "n_report"]].min(axis=1).max())
    assert df.attrs == {"selected_on": SELECTION_SPLIT, "reported_on": REPORT_SPLIT, "run_id": 1, "run_name": run_name,
                        "min_count": 1, "most_in_both_splits": most, "storage": "dense", "left_out": 0}
    assert (df["selected_on"] == "even sentence_id").all() and (df["reported_on"] == "odd sentence_id").all()
    got = {(r.relation, r.direction): (r.head, r.select_accuracy, r.accuracy, r.baseline_offset,
                                       r.baseline_select_accuracy, r.baseline_accuracy) for r in df.itertuples()}
    assert got == {
        # head 1 is perfect on the selection split and poor on the report split: reported as such
        ("all", "dep->head"): (1, 1.0, 0.25, 1, 0.75, 0.75),
        ("all", "head->dep"): (1, 0.5, 0.25, 1, 0.75, 0.75),
        ("nsubj", "dep->head"): (1, 1.0, 0.0, 1, 0.5, 0.5),      # offsets +1 and +2 tie -> +1
        ("nsubj", "head->dep"): (1, 0.5, 0.0, 1, 0.5, 0.5),
        ("advmod", "dep->head"): (1, 1.0, 0.0, 1, 1.0, 1.0),
        ("advmod", "head->dep"): (0, 0.0, 0.0, 1, 1.0, 1.0),     # both heads 0.0: tie -> lower head
        ("det", "dep->head"): (0, 1.0, 1.0, 1, 1.0, 1.0),
        ("det", "head->dep"): (0, 1.0, 1.0, 1, 1.0, 1.0),
    }
    assert list(df["relation"])[:2] == ["all", "all"]
    assert set(headdb.accuracy(store, min_count=2)["relation"]) == {"all", "nsubj"}


def test_cli_accuracy(store, tmp_path):
    res = CliRunner().invoke(app, ["accuracy", str(store), "--min-count", "1", "--out", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    assert "even sentence_id" in res.output
    assert "run 1 (" in res.output  # which run: the default is the latest finished, not the last ingested
    import json

    rows = json.loads((tmp_path / "a.json").read_text())
    assert len(rows) == 8 and rows[0]["relation"] == "all"
    # the table is still shown, as classify --out and compare --out show theirs
    shown = [line.replace("│", " ").split() for line in res.stdout.splitlines()]
    assert sum(1 for cells in shown if cells[:2] in (["all", "dep->head"], ["all", "head->dep"])) == 2, res.stdout


def test_an_empty_accuracy_table_says_why(store, capsys, monkeypatch):
    """--min-count above what any relation has in a split (the default 10 on a small run) printed
    a table of headers alone, without a word; now a line on stderr says so and what would show one."""
    most = int(headdb.accuracy(store)[["n_select", "n_report"]].min(axis=1).max())
    code, out, err = run_main(capsys, monkeypatch, "accuracy", store, "--min-count", str(most + 1))
    assert code == 0, err
    assert f"no relation has at least {most + 1} edges in each split (--min-count); the most any has in both " \
           f"is {most}: --min-count {most} shows it" in err, err
    code, out, err = run_main(capsys, monkeypatch, "accuracy", store, "--min-count", str(most))
    assert code == 0 and "no relation has" not in err and "dep->head" in out


def test_report_has_the_accuracy_section(store, tmp_path):
    """The report adds syntactic head accuracy when the corpus has dependency relations (the
    numbers of headdb.accuracy); --no-accuracy leaves it out; --accuracy without syntax is an error."""
    import shutil

    from handmade_store import add_classification
    from headdb.db import connect

    db = tmp_path / "a.db"
    shutil.copy(store, db)
    con = connect(db)
    add_classification(con, 1, ["local", "nsubj"], {"nsubj": {(0, 1)}}, 1, 2)  # the report reads a classification
    con.close()
    acc = headdb.accuracy(db)
    r = headdb.report(db, out=tmp_path / "rep")
    assert "## Syntactic head accuracy (Clark et al. 2019)" in r.markdown
    best = acc[(acc["relation"] == "all") & (acc["direction"] == "dep->head")].iloc[0]
    row = f"| all | dep->head | {best['n_report']} | L{best['layer']} H{best['head']} | {best['accuracy']:.3g} |"
    assert row in r.markdown, r.markdown
    assert f"`headdb accuracy {db} --run 1 --min-count 1`" in r.markdown  # the report's store and run, not the default
    text = r.html.read_text()
    assert "Syntactic head accuracy" in text and text.count("<tr>") > len(acc)
    res = CliRunner().invoke(app, ["report", str(db), "--out", str(tmp_path / "rep2"), "--no-accuracy"])
    assert res.exit_code == 0, res.output
    assert "Syntactic head accuracy" not in (tmp_path / "rep2" / "summary.md").read_text()
    headdb.sql(db, "UPDATE words SET head_word_pos = NULL", write=True)  # a corpus without syntax
    assert "Syntactic" not in headdb.report(db, out=tmp_path / "rep3").markdown
    from headdb.errors import InputError

    with pytest.raises(InputError, match="no dependency relations") as refused:
        headdb.report(db, out=tmp_path / "rep4", accuracy=True)
    # why, and not that TSV pairs carry none: they are parsed by spaCy, as text is
    assert "no word of its corpus has a head word" in str(refused.value)
    assert "TSV carry none" not in str(refused.value)


def test_a_run_that_stored_no_sentence_with_syntax_says_so_and_its_report_leaves_accuracy_out(store, tmp_path,
                                                                                             monkeypatch, capsys):
    """A corpus with syntax whose run stored none of it (every sentence skipped as longer than
    the maximum, as long documents are without --truncate) is no "corpus without syntax": accuracy
    says what the run skipped, and a report leaves the accuracy out, as for a corpus without
    syntax (it failed with `no dependency edges to score (a corpus without syntax?)`)."""

    from headdb.errors import InputError

    db = _classified_copy(store, tmp_path / "a.db")
    for sql in ("DELETE FROM edge_store WHERE run_id = 1", "DELETE FROM tokens WHERE run_id = 1",
                "UPDATE run_sentences SET status = 'skipped' WHERE run_id = 1", "UPDATE runs SET max_length = 8"):
        headdb.sql(db, sql, write=True)
    n = int(headdb.sql(db, "SELECT count(*) FROM run_sentences WHERE run_id = 1").iloc[0, 0])
    with pytest.raises(InputError, match=rf"^run 1 stored no sentence, so it has no dependency edges to score: "
                                         rf"all {n} were longer than its maximum of 8 tokens and skipped "
                                         r"\(ingest with truncate=True"):
        headdb.accuracy(db)
    assert "Syntactic" not in headdb.report(db, out=tmp_path / "rep").markdown
    code, _, err = run_main(capsys, monkeypatch, "report", db, "--out", tmp_path / "rep2", "--accuracy")
    assert code == 1 and err == (f"error: run 1 stored no sentence, so it has no dependency edges to score: all {n} "
                                 "were longer than its maximum of 8 tokens and skipped (ingest with --truncate to "
                                 "keep them, cut to the maximum)\n")
    # stored sentences whose words have no head word, in a corpus that has others
    headdb.sql(db, "UPDATE run_sentences SET status = 'ok' WHERE run_id = 1", write=True)
    with pytest.raises(InputError, match=rf"no word of its {n} stored sentences has a head word"):
        headdb.accuracy(db)


# ---- a large run is judged in ranges of sentences, whose counts add up -------------------------

RANDOM_RELATIONS = ["nsubj", "obj", "dobj", "det", "obl:tmod", "amod"]


def _base(deprel: str | None) -> str:
    if deprel is None:  # CoNLL-U's `_`: a head without a label
        return "_"
    base = deprel.split(":")[0]
    return "obj" if base == "dobj" else base


@pytest.fixture(scope="module")
def random_store(tmp_path_factory):
    """Nine sentences of 2-7 words (1-2 pieces each) with random dependency heads and random
    attention, as run 1 (top-3, 2 layers x 2 heads) and run 2 (dense, the same attention)."""
    rng = np.random.default_rng(17)
    seqs = []
    for _ in range(9):
        n = int(rng.integers(2, 8))
        root = int(rng.integers(n))
        heads = [None if w == root else int(rng.choice([x for x in range(n) if x != w])) for w in range(n)]
        # a head without a label (CoNLL-U's `_`) now and then: its own relation "_", and once in "all"
        rels = ["root" if h is None else (None if rng.random() < 0.1 else str(rng.choice(RANDOM_RELATIONS)))
                for h in heads]
        seqs.append(simple_seq([int(rng.integers(1, 3)) for _ in range(n)], heads, rels))
    att = [dirichlet_attention(rng, 2, 2, q.length) for q in seqs]
    db = tmp_path_factory.mktemp("acc-random") / "r.db"
    build_store(db, seqs, att, top_k=3, run_id=1)
    build_store(db, seqs, att, run_id=2, add_corpus=False)
    return db, seqs


def _ranges(db, run_id: int, limit: int) -> list[tuple[int, int]]:
    from headdb.db import connect
    from headdb.store import sentence_ranges

    con = connect(db, read_only=True)
    try:
        return sentence_ranges(con, run_id, limit, edges=True)
    finally:
        con.close()


def test_sentence_ranges_bound_the_stored_edges(random_store):
    """With ``edges`` a range's size is the stored edges as the run's top-k bounds them: exactly
    the stored count (top-k keeps k keys of every row of at least k keys, dense every key)."""
    from headdb.db import connect

    db, seqs = random_store
    con = connect(db, read_only=True)
    try:
        for run_id, k in ((1, 3), (2, None)):
            stored = dict(con.execute("SELECT sentence_id, count(*) FROM edges WHERE run_id = ? GROUP BY ALL",
                                      [run_id]).fetchall())
            bound = {s: q.length * 4 * min(k or q.length, q.length) for s, q in enumerate(seqs)}
            assert stored == bound
            for limit in (1, 150, 400, 900):
                pieces = _ranges(db, run_id, limit)
                # consecutive, covering every sentence; each within the limit unless one sentence exceeds it
                assert pieces[0][0] == 0 and pieces[-1][1] == len(seqs) - 1
                assert all(b[0] == a[1] + 1 for a, b in zip(pieces, pieces[1:]))
                for lo, hi in pieces:
                    assert lo == hi or sum(bound[s] for s in range(lo, hi + 1)) <= limit
            assert _ranges(db, run_id, sum(bound.values())) == [(0, len(seqs) - 1)]
        # attention rows (the scores' pieces) when ``edges`` is not asked for
        from headdb.store import sentence_ranges

        rows = [q.length * 4 for q in seqs]
        assert sentence_ranges(con, 1, sum(rows) - 1) != [(0, len(seqs) - 1)]
        assert sentence_ranges(con, 1, sum(rows)) == [(0, len(seqs) - 1)]
    finally:
        con.close()


@pytest.mark.parametrize("run_id", [1, 2], ids=["top-3", "dense"])
@pytest.mark.parametrize("limit", [1, 150, 400], ids=["a-sentence-each", "small", "uneven"])
def test_ranges_of_sentences_give_the_one_query_counts(random_store, monkeypatch, run_id, limit):
    """head_accuracy and accuracy judged in several ranges of sentences equal one query's, to the
    last bit; progress counts the ranges."""
    db, seqs = random_store
    assert len(_ranges(db, run_id, accuracy_mod.CHUNK_EDGES)) == 1
    whole_heads = headdb.head_accuracy(db, run_id)
    whole = headdb.accuracy(db, run_id)
    monkeypatch.setattr(accuracy_mod, "CHUNK_EDGES", limit)
    pieces = _ranges(db, run_id, limit)
    assert 1 < len(pieces) <= len(seqs)
    if limit == 1:
        assert pieces == [(s, s) for s in range(len(seqs))]
    seen = []
    parted_heads = headdb.head_accuracy(db, run_id, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, len(pieces)) for i in range(len(pieces) + 1)]
    pd.testing.assert_frame_equal(parted_heads, whole_heads, check_exact=True)
    pd.testing.assert_frame_equal(headdb.accuracy(db, run_id), whole, check_exact=True)


@pytest.mark.parametrize("limit", [None, 1, 150, 400])
def test_every_dependency_edge_counts_once_whatever_the_ranges(random_store, monkeypatch, limit):
    """Each head's n per relation and split is the number of dependents, counted from the corpus
    here: a range boundary that dropped a sentence or counted one twice would change it."""
    db, seqs = random_store
    if limit is not None:
        monkeypatch.setattr(accuracy_mod, "CHUNK_EDGES", limit)
    want: dict[tuple[str, str], int] = {}
    for sid, q in enumerate(seqs):
        split = "select" if sid % 2 == 0 else "report"
        for h, rel in zip(q.heads, q.deprels):
            if h is not None:
                for relation in (_base(rel), "all"):
                    want[relation, split] = want.get((relation, split), 0) + 1
    assert any(relation == "_" for relation, _ in want)  # a head without a label is in the corpus
    df = headdb.head_accuracy(db, 1)
    assert len(df) == 2 * 2 * 2 * len({r for r, _ in want})  # layers x heads x directions x relations
    for r in df.itertuples():
        assert (r.n_select, r.n_report) == (want.get((r.relation, "select"), 0), want.get((r.relation, "report"), 0))
    offsets = accuracy_mod.offset_baselines(db, 1)  # the baseline judges the same edges
    assert len(offsets) == 20 * 2 * len({r for r, _ in want})  # offsets x directions x relations
    for r in offsets.itertuples():
        assert (r.n_select, r.n_report) == (want.get((r.relation, "select"), 0), want.get((r.relation, "report"), 0))


def test_accuracy_and_report_show_progress_over_ranges(store, tmp_path, monkeypatch, capsys):
    """`headdb accuracy` and `headdb report` hand the CLI's progress bar to accuracy's ranges of
    sentences (a bar on a terminal only; --quiet none)."""

    cli = importlib.import_module("headdb.cli")
    monkeypatch.setattr(accuracy_mod, "CHUNK_EDGES", 1)  # a range per sentence: 4 ranges
    seen = []

    @contextlib.contextmanager
    def spy(label, quiet):
        seen.append((label, quiet))
        yield None if quiet else (lambda done, total: seen.append((done, total)))

    monkeypatch.setattr(cli, "_steps_bar", spy)
    code, out, err = run_main(capsys, monkeypatch, "accuracy", store, "--min-count", "1")
    assert code == 0, err
    assert seen == [("accuracy", False), (0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert "dep->head" in out
    db = _classified_copy(store, tmp_path / "a.db")  # the report reads a classification
    seen.clear()
    code, out, err = run_main(capsys, monkeypatch, "report", db, "--out", tmp_path / "rep")
    assert code == 0, err
    assert seen == [("accuracy", False), (0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    # the summary is the command's output, the files it wrote a line on stderr
    assert out == (tmp_path / "rep" / "summary.md").read_text() + "\n" and "report.html" in err
    seen.clear()
    code, _, err = run_main(capsys, monkeypatch, "accuracy", store, "-q")
    assert code == 0 and seen == [("accuracy", True)]


def test_accuracy_caps_duckdbs_memory_on_a_connection_of_its_own(random_store, store, tmp_path, monkeypatch):
    """DuckDB keeps the blocks it reads cached up to its memory limit (80% of RAM by default), so
    accuracy's own connection, and the report's, have classify's limit. Beside a connection the
    user holds to the store (DuckDB then shares one instance, and its settings, between the two)
    accuracy leaves that connection's limit as it was."""

    from headdb.db import connect, memory_limit_mb

    db, _ = random_store
    seen = []
    real = accuracy_mod.sentence_ranges

    def spy(con, *args, **kwargs):
        seen.append(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
        return real(con, *args, **kwargs)

    monkeypatch.setattr(accuracy_mod, "sentence_ranges", spy)
    capped = f"{memory_limit_mb()}.0 MiB"
    want = headdb.accuracy(db)
    assert seen == [capped]
    headdb.head_accuracy(db)
    assert seen == [capped, capped]
    mine = connect(db, read_only=True)
    try:
        before = mine.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        assert before != capped
        pd.testing.assert_frame_equal(headdb.accuracy(db), want, check_exact=True)
        assert seen[-1] == before
        assert mine.execute("SELECT current_setting('memory_limit')").fetchone()[0] == before
    finally:
        mine.close()
    report_db = _classified_copy(store, tmp_path / "a.db")
    headdb.report(report_db, out=tmp_path / "rep")
    assert seen[-1] == capped


@pytest.mark.parametrize("bad", [0, -3, "x", 2.5, True, None])
def test_a_min_count_that_is_not_a_whole_number_of_at_least_one_is_refused(store, bad):
    from headdb.errors import InputError

    with pytest.raises(InputError, match="min_count .*must be a whole number of at least 1"):
        headdb.accuracy(store, min_count=bad)


def test_a_report_of_a_run_with_dependency_edges_in_one_split_says_so(store, tmp_path):
    """A run whose dependency edges are all in one split (a run of one sentence: sentence_id 0)
    has no relation to select on one split and report on the other: its report showed a table of
    headers alone under "All -1 relations: report.html, ...", and a header of "1 sentences"."""
    import html


    db = _classified_copy(store, tmp_path / "a.db")
    headdb.sql(db, "UPDATE words SET head_word_pos = NULL WHERE sentence_id % 2 = 1", write=True)
    assert headdb.accuracy(db).empty
    r = headdb.report(db, out=tmp_path / "rep")
    assert "## Syntactic head accuracy (Clark et al. 2019)" in r.markdown
    assert "relations: report.html" not in r.markdown and "| relation |" not in r.markdown, r.markdown
    said = (f"No relation has dependency edges in both splits: the run's are all on the {SELECTION_SPLIT}s or "
            f"all on the {REPORT_SPLIT}s")
    assert said in r.markdown and html.escape(said) in r.html.read_text()
    # the count of relations in a run that has some leaves out 'all', and one is singular
    headdb.sql(db, "UPDATE words SET head_word_pos = 2 WHERE sentence_id % 2 = 1 AND word_pos = 0", write=True)
    assert set(headdb.accuracy(db)["relation"]) == {"all", "det", "nsubj"}
    assert "All 2 relations: report.html" in headdb.report(db, out=tmp_path / "rep2").markdown
    # the header counts one sentence (and one test) as one
    headdb.sql(db, "UPDATE run_sentences SET status = 'skipped' WHERE run_id = 1 AND sentence_id > 0", write=True)
    headdb.sql(db, "UPDATE classifications SET n_tests = 1", write=True)
    md = headdb.report(db, out=tmp_path / "rep3", accuracy=False).markdown
    assert ", 1 sentence, " in md and ", 1 test in the family" in md, md


def test_a_sparse_or_truncated_run_says_what_its_accuracy_rests_on(store, tmp_path, capsys, monkeypatch):
    """accuracy read a sparse run's most-attended words from its stored top-k keys only (on the
    bundled sample, top-8 against --dense changed 4 of 62 best heads) and left out the dependency
    edges whose words a truncation cut off (2,772 of 5,408 at --max-length 16), without a word of
    either: the command, its attrs and the report's section now say both."""

    code, out, err = run_main(capsys, monkeypatch, "accuracy", store, "--min-count", "1")
    assert code == 0 and "stored edges" not in err and "left out" not in err, err
    full = headdb.accuracy(store)
    assert full.attrs["storage"] == "dense" and full.attrs["left_out"] == 0
    n_all = int(full.loc[0, "n_select"] + full.loc[0, "n_report"])

    db = _classified_copy(store, tmp_path / "a.db")
    headdb.sql(db, "UPDATE runs SET dense = false, top_k = 8 WHERE run_id = 1", write=True)
    # sentence 1 cut after "dog": "barks" (the head of "dog") has no stored piece
    headdb.sql(db, "DELETE FROM tokens WHERE run_id = 1 AND sentence_id = 1 AND word_pos = 2", write=True)
    acc = headdb.accuracy(db)
    assert acc.attrs["storage"] == "top-8" and acc.attrs["left_out"] == 1
    assert int(acc.loc[0, "n_select"] + acc.loc[0, "n_report"]) == n_all - 1
    code, out, err = run_main(capsys, monkeypatch, "accuracy", db, "--min-count", "1")
    assert code == 0, err
    assert "word attention is summed from the run's stored edges (top-8 keys per row)" in err, err
    assert "ingest with --dense" in err, err
    assert "1 dependency edge of the stored sentences left out: the dependent or its head has no stored piece" in err
    md = headdb.report(db, out=tmp_path / "rep").markdown
    assert "Word attention is summed from the run's stored edges (top-8 keys per row)" in md, md
    assert "1 dependency edge of the stored sentences left out" in md, md


def _clark_reference(seqs, att) -> dict[tuple[int, int, str, str], tuple[int, int]]:
    """(layer, head, direction, split) -> (n, n_correct) of relation "all", recomputed in numpy from
    the dense attention, as Clark et al. do: the word-level map (mean over the query word's pieces,
    sum over the key word's), a word's own column/row left out and so is the other segment; the
    argmax of the row (dep->head) or the column (head->dep), ties to the lower word."""
    out: dict = {}
    for sid, (seq, A) in enumerate(zip(seqs, att)):
        n_words = len(seq.heads)
        pieces = [[p for p, w in enumerate(seq.word) if w == i] for i in range(n_words)]
        split = "selection" if sid % 2 == 0 else "report"
        for layer in range(A.shape[0]):
            for head in range(A.shape[1]):
                W = np.array([[A[layer, head][np.ix_(pieces[i], pieces[j])].sum(axis=1).mean()
                               for j in range(n_words)] for i in range(n_words)])
                allowed = np.array([[i != j and seq.word_segment[i] == seq.word_segment[j]
                                     for j in range(n_words)] for i in range(n_words)])
                masked = np.where(allowed, W, -np.inf)
                for dep, gov in enumerate(seq.heads):
                    if gov is None:
                        continue
                    for direction, scores in (("dep->head", masked[dep]), ("head->dep", masked[:, dep])):
                        predicted = int(np.argmax(scores)) if np.isfinite(scores).any() else None
                        n, c = out.get((layer, head, direction, split), (0, 0))
                        out[(layer, head, direction, split)] = (n + 1, c + (predicted == gov))
    return out


@pytest.mark.parametrize("uniform", [False, True])
def test_head_accuracy_of_pairs_is_clarks_recomputed_from_the_attention(tmp_path, uniform):
    """Random dense attention over pairs, whose words attend to themselves and to the other
    segment: the accuracy of every head is the one recomputed in numpy (a word's attention to
    itself and to the other segment never predicts: the word-level map within a segment). Uniform
    attention ties every word of as many pieces: the lower word_pos wins, as numpy's argmax."""
    rng = np.random.default_rng(5)
    seqs = []
    for _ in range(8):
        segs = []
        for _seg in range(2):
            n = int(rng.integers(2, 6))
            root = int(rng.integers(n))
            segs.append(([int(rng.integers(1, 3)) for _ in range(n)],
                         [None if w == root else int(rng.choice([x for x in range(n) if x != w])) for w in range(n)],
                         ["root" if w == root else "dep" for w in range(n)]))
        seqs.append(simple_seq(*segs[0], *segs[1]))
    # the words' own pieces and the other segment weigh more than the rest, so that leaving them in
    # changes the predictions
    att = []
    for q in seqs:
        A = dirichlet_attention(rng, 2, 2, q.length)
        boost = np.array([[1.0 + 3.0 * (q.word[i] is not None and q.word[j] is not None
                                        and (q.word[i] == q.word[j] or q.segment[i] != q.segment[j]))
                           for j in range(q.length)] for i in range(q.length)])
        A = np.ones_like(A) if uniform else A * boost
        att.append(A / A.sum(axis=-1, keepdims=True))
    db = tmp_path / "pairs.db"
    build_store(db, seqs, att, pairs=True)
    got = headdb.head_accuracy(db)
    got = got[got["relation"] == "all"]
    ref = _clark_reference(seqs, att)
    assert len(got) == 2 * 2 * 2
    for r in got.itertuples():
        for split, n, acc in (("selection", r.n_select, r.select_accuracy), ("report", r.n_report, r.report_accuracy)):
            n_ref, c_ref = ref[(r.layer, r.head, r.direction, split)]
            assert n == n_ref and acc == pytest.approx(c_ref / n_ref), (r.layer, r.head, r.direction, split)


def _tie_seqs():
    """Six single-segment sentences of one piece a word, whose relations tie offsets."""
    return [simple_seq([1] * 3, [1, None, 1], ["nsubj", "root", "obj"]),
            simple_seq([1] * 4, [None, 0, 3, 0], ["root", "nsubj", "obj", "obj"]),
            simple_seq([1] * 5, [2, None, 1, 1, 1], ["nsubj", "root", "obj", "nsubj", "obj"]),
            simple_seq([1] * 3, [1, None, 1], ["nsubj", "root", "obj"]),
            simple_seq([1] * 3, [1, None, 1], ["amod", "root", "amod"]),
            simple_seq([1] * 2, [1, None], ["amod", "root"])]


def test_the_best_offset_is_chosen_on_the_selection_split_with_readmes_tie_rule(tmp_path):
    """Per relation, the offset baseline is the offset of -10..10 (not 0) with the best selection
    accuracy, recomputed from the words' heads; ties go to the smaller |offset|, then the lower
    offset (README), and its accuracy is reported on the odd sentence_ids. Here nsubj ties +1, +2
    and -2 on the even sentences, and amod +1 and -1."""
    seqs = _tie_seqs()
    rng = np.random.default_rng(3)
    db = tmp_path / "o.db"
    build_store(db, seqs, [dirichlet_attention(rng, 1, 2, q.length) for q in seqs])
    edges = [(sid % 2 == 0, _base(rel), gov - dep) for sid, seq in enumerate(seqs)
             for dep, (gov, rel) in enumerate(zip(seq.heads, seq.deprels)) if gov is not None]
    df = headdb.accuracy(db)
    ties = 0
    for r in df.itertuples():
        mine = [e for e in edges if r.relation in ("all", e[1])]
        sel = [e[2] for e in mine if e[0]]
        rep = [e[2] for e in mine if not e[0]]
        best = max(sum(d == o for d in sel) for o in range(-10, 11) if o)
        tied = [o for o in range(-10, 11) if o and sum(d == o for d in sel) == best]
        ties += len(tied) > 1
        want = min(tied, key=lambda o: (abs(o), o))
        assert r.baseline_offset == want, (r.relation, r.direction, tied)
        assert r.baseline_accuracy == pytest.approx(sum(d == want for d in rep) / len(rep))
    assert ties and set(df["relation"]) == {"all", "nsubj", "obj", "amod"}
    # the most edges any relation has in both splits: "all"'s, the smaller of its two splits
    n_split = [sum(e[0] == split for e in edges) for split in (True, False)]
    assert df.attrs["most_in_both_splits"] == min(n_split) and n_split[0] != n_split[1]


def test_the_best_head_ties_go_to_the_lower_layer_then_head(tmp_path):
    """Heads (0, 1) and (1, 0) attend from every dependent to its head, (0, 0) and (1, 1)
    uniformly: the best head is the first of the tied ones in (layer, head) order (README),
    (0, 1), wherever (1, 0) ties it; recomputed from the attention."""
    seqs = _tie_seqs()
    att = []
    for q in seqs:
        L = q.length
        good = np.full((L, L), 1.0 / L)
        for p, w in enumerate(q.word):
            if w is not None and q.heads[w] is not None:
                good[p] = 0.0
                good[p, q.word.index(q.heads[w])] = 1.0
        A = np.empty((2, 2, L, L))
        A[0, 0] = A[1, 1] = 1.0 / L
        A[0, 1] = A[1, 0] = good
        att.append(A)
    db = tmp_path / "h.db"
    build_store(db, seqs, att)
    ref = _clark_reference(seqs, att)
    df = headdb.accuracy(db)
    r = df[(df["relation"] == "all") & (df["direction"] == "dep->head")].iloc[0]
    sel = {(lay, hd): c / n for (lay, hd, d, split), (n, c) in ref.items() if d == "dep->head" and split == "selection"}
    best = max(sel.values())
    tied = sorted(k for k, v in sel.items() if v == best)
    assert tied == [(0, 1), (1, 0)]
    assert (r["layer"], r["head"]) == tied[0]


def test_accuracy_out_says_so_on_stderr_and_stdout_holds_the_rows_only(store, tmp_path, monkeypatch, capsys):
    """With --out, `headdb accuracy -f csv` still prints the rows, and only them: "wrote N rows"
    goes to stderr, so that stdout stays a CSV a program can read."""
    import io

    out = tmp_path / "acc.csv"
    code, stdout, err = run_main(capsys, monkeypatch, "accuracy", store, "--min-count", "1", "-f", "csv", "--out", out)
    assert code == 0, err
    written = pd.read_csv(out)
    shown = pd.read_csv(io.StringIO(stdout))
    assert len(shown) == len(written) > 0 and list(shown["relation"]) == list(written["relation"])
    assert f"wrote {len(written)} rows to {out}\n" in err
