"""Corpus readers against golden files: CoNLL-U, text and TSV (fake parser), format inference."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from headdb.corpus import (ReadStats, Sentence, Word, infer_format, read_conllu, read_corpus, read_raw,
                           validate)
from headdb.errors import CorpusError, InputError

DATA = Path(__file__).parent / "data"


def fake_parser(texts: list[str]) -> list[tuple[Word, ...]]:
    """Deterministic stand-in for spaCy: whitespace words, each headed by the next, the last the root."""
    out = []
    for text in texts:
        forms = text.split()
        out.append(tuple(
            Word(f, f.lower(), "X", "XX", None if i == len(forms) - 1 else i + 1,
                 "root" if i == len(forms) - 1 else "dep")
            for i, f in enumerate(forms)
        ))
    return out


def as_json(sentences: list[Sentence]) -> list[dict]:
    return [dataclasses.asdict(s) for s in sentences]


def check_golden(name: str, sentences: list[Sentence], update: bool) -> None:
    path = DATA / f"{name}.expected.json"
    got = json.loads(json.dumps(as_json(sentences)))  # tuples -> lists, as stored
    if update:
        path.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
    assert got == json.loads(path.read_text()), f"{path} differs (regenerate with --update-golden and review)"


# --- CoNLL-U --------------------------------------------------------------------------------


def test_conllu_golden(update_golden):
    check_golden("sample.conllu", list(read_conllu(DATA / "sample.conllu")), update_golden)


def test_conllu_words_heads_and_fallbacks():
    s = list(read_conllu(DATA / "sample.conllu"))
    assert [x.sentence_id for x in s] == [0, 1, 2]
    a = s[0].segments[0]
    # the multiword token "don't" (2-3) is not a word; its parts are
    assert [w.form for w in a.words] == ["I", "do", "n't", "know", "."]
    assert [w.head for w in a.words] == [3, 3, 3, None, 3]  # 0-based, root None
    assert a.words[3].deprel == "root"
    assert (a.text, a.sent_key, a.doc_id, a.line) == ("I don't know.", "a-1", "doc-a", 1)
    b = s[1].segments[0]
    # the empty node 3.1 is not a word
    assert [w.form for w in b.words] == ["Sue", "likes", "coffee", "and", "Bill", "tea"]
    assert [w.head for w in b.words] == [1, None, 1, 4, 1, 4]
    assert b.words[5].deprel == "obl:tmod"
    # no `# text`: the tokens, with no space after "Bill" (SpaceAfter=No); the document id carries over
    assert b.text == "Sue likes coffee and Billtea"
    assert (b.sent_key, b.doc_id, b.line) == ("a-2", "doc-a", 11)
    c = s[2].segments[0]
    assert (c.doc_id, c.sent_key, c.line) == ("doc-b", "b-1", 20)
    assert c.words[0] == Word("Unbelievably", "unbelievably", "ADV", "RB", 1, "advmod")
    assert not any(x.is_pair for x in s)


def test_conllu_pairs_odd_last_dropped_and_reported(update_golden):
    stats = ReadStats()
    s = list(read_conllu(DATA / "sample.conllu", pairs=True, stats=stats))
    check_golden("sample.conllu.pairs", s, update_golden)
    assert len(s) == 1 and s[0].is_pair and s[0].sentence_id == 0
    assert [seg.sent_key for seg in s[0].segments] == ["a-1", "a-2"]
    assert stats.odd_sentence_dropped
    n, vstats = validate(DATA / "sample.conllu", "conllu", pairs=True)
    assert n == 1 and vstats.odd_sentence_dropped
    stats = ReadStats()
    assert len(list(read_conllu(DATA / "sample.conllu", stats=stats))) == 3
    assert not stats.odd_sentence_dropped


def test_conllu_even_pairs_drop_nothing(tmp_path):
    text = (DATA / "sample.conllu").read_text()
    blocks = text.strip("\n").split("\n\n")
    p = tmp_path / "four.conllu"
    p.write_text("\n\n".join(blocks + [blocks[2].replace("b-1", "b-2")]) + "\n\n")
    stats = ReadStats()
    s = list(read_conllu(p, pairs=True, stats=stats))
    assert [[seg.sent_key for seg in x.segments] for x in s] == [["a-1", "a-2"], ["b-1", "b-2"]]
    assert [x.sentence_id for x in s] == [0, 1]
    assert not stats.odd_sentence_dropped


@pytest.mark.parametrize("body, message, line", [
    ("1\tA\t_\t_\t_\t_\t0\troot\t_\n", "10 tab-separated columns", 1),
    ("1\tA\ta\tX\tX\t_\t0\troot\t_\t_\n3\tB\tb\tX\tX\t_\t1\tdep\t_\t_\n", "out of order", 2),
    ("1\tA\ta\tX\tX\t_\t2\tdep\t_\t_\n2\tB\tb\tX\tX\t_\t1\tdep\t_\t_\n", "cycle", None),
    ("1\tA\ta\tX\tX\t_\t5\troot\t_\t_\n", "outside the sentence", 1),
    ("# text = x\n\n", "comments but no word lines", 1),
])
def test_conllu_errors_name_path_and_line(tmp_path, body, message, line):
    p = tmp_path / "bad.conllu"
    p.write_text(body)
    with pytest.raises(CorpusError, match=message) as info:
        list(read_conllu(p))
    assert info.value.path == str(p)
    if line is not None:
        assert info.value.line == line
        assert str(info.value).startswith(f"{p}:{line}: ")


def test_conllu_unknown_heads_are_none(tmp_path):
    p = tmp_path / "nohead.conllu"
    p.write_text("1\tA\t_\t_\t_\t_\t_\t_\t_\t_\n2\tB\t_\t_\t_\t_\t_\t_\t_\t_\n\n")
    (s,) = list(read_conllu(p))
    assert [w.head for w in s.segments[0].words] == [None, None]
    assert s.segments[0].words[0] == Word("A")


# --- text and TSV -------------------------------------------------------------------------


def test_text_golden_with_fake_parser(update_golden):
    stats = ReadStats()
    s = list(read_raw(DATA / "sample.txt", fake_parser, 1, stats))
    check_golden("sample.txt", s, update_golden)
    assert [x.segments[0].text for x in s] == ["The cat sat on the mat.", "Dogs bark loudly.", "A third line"]
    assert [x.line for x in s] == [1, 4, 5]
    assert [x.sentence_id for x in s] == [0, 1, 2]
    assert stats.blank_lines == 2
    assert s[1].segments[0].words[-1] == Word("loudly.", "loudly.", "X", "XX", None, "root")


def test_tsv_golden_with_fake_parser(update_golden):
    stats = ReadStats()
    s = list(read_corpus(DATA / "sample.tsv", "tsv", parser=fake_parser, stats=stats))
    check_golden("sample.tsv", s, update_golden)
    assert all(x.is_pair for x in s)
    assert [(x.segments[0].text, x.segments[1].text) for x in s] == [
        ("The cat sat.", "A dog ran."), ("Birds fly high.", "Fish swim.")]
    # each segment has its own words and tree (heads index within the segment)
    assert [w.head for w in s[0].segments[1].words] == [1, 2, None]
    assert stats.blank_lines == 1


def test_text_batches_keep_order(tmp_path):
    p = tmp_path / "many.txt"
    p.write_text("".join(f"sentence number {i}\n" for i in range(10)))
    calls = []

    def parser(texts):
        calls.append(len(texts))
        return fake_parser(texts)

    s = list(read_raw(p, parser, 1, batch_size=4))
    assert calls == [4, 4, 2]
    assert [x.segments[0].words[-1].form for x in s] == [str(i) for i in range(10)]
    assert [x.sentence_id for x in s] == list(range(10))


@pytest.mark.parametrize("line, message", [
    ("only one column\n", "found one"),
    ("a\tb\tc\n", "found 3"),
    ("a\t  \n", "empty text column"),
])
def test_tsv_errors(tmp_path, line, message):
    p = tmp_path / "bad.tsv"
    p.write_text("fine\tpair\n" + line)
    with pytest.raises(CorpusError, match=message) as info:
        list(read_corpus(p, "tsv", parser=fake_parser))
    assert info.value.line == 2


def test_pairs_flag_rejected_for_raw_formats():
    with pytest.raises(InputError, match="pairs=True applies to CoNLL-U; a TSV file already holds pairs"):
        read_corpus(DATA / "sample.tsv", "tsv", pairs=True)
    # a text file holds no pairs: the error said that a TSV file already does
    with pytest.raises(InputError) as caught:
        read_corpus(DATA / "sample.txt", "text", pairs=True)
    assert str(caught.value) == (f"{DATA / 'sample.txt'}: pairs=True applies to CoNLL-U; pairs of raw text are a TSV "
                                 "file (.tsv or format='tsv'), two tab-separated texts a line")


def test_validate_counts_without_parsing():
    assert validate(DATA / "sample.txt", "text")[0] == 3
    assert validate(DATA / "sample.tsv", "tsv")[0] == 2
    assert validate(DATA / "sample.conllu", "conllu")[0] == 3


def test_empty_corpus_is_an_error(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("\n\n")
    with pytest.raises(CorpusError, match="no sentences"):
        validate(p, "text")


# --- format inference -----------------------------------------------------------------------


@pytest.mark.parametrize("name, fmt", [
    ("a.conllu", "conllu"), ("a.CONLLU", "conllu"), ("a.conll", "conllu"), ("a.txt", "text"),
    ("a.text", "text"), ("a.tsv", "tsv"), ("dir.v2/a.tsv", "tsv"),
])
def test_infer_format_from_extension(name, fmt):
    assert infer_format(name) == fmt


def test_infer_format_explicit_and_errors():
    assert infer_format("a.txt", "conllu") == "conllu"
    with pytest.raises(InputError, match="cannot infer"):
        infer_format("corpus.csv")
    with pytest.raises(InputError, match="cannot infer"):
        infer_format("corpus")
    with pytest.raises(InputError, match="unknown format"):
        infer_format("a.txt", "xml")


# --- the real spaCy pipeline (loads in about 2 s; no transformer weights) -------------------


def test_spacy_parser_on_text_and_tsv():
    from headdb.parse import SpacyParser

    parser = SpacyParser()
    assert "spacy" in parser.description
    s = list(read_corpus(DATA / "sample.txt", "text", parser=parser))
    words = s[0].segments[0].words
    assert [w.form for w in words] == ["The", "cat", "sat", "on", "the", "mat", "."]
    roots = [i for i, w in enumerate(words) if w.head is None]
    assert roots == [2] and words[2].deprel == "root"
    assert words[1].deprel == "nsubj" and words[1].head == 2
    assert all(w.head is None or 0 <= w.head < len(words) for w in words)
    assert all(w.lemma and w.upos and w.xpos for w in words)
    t = list(read_corpus(DATA / "sample.tsv", "tsv", parser=parser))
    for x in t:
        for seg in x.segments:
            assert sum(w.head is None for w in seg.words) == 1
            assert all(w.head is None or 0 <= w.head < len(seg.words) for w in seg.words)
    # whitespace tokens are not words
    (only,) = parser(["two  spaces\tand a tab"])
    assert [w.form for w in only] == ["two", "spaces", "and", "a", "tab"]
