"""`--parser` with pipelines other than the default: pipeline folders (a run is told apart by
the folder's files, so that two folders of one name and version, or a folder edited since, are
not one run sharing one set of words), and pipelines without a dependency parse (refused before
any write). spaCy pipelines are saved to tmp_path; the ingests load the bundled model (`slow`)."""

from __future__ import annotations

import importlib

import pytest

from tests.cli_helpers import run_cli

parse = importlib.import_module("headdb.parse")
ingest_module = importlib.import_module("headdb.ingest")

TEXTS = ["The cat sat on the mat .", "Nobody knows how long the window stayed open .",
         "She gave him a book about old boats ."]


def _save(folder, *, without=(), infix=None, blank=None, renamed=None):
    import spacy

    if blank:
        nlp = spacy.blank(blank)
        nlp.add_pipe("sentencizer")
    else:
        nlp = spacy.load(parse.DEFAULT_PIPELINE)
        for pipe in without:
            nlp.remove_pipe(pipe)
        if infix:  # a tokenizer that splits words the default one keeps whole
            from spacy.util import compile_infix_regex

            nlp.tokenizer.infix_finditer = compile_infix_regex(list(nlp.Defaults.infixes) + [infix]).finditer
    if renamed:  # a pipeline of its own (meta.json's name), not a copy of an installed one
        nlp.meta["name"] = renamed
    nlp.to_disk(folder)
    return folder


def _spacy_words(folder, texts):
    """Each text's (form, head, deprel) as spaCy itself parses it."""
    import spacy

    nlp = spacy.load(folder, disable=["ner"])
    out = []
    for doc in nlp.pipe(texts):
        tokens = [t for t in doc if not t.is_space]
        index = {t.i: k for k, t in enumerate(tokens)}
        out.append([(t.text, None if t.dep_ == "ROOT" else index[t.head.i], "root" if t.dep_ == "ROOT" else t.dep_)
                    for t in tokens])
    return out


@pytest.mark.parametrize("kind", ["blank", "blank_de", "tagger_only"])
def test_a_pipeline_without_a_dependency_parser_is_refused_before_any_write(tmp_path, monkeypatch, capsys, kind):
    folder = {"blank": lambda f: _save(f, blank="en"), "blank_de": lambda f: _save(f, blank="de"),
              "tagger_only": lambda f: _save(f, without=("parser",))}[kind](tmp_path / kind)
    text = tmp_path / "t.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    # it was accepted: every word stored without a head, and every syntactic role "(no samples)"
    code, _, err = run_cli(["ingest", tmp_path / "s.db", text, "--parser", folder], monkeypatch, capsys)
    assert code == 1
    assert f"error: spaCy pipeline '{folder}' has no dependency parser (its components: " in err
    assert "the syntactic roles no samples; pass --parser with a pipeline that parses" in err
    assert not (tmp_path / "s.db").exists()


def test_a_pipeline_folders_description_holds_its_files(tmp_path):
    a = _save(tmp_path / "a")
    b = tmp_path / "b"
    import shutil

    shutil.copytree(a, b)
    with parse.SpacyParser(str(a), processes=1) as pa, parse.SpacyParser(str(b), processes=1) as pb:
        assert pa.description == pb.description  # the same files: the same pipeline wherever it lies
        assert pa.description == parse.peek_description(str(a))
    _save(b, infix=r"(?<=[a-z])o(?=[a-z])")  # the same meta.json name and version, another tokenizer
    with parse.SpacyParser(str(b), processes=1) as pb:
        changed = pb.description
    assert changed != pa.description and changed == parse.peek_description(str(b))
    # earlier versions described a folder by its meta.json alone, as an installed pipeline still is:
    # a folder saved from the installed pipeline had its description, so its earlier runs are not looked for
    assert parse.legacy_description(str(b), changed) is None
    assert parse.legacy_description(str(a), pa.description) is None
    own = _save(tmp_path / "own", renamed="own_parser")
    with parse.SpacyParser(str(own), processes=1) as po:
        legacy = parse.legacy_description(str(own), po.description)
    assert legacy == po.description.split(" folder sha256:")[0] and "en_own_parser" in legacy
    assert parse.legacy_description(parse.DEFAULT_PIPELINE, parse.peek_description(parse.DEFAULT_PIPELINE)) is None


