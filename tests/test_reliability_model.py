"""Reliability (#6): model loading fails at once with one clear line; no remote code ever runs.

Cases that build a model folder with torch are `slow`; the rest import nothing heavy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

import headdb
from headdb.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
HEADDB = str(Path(sys.executable).with_name("headdb"))
SAMPLE = ROOT / "tests" / "data" / "sample.conllu"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty Hugging Face cache, as on a fresh offline machine."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    return tmp_path


def load(name: str) -> tuple[ModelError, float]:
    from headdb.model import AttentionModel

    t0 = time.perf_counter()
    with pytest.raises(ModelError) as info:
        AttentionModel(str(name))
    return info.value, time.perf_counter() - t0


def refused_before_the_weights(name: str, monkeypatch) -> ModelError:
    """The ModelError of loading ``name``, which must come before the model's weights load (a
    check of what ran, not of a clock that a loaded machine makes wrong)."""
    import transformers

    def weights(*args, **kwargs):
        raise AssertionError("the model's weights were loaded before the refusal")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", weights)
    return load(name)[0]


def test_unknown_model_name_offline_fails_at_once(offline):
    err, seconds = load("no-such-org/no-such-model")
    assert seconds < 2.0, f"took {seconds:.1f} s"
    assert "not a local folder and not in the Hugging Face cache" in str(err)
    assert "download=True" in str(err)
    # the command it names exists where headdb is installed (huggingface_hub's `hf`)
    assert "(`hf download no-such-org/no-such-model`)" in str(err)
    assert (Path(sys.executable).parent / "hf").exists()
    for path in ("./no/such/folder", "/no/such/folder", "models/tiny/v2"):  # a path: no hub command for it
        err, _ = load(path)
        assert str(err) == f"{path}: no such model folder"


def test_unknown_model_name_cli_is_one_line_and_quick(offline):
    db = offline / "x.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(offline / "hf-home")}
    command = [HEADDB, "ingest", str(db), str(SAMPLE), "--model", "bert-base-uncased", "-q"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: model 'bert-base-uncased': it is not a local folder")
    assert proc.stderr.count("\n") == 1
    assert not db.exists()
    # quick: the error comes before torch is imported (Python's import log, not a clock, which a
    # loaded machine makes wrong)
    traced = subprocess.run(command, capture_output=True, text=True, env=env | {"PYTHONPROFILEIMPORTTIME": "1"},
                            timeout=120)
    imported = [line.rsplit("|", 1)[-1].strip() for line in traced.stderr.splitlines() if line.startswith("import time:")]
    assert "headdb.ingest" in imported and "torch" not in imported and "transformers" not in imported


def test_not_a_model_folder(offline):
    empty = offline / "empty"
    empty.mkdir()
    assert "no config.json" in str(load(empty)[0])
    f = offline / "file.bin"
    f.write_bytes(b"x")
    assert "expected a model folder" in str(load(f)[0])
    # sentence-transformers' older layout: the model in a module's folder, not at the top
    st = offline / "st"
    (st / "0_Transformer").mkdir(parents=True)
    (st / "0_Transformer" / "config.json").write_text("{}")
    (st / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "0_Transformer"}]')
    assert str(load(st)[0]) == (f"{st}: no config.json; the Hugging Face model is in {st / '0_Transformer'} "
                                "(a subfolder, as sentence-transformers and diffusers folders keep it): pass that folder")


def test_folder_without_weights(offline, default_model_dir, monkeypatch):
    folder = offline / "no-weights"
    folder.mkdir()
    for name in ("config.json", *TOKENIZER_FILES):
        shutil.copy(default_model_dir / name, folder / name)
    assert "no weight files" in str(refused_before_the_weights(folder, monkeypatch))


def test_broken_config(offline):
    folder = offline / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    assert "cannot read the model config" in str(load(folder)[0])


def test_trust_remote_code_is_never_on():
    """Every from_pretrained in headdb says trust_remote_code=False, and nothing turns it on."""
    calls = 0
    for path in (ROOT / "headdb").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"trust_remote_code\s*=\s*(?!False)", text), path
        for m in re.finditer(r"\.from_pretrained\(", text):
            # the call's arguments, up to the matching parenthesis
            depth, i = 1, m.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            args = text[m.end():i]
            if "save_pretrained" in args:
                continue
            calls += 1
            assert "trust_remote_code=False" in args, f"{path}: from_pretrained({args[:80]}...)"
    assert calls >= 3


# --- slow: folders built from a config (no download) --------------------------------------------


def _tiny_bert(folder: Path, **config_extra) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(**{"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "intermediate_size": 64, "max_position_embeddings": 64, **config_extra})
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_decoder_only_model_is_refused(offline, monkeypatch):
    from transformers import GPT2Config, GPT2Model

    folder = offline / "gpt2"
    GPT2Model(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=128, n_positions=64,
                         bos_token_id=0, eos_token_id=0)).save_pretrained(folder)
    err = refused_before_the_weights(folder, monkeypatch)
    assert "decoder-only" in str(err) and "encoders" in str(err)


@pytest.mark.slow
def test_vocab_only_folder_gets_a_fast_tokenizer_that_aligns(offline, default_model_dir):
    """transformers 5 builds a fast (Rust) BERT tokenizer from vocab.txt alone, so a folder
    with only config + weights + vocab.txt works, with the same pieces as tokenizer.json."""
    from headdb.corpus import Segment, Sentence, Word
    from headdb.model import AttentionModel

    folder = _tiny_bert(offline / "vocab-only")
    shutil.copy(default_model_dir / "vocab.txt", folder / "vocab.txt")
    am = AttentionModel(str(folder))
    assert am.tokenizer.is_fast
    words = tuple(Word(f) for f in ["Unbelievably", ",", "tokenization", "works"])
    (enc,) = am.encode([Sentence(0, (Segment(words, "x", 1),))], truncate=False)
    assert enc.word_pos[0] is None and enc.word_pos[-1] is None
    assert sorted({w for w in enc.word_pos if w is not None}) == [0, 1, 2, 3]
    ref = AttentionModel(str(default_model_dir))
    (enc_ref,) = ref.encode([Sentence(0, (Segment(words, "x", 1),))], truncate=False)
    assert enc.pieces == enc_ref.pieces


@pytest.mark.slow
def test_model_without_a_fast_tokenizer_is_refused(offline, monkeypatch):
    """CANINE's tokenizer exists only in Python: refused, since alignment needs word_ids."""
    folder = _tiny_bert(offline / "slow-only")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CanineTokenizer"}))
    assert "needs a fast (Rust) tokenizer" in str(refused_before_the_weights(folder, monkeypatch))


