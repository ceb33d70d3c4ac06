"""Reliability (#6): hostile corpus input.

Every bad file gives one clear line naming ``path:line`` (or a documented skip counted in the
run summary), and an ingest that fails on its input leaves the database without a new run.
Reader-level cases are fast; the few that need the model to see a token count are `slow`.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from headdb.corpus import MAX_LINE_BYTES, MAX_WORDS, Word, read_corpus, validate
from headdb.errors import CorpusError, InputError
from headdb.ingest import ingest
from cli_helpers import run_cli

HEADDB = str(Path(sys.executable).with_name("headdb"))


def conllu_row(i: int, form: str, head: str | int, *, cols: int = 10) -> str:
    row = [str(i), form, form.lower(), "X", "X", "_", str(head), "dep" if head else "root", "_", "_"]
    return "\t".join(row[:cols] + ["_"] * max(0, cols - 10))


def conllu_sentence(forms: list[str], text: bool = True) -> str:
    lines = [f"# text = {' '.join(forms)}"] if text else []
    lines += [conllu_row(i, f, 0 if i == 1 else 1) for i, f in enumerate(forms, start=1)]
    return "\n".join(lines) + "\n\n"


GOOD = conllu_sentence(["Hello", "world"])


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def fmt_of(path: Path) -> str:
    return {".conllu": "conllu", ".txt": "text", ".tsv": "tsv"}[path.suffix]


# --- refused with path:line ------------------------------------------------------------------

REFUSED = {
    # name: (file name, bytes, expected line or None for the whole file, words in the message)
    "empty file": ("empty.conllu", b"", None, "no sentences"),
    "empty text file": ("empty.txt", b"", None, "no sentences"),
    "only blank lines": ("blank.txt", b"\n  \n\t\n\r\n", None, "no sentences"),
    "only invisible characters": ("zw.txt", "\u200b\n\ufeff \u2060\n".encode(), None, "no sentences"),
    "invalid UTF-8": ("bad.txt", b"fine line\nbad \xff\xfe line\n", 2, "invalid UTF-8"),
    "invalid UTF-8 in CoNLL-U": ("bad.conllu", GOOD.encode() + b"1\tw\xe9\tw\tX\tX\t_\t0\troot\t_\t_\n", 5,
                                 "invalid UTF-8"),
    "Latin-1": ("latin1.conllu", GOOD.replace("world", "w\u00f6rld").encode("latin-1"), 1,
                "invalid UTF-8 at byte 16 of the line; save the file as UTF-8"),
    # a stray Latin-1 byte in a UTF-8 file: converting the whole file from cp1252 would garble line 1's é
    "a stray byte in UTF-8 text": ("stray.txt", "Caf\u00e9 au lait.\n".encode() + b"Na\xefve text.\n", 2,
                                   "invalid UTF-8 at byte 2 of the line; the file is UTF-8 before it (line 1 holds "
                                   "UTF-8 beyond ASCII), which converting the whole file from Latin-1 would garble: "
                                   "fix this line"),
    "UTF-16 with a byte-order mark": ("u16.conllu", GOOD.encode("utf-16"), 1, "the file is UTF-16 text"),
    "UTF-16 big-endian, no mark": ("u16be.txt", "Hello world.\n".encode("utf-16-be"), 1,
                                   "is it UTF-16 text without a byte-order mark? headdb reads UTF-8: "
                                   "convert it first (iconv -f UTF-16BE"),
    "UTF-16 little-endian, no mark": ("u16le.tsv", "a b\tc d\n".encode("utf-16-le"), 1, "(iconv -f UTF-16LE"),
    "UTF-16, no mark, a first line of one character": ("u16short.txt", "a\nThe cat sat.\n".encode("utf-16-le"), 1,
                                                       "(iconv -f UTF-16LE"),
    "UTF-32": ("u32.txt", "Hello world.\n".encode("utf-32"), 1, "the file is UTF-32 text"),
    "gzip-compressed": ("gz.conllu", gzip.compress(GOOD.encode()), None,
                        "is a gzip-compressed file; headdb reads plain UTF-8 text: decompress it first (gunzip -k"),
    "bzip2-compressed": ("bz.txt", bz2.compress(b"Hello world.\n"), None, "is a bzip2-compressed file"),
    "xz-compressed": ("xz.tsv", lzma.compress(b"a\tb\n"), None, "is an xz-compressed file"),
    "NUL byte": ("nul.txt", b"one\ntw\x00o\n", 2, "NUL byte"),
    "NUL bytes only": ("zeros.txt", b"\x00" * 4096, 1, "NUL byte"),
    "conllu 9 columns": ("c9.conllu", GOOD + conllu_row(1, "A", 0, cols=9) + "\n", 5, "10 tab-separated columns"),
    "conllu 11 columns": ("c11.conllu", conllu_row(1, "A", 0, cols=11) + "\n", 1, "found 11"),
    "conllu spaces not tabs": ("sp.conllu", "1 A a X X _ 0 root _ _\n", 1,
                               "10 tab-separated columns, found 1 (the columns are separated by spaces, not tabs)"),
    "text read as CoNLL-U": ("text.conllu", "The quick brown fox jumps over the lazy dog once more.\n", 1,
                             "expected 10 tab-separated columns, found 1"),
    "non-integer head": ("h.conllu", conllu_row(1, "A", "x") + "\n", 1, "head 'x'"),
    "negative head": ("hn.conllu", conllu_row(1, "A", 0) + "\n" + conllu_row(2, "B", -1) + "\n", 2, "head '-1'"),
    "signed head": ("hp.conllu", conllu_row(1, "A", "+0") + "\n", 1, "head '+0'"),
    "non-ASCII digit head": ("hu.conllu", conllu_row(1, "A", "\u0660") + "\n", 1, "is not a word number"),
    "head outside the sentence": ("ho.conllu", conllu_row(1, "A", 0) + "\n" + conllu_row(2, "B", 3) + "\n", 2,
                                  "outside the sentence"),
    "self loop": ("self.conllu", conllu_row(1, "A", 1) + "\n", 1, "cycle"),
    "cycle": ("cyc.conllu", "\n".join([conllu_row(1, "A", 0), conllu_row(2, "B", 3), conllu_row(3, "C", 4),
                                       conllu_row(4, "D", 2)]) + "\n", 2, "cycle"),
    "non-integer word id": ("id.conllu", "x\tA\ta\tX\tX\t_\t0\troot\t_\t_\n", 1, "word id 'x'"),
    "word id with spaces": ("ids.conllu", " 1\tA\ta\tX\tX\t_\t0\troot\t_\t_\n", 1, "word id ' 1'"),
    "word id out of order": ("ido.conllu", conllu_row(2, "A", 0) + "\n", 1, "out of order"),
    "malformed range": ("rg.conllu", "1-x\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n" + conllu_row(1, "do", 0) + "\n", 1,
                        "multiword range"),
    "backwards range": ("rb.conllu", "2-1\tab\t_\t_\t_\t_\t_\t_\t_\t_\n" + conllu_row(1, "a", 0) + "\n", 1,
                        "multiword range"),
    # N-M with N < M: "1-1" is no multiword token (a token of one word is the word itself)
    "one-word range": ("r11.conllu", "1-1\ta\t_\t_\t_\t_\t_\t_\t_\t_\n" + conllu_row(1, "a", 0) + "\n", 1,
                       "multiword range"),
    "range beyond the sentence": ("rbey.conllu", "1-9\tab\t_\t_\t_\t_\t_\t_\t_\t_\n" + conllu_row(1, "a", 0) + "\n"
                                  + conllu_row(2, "b", 1) + "\n", 1, "beyond the sentence's 2 words"),
    "overlapping ranges": ("rov.conllu", "1-3\tabc\t_\t_\t_\t_\t_\t_\t_\t_\n2-3\tbc\t_\t_\t_\t_\t_\t_\t_\t_\n"
                           + "\n".join(conllu_row(i, f, 0 if i == 1 else 1) for i, f in enumerate("abc", 1)) + "\n",
                           2, "multiword range 2-3 out of place"),
    "ranges sharing a word": ("rsh.conllu", "1-2\tab\t_\t_\t_\t_\t_\t_\t_\t_\n" + conllu_row(1, "a", 0) + "\n"
                              + "2-3\tbc\t_\t_\t_\t_\t_\t_\t_\t_\n" + conllu_row(2, "b", 1) + "\n"
                              + conllu_row(3, "c", 1) + "\n", 3, "multiword range 2-3 out of place"),
    "range after its words": ("raft.conllu", conllu_row(1, "a", 0) + "\n" + conllu_row(2, "b", 1)
                              + "\n1-2\tab\t_\t_\t_\t_\t_\t_\t_\t_\n", 3, "multiword range 1-2 out of place"),
    "carriage returns as line ends (old Mac)": ("cr.txt", b"Hello world.\rSecond line.\rThird.\r", 1,
                                                "carriage return (CR) inside the line"),
    "a carriage return inside a CoNLL-U line": ("cr.conllu", GOOD + conllu_row(1, "A", 0) + "\rx\n", 5,
                                                "carriage return"),
    "only ranges and empty nodes": ("re.conllu", "1-2\tab\t_\t_\t_\t_\t_\t_\t_\t_\n0.1\tx\t_\t_\t_\t_\t_\t_\t_\t_\n",
                                    1, "no words"),
    "empty word form": ("ef.conllu", conllu_row(1, " ", 0) + "\n", 1, "empty word form"),
    "invisible word form": ("zf.conllu", conllu_row(1, "\u200b", 0) + "\n", 1, "empty word form"),
    "no-break spaces and a format character": ("nb.conllu", conllu_row(1, "\u00a0\u2060\u3000", 0) + "\n", 1,
                                               "empty word form"),
    "comments but no words": ("cm.conllu", GOOD + "# sent_id = x\n# text = nothing\n\n", 5, "no word lines"),
    "comment inside words": ("ci.conllu", conllu_row(1, "A", 0) + "\n# late\n", 2, "comment line inside"),
    "too many words for SMALLINT": ("huge.conllu", conllu_sentence(["w"] * (MAX_WORDS + 1)), 1,
                                    f"at most {MAX_WORDS}"),
    "tsv one column": ("one.tsv", "first\tsecond\nonly one column\n", 2, "found one"),
    # a CoNLL-U file named or read as raw text: each word line would have become a sentence
    "CoNLL-U read as text": ("gold.txt", "A first line of text.\n" + GOOD, 3,
                             "this line is a CoNLL-U word line (ten tab-separated columns), and the file is read as "
                             "text: pass format='conllu'"),
    "CoNLL-U multiword range read as text": ("range.txt", "1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n", 1,
                                             "CoNLL-U word line"),
    "CoNLL-U read as TSV": ("gold.tsv", conllu_row(1, "A", 0) + "\n", 1,
                            "is a CoNLL-U word line (ten tab-separated columns), and the file is read as tsv"),
    "a CoNLL-U comment read as TSV": ("comment.tsv", "a b\tc d\n" + GOOD, 2,
                                      "expected two tab-separated text columns, found one (a CoNLL-U comment: "
                                      "pass format='conllu')"),
    "tsv three columns": ("three.tsv", "a\tb\tc\n", 1, "found 3"),
    "tsv trailing tab": ("trail.tsv", "a b\tc d\n" * 2 + "a b\tc d\t\r\n", 3,
                         "found 3 (one of them empty: a tab at the end of the line, or two tabs in a row?)"),
    "tsv two tabs in a row": ("twotabs.tsv", "a b\t\tc d\t \n", 1, "found 4 (2 of them empty"),
    "tsv blank column": ("blankcol.tsv", "a b\t  \n", 1, "empty text column"),
    "only over-long lines": ("long.txt", ("w " * (MAX_WORDS // 2 + 1) + "\n\n") * 2, None,
                             "no sentences: all 2 text lines are longer than 32,000 characters"),
    "one over-long TSV line": ("long.tsv", "w " * (MAX_WORDS // 2) + "\tw w\n", None,
                               "no sentences: its one text line is longer than 32,000 characters"),
    "a line with no line end past the byte cap": ("nolf.txt", b"a" * (MAX_LINE_BYTES + 10), 1,
                                                  "is it a binary file"),
}


def test_the_word_form_fast_path_never_passes_a_blank_form():
    """CoNLL-U reading skips is_blank for a form that is printable and not all spaces; over every
    code point, such a character is never one that is_blank calls blank (so neither is a form
    holding one), and every blank character fails the fast path."""
    import sys

    from headdb.corpus import is_blank

    for c in map(chr, range(sys.maxunicode + 1)):
        if 0xD800 <= ord(c) <= 0xDFFF:
            continue  # surrogates: no UTF-8 text holds them
        fast = c.isprintable() and bool(c.strip())
        assert not (fast and is_blank(c)), hex(ord(c))
        if is_blank(c):
            assert not fast


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_hostile_corpus_is_refused_with_path_and_line(tmp_path, case):
    name, data, line, words = REFUSED[case]
    path = write(tmp_path, name, data)
    with pytest.raises(CorpusError) as info:
        validate(path, fmt_of(path))
    err = info.value
    if case == "text read as CoNLL-U":  # ten words of text are not ten columns with spaces for tabs
        assert "spaces" not in str(err)
    assert err.path == str(path)
    assert err.line == line
    assert words in str(err)
    assert str(err).startswith(f"{path}:{line}: " if line else f"{path}: ")
    assert "\n" not in str(err)


def test_only_a_conllu_word_line_is_taken_for_conllu_in_raw_text(tmp_path):
    """Ten tab-separated columns whose first is not a word id, nine columns after a word id, and
    a '# text' line in a text file are text; a one-column TSV line says nothing of CoNLL-U
    unless it is a CoNLL-U comment."""
    lines = ["Note\t" + "\t".join("abcdefghi"), "\t".join(["1"] + list("abcdefgh")), "# text = a line like a comment"]
    path = write(tmp_path, "tabs.txt", "\n".join(lines) + "\n")
    assert [s.segments[0].text for s in read_corpus(path, "text")] == [line.strip() for line in lines]
    with pytest.raises(CorpusError) as info:
        validate(write(tmp_path, "plain.tsv", "a b\tc d\nonly one column\n"), "tsv")
    assert str(info.value).endswith("expected two tab-separated text columns, found one")


def test_cli_names_the_flag_for_conllu_read_as_text(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, "gold.txt", GOOD)
    code, out, err = run_cli(["ingest", tmp_path / "x.db", path, "-q"], monkeypatch, capsys)
    assert (code, out) == (1, "")
    assert err == (f"error: {path}:2: this line is a CoNLL-U word line (ten tab-separated columns), and the file is "
                   "read as text: pass --format conllu\n")
    assert run_cli(["ingest", tmp_path / "x.db", path, "--format", "conllu", "-q"], monkeypatch, capsys)[0] == 0


def test_pairs_over_the_word_cap_are_refused(tmp_path):
    half = MAX_WORDS // 2 + 1
    path = write(tmp_path, "pairs.conllu", conllu_sentence(["a"] * half) + conllu_sentence(["b"] * half))
    with pytest.raises(CorpusError, match=r"pairs\.conllu:1: the pair starting here"):
        validate(path, "conllu", pairs=True)
    validate(path, "conllu", pairs=False)  # each alone fits


def test_unknown_format_and_extension(tmp_path):
    path = write(tmp_path, "corpus.xml", GOOD)
    with pytest.raises(InputError, match=r"unknown format 'xml'; expected one of: conllu, text, tsv"):
        list(read_corpus(path, "xml"))
    from headdb.corpus import infer_format

    with pytest.raises(InputError, match=r"corpus\.xml: cannot infer the format.*pass format \(one of conllu, text, tsv\)"):
        infer_format(path)
    assert infer_format(path, "CONLLU") == "conllu"  # format names in any case


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"nope\.conllu: no such file"):
        validate(tmp_path / "nope.conllu", "conllu")
    d = tmp_path / "dir.conllu"
    d.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        validate(d, "conllu")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, "locked.conllu", GOOD)
    path.chmod(0)
    with pytest.raises(InputError, match="cannot read the file: Permission denied"):
        validate(path, "conllu")


# --- accepted, with a documented reading ----------------------------------------------------


def forms(path: Path, fmt: str, pairs: bool = False) -> list[list[str]]:
    return [[w.form for seg in s.segments for w in seg.words] for s in read_corpus(path, fmt, pairs, None)]


@pytest.mark.parametrize("first", ["BZh is how the line starts\n", "PK\x03\x04 and the rest\n"])
def test_a_text_that_starts_like_a_compressed_files_magic_is_text(tmp_path, first):
    """Only bytes that are no UTF-8 text are taken for a compressed file: a line that starts with
    "BZh" (bzip2's mark) or "PK" (zip's) is read."""
    path = write(tmp_path, "t.txt", first + "Second line.\n")
    assert validate(path, "text")[0] == 2


def test_bom_is_dropped(tmp_path):
    for name, data in (("bom.txt", "\ufeffHello there\n"), ("bom.conllu", "\ufeff" + GOOD),
                       ("bom.tsv", "\ufeffa b\tc d\n")):
        path = write(tmp_path, name, data)
        got = forms(path, fmt_of(path))
        assert got[0][0] in ("Hello", "a"), got


def test_files_joined_with_cat_keep_their_byte_order_marks_out(tmp_path):
    """`cat a.conllu b.conllu` where b starts with a BOM: the mark began line 14's comment, and
    the reader blamed line 15 ("comment line inside a sentence's word lines")."""
    path = write(tmp_path, "joined.conllu", "\ufeff" + GOOD + "\ufeff# sent_id = b\n" + GOOD)
    got = list(read_corpus(path, "conllu"))
    assert [s.segments[0].sent_key for s in got] == [None, "b"] and len(got) == 2
    path = write(tmp_path, "joined.txt", "\ufeffOne .\n\ufeffTwo .\n")
    assert forms(path, "text") == [["One", "."], ["Two", "."]]


def test_a_bare_newdoc_starts_a_document_without_an_id(tmp_path):
    """UD allows `# newdoc` without an id; the sentence after it kept the previous document's."""
    path = write(tmp_path, "docs.conllu", "# newdoc id = docA\n" + GOOD + "# newdoc\n" + GOOD + GOOD
                 + "# newdoc id = docB\n" + GOOD)
    assert [s.segments[0].doc_id for s in read_corpus(path, "conllu")] == ["docA", None, None, "docB"]


