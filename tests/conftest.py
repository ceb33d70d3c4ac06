"""Shared fixtures. Fast tests load no model weights; `slow` ones do (pytest -m slow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="Rewrite golden files (tests/golden, tests/data/*.expected.json) from the current code.")


@pytest.fixture
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from headdb.resources import default_model

    return Path(default_model())


@pytest.fixture(scope="session")
def tokenizer(default_model_dir):
    """The bundled model's fast tokenizer (no weights)."""
    from headdb.model import load_tokenizer

    return load_tokenizer(default_model_dir)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, default_model_dir) -> Path:
    """A random-init 2-layer BERT saved with the bundled tokenizer: a local model folder, no download."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(default_model_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def roberta_style_dir(tmp_path_factory):
    """A byte-level BPE tokenizer with RoBERTa's special tokens, trained on the spot (no download)."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["The cat sat on the mat.", "Unbelievably loud dogs bark at night."] * 10,
                            vocab_size=300, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                               sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                               mask_token="<mask>")
    folder = tmp_path_factory.mktemp("roberta-style-tokenizer")
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def unigram_style_dir(tmp_path_factory):
    """An XLM-R style SentencePiece (Unigram, Metaspace) tokenizer, trained on the spot (no download):
    its vocabulary holds the special tokens as pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaTokenizerFast

    tk = Tokenizer(models.Unigram())
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.train_from_iterator(["The cat sat on the mat.", "Unbelievably loud dogs bark at night."] * 10,
                           trainers.UnigramTrainer(vocab_size=100, unk_token="<unk>", show_progress=False,
                                                   special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tk.token_to_id("<s>")), ("</s>", tk.token_to_id("</s>"))])
    tok = XLMRobertaTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                  cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    folder = tmp_path_factory.mktemp("unigram-style-tokenizer")
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory, roberta_style_dir) -> Path:
    """A random-init 2-layer RoBERTa on the byte-level BPE tokenizer above (no download)."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    folder = tmp_path_factory.mktemp("tiny-roberta")
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=40, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2, type_vocab_size=1)
    RobertaModel(config).eval().save_pretrained(folder)
    for f in roberta_style_dir.iterdir():
        shutil.copy(f, folder / f.name)
    return folder