def test_a_sentencepiece_model_without_tokenizer_json_says_which_packages_convert_it(offline):
    """DeBERTa-v3 ships spm.model and no tokenizer.json. Without sentencepiece and protobuf,
    transformers 5 fell back to reading it as a tiktoken file and the error said to install
    tiktoken, which cannot read it either."""
    from transformers.utils import is_protobuf_available, is_sentencepiece_available

    from headdb.model import load_tokenizer

    if is_sentencepiece_available() and is_protobuf_available():
        pytest.skip("sentencepiece and protobuf are installed: transformers converts the model file")
    folder = offline / "deberta-v3"
    folder.mkdir()
    (folder / "spm.model").write_bytes(b"\x0a\x0b\x0a\x05[PAD]\x15\x00\x00\x00\x00")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "DebertaV2Tokenizer"}))
    with pytest.raises(ModelError) as info:
        load_tokenizer(folder)
    message = str(info.value)
    assert "SentencePiece model (spm.model) without a tokenizer.json" in message
    assert "pip install" in message and "sentencepiece" in message and "tiktoken" not in message


EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


@pytest.mark.slow
def test_auto_map_on_a_native_model_is_ignored_and_never_run(offline, default_model_dir):
    folder = _tiny_bert(offline / "automap")
    for name in TOKENIZER_FILES:
        shutil.copy(default_model_dir / name, folder / name)
    marker = offline / "remote-code-ran"
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    tcfg = json.loads((folder / "tokenizer_config.json").read_text())
    tcfg["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tcfg))
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    from headdb.model import AttentionModel

    am = AttentionModel(str(folder))
    assert type(am.model).__name__ == "BertModel"
    assert not marker.exists()


@pytest.mark.slow
def test_custom_architecture_needing_remote_code_is_refused(offline):
    folder = _tiny_bert(offline / "custom")
    marker = offline / "remote-code-ran"
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="evilbert", architectures=["EvilModel"],
               auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    err, seconds = load(folder)
    assert "never runs" in str(err) and "trust_remote_code is off" in str(err)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["gpt2", "slow-only", "no-weights", "embeddings-smaller-than-vocab"])