def test_pairs_of_a_one_sentence_file_say_so(tmp_path):
    path = write(tmp_path, "one.conllu", GOOD)
    with pytest.raises(CorpusError, match="holds one sentence, and pairs=True needs two"):
        validate(path, "conllu", pairs=True)


def test_crlf_line_ends_read_like_lf(tmp_path):
    lf = write(tmp_path, "lf.conllu", GOOD + GOOD)
    crlf = write(tmp_path, "crlf.conllu", (GOOD + GOOD).replace("\n", "\r\n"))
    a, b = list(read_corpus(lf, "conllu")), list(read_corpus(crlf, "conllu"))
    assert [s.segments for s in a] == [s.segments for s in b]
    t = write(tmp_path, "crlf.tsv", "a b\tc d\r\ne\tf\r\n")
    assert [[seg.text for seg in s.segments] for s in read_corpus(t, "tsv")] == [["a b", "c d"], ["e", "f"]]


def test_blank_and_whitespace_only_lines_are_counted_not_read(tmp_path):
    path = write(tmp_path, "blanks.txt", "One .\n\n   \n\t\u3000\n\u200b\nTwo .\n")
    n, stats = validate(path, "text")
    assert n == 2 and stats.blank_lines == 4
    assert forms(path, "text") == [["One", "."], ["Two", "."]]
    # CoNLL-U: a whitespace-only line separates sentences like a blank one
    path = write(tmp_path, "ws.conllu", GOOD.rstrip("\n") + "\n   \n" + GOOD)
    assert validate(path, "conllu")[0] == 2


