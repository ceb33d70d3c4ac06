"""Word piece <-> word alignment through the fast tokenizer (no model weights loaded)."""

from __future__ import annotations

import pytest

from headdb.corpus import Segment, Sentence, Word
from headdb.errors import ModelError
from headdb.model import align


def single(*forms: str, sid: int = 0) -> Sentence:
    return Sentence(sid, (Segment(tuple(Word(f) for f in forms), " ".join(forms), 1),))


def pair(a: list[str], b: list[str], sid: int = 0) -> Sentence:
    return Sentence(sid, (Segment(tuple(Word(f) for f in a), " ".join(a), 1),
                          Segment(tuple(Word(f) for f in b), " ".join(b), 2)))


def test_words_split_into_several_pieces(tokenizer):
    (e,) = align(tokenizer, [single("Unbelievably", "tokenization", "works")], False, 512)
    assert e.status == "ok" and e.n_tokens_full == e.length
    assert e.pieces[0] == "[CLS]" and e.pieces[-1] == "[SEP]"
    assert e.special[0] == "cls" and e.special[-1] == "sep"
    assert e.word_pos[0] is None and e.word_pos[-1] is None
    inner = list(zip(e.pieces[1:-1], e.word_pos[1:-1]))
    assert [p for p, w in inner if w == 0][0] == "un" and len([1 for _, w in inner if w == 0]) > 1
    assert len([1 for _, w in inner if w == 1]) > 1
    # pieces of a word are contiguous and in word order; gluing them back gives the (lower-cased) word
    assert [w for _, w in inner] == sorted(w for _, w in inner)
    for k, form in enumerate(["unbelievably", "tokenization", "works"]):
        glued = "".join(p.removeprefix("##") for p, w in inner if w == k)
        assert glued == form
    assert all(seg == 0 for seg, sp in zip(e.segment, e.special) if sp is None)
    assert all(seg is None for seg, sp in zip(e.segment, e.special) if sp is not None)
    assert e.token_type_ids == [0] * e.length
    assert e.input_ids == tokenizer(["Unbelievably", "tokenization", "works"], is_split_into_words=True)["input_ids"]


def test_word_with_internal_space_stays_one_word(tokenizer):
    # CoNLL-U forms may hold spaces (e.g. "New York" as one word in some treebanks)
    (e,) = align(tokenizer, [single("in", "New York", "today")], False, 512)
    assert e.pieces[1:-1] == ["in", "new", "york", "today"]
    assert e.word_pos[1:-1] == [0, 1, 1, 2]


def test_pair_alignment(tokenizer):
    a, b = ["The", "dogs"], ["Unbelievably", "loud", "!"]
    (e,) = align(tokenizer, [pair(a, b)], False, 512)
    seps = [i for i, s in enumerate(e.special) if s == "sep"]
    assert e.special.count("cls") == 1 and e.special[0] == "cls" and len(seps) == 2 and seps[1] == e.length - 1
    first, second = range(1, seps[0]), range(seps[0] + 1, seps[1])
    assert {e.segment[i] for i in first} == {0} and {e.segment[i] for i in second} == {1}
    # word_pos is global: segment B's words follow A's
    assert sorted({e.word_pos[i] for i in first}) == [0, 1]
    assert sorted({e.word_pos[i] for i in second}) == [2, 3, 4]
    assert len([i for i in second if e.word_pos[i] == 2]) > 1  # "Unbelievably" has several pieces
    assert e.token_type_ids == [0] * (seps[0] + 1) + [1] * (e.length - seps[0] - 1)
    assert e.segment[seps[0]] is None and e.word_pos[seps[0]] is None


def test_batch_keeps_order_and_rejects_mixed(tokenizer):
    batch = [single("a", sid=0), single("b", "c", "d", sid=1), single("e", "f", sid=2)]
    out = align(tokenizer, batch, False, 512)
    assert [e.sentence.sentence_id for e in out] == [0, 1, 2]
    assert [e.length for e in out] == [3, 5, 4]  # no padding in the aligned tokens
    with pytest.raises(ModelError, match="mixes single and pair"):
        align(tokenizer, [single("a"), pair(["b"], ["c"])], False, 512)


def test_over_long_input_is_skipped_by_default(tokenizer):
    long = single(*"one two three four five six seven eight".split(), sid=0)
    short = single("hi", sid=1)
    a, b = align(tokenizer, [long, short], False, 6)
    assert a.status == "skipped" and a.n_tokens_full == 10 and a.length == 0 and a.pieces == []
    assert b.status == "ok" and b.length == 3


