"""On a CPU in float32, BERT-shaped layers run their projections and feed-forward blocks on a
batch's real tokens only (``AttentionModel._packed_maps``): what comes out is the model's own
padded forward's, bit for bit, checked on the first batch with padding; where the check fails, or
the model is not BERT-shaped, the model's own forward runs."""

from __future__ import annotations

import numpy as np
import pytest

from headdb.corpus import Segment, Sentence, Word

pytestmark = pytest.mark.slow

WORDS = ("the cat sat on the mat while several unbelievably loud dogs barked at the moon all night long "
         "and nobody in the quiet village could sleep").split()


def _sentences(n: int = 16) -> list[Sentence]:
    """Inputs of many lengths (2 to 22 words): a batch of them has padding."""
    out = []
    for i in range(n):
        forms = WORDS[i % 5: i % 5 + 2 + (i * 5) % 19] + ["."]
        out.append(Sentence(i, (Segment(tuple(Word(f) for f in forms), " ".join(forms), i + 1),)))
    return out


def _real_rows(batch, shape) -> np.ndarray:
    """[input, layer, head, query] of ``forward``'s arrays: True on every input's own queries."""
    real = np.arange(shape[3])[None, :] < np.array([e.length for e in batch])[:, None]
    return np.broadcast_to(real[:, None, None, :], shape[:4])


def _save_with_tokenizer(model, folder, default_model_dir):
    """Save a random-init model with the bundled model's tokenizer files: a local model folder."""
    import shutil

    model.eval().save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_model_dir / name, folder / name)
    return folder


def _transformers_maps(am, batch) -> np.ndarray:
    """[input, layer, head, query, key]: the maps transformers returns with output_attentions=True
    (no headdb forward, tap or ranking in between)."""
    import torch

    with torch.inference_mode():
        out = am.model(**am._inputs(batch), output_attentions=True, return_dict=True)
    return torch.stack(out.attentions, dim=1).float().numpy()


def _stored_edges(tmp_path, monkeypatch, corpus, **kw) -> dict[bool, list]:
    """Every stored edge of an ingest of ``corpus`` packed (True) and with the model's own forward (False)."""
    import duckdb

    import headdb.model
    from headdb.ingest import ingest

    stored = {}
    for packs in (True, False):
        monkeypatch.setattr(headdb.model, "PACK_TOKENS", packs)
        db = tmp_path / f"{packs}.db"
        ingest(db, corpus, **kw)
        con = duckdb.connect(str(db), read_only=True)
        stored[packs] = con.execute("SELECT sentence_id, layer, head, query_pos, key_pos, weight FROM edges "
                                    "ORDER BY ALL").fetchall()
        con.close()
    return stored


def _own(am, batch, k):
    """The model's own forward (stopped at the last map, padded)."""
    packed, am._packed = am._packed, False
    try:
        return am.forward(batch, k)
    finally:
        am._packed = packed


@pytest.fixture(scope="module")
def electra_dir(tmp_path_factory, default_model_dir):
    """A random-init ELECTRA whose embeddings (16 wide) are projected to its layers' width (32)."""
    import torch
    from transformers import ElectraConfig, ElectraModel

    torch.manual_seed(0)
    return _save_with_tokenizer(
        ElectraModel(ElectraConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                                   num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)),
        tmp_path_factory.mktemp("tiny-electra"), default_model_dir)