def test_cli_model_errors_are_one_line_and_write_nothing(offline, default_model_dir, case):
    folder = offline / case
    if case == "embeddings-smaller-than-vocab":
        # the bundled tokenizer (30,522 ids) on a model with 300 embedding rows: tokens added to a
        # tokenizer without resize_token_embeddings; it failed mid-ingest with "index out of range"
        _tiny_bert(folder, vocab_size=300)
        for name in TOKENIZER_FILES:
            shutil.copy(default_model_dir / name, folder / name)
    elif case == "gpt2":
        from transformers import GPT2Config, GPT2Model

        GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32,
                             bos_token_id=0, eos_token_id=0)).save_pretrained(folder)
    elif case == "slow-only":
        _tiny_bert(folder)
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CanineTokenizer"}))
    else:
        folder.mkdir()
        shutil.copy(default_model_dir / "config.json", folder / "config.json")
    db = offline / "store.db"
    subprocess.run([HEADDB, "init", str(db)], check=True, capture_output=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(offline / "hf-home")}
    proc = subprocess.run([HEADDB, "ingest", str(db), str(SAMPLE), "--model", str(folder), "-q"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    if case == "embeddings-smaller-than-vocab":
        assert "token ids up to 30521, but the model's embeddings have 300 rows" in proc.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM corpora)").fetchone()[0] == 0
    con.close()


def _with_bert_tokenizer(model, folder: Path, default_model_dir: Path) -> Path:
    model.eval().save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_model_dir / name, folder / name)
    return folder


@pytest.mark.slow
def test_models_whose_maps_are_not_an_encoders_are_refused_before_anything_is_stored(offline, default_model_dir,
                                                                                    monkeypatch):
    """A short probe input runs through every model at load: Longformer's sliding-window maps
    were stored as if their columns were keys, SqueezeBERT's pre-softmax scores as weights, and a
    decoder saved as its base model (GPT-Neo, Gemma, Qwen...) slipped past the config checks and
    stored causal maps; each failed or went wrong only after the run was written. CANINE, which
    has no embedding table, failed with a traceback from the vocabulary check before the probe."""
    import torch
    from transformers import (CanineConfig, CanineModel, GPTNeoConfig, GPTNeoModel, LongformerConfig, LongformerModel,
                              SqueezeBertConfig, SqueezeBertModel)

    torch.manual_seed(0)
    small = {"vocab_size": 30522, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}
    cases = {
        "longformer": (LongformerModel(LongformerConfig(**small, num_hidden_layers=2, attention_window=4,
                                                        max_position_embeddings=64, pad_token_id=0)),
                       "attention maps have the shapes"),
        "squeezebert": (SqueezeBertModel(SqueezeBertConfig(**small, num_hidden_layers=2, embedding_size=32,
                                                           max_position_embeddings=64)),
                        "not softmax weights"),
        "gpt-neo": (GPTNeoModel(GPTNeoConfig(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4,
                                             attention_types=[[["global"], 2]], max_position_embeddings=64)),
                    "attention is causal"),
        # no embedding table (it hashes characters): get_input_embeddings raised, a traceback
        "canine": (CanineModel(CanineConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=64, num_hash_buckets=64, downsampling_rate=4)),
                   "attention maps have the shapes"),
    }
    db = offline / "never.db"
    for name, (model, words) in cases.items():
        folder = _with_bert_tokenizer(model, offline / name, default_model_dir)
        with pytest.raises(ModelError, match=words):
            headdb.ingest(db, SAMPLE, model=str(folder), limit=2)
        assert not db.exists(), name


