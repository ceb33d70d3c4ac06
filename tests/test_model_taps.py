"""The forward stops at the last layer's attention map (taps on the attention modules), and
what it returns is the model's own full forward's, bit for bit, for every architecture tried;
where the taps cannot be trusted the model runs whole."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from headdb.corpus import Segment, Sentence, Word

pytestmark = pytest.mark.slow

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SENTENCES = [["The", "cat", "sat", "on", "the", "mat", "."],
             ["Unbelievably", "loud", "dogs", "bark", "at", "night", "."],
             ["Yes", "."]]


def _sentences() -> list[Sentence]:
    return [Sentence(i, (Segment(tuple(Word(f) for f in forms), " ".join(forms), i + 1),))
            for i, forms in enumerate(SENTENCES)]


def _save(folder, model, default_model_dir):
    model.eval().save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(default_model_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, default_model_dir, tiny_bert_dir, tiny_roberta_dir):
    import torch
    from transformers import AlbertConfig, AlbertModel, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    albert = AlbertModel(AlbertConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=64))
    distil = DistilBertModel(DistilBertConfig(vocab_size=30522, dim=32, n_layers=3, n_heads=4, hidden_dim=64,
                                              max_position_embeddings=64))
    return {
        "bert": tiny_bert_dir,
        "roberta": tiny_roberta_dir,
        # one layer module run num_hidden_layers times: one tap sees every layer
        "albert": _save(tmp_path_factory.mktemp("tiny-albert"), albert, default_model_dir),
        "distilbert": _save(tmp_path_factory.mktemp("tiny-distilbert"), distil, default_model_dir),
    }


def _whole(am, batch, k):
    """What the model's own full forward (output_attentions) gives."""
    taps, am._taps = am._taps, False
    try:
        return am.forward(batch, k)
    finally:
        am._taps = taps


@pytest.mark.parametrize("arch", ["bert", "roberta", "albert", "distilbert"])
def test_stopped_forward_returns_the_whole_forwards_maps(model_dirs, arch):
    from headdb.model import AttentionModel

    am = AttentionModel(str(model_dirs[arch]))
    batch = am.encode(_sentences(), truncate=False)
    assert am._taps == "unchecked"
    first = am.forward(batch, 4)  # checks the taps against output_attentions
    assert am.stops_early, arch
    for k in (4, None):
        got = am.forward(batch, k)
        want = _whole(am, batch, k)
        assert got[0].shape == want[0].shape == (len(batch), am.n_layers, am.n_heads, *got[0].shape[3:])
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(first[0], am.forward(batch, 4)[0])
    assert am.stops_early


def test_the_stop_skips_the_last_layers_feed_forward(model_dirs):
    from headdb.model import AttentionModel

    am = AttentionModel(str(model_dirs["bert"]))
    batch = am.encode(_sentences(), truncate=False)
    calls = []
    am.model.encoder.layer[-1].intermediate.register_forward_hook(lambda *a: calls.append(1))
    am.model.pooler.register_forward_hook(lambda *a: calls.append(2))
    am.forward(batch, 4)  # the check runs the model whole
    assert calls == [1, 2]
    calls.clear()
    am.forward(batch, 4)
    am.forward_edges(batch, 4, None)
    assert calls == []
    _whole(am, batch, 4)
    assert calls == [1, 2]


def test_the_taps_are_inert_outside_the_ingests_forward(model_dirs):
    """Calling the model directly (as the benchmark's forward-only loop does), on this thread or
    another, runs it whole and returns its attentions, also once the taps are checked."""
    import threading

    import torch

    from headdb.model import AttentionModel

    am = AttentionModel(str(model_dirs["bert"]))
    batch = am.encode(_sentences(), truncate=False)
    am.forward(batch, 4)
    assert am.stops_early
    inputs = am._inputs(batch)
    got = {}

    def run(name):
        with torch.inference_mode():
            got[name] = am.model(**inputs, output_attentions=True, return_dict=True)

    run("main")
    t = threading.Thread(target=run, args=("thread",))
    t.start()
    t.join()
    for out in got.values():
        assert len(out.attentions) == am.n_layers and out.last_hidden_state is not None
    assert am.stops_early


def test_taps_that_see_other_tensors_fall_back_to_the_whole_forward(model_dirs, monkeypatch):
    """Taps on the wrong modules (here each layer's output, index 0) fail the first batch's
    check; the model then runs whole, with the same results as a model without taps."""
    import headdb.model as model_mod
    from transformers.models.bert.modeling_bert import BertLayer

    monkeypatch.setattr(model_mod, "_attention_specs", lambda model: [(BertLayer, None, None, 0)])
    am = model_mod.AttentionModel(str(model_dirs["bert"]))
    batch = am.encode(_sentences(), truncate=False)
    assert am._taps == "unchecked"
    got = am.forward(batch, 4)
    assert am._taps is False and not am.stops_early
    want = _whole(am, batch, 4)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_no_declared_attention_modules_runs_the_model_whole(model_dirs, monkeypatch):
    import headdb.model as model_mod

    monkeypatch.setattr(model_mod, "_attention_specs", lambda model: [])
    am = model_mod.AttentionModel(str(model_dirs["bert"]))
    assert am._taps is False
    batch = am.encode(_sentences(), truncate=False)
    got = am.forward(batch, 4)
    assert not am.stops_early and got[0].shape[1] == am.n_layers