@pytest.mark.parametrize("arch", ["default", "bert", "roberta", "electra"])
def test_a_packed_forward_returns_the_models_own_maps(arch, default_model_dir, tiny_bert_dir, tiny_roberta_dir,
                                                      electra_dir):
    from headdb.model import AttentionModel

    folder = {"default": default_model_dir, "bert": tiny_bert_dir, "roberta": tiny_roberta_dir,
              "electra": electra_dir}[arch]
    am = AttentionModel(str(folder))
    batch = am.encode(_sentences(), truncate=False)
    assert len({e.length for e in batch}) > 1 and sum(e.length for e in batch) >= 64  # padding; enough to pack
    assert am._packed == "unchecked"
    am.forward(batch, 4)  # the taps' check (the model run whole), and the packed forward's against it
    assert am.packs_tokens, arch
    first = am.forward(batch, 4)
    rows = _real_rows(batch, first[0].shape)  # the padding's query rows are no input's: never stored
    for k in (4, None):
        got, want = am.forward(batch, k), _own(am, batch, k)
        np.testing.assert_array_equal(got[0][rows], want[0][rows])
        np.testing.assert_array_equal(got[1][rows], want[1][rows])
    np.testing.assert_array_equal(first[0][rows], am.forward(batch, 4)[0][rows])
    # the dense maps against transformers' own output_attentions, not only headdb's stopped forward
    dense = am.forward(batch, None)[0]
    np.testing.assert_array_equal(dense[rows], _transformers_maps(am, batch)[rows])
    edges = am.forward_edges(batch, 4, None)
    packed, am._packed = am._packed, False
    own_edges = am.forward_edges(batch, 4, None)
    am._packed = packed
    for name in ("sentence", "layer", "head", "query_pos", "key_pos", "weight"):
        np.testing.assert_array_equal(getattr(edges, name), getattr(own_edges, name))


def test_the_packed_forward_runs_the_feed_forward_on_real_tokens_and_no_last_value(tiny_bert_dir):
    from headdb.model import AttentionModel

    am = AttentionModel(str(tiny_bert_dir))
    batch = am.encode(_sentences(), truncate=False)
    am.forward(batch, 4)
    am.forward(batch, 4)
    assert am.packs_tokens
    rows, values = [], []
    layers = am.model.encoder.layer
    layers[0].intermediate.register_forward_hook(lambda m, a, out: rows.append(a[0].shape))
    layers[-1].attention.self.value.register_forward_hook(lambda *a: values.append(1))
    layers[0].attention.self.value.register_forward_hook(lambda *a: values.append(0))
    am.forward(batch, 4)
    assert rows == [(sum(e.length for e in batch), am.model.config.hidden_size)]  # no padding rows
    assert values == [0]  # the first layer's values are computed, the last layer's are not
    rows.clear()
    _own(am, batch, 4)
    assert rows == [(len(batch), max(e.length for e in batch), am.model.config.hidden_size)]


def test_a_packed_forward_that_differs_is_dropped_and_the_models_own_runs(tiny_bert_dir):
    """A packed forward that gave other numbers (here a last bit of one weight) fails the check:
    the batch keeps the model's own maps and the model is never run packed again."""
    import torch

    from headdb.model import AttentionModel

    am = AttentionModel(str(tiny_bert_dir))
    layers, attns, attention = am._packing

    def off_by_a_bit(module, q, k, v, mask, **kw):
        context, weights = attention(module, q, k, v, mask, **kw)
        weights = weights.clone()
        weights[0, 0, 0, 0] = torch.nextafter(weights[0, 0, 0, 0], torch.tensor(2.0))
        return context, weights

    am._packing = (layers, attns, off_by_a_bit)
    batch = am.encode(_sentences(), truncate=False)
    am.forward(batch, None)
    got = am.forward(batch, None)
    assert am._packed is False and not am.packs_tokens
    want = _own(am, batch, None)
    np.testing.assert_array_equal(got[0], want[0])  # the check's batch: the model's own, padding rows too
    calls = []
    am._packing = (layers, attns, lambda *a, **kw: calls.append(1))
    am.forward(batch, 4)
    assert calls == []


def test_batches_without_padding_or_with_few_tokens_run_unpacked_and_the_first_to_pack_is_checked(tiny_bert_dir):
    from headdb.model import AttentionModel

    am = AttentionModel(str(tiny_bert_dir))
    calls = []
    layers, attns, attention = am._packing
    am._packing = (layers, attns, lambda *a, **kw: calls.append(1) or attention(*a, **kw))
    sentences = _sentences()
    am.forward(am.encode(sentences[:3], truncate=False), 4)  # the taps' check
    am.forward(am.encode(sentences[:3], truncate=False), 4)  # few tokens
    same = [s for s in sentences if len(s.segments[0].words) == len(sentences[5].segments[0].words)]
    am.forward(am.encode(same * 8, truncate=False), 4)  # no padding
    assert calls == [] and am._packed == "unchecked"
    batch = am.encode(sentences, truncate=False)
    got = am.forward(batch, 4)  # the first batch to pack: checked against the stopped forward
    assert calls and am.packs_tokens
    want = _own(am, batch, 4)
    rows = _real_rows(batch, got[0].shape)
    np.testing.assert_array_equal(got[0][rows], want[0][rows])
    np.testing.assert_array_equal(got[1][rows], want[1][rows])