def test_one_megabyte_line_is_skipped_and_counted(tmp_path):
    path = write(tmp_path, "big.txt", "short one\n" + "a " * 500_000 + "\nlast one\n")
    n, stats = validate(path, "text")
    assert n == 2 and stats.too_long_lines == 1
    assert forms(path, "text") == [["short", "one"], ["last", "one"]]
    # a 1 MB word in CoNLL-U is read; the model turns it into [UNK] (or skips it as over-long)
    path = write(tmp_path, "big.conllu", conllu_sentence(["x" * 1_000_000, "y"]))
    assert validate(path, "conllu")[0] == 1


def test_a_one_megabyte_conllu_word_becomes_one_unknown_piece(tmp_path, tokenizer):
    """The README's 1 MB row: in CoNLL-U the word is read whole and the tokenizer gives it one
    [UNK] piece (no model weights loaded)."""
    from headdb.model import align

    path = write(tmp_path, "big.conllu", conllu_sentence(["x" * 1_000_000, "y"]))
    (sentence,) = read_corpus(path, "conllu")
    (e,) = align(tokenizer, [sentence], False, 512)
    assert e.status == "ok"
    assert list(zip(e.pieces, e.word_pos)) == [("[CLS]", None), ("[UNK]", 0), ("y", 1), ("[SEP]", None)]


