"""An ingest's bookkeeping: what a resume reads and runs again, the progress bar's counts, the
run's status and error as it fails, resumes and ends, and options refused before anything loads
(slow: the tiny random-init BERT)."""

from __future__ import annotations

import importlib

import duckdb
import pytest

import headdb
from headdb.errors import InputError

pytestmark = pytest.mark.slow

ingest_module = importlib.import_module("headdb.ingest")


def _rows(db, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _crash_at_write(monkeypatch, n: int, error: Exception | None = None) -> None:
    """The ``n``th commit raises ``error`` (a RuntimeError by default; each batch commits on its own)."""
    import headdb.store as store

    monkeypatch.setattr(ingest_module, "COMMIT_EDGES", 0)
    real, calls = store.write_batches, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise error if error is not None else RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "write_batches", flaky)


def _spy(monkeypatch, name: str, seen: list, record) -> None:
    """Record ``record(args)`` for each call of AttentionModel.<name>."""
    from headdb.model import AttentionModel

    real = getattr(AttentionModel, name)

    def spy(self, *args, **kwargs):
        seen.append(record(args))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AttentionModel, name, spy)


def test_the_progress_bar_counts_from_what_a_resume_kept_up_to_the_limit(tmp_path, tiny_bert_dir, monkeypatch):
    """The bar's total is the inputs the run will hold (``limit`` of them where it is given), and a
    resumed run's bar starts at the inputs it kept: both bars end full."""
    from rich.progress import Progress

    bars = []
    real_add, real_update = Progress.add_task, Progress.update

    def add_task(self, description, *args, **kwargs):
        bars.append({"total": kwargs["total"], "completed": kwargs["completed"], "advanced": 0})
        return real_add(self, description, *args, **kwargs)

    def update(self, task, *args, advance=None, **kwargs):
        bars[-1]["advanced"] += advance or 0
        return real_update(self, task, *args, advance=advance, **kwargs)

    monkeypatch.setattr(Progress, "add_task", add_task)
    monkeypatch.setattr(Progress, "update", update)
    db = tmp_path / "p.db"
    opts = dict(model=str(tiny_bert_dir), limit=12, batch_size=2, top_k=3, progress=True)
    with monkeypatch.context() as crash:
        _crash_at_write(crash, 3)
        with pytest.raises(RuntimeError, match="simulated crash"):
            headdb.ingest(db, **opts)
    again = headdb.ingest(db, **opts)
    assert again.kept_before == 4 and again.sentences == 8
    assert bars[0]["total"] == bars[1]["total"] == 12  # the bundled sample holds more
    assert bars[0]["completed"] == 0 and bars[1] == {"total": 12, "completed": 4, "advanced": 8}


def test_a_resumed_run_shows_as_running_without_its_old_error(tmp_path, tiny_bert_dir, monkeypatch):
    """`headdb runs` while a failed run resumes showed it running with the error of its failure."""
    db = tmp_path / "e.db"
    opts = dict(model=str(tiny_bert_dir), limit=6, batch_size=2, top_k=3)
    _crash_at_write(monkeypatch, 2)
    with pytest.raises(RuntimeError):
        headdb.ingest(db, **opts)
    monkeypatch.undo()
    assert _rows(db, "SELECT status, error FROM runs") == [("failed", "simulated crash")]
    cons, seen = [], []
    real_connect = ingest_module.connect

    def connect(*args, **kwargs):
        cons.append(real_connect(*args, **kwargs))
        return cons[-1]

    monkeypatch.setattr(ingest_module, "connect", connect)
    _spy(monkeypatch, "forward_edges",
         seen, lambda a: cons[-1].cursor().execute("SELECT status, error FROM runs").fetchall())
    headdb.ingest(db, **opts)
    assert seen and all(s == [("running", None)] for s in seen), seen
    assert _rows(db, "SELECT status, error FROM runs") == [("done", None)]


def test_a_failed_runs_error_is_the_first_line_of_the_failure_and_at_most_500_characters(
        tmp_path, tiny_bert_dir, monkeypatch):
    import headdb.store as store

    for message, stored in (("disk said no\n  at block 7\n", "disk said no"), ("x" * 600, "x" * 500)):
        db = tmp_path / f"{len(message)}.db"

        def fail(*args, message=message, **kwargs):
            raise RuntimeError(message)

        monkeypatch.setattr(store, "write_batches", fail)
        with pytest.raises(RuntimeError):
            headdb.ingest(db, model=str(tiny_bert_dir), limit=2)
        assert _rows(db, "SELECT status, error FROM runs") == [("failed", stored)]


