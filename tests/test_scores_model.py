"""A dense ingest with the bundled model: every per-sentence score of every built-in role equals
a numpy computation on ``model(...).attentions`` written from SCORES.md (tests/role_reference.py),
for single and pair inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import headdb
from role_reference import BUILTIN, Seq, sentence_score, sieves

pytestmark = pytest.mark.slow

# Multi-piece words (Unbelievably, antidisestablishmentarianism, ...), a multiword token range and
# an empty node (both not words), sub-typed relations (nsubj:pass, obl:tmod, advmod:emph).
CONLLU = """\
# sent_id = m-1
1	Unbelievably	unbelievably	ADV	RB	_	3	advmod	_	_
2	grumpy	grumpy	ADJ	JJ	_	3	amod	_	_
3	hippopotamuses	hippopotamus	NOUN	NNS	_	4	nsubj	_	_
4	devoured	devour	VERB	VBD	_	0	root	_	_
5	antidisestablishmentarianism	x	NOUN	NN	_	4	obj	_	_
6	yesterday	yesterday	NOUN	NN	_	4	obl:tmod	_	SpaceAfter=No
7	.	.	PUNCT	.	_	4	punct	_	_

# sent_id = m-2
1-2	don't	_	_	_	_	_	_	_	_
1	do	do	AUX	VBP	_	3	aux	_	_
2	n't	not	PART	RB	_	3	advmod	_	_
3	overcomplicate	overcomplicate	VERB	VB	_	0	root	_	_
4	quasicrystalline	quasicrystalline	ADJ	JJ	_	5	amod	_	_
5	lattices	lattice	NOUN	NNS	_	3	obj	_	_
5.1	x	x	X	X	_	_	_	3:obj	_

# sent_id = m-3
1	Zorblatt	Zorblatt	PROPN	NNP	_	3	nsubj:pass	_	_
2	was	be	AUX	VBD	_	3	aux:pass	_	_
3	flabbergasted	flabbergast	VERB	VBN	_	0	root	_	_
4	really	really	ADV	RB	_	5	advmod:emph	_	_
5	quickly	quickly	ADV	RB	_	3	advmod	_	_

# sent_id = m-4
1	Cats	cat	NOUN	NNS	_	2	nsubj	_	_
2	sleep	sleep	VERB	VBP	_	0	root	_	_
"""


def _read(path: Path) -> list[tuple[list[str], list[int | None], list[str]]]:
    """Words, heads (0-based within the sentence, None = root) and relations per sentence."""
    out, rows = [], []
    for line in path.read_text().splitlines() + [""]:
        if not line.strip():
            if rows:
                out.append(([r[1] for r in rows], [None if r[6] == "0" else int(r[6]) - 1 for r in rows],
                            [r[7] for r in rows]))
            rows = []
        elif not line.startswith("#"):
            cols = line.split("\t")
            if cols[0].isdigit():  # ranges (1-2) and empty nodes (5.1) are not words
                rows.append(cols)
    return out


@pytest.fixture(scope="module")
def model_and_tokenizer():
    import torch
    from transformers import AutoModel, AutoTokenizer

    from headdb.resources import default_model

    path = default_model()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    torch.set_grad_enabled(False)
    return model, tok


def _reference(model, tok, segments) -> tuple[Seq, np.ndarray]:
    words_a, heads_a, rels_a = segments[0]
    second = segments[1] if len(segments) > 1 else None
    enc = tok(words_a, second[0] if second else None, is_split_into_words=True, return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    special, word, segment = [], [], []
    for pos, (wid, sid) in enumerate(zip(enc.word_ids(), enc.sequence_ids())):
        if wid is None:
            special.append("cls" if ids[pos] == tok.cls_token_id else "sep" if ids[pos] == tok.sep_token_id else "other")
            word.append(None)
            segment.append(None)
        else:
            special.append(None)
            word.append(wid + (len(words_a) if sid == 1 else 0))
            segment.append(sid)
    heads = list(heads_a) + ([None if h is None else h + len(words_a) for h in second[1]] if second else [])
    rels = list(rels_a) + (list(second[2]) if second else [])
    wseg = [0] * len(words_a) + ([1] * len(second[0]) if second else [])
    att = np.stack([a[0].numpy() for a in model(**enc, output_attentions=True).attentions])  # [layer, head, L, L]
    return Seq(special, word, segment, heads, rels, wseg), att


@pytest.mark.parametrize("pairs", [False, True], ids=["single", "pairs"])
def test_dense_scores_equal_numpy_on_model_attentions(tmp_path, model_and_tokenizer, pairs):
    model, tok = model_and_tokenizer
    corpus = tmp_path / "m.conllu"
    corpus.write_text(CONLLU)
    db = tmp_path / "m.db"
    run = headdb.ingest(db, corpus, dense=True, pairs=pairs, batch_size=1).run_id
    got = {(r.role, r.layer, r.head, r.sentence_id): r for r in headdb.scores(db, run=run).itertuples(index=False)}
    sentences = _read(corpus)
    inputs = [sentences[i : i + 2] for i in range(0, len(sentences), 2)] if pairs else [[s] for s in sentences]
    expected = {}
    multi_piece = 0
    for sid, segments in enumerate(inputs):
        seq, att = _reference(model, tok, segments)
        pieces = [w for w in seq.word if w is not None]
        multi_piece += len(pieces) - len(set(pieces))  # pieces beyond the first of each word
        sv = sieves(seq, pairs)
        for role in BUILTIN:
            for layer in range(att.shape[0]):
                for head in range(att.shape[1]):
                    ref = sentence_score(att[layer, head], sv[role])
                    if ref is not None:
                        expected[(role, layer, head, sid)] = ref
    assert multi_piece >= 4  # several words are split into pieces
    assert got.keys() == expected.keys()
    assert {k[0] for k in expected} == set(BUILTIN) - ({"block"} if not pairs else set())
    worst = 0.0
    for key, (score, n_queries) in expected.items():
        row = got[key]
        assert row.n_queries == n_queries, key
        worst = max(worst, abs(row.score - score))
        assert row.score_upper == pytest.approx(row.score, abs=1e-4)  # dense: the bound is tight
    assert worst <= 1e-6, worst