@pytest.mark.slow
def test_a_model_that_fails_only_in_half_precision_is_told_to_run_in_float32(offline, default_model_dir):
    """DeBERTa (v1) mixes float32 buffers into its bfloat16 / float16 matmuls and fails on any
    input; the refusal said "headdb needs an encoder that returns every layer's attention map", as
    if the model could not be analysed at all, while it runs in float32."""
    import torch
    from transformers import AutoModel, DebertaConfig, DebertaModel

    torch.manual_seed(0)
    model = DebertaModel(DebertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=64, relative_attention=True,
                                       max_relative_positions=16, pos_att_type=["c2p", "p2c"], type_vocab_size=0))
    folder = _with_bert_tokenizer(model, offline / "deberta", default_model_dir)
    half = AutoModel.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="eager",
                                     trust_remote_code=False)
    with torch.inference_mode():
        try:
            half(input_ids=torch.tensor([[101, 2000, 102]]))
            pytest.skip("this transformers runs DeBERTa in bfloat16")
        except RuntimeError:
            pass
    db = offline / "never.db"
    with pytest.raises(ModelError, match=r"fails on a short input in dtype='bfloat16' \(RuntimeError: .*\) and runs "
                                         r"in float32: pass dtype='float32' \(the default\)$"):
        headdb.ingest(db, SAMPLE, model=str(folder), dtype="bfloat16", limit=2)
    assert not db.exists()
    assert headdb.ingest(db, SAMPLE, model=str(folder), limit=2).sentences == 2


@pytest.mark.slow
def test_an_encoder_saved_alone_from_an_encoder_decoder_runs_as_itself(offline, default_model_dir):
    """A T5EncoderModel checkpoint (T5's encoder alone, is_encoder_decoder false) was loaded by
    AutoModel as the whole T5 encoder-decoder, which failed on the probe without decoder inputs
    ("You must specify exactly one of input_ids or inputs_embeds ... headdb needs an encoder")."""
    import numpy as np
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=30522, d_model=32, d_kv=8, num_layers=2, num_heads=4, d_ff=64))
    folder = _with_bert_tokenizer(model, offline / "t5-encoder", default_model_dir)
    db = offline / "t5.db"
    assert headdb.ingest(db, SAMPLE, model=str(folder), dense=True, limit=1).sentences == 1
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT model_type, n_layers, n_heads FROM runs").fetchone() == ("t5", 2, 4)
    ids = [i for (i,) in con.execute("SELECT piece FROM tokens ORDER BY token_pos").fetchall()]
    edges = con.execute("SELECT layer, head, query_pos, key_pos, weight FROM edges").fetchall()
    con.close()
    from transformers import AutoTokenizer

    input_ids = torch.tensor([AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(ids)])
    eager = T5EncoderModel.from_pretrained(folder, attn_implementation="eager", trust_remote_code=False).eval()
    with torch.inference_mode():
        maps = torch.stack(eager(input_ids=input_ids, output_attentions=True).attentions)[:, 0].numpy()
    stored = np.zeros_like(maps)
    for layer, head, q, k, w in edges:
        stored[layer, head, q, k] = w
    assert np.allclose(stored, maps, atol=1e-6)
    # transformers 4 saved such an encoder's config with T5's is_encoder_decoder true (hub checkpoints
    # as FLUX's and DeepFloyd's text encoders): it was refused as an encoder-decoder
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "is_encoder_decoder": True}))
    assert headdb.ingest(offline / "t5-v4.db", SAMPLE, model=str(folder), dense=True, limit=1).sentences == 1
    with duckdb.connect(str(offline / "t5-v4.db"), read_only=True) as con:
        assert con.execute("SELECT layer, head, query_pos, key_pos, weight FROM edges").fetchall() == edges
    # the whole encoder-decoder is still refused
    (folder / "config.json").write_text(json.dumps({**config, "is_encoder_decoder": True,
                                                     "architectures": ["T5ForConditionalGeneration"]}))
    with pytest.raises(ModelError, match="encoder-decoder models are not supported"):
        headdb.ingest(offline / "never.db", SAMPLE, model=str(folder), limit=1)