def test_a_finished_run_found_only_after_the_model_loads_is_left_as_it_was(tmp_path, tiny_bert_dir, monkeypatch):
    """Where the finished run cannot be found from the files alone (``model.peek`` cannot tell),
    the ingest finds it once the model is loaded, and returns it untouched: its finish time too."""
    import headdb.model as model

    db = tmp_path / "f.db"
    opts = dict(model=str(tiny_bert_dir), limit=3, top_k=3)
    first = headdb.ingest(db, **opts)
    before = _rows(db, "SELECT * FROM runs")
    monkeypatch.setattr(model, "peek", lambda *a, **k: None)
    ran = []
    _spy(monkeypatch, "encode", ran, lambda a: len(a[0]))
    again = headdb.ingest(db, **opts)
    assert (again.run_id, again.already_done, again.resumed, again.sentences) == (first.run_id, True, False, 0)
    assert ran == [] and _rows(db, "SELECT * FROM runs") == before


@pytest.mark.parametrize("option", ["batch_size", "limit", "top_k", "max_length"])
def test_true_and_false_are_not_whole_numbers(tmp_path, tiny_bert_dir, option):
    """bool is an int to Python: batch_size=True ran batches of one, limit=True one sentence."""
    for value in (True, False):
        with pytest.raises(InputError, match=f"^{option} must be a whole number, not {value}$"):
            headdb.ingest(tmp_path / "b.db", model=str(tiny_bert_dir), **{option: value})
    assert not (tmp_path / "b.db").exists()


def test_a_min_mass_of_one_is_taken(tmp_path, tiny_bert_dir):
    """min_mass lies in (0, 1]: 1 (all of a row's mass, up to top_k keys) is allowed."""
    db = tmp_path / "m.db"
    headdb.ingest(db, model=str(tiny_bert_dir), limit=1, min_mass=1)
    assert _rows(db, "SELECT min_mass, top_k FROM runs") == [(1.0, 8)]


