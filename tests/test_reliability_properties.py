"""Reliability (#6): property-based tests (hypothesis) of the corpus readers and the score views.

Generated CoNLL-U (trees, multiword ranges, empty nodes, optional `# text`, LF or CRLF, BOM)
round-trips through the reader; generated text files keep their words and count blank lines;
on generated sequences, uniform attention scores exactly 1 for every role and random attention
matches the SCORES.md reference.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headdb.corpus import read_corpus, validate

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# word forms: visible characters, no tab or line break (CoNLL-U fields), may contain spaces
# inside but not at either end (UD forms never do, and `# text = ...` values are stripped)
_FORM_CHARS = st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"),
                            blacklist_characters="\t\n\r\x85")
forms = st.text(_FORM_CHARS, min_size=1, max_size=8).filter(lambda s: s.strip() == s and s and s.isprintable())


@st.composite
def trees(draw, max_words: int = 12):
    """(forms, heads 1-based with 0 for the root, deprels): a random tree over n words."""
    n = draw(st.integers(1, max_words))
    order = draw(st.permutations(range(n)))
    heads = [0] * n
    for k, w in enumerate(order):
        heads[w] = 0 if k == 0 else order[draw(st.integers(0, k - 1))] + 1
    ws = draw(st.lists(forms, min_size=n, max_size=n))
    rels = draw(st.lists(st.sampled_from(["nsubj", "obj", "amod:x", "advmod", "punct", "dep"]), min_size=n, max_size=n))
    rels = ["root" if h == 0 else r for h, r in zip(heads, rels)]
    return ws, heads, rels


@st.composite
def conllu_sentences(draw):
    ws, heads, rels = draw(trees())
    n = len(ws)
    text = draw(st.one_of(st.none(), st.just(" ".join(ws))))
    comments = [f"# sent_id = s{draw(st.integers(0, 999))}"]
    if text is not None:
        comments.append(f"# text = {text}")
    rows = []
    ranges = draw(st.sets(st.integers(1, n - 1), max_size=2)) if n > 1 else set()
    ranges = {i for i in ranges if i - 1 not in ranges}  # ranges never overlap (UD; the reader refuses it)
    empties = draw(st.sets(st.integers(0, n), max_size=2))
    for i in range(1, n + 1):
        if i in ranges:
            rows.append(f"{i}-{i + 1}\t{ws[i - 1]}{ws[i]}\t_\t_\t_\t_\t_\t_\t_\t_")
        rows.append(f"{i}\t{ws[i - 1]}\t_\tX\t_\t_\t{heads[i - 1]}\t{rels[i - 1]}\t_\t_")
        if i in empties:
            rows.append(f"{i}.1\tghost\t_\t_\t_\t_\t_\t_\t{i}:dep\t_")
    if 0 in empties:
        rows.insert(0, "0.1\tghost\t_\t_\t_\t_\t_\t_\t1:dep\t_")
    if text is None:  # the reader rebuilds it from the tokens: a range by its surface form
        text = " ".join(ws[i - 1] + ws[i] if i in ranges else ws[i - 1] for i in range(1, n + 1)
                        if i - 1 not in ranges)
    return (ws, heads, rels, text), "\n".join(comments + rows)


def _write(data: str, crlf: bool, bom: bool) -> Path:
    raw = data.replace("\n", "\r\n") if crlf else data
    f = tempfile.NamedTemporaryFile("wb", suffix=".conllu", delete=False)
    f.write((b"\xef\xbb\xbf" if bom else b"") + raw.encode("utf-8"))
    f.close()
    return Path(f.name)


@SETTINGS
@given(st.lists(conllu_sentences(), min_size=1, max_size=6), st.booleans(), st.booleans(),
       st.integers(1, 3), st.booleans())
def test_conllu_round_trip(sentences, crlf, bom, blank_lines, trailing_blank):
    data = ("\n" * (blank_lines + 1)).join(block for _, block in sentences) + ("\n\n" if trailing_blank else "\n")
    path = _write(data, crlf, bom)
    try:
        n, _ = validate(path, "conllu")
        got = list(read_corpus(path, "conllu"))
    finally:
        path.unlink()
    assert n == len(got) == len(sentences)
    for s, ((ws, heads, rels, text), _) in zip(got, sentences):
        (seg,) = s.segments
        assert [w.form for w in seg.words] == ws
        assert [w.head for w in seg.words] == [None if h == 0 else h - 1 for h in heads]
        assert [w.deprel for w in seg.words] == rels
        assert seg.text == text
    # sentence ids are 0..n-1 in file order, and lines point at each block's first line
    assert [s.sentence_id for s in got] == list(range(len(got)))
    assert all(a.line < b.line for a, b in zip(got, got[1:]))


@SETTINGS
@given(st.lists(conllu_sentences(), min_size=2, max_size=7))
def test_conllu_pairs_take_consecutive_sentences(sentences):
    data = "\n\n".join(block for _, block in sentences) + "\n"
    path = _write(data, False, False)
    try:
        from headdb.corpus import ReadStats

        stats = ReadStats()
        got = list(read_corpus(path, "conllu", pairs=True, stats=stats))
    finally:
        path.unlink()
    assert len(got) == len(sentences) // 2
    assert stats.odd_sentence_dropped == (len(sentences) % 2 == 1)
    for k, s in enumerate(got):
        assert [[w.form for w in seg.words] for seg in s.segments] == [sentences[2 * k][0][0], sentences[2 * k + 1][0][0]]


_TEXT_WORD = st.text(_FORM_CHARS.filter(lambda c: not c.isspace()), min_size=1, max_size=6).filter(str.isprintable)
_BLANK = st.sampled_from(["", " ", "\t", "  \t ", "\u3000", "\u200b", "\u00a0"])


@SETTINGS
@given(st.lists(st.one_of(st.lists(_TEXT_WORD, min_size=1, max_size=8), _BLANK), min_size=1, max_size=12),
       st.booleans())
def test_text_lines_keep_their_words_and_count_blanks(lines, crlf):
    texts = [" ".join(x) if isinstance(x, list) else x for x in lines]
    expected = [x for x in lines if isinstance(x, list)]
    data = "\n".join(texts) + "\n"
    if crlf:
        data = data.replace("\n", "\r\n")
    f = tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False)
    f.write(data.encode("utf-8"))
    f.close()
    path = Path(f.name)
    try:
        if not expected:
            from headdb.errors import CorpusError

            with pytest.raises(CorpusError, match="no sentences"):
                validate(path, "text")
            return
        n, stats = validate(path, "text")
        got = list(read_corpus(path, "text"))
    finally:
        path.unlink()
    assert n == len(expected) and stats.blank_lines == len(lines) - len(expected)
    assert [[w.form for w in s.segments[0].words] for s in got] == expected


# --- score views on generated attention ----------------------------------------------------------

@st.composite
def sequences(draw, pairs: bool):
    import role_reference

    def segment():
        ws, heads, rels = draw(trees(max_words=6))
        pieces = draw(st.lists(st.integers(1, 3), min_size=len(ws), max_size=len(ws)))
        return pieces, [None if h == 0 else h - 1 for h in heads], rels

    a = segment()
    if not pairs:
        return role_reference.simple_seq(*a)
    b = segment()
    return role_reference.simple_seq(*a, *b)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), st.booleans())
def test_scores_uniform_is_one_and_random_matches_reference(tmp_path_factory, data, pairs):
    role_reference = pytest.importorskip("role_reference")  # tests/role_reference.py (issue 3)
    import headdb

    seqs = data.draw(st.lists(sequences(pairs), min_size=1, max_size=3))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    folder = tmp_path_factory.mktemp("prop")
    uniform = [np.full((1, 2, q.length, q.length), 1.0 / q.length, dtype=np.float32) for q in seqs]
    role_reference.build_store(folder / "u.db", seqs, uniform, pairs=pairs)
    df = headdb.scores(folder / "u.db")
    np.testing.assert_allclose(df["score"], 1.0, atol=1e-5)
    att = [role_reference.dirichlet_attention(rng, 1, 2, q.length) for q in seqs]
    role_reference.build_store(folder / "r.db", seqs, att, pairs=pairs)
    got = headdb.scores(folder / "r.db")
    seen = set()
    for row in got.itertuples(index=False):
        ref = role_reference.sentence_score(att[row.sentence_id][row.layer, row.head],
                                            role_reference.sieves(seqs[row.sentence_id], pairs)[row.role])
        assert ref is not None
        assert row.score == pytest.approx(ref[0], rel=1e-5, abs=1e-5)
        assert row.n_queries == ref[1]
        seen.add((row.role, row.sentence_id))
    # every (role, sentence) with a non-empty sieve is scored, and no other
    expected = {(r, s) for s, q in enumerate(seqs) for r, sv in role_reference.sieves(q, pairs).items() if sv}
    assert seen == expected
