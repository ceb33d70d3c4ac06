"""Syntactic head accuracy (Clark et al. 2019) on a hand-made store with known answers."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import headdb
from handmade_store import build_accuracy_store
from headdb.accuracy import REPORT_SPLIT, SELECTION_SPLIT
from headdb.cli import app


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_accuracy_store(tmp_path_factory.mktemp("acc") / "a.db")


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


# (head, relation, direction) -> (selection accuracy, report accuracy), worked out by hand
GOLDEN = {
    (0, "det", "dep->head"): (1.0, 1.0), (0, "nsubj", "dep->head"): (0.5, 1.0),
    (0, "advmod", "dep->head"): (0.0, 1.0), (0, "all", "dep->head"): (0.5, 1.0),
    (1, "det", "dep->head"): (1.0, 1.0), (1, "nsubj", "dep->head"): (1.0, 0.0),
    (1, "advmod", "dep->head"): (1.0, 0.0), (1, "all", "dep->head"): (1.0, 0.25),
    (0, "det", "head->dep"): (0.0, 0.0), (0, "nsubj", "head->dep"): (0.5, 1.0),
    (0, "advmod", "head->dep"): (1.0, 0.0), (0, "all", "head->dep"): (0.5, 0.5),
    (1, "det", "head->dep"): (0.0, 1.0), (1, "nsubj", "head->dep"): (1.0, 0.5),
    (1, "advmod", "head->dep"): (0.0, 1.0), (1, "all", "head->dep"): (0.5, 0.75),
}


def test_head_accuracy_golden(store):
    df = headdb.head_accuracy(store)
    got = {(r.head, r.relation, r.direction): (r.select_accuracy, r.report_accuracy) for r in df.itertuples()}
    assert got == GOLDEN
    n = {(r.relation): (r.n_select, r.n_report) for r in df.itertuples()}
    assert n == {"det": (1, 1), "nsubj": (2, 2), "advmod": (1, 1), "all": (4, 4)}  # advmod:emph -> advmod


def test_offset_baselines_golden(store):
    df = headdb.offset_baselines(store).set_index(["offset", "relation", "direction"])
    assert df.loc[(1, "all", "dep->head"), "select_accuracy"] == 0.75
    assert df.loc[(2, "nsubj", "dep->head"), "report_accuracy"] == 0.5
    assert df.loc[(-1, "all", "head->dep"), "report_accuracy"] == 0.75
    assert df.loc[(3, "all", "dep->head"), "select_accuracy"] == 0.0


def test_accuracy_selects_on_even_reports_on_odd(store):
    df = headdb.accuracy(store, min_count=1)
    run_name = headdb.runs(store)["run_name"].iloc[-1]
    assert df.attrs == {"selected_on": SELECTION_SPLIT, "reported_on": REPORT_SPLIT, "run_id": 1, "run_name": run_name}
    assert (df["selected_on"] == "even sentence_id").all() and (df["reported_on"] == "odd sentence_id").all()
    got = {(r.relation, r.direction): (r.head, r.select_accuracy, r.accuracy, r.baseline_offset,
                                       r.baseline_select_accuracy, r.baseline_accuracy) for r in df.itertuples()}
    assert got == {
        # head 1 is perfect on the selection split and poor on the report split: reported as such
        ("all", "dep->head"): (1, 1.0, 0.25, 1, 0.75, 0.75),
        ("all", "head->dep"): (0, 0.5, 0.5, -1, 0.75, 0.75),     # tie -> lower head
        ("nsubj", "dep->head"): (1, 1.0, 0.0, 1, 0.5, 0.5),      # offsets +1 and +2 tie -> +1
        ("nsubj", "head->dep"): (1, 1.0, 0.5, -1, 0.5, 0.5),
        ("advmod", "dep->head"): (1, 1.0, 0.0, 1, 1.0, 1.0),
        ("advmod", "head->dep"): (0, 1.0, 0.0, -1, 1.0, 1.0),
        ("det", "dep->head"): (0, 1.0, 1.0, 1, 1.0, 1.0),
        ("det", "head->dep"): (0, 0.0, 0.0, -1, 1.0, 1.0),
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
    assert "`headdb accuracy DB --run 1 --min-count 1`" in r.markdown  # the report's run, not the default
    text = r.html.read_text()
    assert "Syntactic head accuracy" in text and text.count("<tr>") > len(acc)
    res = CliRunner().invoke(app, ["report", str(db), "--out", str(tmp_path / "rep2"), "--no-accuracy"])
    assert res.exit_code == 0, res.output
    assert "Syntactic head accuracy" not in (tmp_path / "rep2" / "summary.md").read_text()
    headdb.sql(db, "UPDATE words SET head_word_pos = NULL", write=True)  # a corpus without syntax
    assert "Syntactic" not in headdb.report(db, out=tmp_path / "rep3").markdown
    from headdb.errors import InputError

    with pytest.raises(InputError, match="no dependency relations"):
        headdb.report(db, out=tmp_path / "rep4", accuracy=True)