@pytest.mark.parametrize("kind", ["albert", "distilbert", "half", "off", "width"])
def test_models_not_shaped_as_bert_or_not_in_float32_run_their_own_forward(kind, tmp_path, default_model_dir,
                                                                           tiny_bert_dir, monkeypatch):
    import torch
    from transformers import AlbertConfig, AlbertModel, BertConfig, BertModel, DistilBertConfig, DistilBertModel

    import headdb.model
    from headdb.model import AttentionModel

    folder, dtype = tiny_bert_dir, "float32"
    if kind in ("albert", "distilbert"):
        torch.manual_seed(0)
        model = AlbertModel(AlbertConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64)) if kind == "albert" else \
            DistilBertModel(DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64))
        folder = _save_with_tokenizer(model, tmp_path / kind, default_model_dir)
    elif kind == "width":  # a feed-forward 150 wide: 4 threads gave other last bits on most batches, not all
        torch.manual_seed(0)
        folder = _save_with_tokenizer(BertModel(BertConfig(vocab_size=30522, hidden_size=36, num_hidden_layers=2,
                                                           num_attention_heads=3, intermediate_size=150,
                                                           max_position_embeddings=64)),
                                      tmp_path / kind, default_model_dir)
    elif kind == "half":
        dtype = "bfloat16"
    else:
        monkeypatch.setattr(headdb.model, "PACK_TOKENS", False)
    am = AttentionModel(str(folder), dtype=dtype)
    batch = am.encode(_sentences(), truncate=False)
    am.forward(batch, 4)
    am.forward(batch, 4)
    assert am._packing is None and am._packed is False and am.stops_early


def test_an_ingest_stores_the_same_edges_packed_or_not(tmp_path, default_model_dir, monkeypatch):
    corpus = tmp_path / "c.conllu"
    lines = []
    for s in _sentences(40):
        words = s.segments[0].words
        lines += [f"# sent_id = s{s.sentence_id}", f"# text = {s.segments[0].text}"]
        lines += [f"{i}\t{w.form}\t_\tX\tX\t_\t{0 if i == 1 else 1}\t{'root' if i == 1 else 'dep'}\t_\t_"
                  for i, w in enumerate(words, 1)] + [""]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stored = _stored_edges(tmp_path, monkeypatch, corpus, batch_size=16)
    assert len(stored[True]) > 10_000 and stored[True] == stored[False]


#: transformers' encoders whose layers have BERT's modules: the first pack (their layers run as
#: BERT's), the second do not (a layer norm before the attention, rotary positions, bottlenecks,
#: language adapters), which the check on the first padded batch must find
PACKING = ["roberta", "xlm-roberta", "camembert", "data2vec-text", "ernie", "layoutlm", "markuplm", "splinter",
           "roc_bert"]
LOOK_ALIKES = ["roberta-prelayernorm", "xlm-roberta-xl", "esm", "mobilebert", "xmod"]
EXTRA = {"esm": {"position_embedding_type": "rotary"}, "xmod": {"languages": ["en_XX"], "default_language": "en_XX"},
         "mobilebert": {"embedding_size": 16, "intra_bottleneck_size": 32, "true_hidden_size": 32}}