def test_a_run_records_when_it_finished_and_the_versions_it_ran_with(tmp_path, tiny_bert_dir):
    """runs.finished_at is set when the run is done (``headdb runs`` shows it), after its start;
    library_versions names every library that made what the run stores, headdb's own among them."""
    import json

    import tokenizers
    import torch
    import transformers

    db = tmp_path / "t.db"
    headdb.ingest(db, model=str(tiny_bert_dir), limit=1)
    assert _rows(db, "SELECT status, finished_at IS NOT NULL AND finished_at >= started_at FROM runs") == [
        ("done", True)]
    ((version, versions),) = _rows(db, "SELECT headdb_version, library_versions FROM runs")
    assert version == headdb.__version__ and json.loads(versions) == {
        "headdb": headdb.__version__, "duckdb": duckdb.__version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


@pytest.mark.parametrize("kind", ["tsv", "conllu --pairs"])
def test_ctrl_c_in_the_set_up_says_the_inputs_are_pairs(tmp_path, tiny_bert_dir, monkeypatch, kind):
    """Ctrl-C after the run is recorded and before its batches (here while the progress bar is
    made) reports a run of pairs as one, as an interrupt during the batches does."""
    from headdb.errors import IngestInterrupted
    from headdb.resources import sample_corpus

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    corpus = sample_corpus()
    if kind == "tsv":
        corpus = tmp_path / "pairs.tsv"
        corpus.write_text("".join(f"The cat sat {i}.\tA dog barked {i}.\n" for i in range(4)), encoding="utf-8")
    monkeypatch.setattr(ingest_module, "_progress", interrupt)
    with pytest.raises(IngestInterrupted) as caught:
        headdb.ingest(tmp_path / "s.db", corpus, model=str(tiny_bert_dir), pairs=kind != "tsv", limit=4)
    assert (caught.value.run_id, caught.value.kept, caught.value.pairs) == (1, None, True)


def test_words_without_a_piece_are_counted_beside_words_of_several_pieces(tmp_path, tiny_bert_dir):
    """A word's pieces count it once: a word of several pieces beside one without any is one
    pieceless word (counting pieces, it came out below zero)."""
    corpus = tmp_path / "odd.conllu"
    corpus.write_text("1\tUnbelievably\t_\tX\tX\t_\t0\troot\t_\t_\n2\t\ufe0f\t_\tX\tX\t_\t1\tdep\t_\t_\n\n")
    db = tmp_path / "p.db"
    r = headdb.ingest(db, corpus, model=str(tiny_bert_dir))
    pieces = _rows(db, "SELECT word_pos, count(*) FROM tokens WHERE word_pos IS NOT NULL GROUP BY ALL")
    assert len(pieces) == 1 and pieces[0][0] == 0 and pieces[0][1] > 1, pieces
    assert r.pieceless_words == 1


def test_a_corpus_ingested_as_sentences_and_as_pairs_is_two_corpora(tmp_path, tiny_bert_dir):
    """The same file read as sentences and as pairs holds other inputs: each reading is a corpus of
    its own, and the run of pairs stores what it stores in a store of its own."""
    opts = dict(model=str(tiny_bert_dir), limit=4, top_k=3)
    both, alone = tmp_path / "both.db", tmp_path / "alone.db"
    headdb.ingest(both, **opts)
    headdb.ingest(both, pairs=True, **opts)
    headdb.ingest(alone, pairs=True, **opts)
    (sha,) = _rows(alone, "SELECT sha256 FROM corpora")[0]
    assert _rows(both, "SELECT corpus_id, pairs, sha256 FROM corpora ORDER BY corpus_id") == [(1, False, sha),
                                                                                             (2, True, sha)]
    sql = ("SELECT s.* EXCLUDE (corpus_id) FROM sentences s JOIN corpora c USING (corpus_id) WHERE c.pairs "
           "ORDER BY ALL")
    assert _rows(both, sql) == _rows(alone, sql) != []


def test_a_write_error_after_one_committed_sentence_says_it_is_kept(tmp_path, tiny_bert_dir, monkeypatch):
    """The failure's line counts what the run kept, in the singular for one."""
    from headdb.errors import DatabaseError

    _crash_at_write(monkeypatch, 2, duckdb.IOException("could not write: no space left on device"))
    db = tmp_path / "w.db"
    with pytest.raises(DatabaseError, match="; its 1 committed sentence is kept and the run is marked failed: run "
                                            "the same command again to resume it$"):
        headdb.ingest(db, model=str(tiny_bert_dir), limit=3, batch_size=1)
    assert _rows(db, "SELECT count(*) FROM run_sentences") == [(1,)]


def test_a_taken_run_name_says_why_that_run_is_not_resumed(tmp_path, tiny_bert_dir):
    """A name taken by a run of other settings says that run is not resumed; with new_run the
    clash needs no reason."""
    db = tmp_path / "n.db"
    opts = dict(model=str(tiny_bert_dir), limit=1, run_name="A")
    headdb.ingest(db, **opts)
    with pytest.raises(InputError, match=r"^run name 'A' is taken by run 1; choose another \(that run has other "
                                         r"settings, so it is not resumed\)$"):
        headdb.ingest(db, top_k=4, **opts)
    with pytest.raises(InputError, match="^run name 'A' is taken by run 1; choose another$"):
        headdb.ingest(db, new_run=True, **opts)
    assert _rows(db, "SELECT run_id, run_name FROM runs") == [(1, "A")]


def test_a_finished_run_on_another_device_is_not_this_ingests_run(tmp_path, tiny_bert_dir, monkeypatch):
    """A run is found on its own device: a CUDA ingest of the settings of a finished CPU run (its
    windows made the same size here) loads the model for a run of its own instead of returning
    the CPU run as complete."""
    import headdb.model as model

    db = tmp_path / "d.db"
    opts = dict(model=str(tiny_bert_dir), limit=1, top_k=3)
    monkeypatch.setattr(ingest_module, "GPU_WINDOW_BATCHES", None)  # the CPU's windows, so the settings match
    headdb.ingest(db, **opts)
    assert headdb.ingest(db, **opts).already_done  # on the CPU: that run

    class Loading(Exception):
        pass

    def load(*args, **kwargs):
        raise Loading(kwargs.get("device"))

    monkeypatch.setattr(model, "AttentionModel", load)
    with pytest.raises(Loading, match="^cuda:0$"):
        headdb.ingest(db, device="cuda:0", **opts)
    assert _rows(db, "SELECT run_id, device FROM runs") == [(1, "cpu")]