@pytest.mark.slow
def test_pairs_get_segment_ids_where_the_model_has_segment_embeddings(offline, default_model_dir):
    """transformers 5 dropped token_type_ids from the inputs of ALBERT's, RoFormer's and XLNet's
    tokenizers, so pairs ran as one segment although the model has segment embeddings."""
    from headdb.corpus import Segment, Sentence, Word
    from headdb.model import AttentionModel

    folder = _tiny_bert(offline / "types")
    for name in ("vocab.txt", "tokenizer.json", "special_tokens_map.json"):
        shutil.copy(default_model_dir / name, folder / name)
    config = json.loads((default_model_dir / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"model_input_names": ["input_ids",
                                                                                            "attention_mask"]}))
    am = AttentionModel(str(folder))
    assert "token_type_ids" not in am.tokenizer.model_input_names
    pair = Sentence(0, (Segment((Word("a"), Word("cat")), "a cat", 1), Segment((Word("sat"),), "sat", 2)))
    (enc,) = am.encode([pair], truncate=False)
    assert enc.token_type_ids == [0, 0, 0, 0, 1, 1]  # [CLS] a cat [SEP] | sat [SEP]
    assert am._inputs([enc])["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1]]


@pytest.mark.slow
def test_pairs_run_on_a_model_with_one_segment_embedding_and_a_bert_tokenizer(offline, default_model_dir):
    """klue/roberta-base pairs a RoBERTa (type_vocab_size 1) with a BERT tokenizer, which gives
    segment B token type 1: every pair failed mid-ingest with "index out of range in self" and a
    failed run. Such a model gets no token types, as its users pass return_token_type_ids=False."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    model = RobertaModel(RobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=66, pad_token_id=0,
                                       type_vocab_size=1))
    folder = _with_bert_tokenizer(model, offline / "klue-like", default_model_dir)
    r = headdb.ingest(offline / "k.db", ROOT / "tests" / "data" / "sample.tsv", model=str(folder))
    assert r.sentences > 0 and r.skipped == 0


def test_a_generic_byte_level_tokenizer_gets_its_prefix_space(tmp_path):
    """ModernBERT ships a generic PreTrainedTokenizerFast over a byte-level BPE without a prefix
    space, which takes no add_prefix_space: every pre-split word was encoded as if glued to the
    one before (no word started with a Ġ piece). Its pre-tokenizer now gets the prefix space,
    and a tokenizer that still splits otherwise than running text is refused."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from headdb.model import _splits_as_text, load_tokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["The cat sat on the mat.", "Unbelievably loud dogs bark at night."] * 10,
                            vocab_size=300, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>", cls_token="<s>", sep_token="</s>",
                            mask_token="<mask>").save_pretrained(tmp_path)
    assert not _splits_as_text(AutoTokenizer.from_pretrained(tmp_path))
    tok = load_tokenizer(tmp_path)
    assert _splits_as_text(tok)
    assert tok(["The", "cat"], is_split_into_words=True, add_special_tokens=False).tokens()[-1] == "\u0120cat"