def test_over_long_input_is_truncated_when_asked(tokenizer):
    long = single(*"one two three four five six seven eight".split(), sid=0)
    short = single("hi", sid=1)
    a, b = align(tokenizer, [long, short], True, 6)
    assert a.status == "truncated" and a.n_tokens_full == 10 and a.length == 6
    assert a.pieces == ["[CLS]", "one", "two", "three", "four", "[SEP]"]
    assert a.word_pos == [None, 0, 1, 2, 3, None]
    assert a.special == ["cls", None, None, None, None, "sep"]
    assert b.status == "ok" and b.pieces == ["[CLS]", "hi", "[SEP]"]


def test_over_long_pair_truncated_keeps_both_segments(tokenizer):
    s = pair("a b c d e f".split(), "g h".split())
    (e,) = align(tokenizer, [s], True, 8)
    assert e.status == "truncated" and e.length == 8 and e.n_tokens_full == 11
    assert e.special.count("sep") == 2
    b_words = [w for w, seg in zip(e.word_pos, e.segment) if seg == 1]
    assert b_words == [6, 7]  # the longer segment A was cut; B keeps its global positions
    assert len(e.token_type_ids) == 8


def test_exactly_max_length_is_not_cut(tokenizer):
    (e,) = align(tokenizer, [single("a", "b", "c", "d")], False, 6)
    assert e.status == "ok" and e.length == 6


@pytest.mark.parametrize("max_length", [0, 1, 2])
def test_too_small_a_limit_skips_instead_of_exceeding_it(tokenizer, max_length):
    # the tokenizer cannot cut below its special tokens; such inputs are skipped, never stored too long
    a, b = align(tokenizer, [single("a", "b", "c"), single("d")], True, max_length)
    assert all(e.length <= max_length for e in (a, b))
    assert a.n_tokens_full == 5
    if max_length < 2:
        assert a.status == "skipped"
    else:  # [CLS] [SEP]: every word cut, but within the limit
        assert a.status == "truncated" and a.pieces == ["[CLS]", "[SEP]"]