def test_the_setting_runs_every_model_whole(model_dirs, monkeypatch):
    import headdb.model as model_mod

    monkeypatch.setattr(model_mod, "STOP_AT_LAST_MAP", False)
    am = model_mod.AttentionModel(str(model_dirs["bert"]))
    batch = am.encode(_sentences(), truncate=False)
    calls = []
    am.model.encoder.layer[-1].intermediate.register_forward_hook(lambda *a: calls.append(1))
    am.forward(batch, 4)
    am.forward(batch, 4)
    assert am._taps is False and calls == [1, 1]


def test_a_forward_that_ends_before_the_last_map_runs_whole_from_then_on(model_dirs):
    """Were the taps to see fewer maps than layers once checked, the batch is run again whole."""
    from headdb.model import AttentionModel

    am = AttentionModel(str(model_dirs["bert"]))
    batch = am.encode(_sentences(), truncate=False)
    want = am.forward(batch, 4)
    assert am.stops_early
    am.n_layers += 1  # the taps now wait for a map that never comes
    try:
        got = am.forward(batch, 4)
    finally:
        am.n_layers -= 1
    assert am._taps is False
    np.testing.assert_array_equal(got[0], want[0])


def test_a_cpu_ranks_each_map_as_the_model_makes_it(model_dirs):
    """On a CPU each layer's map is ranked inside the forward and let go before the next layer
    runs: a batch holds one layer's maps at a time, not all of them. The ranking is the one made
    after the whole forward, ties included (bfloat16 maps tie often)."""
    import weakref

    import torch

    from headdb.model import AttentionModel, _top_keys

    am = AttentionModel(str(model_dirs["bert"]), dtype="bfloat16")
    batch = am.encode(_sentences(), truncate=False)
    am.forward(batch, 4)
    assert am.stops_early
    live, seen = [], []

    def keep(module, args, output):  # registered after the taps: runs after each layer's ranking
        seen.append(weakref.ref(output[1]))

    def count(module, args):  # as each layer starts: how many earlier maps are still held
        live.append(sum(r() is not None for r in seen))

    attention = [layer.attention.self for layer in am.model.encoder.layer]
    hooks = [m.register_forward_hook(keep) for m in attention] + [m.register_forward_pre_hook(count) for m in attention]
    try:
        got = am.forward(batch, 4)
    finally:
        for h in hooks:
            h.remove()
    assert am.n_layers >= 2 and len(seen) == am.n_layers - 1  # the last layer's tap stops the forward
    assert live == [0] * am.n_layers  # no earlier layer's map is held when a layer starts
    assert all(r() is None for r in seen)
    maps = _whole_maps(am, batch)
    values, indices = _top_keys(torch, maps, 4)
    stacked = torch.stack(maps, dim=1)
    assert bool(((stacked[..., 1:] == stacked[..., :-1]) & (stacked[..., 1:] > 0)).any())  # the maps hold ties
    # every input's own query rows, which the ingest stores: the padding's rows are left in topk's order
    real = np.arange(got[0].shape[3])[None, :] < np.array([e.length for e in batch])[:, None]
    rows = np.broadcast_to(real[:, None, None, :], got[0].shape[:4])
    assert not rows.all()
    np.testing.assert_array_equal(got[0][rows], values.numpy()[rows])
    np.testing.assert_array_equal(got[1][rows], indices.to(torch.int16).numpy()[rows])


def _whole_maps(am, batch):
    import torch

    with torch.inference_mode():
        return am.model(**am._inputs(batch), output_attentions=True, return_dict=True).attentions


def test_float16_rows_keep_k_keys_where_real_keys_weigh_0(tmp_path):
    """float16 underflows some real keys' weights to exactly 0, as the padding's are: top-k
    picked padding among those zeros, which the edge selection drops, so 311 rows of the first
    40 EWT sentences kept fewer than 8 keys in batches of 32 (none one input at a time, where
    there is no padding). Ties at 0 rank by key position as any other tie: the real keys first."""
    import duckdb

    from headdb.ingest import ingest
    from headdb.resources import sample_corpus

    db = tmp_path / "fp16.db"
    ingest(db, sample_corpus(), limit=40, dtype="float16", batch_size=32, progress=False)
    con = duckdb.connect(str(db), read_only=True)
    try:
        short = con.execute(
            "SELECT count(*) FROM (SELECT run_id, sentence_id, layer, head, query_pos, count(*) AS kept FROM edges "
            "GROUP BY ALL) AS r JOIN run_sentences AS s USING (run_id, sentence_id) "
            "WHERE r.kept < least(8, s.n_tokens)").fetchone()[0]
        zeros = con.execute("SELECT count(*) FROM edges WHERE weight = 0").fetchone()[0]
    finally:
        con.close()
    assert zeros > 0 and short == 0, (zeros, short)