def test_missing_text_falls_back_to_the_forms(tmp_path):
    path = write(tmp_path, "notext.conllu", conllu_sentence(["Hello", "world"], text=False))
    (s,) = read_corpus(path, "conllu")
    assert s.segments[0].text == "Hello world"


def test_empty_columns_read_as_underscores(tmp_path):
    """An empty LEMMA, UPOS, XPOS or DEPREL column (a tool that leaves them empty, not `_`) has no
    value, as `_` has: it was stored as '', and accuracy counted an empty DEPREL as a relation of
    its own beside `_`."""
    path = write(tmp_path, "empty.conllu", "1\tDogs\t\t\t\t_\t2\t\t_\t_\n2\tbark\tbark\tVERB\tVBP\t_\t0\troot\t\t\n\n")
    (s,) = read_corpus(path, "conllu")
    dogs, bark = s.segments[0].words
    assert (dogs.lemma, dogs.upos, dogs.xpos, dogs.head, dogs.deprel) == (None, None, None, 1, None)
    assert (bark.lemma, bark.upos, bark.xpos, bark.head, bark.deprel) == ("bark", "VERB", "VBP", None, "root")


def test_multiword_ranges_and_empty_nodes_are_not_words(tmp_path):
    data = "\n".join([
        "# text = don't go",
        "1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_",
        conllu_row(1, "do", 0),
        conllu_row(2, "n't", 1),
        conllu_row(3, "go", 1),
        "3.1\tgone\tgo\tVERB\t_\t_\t_\t_\t1:dep\t_",
    ]) + "\n"
    path = write(tmp_path, "mwt.conllu", data)
    (s,) = read_corpus(path, "conllu")
    words = s.segments[0].words
    assert [w.form for w in words] == ["do", "n't", "go"]
    assert [w.head for w in words] == [None, 0, 0]
    assert s.segments[0].text == "don't go"