def test_roberta_style_specials_and_prefix_space(roberta_style_dir):
    from headdb.model import load_tokenizer

    tok = load_tokenizer(roberta_style_dir)
    s = pair(["Unbelievably", "loud"], ["dogs"])
    (e,) = align(tok, [s], False, 512)
    # <s> A </s></s> B </s>: <s> is the cls, every </s> a sep
    assert e.special[0] == "cls" and e.special.count("cls") == 1 and e.special.count("sep") == 3
    assert e.special[-1] == "sep" and all(e.word_pos[i] is None for i, k in enumerate(e.special) if k)
    assert e.pieces[0] == "<s>" and e.pieces[-1] == "</s>"
    # pre-split words are encoded as words of running text: each starts with the space marker
    starts = [p for p, w, prev in zip(e.pieces, e.word_pos, [None] + e.word_pos) if w is not None and w != prev]
    assert starts and all(p.startswith("\u0120") for p in starts), e.pieces
    assert [w for w in e.word_pos if w is not None] == sorted(w for w in e.word_pos if w is not None)
    assert {e.segment[i] for i, w in enumerate(e.word_pos) if w == 2} == {1}
    assert e.token_type_ids is None or len(e.token_type_ids) == e.length
    # same pieces as the running text " Unbelievably loud" would give
    a_ids = [i for i, seg in zip(e.input_ids, e.segment) if seg == 0]
    assert a_ids == tok(" Unbelievably loud", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("style", ["bert", "roberta"])
def test_words_that_read_like_special_tokens_stay_text(tokenizer, roberta_style_dir, style):
    """A CoNLL-U form "[SEP]", "[PAD]" or "</s>" (an HTML tag) went to the model as the real special
    token, mid-sentence, and was stored as an ordinary piece."""
    from headdb.model import load_tokenizer

    tok = tokenizer if style == "bert" else load_tokenizer(roberta_style_dir)
    forms = ["use", "[SEP]", "[PAD]", "[MASK]", "[CLS]", "<s>", "</s>", "<pad>", "."]
    (e,) = align(tok, [single(*forms)], False, 512)
    specials = set(tok.all_special_ids)
    inner = [i for i, w in zip(e.input_ids, e.word_pos) if w is not None]
    assert not specials & set(inner), tok.convert_ids_to_tokens(inner)
    assert [k for k in e.special if k] == ["cls", "sep"] and e.special[0] == "cls" and e.special[-1] == "sep"
    assert sorted({w for w in e.word_pos if w is not None}) == list(range(len(forms)))  # every word has pieces


def test_an_unknown_piece_is_not_counted_as_a_special_token_in_the_text(tokenizer, unigram_style_dir):
    """An emoji is BERT's [UNK] (and a character the SentencePiece vocabulary lacks its <unk>): the
    tokenizer's way of writing a piece it does not have, not a word read as a special token. The
    run summary said "N word pieces of the text got a special token's id (a word such as "<s>"
    ...)" for every emoji of a BERT ingest."""
    from headdb.model import load_tokenizer

    (e,) = align(tokenizer, [single("Nice", "\U0001F642", "day", ".")], False, 512)
    assert tokenizer.unk_token_id in e.input_ids
    assert e.special_in_words == 0
    tok = load_tokenizer(unigram_style_dir)
    (e,) = align(tok, [single("The", "\u2603", "<s>", ".")], False, 512)
    assert tok.unk_token_id in e.input_ids, tok.convert_ids_to_tokens(e.input_ids)
    assert e.special_in_words == 1  # "<s>" still counts


def test_a_sentencepiece_vocabulary_that_holds_special_tokens_is_counted(unigram_style_dir, tokenizer):
    """split_special_tokens keeps "<s>" text for WordPiece and byte-level BPE, but a SentencePiece
    vocabulary holds "<s>", "</s>" and "<pad>" as pieces, and the tokenizer gives them back with
    their special ids: counted (the run summary says so), since the model reads them as specials."""
    from headdb.model import load_tokenizer

    tok = load_tokenizer(unigram_style_dir)
    forms = ["The", "<s>", "cat", "</s>", "<pad>", "."]
    (e,) = align(tok, [single(*forms)], False, 512)
    specials = set(tok.all_special_ids)
    assert e.special_in_words == sum(1 for t, w in zip(e.input_ids, e.word_pos) if w is not None and t in specials) == 3
    (plain,) = align(tok, [single("The", "cat", "sat", ".")], False, 512)
    assert plain.special_in_words == 0
    (bert,) = align(tokenizer, [single(*forms)], False, 512)
    assert bert.special_in_words == 0


def test_bos_and_eos_are_the_cls_and_sep_of_a_tokenizer_that_names_only_them(roberta_style_dir):
    """SCORES.md: an input is [CLS] A [SEP] "or the model's equivalents" (BOS/EOS). A tokenizer
    that names a bos and an eos token and no cls or sep token (GPT- or Llama-style) marks its
    first piece cls and its last sep, not "other" (delimiter_cls and delimiter_sep read them)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer.from_file(str(roberta_style_dir / "tokenizer.json"))
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tk.token_to_id("<s>")), ("</s>", tk.token_to_id("</s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>")
    assert tok.cls_token_id is None and tok.sep_token_id is None
    (e,) = align(tok, [single("The", "cat", "sat")], False, 512)
    assert e.pieces[0] == "<s>" and e.pieces[-1] == "</s>", e.pieces
    assert e.special[0] == "cls" and e.special[-1] == "sep"
    assert all(k is None for k in e.special[1:-1]) and e.word_pos[0] is None and e.word_pos[-1] is None


def test_a_token_named_both_bos_and_eos_is_cls_before_the_words_and_sep_after(roberta_style_dir):
    """A tokenizer whose bos_token and eos_token are one token ("X A X", "X A X X B X") put it at
    both ends: labelled by its id alone, it was cls at both, and delimiter_sep had no samples.
    Before the first word it is cls; after it, sep."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer.from_file(str(roberta_style_dir / "tokenizer.json"))
    x = ("</s>", tk.token_to_id("</s>"))
    tk.post_processor = processors.TemplateProcessing(single="</s> $A </s>", pair="</s> $A </s> </s> $B:1 </s>:1",
                                                      special_tokens=[x])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="</s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>")
    assert tok.bos_token_id == tok.eos_token_id and tok.cls_token_id is None
    (e,) = align(tok, [single("The", "cat", "sat")], False, 512)
    assert e.pieces[0] == e.pieces[-1] == "</s>"
    assert e.special[0] == "cls" and e.special[-1] == "sep" and all(k is None for k in e.special[1:-1])
    (p,) = align(tok, [pair(["The", "cat"], ["It", "sat"])], False, 512)
    kinds = [k for k in p.special if k is not None]
    assert kinds == ["cls", "sep", "sep", "sep"], (p.pieces, p.special)
    # a tokenizer naming them apart is labelled by id, as before: RoBERTa's <s> A </s></s> B </s>
    from transformers import AutoTokenizer

    (r,) = align(AutoTokenizer.from_pretrained(roberta_style_dir), [pair(["The", "cat"], ["It", "sat"])], False, 512)
    assert [k for k in r.special if k is not None] == ["cls", "sep", "sep", "sep"]


def test_an_input_whose_special_tokens_alone_exceed_the_limit_is_skipped_even_by_one(tokenizer):
    """A word the tokenizer gives no piece (a lone combining accent: BERT strips it) leaves
    [CLS] [SEP], one token over a limit of 1: the tokenizer cannot cut it, so it is skipped, not
    stored one token too long."""
    assert tokenizer(["\u0300"], is_split_into_words=True)["input_ids"] == [tokenizer.cls_token_id,
                                                                           tokenizer.sep_token_id]
    (e,) = align(tokenizer, [single("\u0300")], True, 1)
    assert e.status == "skipped" and e.length == 0 and e.n_tokens_full == 2