@pytest.mark.parametrize("model_type", PACKING + LOOK_ALIKES)
def test_bert_like_architectures_pack_only_where_they_run_as_bert(model_type, tmp_path, default_model_dir):
    import torch
    from transformers import AutoConfig, AutoModel

    from headdb.model import AttentionModel

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=130,
                                  pad_token_id=0, **EXTRA.get(model_type, {}))
    _save_with_tokenizer(AutoModel.from_config(config, attn_implementation="eager"), tmp_path, default_model_dir)
    am = AttentionModel(str(tmp_path))
    sentences = _sentences(40)
    am.forward(am.encode(sentences[:16], truncate=False), 4)
    assert am.packs_tokens == (model_type in PACKING), model_type
    for batch in (sentences[16:32], sentences[32:], sentences[3:5] + sentences[17:18]):
        batch = am.encode(batch, truncate=False)
        for k in (4, None):
            got, want = am.forward(batch, k), _own(am, batch, k)
            rows = _real_rows(batch, got[0].shape)
            np.testing.assert_array_equal(got[0][rows], want[0][rows])
            np.testing.assert_array_equal(got[1][rows], want[1][rows])
        np.testing.assert_array_equal(got[0][rows], _transformers_maps(am, batch)[rows])  # transformers' own


def test_an_ingest_with_a_feed_forward_width_not_a_multiple_of_8_stores_the_models_own_edges(
        tmp_path, default_model_dir, monkeypatch):
    """Hidden 36, feed-forward 150, on 4 threads: packed, most batches gave other last bits than the
    padded forward and the first checked one the same, so 40 EWT sentences in batches of 4 stored
    other edges. Such layers run the model's own forward."""
    import torch
    from transformers import BertConfig, BertModel

    from headdb.resources import sample_corpus

    torch.manual_seed(0)
    folder = _save_with_tokenizer(BertModel(BertConfig(vocab_size=30522, hidden_size=36, num_hidden_layers=2,
                                                       num_attention_heads=3, intermediate_size=150,
                                                       max_position_embeddings=130)),
                                  tmp_path / "model", default_model_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        stored = _stored_edges(tmp_path, monkeypatch, sample_corpus(), model=folder, limit=40, batch_size=4)
    finally:
        torch.set_num_threads(threads)
    assert len(stored[True]) > 10_000 and stored[True] == stored[False]


def test_a_first_batch_whose_taps_another_thread_checks_meanwhile_keeps_its_maps(tiny_bert_dir):
    """Two threads' first batches on one model: the thread that checked the taps first set them
    on while the other's whole forward ran, whose last map then raised _LastMap out of forward()."""
    from headdb.model import AttentionModel

    am = AttentionModel(str(tiny_bert_dir))
    batch = am.encode(_sentences(), truncate=False)
    layer = am.model.encoder.layer[0]
    handle = layer.register_forward_pre_hook(lambda *a: setattr(am, "_taps", True))  # the other thread's check
    got = am.forward(batch, 4)
    handle.remove()
    want = _own(am, batch, 4)
    rows = _real_rows(batch, got[0].shape)
    np.testing.assert_array_equal(got[0][rows], want[0][rows])
    np.testing.assert_array_equal(got[1][rows], want[1][rows])


def test_a_check_that_failed_on_another_thread_meanwhile_stands(tiny_bert_dir):
    """Two threads' first batches with padding are checked at once: where one thread's check failed
    (its batch came out other than the model's own) while the other's ran, the other's passing
    check set packing on again, and every later batch ran packed. A failed check is final."""
    from headdb.model import AttentionModel

    am = AttentionModel(str(tiny_bert_dir))
    layer = am.model.encoder.layer[0]

    def other_thread_fails(module, args, output):
        if args[0].dim() == 2:  # the packed forward's rows (the padded forward's are [batch, width, hidden])
            am._packed = False  # what the other thread's failed check stores meanwhile

    handle = layer.intermediate.register_forward_hook(other_thread_fails)
    batch = am.encode(_sentences(), truncate=False)
    got = am.forward(batch, 4)  # the taps' check, and this thread's packed check, which passes
    handle.remove()
    assert am._packed is False and not am.packs_tokens
    want = _own(am, batch, 4)
    rows = _real_rows(batch, got[0].shape)
    np.testing.assert_array_equal(got[0][rows], want[0][rows])
    calls = []
    layers, attns, attention = am._packing
    am._packing = (layers, attns, lambda *a, **kw: calls.append(1) or attention(*a, **kw))
    am.forward(batch, 4)
    assert calls == []  # later batches run the model's own forward


def test_a_batch_packs_from_exactly_pack_min_tokens_real_tokens(tiny_bert_dir, monkeypatch):
    """``PACK_MIN_TOKENS`` is the least count of real tokens that packs: a batch of one token fewer
    runs the model's own forward and leaves the check for later; a batch of exactly as many packs."""
    import headdb.model
    from headdb.model import AttentionModel

    am = AttentionModel(str(tiny_bert_dir))
    batch = am.encode(_sentences(), truncate=False)
    real = sum(e.length for e in batch)
    assert real < len(batch) * max(e.length for e in batch)  # padding
    monkeypatch.setattr(headdb.model, "PACK_MIN_TOKENS", real + 1)
    am.forward(batch, 4)  # the taps' check
    am.forward(batch, 4)
    assert am.stops_early and am._packed == "unchecked"
    monkeypatch.setattr(headdb.model, "PACK_MIN_TOKENS", real)
    am.forward(batch, 4)
    assert am._packed is True


@pytest.mark.parametrize("change", ["weight", "keys"])
def test_a_ranked_check_compares_both_the_weights_and_the_key_positions(tiny_bert_dir, change):
    """The first batch that packs after the taps' check is checked on its ranked rows: a packed
    forward that gave one weight a last bit more, or the same weights on other keys (two keys'
    columns swapped: every row ranks the same weights, the key positions differ), fails it."""
    import torch

    from headdb.model import AttentionModel

    am = AttentionModel(str(tiny_bert_dir))
    layers, attns, attention = am._packing

    def changed(module, q, k, v, mask, **kw):
        context, weights = attention(module, q, k, v, mask, **kw)
        weights = weights.clone()
        if change == "weight":
            top = weights[0, 0, 0].argmax()
            weights[0, 0, 0, top] = torch.nextafter(weights[0, 0, 0, top], torch.tensor(2.0))
        else:
            weights[..., [0, 1]] = weights[..., [1, 0]]
        return context, weights

    am._packing = (layers, attns, changed)
    sentences = _sentences()
    am.forward(am.encode(sentences[:3], truncate=False), 4)  # the taps' check: too few tokens to pack
    assert am.stops_early and am._packed == "unchecked"
    batch = am.encode(sentences, truncate=False)
    got = am.forward(batch, 4)  # the first batch to pack: its ranked rows are checked
    assert am._packed is False
    want = _own(am, batch, 4)
    rows = _real_rows(batch, got[0].shape)
    np.testing.assert_array_equal(got[0][rows], want[0][rows])
    np.testing.assert_array_equal(got[1][rows], want[1][rows])


def test_ties_are_ranked_again_on_the_inputs_own_rows_only(tiny_bert_dir, monkeypatch):
    """A CPU's forward, packed or padded, sorts again only the tied rows of the inputs' own queries
    (``_rank_layer``'s ``real``): the padding's rows, never stored, tie at weight 0 wherever the k + 1
    best keys reach past a short input, and are left in topk's order."""
    import torch

    import headdb.model
    from headdb.model import AttentionModel

    seen = []
    rank_ties = headdb.model._rank_ties

    def recording(torch, a, values, indices, tied):
        seen.append(tied.clone())
        rank_ties(torch, a, values, indices, tied)

    monkeypatch.setattr(headdb.model, "_rank_ties", recording)
    am = AttentionModel(str(tiny_bert_dir))
    batch = am.encode(_sentences(), truncate=False)
    real = torch.from_numpy(np.arange(max(e.length for e in batch))[None, :]
                            < np.array([e.length for e in batch])[:, None])[:, None, :]  # [input, 1, query]

    def padding_rows() -> int:
        return sum(int((tied & ~real.expand(tied.shape)).sum()) for tied in seen)

    am.forward(batch, 8)  # the taps' check: the whole forward, ranked after it, every row
    assert padding_rows() > 0  # the padding's rows tie
    for packs in (True, False):
        seen.clear()
        got = am.forward(batch, 8) if packs else _own(am, batch, 8)
        assert am.packs_tokens and seen and padding_rows() == 0, packs
        assert got[0].shape[-1] == 8