def test_unknown_heads_are_allowed(tmp_path):
    path = write(tmp_path, "nohead.conllu", conllu_row(1, "A", "_") + "\n" + conllu_row(2, "B", "_") + "\n")
    (s,) = read_corpus(path, "conllu")
    assert [w.head for w in s.segments[0].words] == [None, None]


# --- the whole path: CLI error line, exit code, database unchanged -----------------------------




def table_counts(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("corpora", "runs", "sentences", "words", "tokens", "run_sentences", "edges")}
    finally:
        con.close()


CLI_REFUSED = ["invalid UTF-8 in CoNLL-U", "Latin-1", "UTF-16 with a byte-order mark", "gzip-compressed", "NUL byte",
               "conllu 9 columns", "non-integer head", "cycle", "head outside the sentence", "tsv one column",
               "empty file", "too many words for SMALLINT"]


@pytest.mark.parametrize("case", CLI_REFUSED)
def test_cli_ingest_refuses_bad_input_and_writes_nothing(tmp_path, monkeypatch, capsys, case):
    name, data, line, words = REFUSED[case]
    path = write(tmp_path, name, data)
    db = tmp_path / "store.db"
    assert run_cli(["init", db], monkeypatch, capsys)[0] == 0
    before = table_counts(db)
    code, out, err = run_cli(["ingest", db, path, "-q"], monkeypatch, capsys)
    assert code == 1
    assert out == ""
    where = f"{path}:{line}: " if line else f"{path}: "
    assert err.startswith("error: " + where) and words in err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert table_counts(db) == before == dict.fromkeys(before, 0)