@pytest.mark.slow
def test_a_tokenizer_that_gives_no_word_any_piece_is_refused(offline):
    """A RoBERTa tokenizer whose vocabulary holds only its special tokens (built from files it did
    not read: transformers 5's RobertaTokenizerFast(vocab_file=..., merges_file=...)) gives no
    piece to any word and has no unknown token to fall back on: each input was stored as <s> </s>
    alone, with no more than a warning that 698 words of 30 sentences got no word piece."""
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    (offline / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}))
    (offline / "merges.txt").write_text("#version: 0.2\n")
    tok = RobertaTokenizerFast(vocab_file=str(offline / "vocab.json"), merges_file=str(offline / "merges.txt"))
    folder = offline / "roberta"
    RobertaModel(RobertaConfig(vocab_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert tok(["The", "probe"], is_split_into_words=True).word_ids() == [None, None]
    db = offline / "never.db"
    with pytest.raises(ModelError, match=r"its tokenizer gives no word piece to any word of \"The probe reads"):
        headdb.ingest(db, SAMPLE, model=str(folder), limit=2)
    assert not db.exists()


@pytest.mark.slow
def test_a_folder_without_its_vocabulary_files_is_refused(offline, default_model_dir):
    """A BERT folder copied without vocab.txt and tokenizer.json (its tokenizer_config.json kept):
    transformers 5 builds a tokenizer of the special tokens alone, and every word of every input
    was stored as [UNK], without a word."""
    folder = _tiny_bert(offline / "no-vocab")
    shutil.copy(default_model_dir / "tokenizer_config.json", folder / "tokenizer_config.json")
    db = offline / "never.db"
    with pytest.raises(ModelError, match=r"gives every word of \"The probe reads each word .\" the unknown token "
                                         r"\[UNK\] \(its vocabulary holds only its 5 special tokens\): are its vocabulary files"):
        headdb.ingest(db, SAMPLE, model=str(folder), limit=2)
    assert not db.exists()


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["data2vec-text", "roberta-prelayernorm", "xlm-roberta-xl", "ibert", "luke",
                                        "xmod"])
def test_models_whose_positions_start_after_the_padding_index_run_an_input_of_their_maximum(
        offline, roberta_style_dir, model_type):
    """Like RoBERTa's, these models' position ids start after the padding index, so N position
    embeddings hold N - pad_token_id - 1 tokens. Only RoBERTa, XLM-R, CamemBERT and MPNet were
    known: with a tokenizer that sets no model_max_length the maximum was taken as N, and an
    input of N - 1 or N tokens failed mid-ingest (`index 24 is out of bounds`, a failed run)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from headdb.corpus import Segment, Sentence, Word
    from headdb.model import AttentionModel, peek

    folder = offline / model_type
    extra = {"luke": {"entity_vocab_size": 4, "entity_emb_size": 8},
             "xmod": {"languages": ["en_XX"], "default_language": "en_XX"}}.get(model_type, {})
    config = AutoConfig.for_model(model_type, vocab_size=300, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=12,
                                  pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, **extra)
    torch.manual_seed(0)
    AutoModel.from_config(config).eval().save_pretrained(folder)
    for f in roberta_style_dir.iterdir():
        shutil.copy(f, folder / f.name)
    am = AttentionModel(str(folder))
    assert am.max_length == 10 and peek(str(folder), None) == (am.model_hash, 10, am.tokenizer_hash, am.config_hash)
    words = tuple(Word(w) for w in "the cat sat on the mat the cat sat on".split())
    (enc,) = am.encode([Sentence(0, (Segment(words, "", 1),))], truncate=True)
    assert (enc.status, enc.length) == ("truncated", 10)
    weights, _ = am.forward([enc], k=3)  # the longest input the run takes goes through the model
    assert weights.shape == (1, 2, 4, 10, 3)


def test_the_natural_max_length_ignores_a_tokenizers_no_limit_value():
    """A tokenizer without a limit of its own says ``model_max_length`` 10**30 (transformers'
    VERY_LARGE_INTEGER): the maximum is then the position embeddings', or 512 where the config
    has none; a tokenizer's real limit below them is kept."""
    from headdb.model import _natural_max_length

    no_limit = int(1e30)
    assert _natural_max_length(no_limit, None, None, "bert") == 512
    assert _natural_max_length(no_limit, 128, None, "bert") == 128
    assert _natural_max_length(64, 128, None, "bert") == 64
    assert _natural_max_length(no_limit, 130, 1, "roberta") == 128


def test_a_model_returning_fewer_maps_than_its_layers_is_refused_before_anything_is_stored(tiny_bert_dir, tmp_path,
                                                                                          monkeypatch):
    """The load-time probe counts the maps as well as their shapes: a model whose forward leaves a
    layer's map out (here BERT's last, cut off by a wrapped forward) returns maps of the right shape,
    one fewer than config.json's num_hidden_layers, and its layers would be stored misnumbered or
    the ingest would fail only after the run was written."""
    from transformers import BertModel

    real = BertModel.forward

    def fewer(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if getattr(out, "attentions", None):
            out.attentions = out.attentions[:-1]
        return out

    monkeypatch.setattr(BertModel, "forward", fewer)
    db = tmp_path / "never.db"
    with pytest.raises(ModelError, match=re.escape("(1 maps), not one [1, 4, ") + r".*for each of its 2 layers"):
        headdb.ingest(db, SAMPLE, model=str(tiny_bert_dir), limit=2)
    assert not db.exists()
