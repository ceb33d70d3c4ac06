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


def _save(folder, *, without=(), infix=None, blank=None):
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