def test_cli_unknown_format(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, "c.conllu", GOOD)
    code, _, err = run_cli(["ingest", tmp_path / "x.db", path, "--format", "xml", "-q"], monkeypatch, capsys)
    assert code == 1 and err == "error: unknown format 'xml'; expected one of: conllu, text, tsv\n"
    assert not (tmp_path / "x.db").exists()  # refused before the database is even created
    code, _, err = run_cli(["ingest", tmp_path / "x.db", write(tmp_path, "c.dat", GOOD), "-q"], monkeypatch, capsys)
    assert code == 1 and "cannot infer the format" in err and err.count("\n") == 1
    assert "pass --format (one of conllu, text, tsv)" in err  # the flag, where Python's message names format
    code, _, err = run_cli(["ingest", tmp_path / "x.db", write(tmp_path, "c.txt", "A text.\n"), "--pairs", "-q"],
                           monkeypatch, capsys)
    assert code == 1 and "--pairs applies to CoNLL-U; pairs of raw text are a TSV file (.tsv or --format tsv)" in err
    # a spaCy pipeline for a CoNLL-U corpus was ignored: its gold syntax was stored all the same
    code, _, err = run_cli(["ingest", tmp_path / "x.db", path, "--parser", "en_core_web_trf", "-q"], monkeypatch,
                           capsys)
    assert code == 1 and err == (f"error: {path}: --parser parses raw text (text and TSV corpora); a CoNLL-U corpus "
                                 "brings its own syntax, which is stored as it is\n")
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(InputError, match="parser parses raw text"):
        ingest(tmp_path / "x.db", path, parser="en_core_web_sm")
    # a compressed corpus is named as one by its extension (it read "cannot infer the format from '.gz'")
    gz = write(tmp_path, "c.conllu.gz", gzip.compress(GOOD.encode()))
    code, _, err = run_cli(["ingest", tmp_path / "x.db", gz, "-q"], monkeypatch, capsys)
    assert code == 1 and err == (f"error: {gz}: is a gzip-compressed file; headdb reads plain UTF-8 text: decompress "
                                 "it first (gunzip -k c.conllu.gz) and ingest the file that gives\n")
    assert not (tmp_path / "x.db").exists()