@pytest.mark.slow
def test_a_folder_saved_from_the_installed_pipeline_is_not_that_pipelines_run(tmp_path):
    # its description without the files' hash is the installed pipeline's: the run of the default
    # parser was found "already complete" for a folder with another tokenizer, holding other words
    folder = _save(tmp_path / "p", infix=r"(?<=[a-z])o(?=[a-z])")
    text = tmp_path / "t.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    db = tmp_path / "s.db"
    default = ingest_module.ingest(db, text)
    custom = ingest_module.ingest(db, text, parser=str(folder))
    assert not custom.already_done and custom.run_id != default.run_id
    assert ingest_module.ingest(db, text, parser=str(folder)).run_id == custom.run_id


@pytest.mark.slow
def test_two_pipeline_folders_of_one_name_are_two_runs_with_their_own_words(tmp_path):
    import duckdb

    a = _save(tmp_path / "a")
    b = _save(tmp_path / "b", infix=r"(?<=[a-z])o(?=[a-z])")
    text = tmp_path / "t.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    db = tmp_path / "s.db"
    first = ingest_module.ingest(db, text, parser=str(a))
    # folder b was found "already complete" as run 1; with --new-run its edges, aligned to its
    # own words, were stored against run 1's corpus and its words
    second = ingest_module.ingest(db, text, parser=str(b))
    assert not second.already_done and second.run_id != first.run_id
    again = ingest_module.ingest(db, text, parser=str(b))
    assert again.already_done and again.run_id == second.run_id
    con = duckdb.connect(str(db), read_only=True)
    try:
        for run, folder in ((first, a), (second, b)):
            rows = con.execute("SELECT w.sentence_id, w.form, w.head_word_pos, w.deprel FROM words w JOIN runs r "
                               "USING (corpus_id) WHERE r.run_id = ? ORDER BY w.sentence_id, w.word_pos",
                               [run.run_id]).fetchall()
            expected = _spacy_words(str(folder), TEXTS)
            got = [[(form, head, deprel) for s, form, head, deprel in rows if s == k] for k in range(len(TEXTS))]
            assert got == expected
        assert _spacy_words(str(a), TEXTS) != _spacy_words(str(b), TEXTS)
    finally:
        con.close()


@pytest.mark.slow
def test_a_run_of_a_pipeline_folder_stored_by_an_earlier_version_is_still_found(tmp_path, monkeypatch):
    folder = _save(tmp_path / "p", renamed="own_parser")
    text = tmp_path / "t.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    db = tmp_path / "s.db"
    real = parse._describe
    with monkeypatch.context() as m:  # as earlier versions described a folder: its meta.json alone
        m.setattr(parse, "_describe", lambda version, meta, name, content=True: real(version, meta, name, False))
        old = ingest_module.ingest(db, text, parser=str(folder))
    assert ingest_module.ingest(db, text, parser=str(folder)).already_done  # found before loading
    monkeypatch.setattr(ingest_module, "_finished_run", lambda *a, **k: None)
    again = ingest_module.ingest(db, text, parser=str(folder))  # and after loading
    assert again.already_done and again.run_id == old.run_id
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM corpora").fetchone()[0] == 1  # no corpus without a run
    finally:
        con.close()


def test_the_api_takes_a_pipeline_folder_as_a_path_and_names_it_as_written(tmp_path):
    folder = _save(tmp_path / "blank", blank="en")
    text = tmp_path / "t.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    # the message said PosixPath('...'), and parser=5 raised TypeError from deep inside
    with pytest.raises(parse.InputError, match=rf"^spaCy pipeline '{folder}' has no dependency parser"):
        ingest_module.ingest(tmp_path / "s.db", text, parser=folder)
    with pytest.raises(parse.InputError, match=r"^parser must be a spaCy pipeline's name or folder, not 5$"):
        ingest_module.ingest(tmp_path / "s.db", text, parser=5)
    assert not (tmp_path / "s.db").exists()