def test_cli_ingest_with_the_store_left_out_or_swapped_with_the_corpus(tmp_path, monkeypatch, capsys):
    """The store comes first: `headdb ingest corpus.conllu`, where that file was missing, created a
    store named corpus.conllu holding the bundled sample; a store given as the corpus read as
    "cannot infer the format from the extension '.db'" (with --format: "NUL byte in the file")."""
    missing = tmp_path / "corpus.conllu"
    for args in (["ingest", missing], ["ingest", missing, write(tmp_path, "c.conllu", GOOD)]):
        code, out, err = run_cli([*args, "-q"], monkeypatch, capsys)
        assert code == 1 and out == ""
        assert err == (f"error: {missing}: no such store, and its name is a corpus file's (.conllu): the store "
                       "comes first, then the corpus (`headdb ingest DB CORPUS`); name a new store .db\n")
        assert not missing.exists()
    with pytest.raises(InputError, match=r"the store comes first, then the corpus \(ingest\(db, corpus\)\)"):
        ingest(tmp_path / "pairs.tsv")
    assert not (tmp_path / "pairs.tsv").exists()
    db = tmp_path / "store.db"
    assert run_cli(["init", db], monkeypatch, capsys)[0] == 0
    corpus = write(tmp_path, "c.conllu", GOOD)
    for extra in ([], ["--format", "conllu"]):
        code, out, err = run_cli(["ingest", corpus, db, *extra, "-q"], monkeypatch, capsys)
        assert code == 1 and out == ""
        assert err == (f"error: {db}: is a DuckDB database, not a corpus: the store comes first, then the corpus "
                       "(`headdb ingest DB CORPUS`)\n")
        assert corpus.read_text() == GOOD
    assert table_counts(db) == dict.fromkeys(table_counts(db), 0)


def test_a_corpus_with_duck_at_the_offset_of_duckdbs_magic_is_a_corpus(tmp_path):
    """A text whose bytes 8-11 read "DUCK" ("The big DUCK swam .") was refused as a DuckDB
    database given as the corpus; a DuckDB file has its storage version (NUL bytes) after them."""
    from headdb.errors import ModelError

    corpus = write(tmp_path, "duck.txt", "The big DUCK swam .\n")
    with pytest.raises(ModelError):  # past the corpus checks, to the (missing) model
        ingest(tmp_path / "d.db", corpus, model=str(tmp_path / "no-model"))


# --- slow: sentences longer than the model's maximum, counted in the run summary --------------


def headdb(*args, check: bool = True, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    proc = subprocess.run([HEADDB, *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"headdb {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


@pytest.mark.slow
def test_over_long_sentences_are_skipped_and_counted_or_truncated(tmp_path):
    corpus = write(tmp_path, "long.conllu",
                   conllu_sentence(["Hi", "there"]) + conllu_sentence(["word"] * 600) + conllu_sentence(["Bye"]))
    db = tmp_path / "skip.db"
    proc = headdb("ingest", db, corpus, "-q")
    assert "stored 2 sentences" in proc.stderr and "skipped 1 over-long, truncated 0" in proc.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT sentence_id, status, n_tokens, n_tokens_full FROM run_sentences ORDER BY 1").fetchall() \
        == [(0, "ok", 4, 4), (1, "skipped", None, 602), (2, "ok", 3, 3)]
    assert con.execute("SELECT count(*) FROM edges WHERE sentence_id = 1").fetchone()[0] == 0
    assert con.execute("SELECT truncate FROM runs").fetchone()[0] is False
    con.close()

    db = tmp_path / "trunc.db"
    proc = headdb("ingest", db, corpus, "-q", "--truncate")
    assert "stored 3 sentences" in proc.stderr and "skipped 0 over-long, truncated 1" in proc.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status, n_tokens, n_tokens_full FROM run_sentences WHERE sentence_id = 1").fetchone() \
        == ("truncated", 512, 602)
    assert con.execute("SELECT max(query_pos), max(key_pos) FROM edges WHERE sentence_id = 1").fetchone() == (511, 511)
    assert con.execute("SELECT truncate FROM runs").fetchone()[0] is True
    con.close()


@pytest.mark.slow
def test_text_reader_skips_are_in_the_run_summary(tmp_path):
    corpus = write(tmp_path, "messy.txt",
                   "\ufeffThe cat sat .\r\n\r\n   \r\n" + "a " * 500_000 + "\r\nDogs bark .\r\n")
    db = tmp_path / "t.db"
    proc = headdb("ingest", db, corpus, "-q")
    assert "stored 2 sentences" in proc.stderr
    assert "reader: 2 blank lines ignored, 1 over-long line skipped" in proc.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT text_a, line FROM sentences ORDER BY sentence_id").fetchall() \
        == [("The cat sat .", 1), ("Dogs bark .", 5)]
    con.close()
    # with --limit the reader's counts still describe the whole file, and say so
    proc = headdb("ingest", tmp_path / "limited.db", corpus, "-q", "--limit", "1")
    assert "stored 1 sentence," in proc.stderr
    assert "reader (the whole file): 2 blank lines ignored, 1 over-long line skipped" in proc.stderr


def test_missing_text_is_rebuilt_from_tokens_and_space_after(tmp_path):
    """Without `# text`, the text is rebuilt as UD writes it: a multiword token by its surface form
    (`del`, not `de el`), and no space after a token whose MISC holds SpaceAfter=No (Chinese has
    none at all). It was the syntactic words joined by spaces: "Vino de el mercado ." and "我 喜欢 猫 。"."""
    data = "\n".join([
        conllu_row(1, "Vino", 0),
        "2-3\tdel\t_\t_\t_\t_\t_\t_\t_\t_",
        conllu_row(2, "de", 4),
        conllu_row(3, "el", 4),
        conllu_row(4, "mercado", 1)[:-1] + "Gloss=market|SpaceAfter=No",
        conllu_row(5, ".", 1),
        "",
        conllu_row(1, "我", 2)[:-1] + "SpaceAfter=No",
        conllu_row(2, "喜欢", 0)[:-1] + "SpaceAfter=No",
        conllu_row(3, "猫", 2)[:-1] + "SpaceAfter=No",
        conllu_row(4, "。", 2),
    ]) + "\n"
    path = write(tmp_path, "notext.conllu", data)
    es, zh = read_corpus(path, "conllu")
    assert es.segments[0].text == "Vino del mercado."
    assert [w.form for w in es.segments[0].words] == ["Vino", "de", "el", "mercado", "."]
    assert zh.segments[0].text == "我喜欢猫。"


def test_a_multiword_token_may_end_the_sentence(tmp_path):
    """A range may end at the sentence's last word (Spanish "dámelo" = da me lo, a sentence's last
    token): only a range beyond the last word is refused. Its words are read, and the text rebuilt
    from the token's surface form."""
    data = "\n".join([
        conllu_row(1, "Ya", 2),
        "2-4\tdámelo\t_\t_\t_\t_\t_\t_\t_\t_",
        conllu_row(2, "da", 0),
        conllu_row(3, "me", 2),
        conllu_row(4, "lo", 2),
    ]) + "\n"
    (s,) = read_corpus(write(tmp_path, "end.conllu", data), "conllu")
    assert [w.form for w in s.segments[0].words] == ["Ya", "da", "me", "lo"]
    assert [w.head for w in s.segments[0].words] == [1, None, 1, 1]
    assert s.segments[0].text == "Ya dámelo"


def test_only_the_misc_attribute_space_after_no_joins_tokens(tmp_path):
    """Without `# text`, no space follows a token whose MISC holds the attribute SpaceAfter=No:
    not one whose MISC holds another attribute that merely ends so (CorrectSpaceAfter=No)."""
    data = "\n".join([
        conllu_row(1, "Hello", 0)[:-1] + "CorrectSpaceAfter=No",
        conllu_row(2, "world", 1)[:-1] + "Gloss=world|SpaceAfter=No",
        conllu_row(3, ".", 1),
    ]) + "\n"
    (s,) = read_corpus(write(tmp_path, "misc.conllu", data), "conllu")
    assert s.segments[0].text == "Hello world."


def test_a_text_lines_surrounding_whitespace_is_not_part_of_its_text(tmp_path):
    """A line of raw text is one sentence: its text, as stored and as handed to the parser, is
    the line without its leading and trailing whitespace (indentation, a space before the line end)."""
    seen: list[str] = []

    def parser(texts):
        seen.extend(texts)
        return [tuple(Word(t) for t in text.split()) for text in texts]

    (s,) = read_corpus(write(tmp_path, "pad.txt", "\t  Hello world.  \n"), "text", parser=parser)
    assert s.segments[0].text == "Hello world." and seen == ["Hello world."]
