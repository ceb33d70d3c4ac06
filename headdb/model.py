"""Attention extraction: the only module that imports torch and transformers.

Loads any Hugging Face encoder with a fast tokenizer (eager attention, no remote code, no
download unless asked), aligns word pieces to words through the tokenizer's ``word_ids`` /
``sequence_ids``, and runs batches, returning each attention row's top-k keys.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import threading
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from headdb.corpus import Sentence
from headdb.errors import ModelError, flag, given, option
from headdb.sparsify import BatchEdges, batch_edges

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
_DTYPES = ("float32", "bfloat16", "float16")
_DECODER_ARCH_SUFFIXES = ("ForCausalLM", "LMHeadModel")


#: Stop the forward at the last layer's attention map (see ``AttentionModel._attention_maps``);
#: False runs every model whole, as ``output_attentions=True`` does (for comparisons).
STOP_AT_LAST_MAP = True


class _LastMap(Exception):
    """Raised by the tap on the last layer's attention: nothing later in the forward (that layer's
    value mixing, its feed-forward block, a pooler) can change an attention map."""


#: On a CPU in float32, run the token-wise parts of BERT-shaped layers (the projections, the
#: feed-forward block, the layer norms) on the batch's real tokens only, not on its padding
#: (``AttentionModel._packed_maps``); checked bit for bit against the model's own forward on
#: the first batch that packs (padding, ``PACK_MIN_TOKENS`` real tokens). False runs the model's
#: own padded forward (for comparisons).
PACK_TOKENS = True
#: A batch is packed only where its real tokens number at least this many: with few rows a BLAS
#: may take another path (here 1-3, 5-7 and 9-11 rows gave other last bits than the same rows among
#: more; every count from 12 to 2,600 gave the same), and such batches have little padding to save.
PACK_MIN_TOKENS = 64
#: A layer is packed only where every linear map's widths are multiples of this many floats. With
#: a feed-forward width of 150, 250 or 37 (hidden 36, 100, 33), 3 to 8 threads gave other last bits
#: than the padded forward on most batches of EWT sentences and the same on a few, so the check on
#: one batch could pass and later batches differ; every width that is a multiple of 4 (36 to 1,024
#: wide, feed-forward 64 to 4,096, 1 to 16 threads) gave the same bits on every batch tried.
PACK_WIDTH_MULTIPLE = 8


class _FirstLayer(Exception):
    """Raised by the pre-hook on the first layer in a packed forward: the model's own embeddings
    and attention mask, as its first layer receives them."""

    def __init__(self, hidden, mask):
        super().__init__()
        self.hidden, self.mask = hidden, mask


def _attention_specs(model) -> list[tuple[type | None, str | None, str | None, int]]:
    """(module class, class-name suffix, layer name, output index) of the modules whose output
    transformers records as ``attentions`` (its ``_can_record_outputs``), resolved as
    transformers resolves them; empty where the model declares none."""
    specs = (getattr(model, "_can_record_outputs", None) or {}).get("attentions")
    if specs is None:
        return []
    out = []
    for spec in specs if isinstance(specs, list) else [specs]:
        if isinstance(spec, type):
            out.append((spec, None, None, 1))
        elif isinstance(spec, str):
            out.append((None, spec, None, 1))
        elif hasattr(spec, "target_class"):  # transformers' OutputRecorder
            out.append((spec.target_class, spec.class_name, spec.layer_name, int(spec.index)))
    return out


@dataclass
class Encoded:
    """One tokenized input, aligned to its words (positions 0-based, specials included)."""

    sentence: Sentence
    input_ids: list[int]
    token_type_ids: list[int] | None
    pieces: list[str]
    word_pos: list[int | None]  # over the whole input: segment B's words follow A's
    segment: list[int | None]
    special: list[str | None]  # cls | sep | other for special tokens
    n_tokens_full: int  # before truncation
    status: str  # ok | truncated | skipped
    #: pieces of words with a special token's id: a word "<s>" that a SentencePiece vocabulary
    #: holds as a piece (split_special_tokens keeps BERT's and byte-level BPE's words text)
    special_in_words: int = 0

    @property
    def length(self) -> int:
        return len(self.input_ids)


#: The weight files transformers loads from a model folder, in its order of preference (a
#: single file, else a sharded one's index; safetensors first): modeling_utils'
#: _get_resolved_checkpoint_files for a local folder without a variant
_LOADED_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


def _loaded_weight_files(folder: Path) -> list[Path]:
    """The weight files loading the model reads: one file, or a sharded checkpoint's shards (its
    index names them; the shards alone hold every tensor by name, as the folder-wide hash
    hashed them). A Trainer's checkpoint-*/ subfolders, its optimizer.pt and training_args.bin,
    and a hub folder's other frameworks' weights (tf_model.h5) are not read."""
    chosen = None
    try:  # config.json may name the file (transformers_weights), which transformers then loads
        explicit = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("transformers_weights")
    except (OSError, ValueError, AttributeError):
        explicit = None
    if isinstance(explicit, str) and (folder / explicit).is_file():
        chosen = folder / explicit
    else:
        chosen = next((folder / name for name in _LOADED_WEIGHTS if (folder / name).is_file()), None)
    if chosen is None:
        raise ModelError(f"{folder}: no weight files (model.safetensors, pytorch_model.bin or a sharded "
                         "checkpoint's index) in the model folder")
    if not chosen.name.endswith(".index.json"):
        return [chosen]
    try:
        weight_map = json.loads(chosen.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted({folder / name for name in weight_map.values()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ModelError(f"{chosen}: not a sharded checkpoint's index (a JSON object whose weight_map names "
                         "each tensor's file)") from None
    missing = [p.name for p in shards if not p.is_file()]
    if missing or not shards:
        raise ModelError(f"{chosen}: its shard{'s' if len(missing) != 1 else ''} "
                         f"{', '.join(missing) or '(none named)'} not in the model folder")
    return shards


#: :func:`hash_files`' recent results, by the files' paths and what ``stat`` says of them
_HASHED: dict[tuple, str] = {}


def hash_files(folder: Path, files: list[Path]) -> str:
    """sha256 over each file's path within ``folder`` and its bytes, in path order.

    A result is kept for the process while every file keeps its size, modification time (in
    nanoseconds), inode and device: an ingest's "already complete" check (:func:`peek`) and the
    model's load hash the same weight files, and for a large model reading them took seconds
    each time (bert-large's 1.3 GB)."""
    files = sorted(files)
    try:
        key = (str(folder), *((str(p), (s := p.stat()).st_size, s.st_mtime_ns, s.st_ino, s.st_dev) for p in files))
    except OSError:
        key = None
    if key is not None and key in _HASHED:
        return _HASHED[key]
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    if key is not None:
        if len(_HASHED) >= 16:
            _HASHED.pop(next(iter(_HASHED)))
        _HASHED[key] = digest
    return digest


def _weights_hash(folder: Path) -> str:
    """runs.model_hash: the hash of the weight files the model loads (:func:`_loaded_weight_files`)."""
    return hash_files(folder, _loaded_weight_files(folder))


def legacy_weights_hash(name_or_path: str | Path) -> str | None:
    """The weight hash of headdb's earlier versions: every file with a weight suffix under the
    model folder, subfolders included (a Trainer's checkpoint-*/ and optimizer.pt, a hub
    folder's tf_model.h5). The fingerprints of the runs they stored hold it, so that a store of
    theirs still resumes them. None where it is :func:`_weights_hash` (a folder of the loaded
    files alone, as most are: nothing is read), where there is no such file, or where the model
    is not at hand (nothing is downloaded)."""
    try:
        folder = _resolve(str(name_or_path), download=False)
    except ModelError:
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    try:
        loaded = sorted(_loaded_weight_files(folder))
    except ModelError:
        loaded = []
    if not files or loaded == files:
        return None
    return hash_files(folder, files)


#: The files a tokenizer is read from (transformers' tokenizer classes' vocab_files_names and
#: the files every one reads), at the top of the model folder; tokenizer*.json as well (a
#: tokenizer_config's fast_tokenizer_files name versioned tokenizer.json files)
_TOKENIZER_FILES = frozenset({
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "spm.model",
    "spm_char.model", "tokenizer.model", "source.spm", "target.spm", "bpe.codes", "entity_vocab.json", "dict.txt",
})


def _tokenizer_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and (
        p.name in _TOKENIZER_FILES or (p.name.startswith("tokenizer") and p.name.endswith(".json"))))


def _tokenizer_hash(folder: Path) -> str:
    """A run's tokenizer: the hash of the tokenizer files of the model folder (its vocabulary,
    merges, SentencePiece model, tokenizer.json and configuration), which the tokenizer is
    loaded from. Other files (README.md, a Trainer's checkpoint-*/) are not read."""
    return hash_files(folder, _tokenizer_files(folder))


#: config.json keys that change nothing the model computes: the transformers version that saved it
#: and the name it was loaded from
_CONFIG_KEYS_IGNORED = frozenset({"transformers_version", "_name_or_path"})


def _config_hash(folder: Path) -> str:
    """A run's model configuration: the hash of config.json as parsed JSON with sorted keys (its
    position embeddings, layer norm epsilon, activation, number of heads change the attention of
    the same weights), so that a whitespace-only edit or another transformers version that saved
    it is the same. Raises OSError or ValueError where config.json cannot be read as JSON."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k not in _CONFIG_KEYS_IGNORED}
    return "sha256:" + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _resolve(name_or_path: str, download: bool) -> Path:
    """A local folder for the model: the path itself, or its snapshot in the Hugging Face cache."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"{p}: expected a model folder (config.json, weights, tokenizer)")
        if not (p / "config.json").exists():
            # a sentence-transformers folder of the older layout keeps the model in a module's folder
            inner = sorted(str(c.parent) for c in p.glob("*/config.json"))
            if inner:
                raise ModelError(f"{p}: no config.json; the Hugging Face model is in {' or '.join(inner)} "
                                 "(a subfolder, as sentence-transformers and diffusers folders keep it): "
                                 "pass that folder")
            raise ModelError(f"{p}: no config.json; is this a Hugging Face model folder?")
        return p
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path:
        # a path, not a hub name (namespace/name): no hub hint for it
        raise ModelError(f"{name_or_path}: no such model folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, local_files_only=not download))
    except Exception as exc:  # noqa: BLE001 - many hub error types, one message
        hint = (  # `hf` is huggingface_hub's command line (its older `huggingface-cli` is gone)
            "it is not a local folder and not in the Hugging Face cache; headdb does not download "
            f"by default: fetch it once (`hf download {name_or_path}`) or pass {flag('download')}"
        )
        if download:
            hint = f"could not fetch it: {str(exc).splitlines()[0]}"
        raise ModelError(f"model {name_or_path!r}: {hint}") from None


def load_tokenizer(folder: str | Path, name: str | None = None):
    """The fast tokenizer of a local model folder (no weights loaded, nothing downloaded)."""
    from transformers import AutoTokenizer as auto

    name = name or str(folder)
    # split_special_tokens: a word that reads "[SEP]", "<s>" or "</s>" (an HTML tag) is text; without
    # it the model got a real special token mid-sentence, stored as an ordinary piece
    try:
        tok = auto.from_pretrained(folder, use_fast=True, trust_remote_code=False, local_files_only=True,
                                   split_special_tokens=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{name}: cannot load its tokenizer: "
                         f"{_needs_sentencepiece(Path(folder)) or str(exc).splitlines()[0]}") from None
    if not getattr(tok, "is_fast", False):
        raise ModelError(
            f"{name}: needs a fast (Rust) tokenizer for word alignment; "
            "this model only has a slow one (no tokenizer.json)"
        )
    # Byte-level BPE (RoBERTa, GPT-2 vocabularies) marks a word start by its leading space: pre-split
    # words need add_prefix_space, else every word is encoded as if glued to the one before.
    # transformers 4 raised on such input; transformers 5 silently accepts it, so check both ways.
    if not _splits_as_text(tok):
        tok = auto.from_pretrained(folder, use_fast=True, trust_remote_code=False,
                                   local_files_only=True, add_prefix_space=True, split_special_tokens=True)
        if not _splits_as_text(tok):
            # a generic PreTrainedTokenizerFast (ModernBERT's) takes no add_prefix_space: its
            # byte-level pre-tokenizer does
            pre = getattr(tok.backend_tokenizer, "pre_tokenizer", None)
            if pre is not None and hasattr(pre, "add_prefix_space"):
                pre.add_prefix_space = True
            if not _splits_as_text(tok):
                raise ModelError(f"{name}: its tokenizer encodes pre-split words as if each were glued to the one "
                                 "before (a byte-level vocabulary without a prefix space), and headdb could not "
                                 "turn the prefix space on; the pieces would not be the model's")
    return tok


def _needs_sentencepiece(folder: Path) -> str | None:
    """Why a folder's tokenizer cannot load where it is a SentencePiece model alone (spm.model,
    spiece.model, sentencepiece.bpe.model: DeBERTa-v3, ALBERT, XLM-R saved without tokenizer.json)
    and the packages that convert it (sentencepiece, protobuf) are missing; transformers then
    tried to read the file as tiktoken's and said to install tiktoken, which cannot read it either."""
    from transformers.utils import is_protobuf_available, is_sentencepiece_available

    missing = [name for name, there in (("sentencepiece", is_sentencepiece_available()),
                                        ("protobuf", is_protobuf_available())) if not there]
    models = sorted(p.name for p in folder.glob("*.model"))
    if not missing or not models or (folder / "tokenizer.json").exists():
        return None
    return (f"it is a SentencePiece model ({', '.join(models)}) without a tokenizer.json, and transformers converts "
            f"it to a fast tokenizer with the packages sentencepiece and protobuf: pip install {' '.join(missing)} "
            "(or save the tokenizer where they are installed, which writes its tokenizer.json)")


def _splits_as_text(tok) -> bool:
    """Whether words handed over one by one get the pieces of the same words in running text."""
    try:
        split = tok(["a", "b"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
        return split == tok("a b", add_special_tokens=False)["input_ids"]
    except Exception:  # noqa: BLE001
        return False


def _special_kind(token_id: int, index: int, word_ids: list, cls_ids: set, sep_ids: set) -> str:
    """A special token's kind: cls, sep or other. A token that the tokenizer names both a [CLS]
    and a [SEP] (bos_token and eos_token the same, "X A X") is cls before the input's first word
    and sep after it, as SCORES.md's [CLS] A [SEP] places them."""
    if token_id in cls_ids and token_id in sep_ids:
        first_word = next((i for i, w in enumerate(word_ids) if w is not None), len(word_ids))
        return "cls" if index < first_word else "sep"
    return "cls" if token_id in cls_ids else "sep" if token_id in sep_ids else "other"


def align(tokenizer, sentences: list[Sentence], truncate: bool, max_length: int,
          token_types: bool | None = None) -> list[Encoded]:
    """Tokenize pre-split words with a fast tokenizer and align every piece to its word and segment.

    Needs only the tokenizer (no weights), so alignment is testable without a model. Inputs
    longer than ``max_length`` are skipped, or truncated when ``truncate``. ``token_types``:
    whether to ask the tokenizer for segment ids (None: as it does by itself).
    """
    tok = tokenizer
    # the unknown token is how the vocabulary writes a piece it lacks (an emoji for BERT), not a
    # word read as a control token: it is not counted among the special ids in words
    specials = set(tok.all_special_ids) - {tok.unk_token_id}
    cls_ids = {i for i in (tok.cls_token_id, tok.bos_token_id) if i is not None}
    sep_ids = {i for i in (tok.sep_token_id, tok.eos_token_id) if i is not None}
    first = [[w.form for w in s.segments[0].words] for s in sentences]
    pairs = [s.is_pair for s in sentences]
    if any(pairs) and not all(pairs):
        raise ModelError("a batch mixes single and pair inputs")
    second = [[w.form for w in s.segments[1].words] for s in sentences] if all(pairs) and pairs else None
    full = tok(first, second, is_split_into_words=True, truncation=False, add_special_tokens=True,
               return_attention_mask=False, return_token_type_ids=token_types)
    truncated = None
    out: list[Encoded] = []
    kept: list[Encoded] = []
    for b, s in enumerate(sentences):
        n_full = len(full["input_ids"][b])
        status, enc, row = "ok", full, b
        if n_full > max_length:
            if not truncate:
                out.append(Encoded(s, [], None, [], [], [], [], n_full, "skipped"))
                continue
            if truncated is None:
                truncated = tok(first, second, is_split_into_words=True, truncation=True,
                                max_length=max_length, add_special_tokens=True,
                                return_attention_mask=False, return_token_type_ids=token_types)
            status, enc = "truncated", truncated
        ids = list(enc["input_ids"][row])
        if len(ids) > max_length:  # the special tokens alone do not fit: it cannot be truncated
            out.append(Encoded(s, [], None, [], [], [], [], n_full, "skipped"))
            continue
        word_ids = enc.word_ids(row)
        seq_ids = enc.sequence_ids(row)
        n_a = len(s.segments[0].words)
        # segment B's words follow A's; special tokens have no word and no segment
        word_pos = [None if w is None else w + n_a if q == 1 else w for w, q in zip(word_ids, seq_ids)]
        segment = [None if w is None else q for w, q in zip(word_ids, seq_ids)]
        special = [None if w is not None else _special_kind(t, i, word_ids, cls_ids, sep_ids)
                   for i, (t, w) in enumerate(zip(ids, word_ids))]
        tt = list(enc["token_type_ids"][row]) if "token_type_ids" in enc else None
        e = Encoded(s, ids, tt, [], word_pos, segment, special, n_full, status,
                    sum(1 for t, w in zip(ids, word_ids) if w is not None and t in specials))
        out.append(e)
        kept.append(e)
    # the pieces of the whole batch in one call, then cut per input
    pieces = tok.convert_ids_to_tokens(list(chain.from_iterable(e.input_ids for e in kept)))
    start = 0
    for e in kept:
        e.pieces = pieces[start : start + e.length]
        start += e.length
    return out


#: copy a GPU's edges into page-locked host memory (False: pageable memory, for comparison)
PIN_MEMORY = True


class HostBuffers:
    """Page-locked host buffers for the edges' device-to-host copies, reused: page-locking memory
    is slow (on an H200 box the first 10,005-sentence ingest spent 1.6 s of its 1.9 s of edge
    copies allocating), so a buffer that is handed back serves any later copy it is large enough
    for. Buffers are whole powers of two: torch's caching host allocator rounds every request up
    to one anyway, so asking for the rounded size lets a buffer serve every copy that its real
    capacity holds. At most ``keep`` wait for reuse. Each :class:`AttentionModel` on a GPU has its
    own pool (an ingest's lifetime); what it drops goes back to torch's page-locked cache, as
    with a DataLoader's ``pin_memory``. ``allocs``, ``alloc_bytes`` and ``alloc_seconds`` count
    the new buffers."""

    def __init__(self, keep: int = 8):
        import threading

        self._free: list = []
        self._lock = threading.Lock()
        self._keep = keep
        self.allocs = 0
        self.alloc_bytes = 0
        self.alloc_seconds = 0.0

    @staticmethod
    def size_class(nbytes: int) -> int:
        """The power of two (at least 1 MiB) a request of ``nbytes`` is served from."""
        return 1 << max(20, (max(nbytes, 1) - 1).bit_length())

    def take(self, nbytes: int):
        """A free buffer of at least ``nbytes`` (the smallest), or a new one."""
        with self._lock:  # by position: tensors compare element by element, never use ==
            fits = [i for i, b in enumerate(self._free) if b.numel() >= nbytes]
            if fits:
                return self._free.pop(min(fits, key=lambda i: self._free[i].numel()))
        size = self.size_class(nbytes)
        t0 = time.perf_counter()
        buf = self._alloc(size)
        seconds = time.perf_counter() - t0
        with self._lock:
            self.allocs += 1
            self.alloc_bytes += size
            self.alloc_seconds += seconds
        return buf

    @staticmethod
    def _alloc(nbytes: int):
        import torch

        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def give(self, buf) -> None:
        with self._lock:
            self._free.append(buf)
            if len(self._free) > self._keep:
                self._free.pop(min(range(len(self._free)), key=lambda i: self._free[i].numel()))


def _top_keys(torch, attentions, k: int):
    """The ``k`` largest keys of every attention row, ``[batch, layer, head, query, rank]``
    (float32 weights descending, key positions), where equal weights rank by key position, lower
    first. torch.topk orders ties as it likes (it kept keys 7 and 5 of a uniform row of 9), and
    under bfloat16 3% of EWT's rows tie at the k-th weight: which key was stored, and so the
    scores, depended on it. The rows where two of the k + 1 largest weights are equal (0 too:
    see :func:`_tied`) are ranked again by a stable sort (:func:`_rank_ties`). On a CPU the ingest ranks
    each layer's map as the model makes it (:func:`_rank_layer`), which gives the same."""
    take = min(k + 1, attentions[0].shape[-1])
    # top-k layer by layer: stacking the full maps first would copy all of them
    ranked = [torch.topk(a, k=take, dim=-1, sorted=True) for a in attentions]
    values = torch.stack([r.values for r in ranked], dim=1)
    indices = torch.stack([r.indices for r in ranked], dim=1)
    tied = _tied(values)
    if bool(tied.any()):  # one synchronisation per batch
        for layer, a in enumerate(attentions):
            _rank_ties(torch, a, values[:, layer], indices[:, layer], tied[:, layer])
    return _best(values, indices, k)


def _rank_layer(torch, a, k: int, real=None):
    """:func:`_top_keys` of one layer's map ``[batch, head, query, key]``: its k + 1 best keys,
    ``[batch, head, query, rank]``, for :func:`_stack_ranked`. With ``real`` (``[batch, query]``,
    True on the inputs' own tokens) the padding's rows, which are never stored, are left in
    topk's order: a packed forward's padding rows are mostly uniform, hence tied (418,479 of EWT's
    rows against 20,969 padded, and 0.11 s of sorting)."""
    values, indices = torch.topk(a, k=min(k + 1, a.shape[-1]), dim=-1, sorted=True)
    tied = _tied(values)
    if real is not None:
        tied &= real[:, None, :]
    if bool(tied.any()):  # one synchronisation per layer (a CPU's tensors are ready)
        _rank_ties(torch, a, values, indices, tied)
    return values, indices


def _tied(values):
    """The rows of ranked weights where two neighbours are equal, 0 included: a real key can
    weigh exactly 0 (float16 underflows; 0.6% of EWT's rows under ``--dtype float16``) and must
    then rank before the padding, which also weighs 0 and is dropped: the row stored fewer than k
    keys, and which ones depended on the batch's padding (20 EWT sentences stored 329,521 edges
    in batches of 32 and 330,120 one at a time). Ties at 0 flag the padded rows of short inputs
    too (0.65% of EWT's rows in float32); a CPU ingest leaves them out (``_rank_layer``'s ``real``)."""
    return (values[..., 1:] == values[..., :-1]).any(dim=-1)


def _rank_ties(torch, a, values, indices, tied) -> None:
    """Rank the ``tied`` rows of one layer's map ``a`` again by a stable sort, in place."""
    rows = tied.nonzero(as_tuple=True)
    if rows[0].numel():
        v, i = torch.sort(a[rows], dim=-1, descending=True, stable=True)
        take = values.shape[-1]
        values[rows], indices[rows] = v[..., :take], i[..., :take]


def _stack_ranked(torch, ranked, k: int):
    """Each layer's :func:`_rank_layer` as :func:`_top_keys` returns them."""
    return _best(torch.stack([v for v, _ in ranked], dim=1), torch.stack([i for _, i in ranked], dim=1), k)


def _best(values, indices, k: int):
    """The ``k`` best of ranked ``[batch, layer, head, query, rank]`` rows, float32 weights, each
    contiguous, as topk's own were: the edge selection reads them row by row."""
    keep = min(k, values.shape[-1])
    return values[..., :keep].float().contiguous(), indices[..., :keep].contiguous()


def device_edges(values, indices, lengths, min_mass: float | None, ids=None,
                 pool: HostBuffers | None = None, weight_bits: int = 32) -> BatchEdges:
    """``sparsify.batch_edges`` in torch, on the tensors' device: the kept entries of ranked rows
    ``[batch, layer, head, query_pos, rank]`` (float32 weights, integer key positions) of inputs
    of the given ``lengths`` (an int64 tensor on the same device), as flat numpy arrays;
    ``sentence`` holds ``ids[input]`` (an int32 tensor on the device; default: the position).

    The same keep mask as ``sparsify.keep_mask`` (keys and queries past the input's length
    dropped; with ``min_mass`` a row ends with the entry whose cumulative mass reaches it, the
    float64 sum accumulated rank by rank as numpy's cumsum does), selected in row-major order,
    which is (input, layer, head, query_pos, rank). Only the kept edges leave the device: the
    flat positions of the kept entries are found once (one synchronisation), every column is
    gathered on the device into one buffer of 16 bytes an edge (14 with 16-bit weights), and
    that buffer comes to the host in one copy, on a GPU into page-locked memory (from ``pool``
    when given). The returned arrays are views of that buffer; with a pool their ``release``
    hands it back for reuse.

    ``weight_bits`` 16 rounds the weights on the device as ``store.weight16`` does (float64
    floor(w * 65535), the same numbers) and sends 2 bytes a weight: 14 bytes an edge, and
    ``weight`` is uint16.
    """
    import torch

    B, L, H, W, R = values.shape
    n = lengths.view(B, 1, 1, 1, 1)
    keep = indices < n
    if min_mass is not None:
        v = torch.where(keep, values, 0).to(torch.float64)
        before = torch.empty_like(v)
        running = torch.zeros_like(v[..., 0])
        for r in range(R):  # sequential, as np.cumsum adds: bitwise the same sums on any device
            running = running + v[..., r]
            before[..., r] = running - v[..., r]
        keep &= before < min_mass
    keep &= (torch.arange(W, device=values.device) < lengths.view(B, 1)).view(B, 1, 1, W, 1)
    flat = keep.reshape(-1).nonzero().squeeze(1)  # row-major: (input, layer, head, query, rank)
    m = flat.numel()
    row = torch.div(flat, R, rounding_mode="floor")
    query, row = row % W, torch.div(row, W, rounding_mode="floor")
    head, row = row % H, torch.div(row, H, rounding_mode="floor")
    layer, b = row % L, torch.div(row, L, rounding_mode="floor")
    wb = 2 if weight_bits == 16 else 4  # bytes a weight
    size = 12 + wb  # bytes an edge: sentence (4), weight, layer, head, query, key (2 each)
    packed = torch.empty(size * m, dtype=torch.uint8, device=values.device)
    packed[: 4 * m].view(torch.int32).copy_(b if ids is None else ids[b])
    weight = values.reshape(-1)[flat]
    if weight_bits == 16:
        from headdb.store import WEIGHT16_SCALE

        scaled = torch.floor(weight.to(torch.float64) * WEIGHT16_SCALE).clamp_(0, WEIGHT16_SCALE).to(torch.int32)
        # int16 holds uint16's bits: 32768..65535 as their two's complement, exactly (no overflow)
        packed[4 * m : 6 * m].view(torch.int16).copy_(scaled - (scaled > 32767).to(torch.int32) * 65536)
    else:
        packed[4 * m : 8 * m].view(torch.float32).copy_(weight)
    for i, col in enumerate((layer, head, query, indices.reshape(-1)[flat])):
        start = (4 + wb + 2 * i) * m
        packed[start : start + 2 * m].view(torch.int16).copy_(col)
    release = None
    if packed.is_cuda and PIN_MEMORY:
        buf = pool.take(packed.numel()) if pool is not None else HostBuffers._alloc(packed.numel())
        host = buf[: packed.numel()]
        host.copy_(packed)  # blocking: the host sees the data when it returns
        if pool is not None:
            release = lambda: pool.give(buf)  # noqa: E731
    else:
        host = packed.cpu()
    raw = host.numpy()  # keeps ``host`` alive for as long as any view of it lives
    small = [raw[(4 + wb + 2 * i) * m : (6 + wb + 2 * i) * m].view(np.int16) for i in range(4)]
    weights = raw[4 * m : (4 + wb) * m].view(np.uint16 if weight_bits == 16 else np.float32)
    return BatchEdges(*small, weights, sentence=raw[: 4 * m].view(np.int32), release=release)


#: model types whose position ids start after the padding index (transformers'
#: ``create_position_ids_from_input_ids``): N position embeddings hold N - pad_token_id - 1 tokens
_POSITIONS_AFTER_PADDING = ("roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "roberta-prelayernorm",
                            "xlm-roberta-xl", "ibert", "luke", "xmod")


def _natural_max_length(tokenizer_max, max_positions, pad_token_id, model_type: str) -> int:
    """The model's own token limit: its tokenizer's ``model_max_length`` and its position
    embeddings, whichever is smaller (512 where neither says)."""
    limits = []
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 100_000:
        limits.append(tokenizer_max)
    if isinstance(max_positions, int) and max_positions > 0:
        # RoBERTa-style positions start after the padding index
        offset = pad_token_id + 1 if model_type in _POSITIONS_AFTER_PADDING and isinstance(pad_token_id, int) else 0
        limits.append(max_positions - offset)
    return min(limits) if limits else 512


def peek(name_or_path: str, max_length: int | None) -> tuple[str, int, str, str] | None:
    """(model_hash, max_length, tokenizer_hash, config_hash) as :class:`AttentionModel` gives them, read from
    the model folder's files without importing torch or transformers and without downloading;
    None where the files do not tell (a model not at hand, a config or tokenizer config without
    the fields). A re-run of a finished ingest finds its run with these, in a second instead of the
    model's load."""
    try:
        folder = _resolve(name_or_path, download=False)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        model_hash = _weights_hash(folder)
        tokenizer_hash = _tokenizer_hash(folder)
        config_hash = _config_hash(folder)
    except (ModelError, OSError, ValueError):
        return None
    if not (isinstance(config, dict) and isinstance(tokenizer_config, dict)) or "max_position_embeddings" not in config:
        return None
    natural = _natural_max_length(tokenizer_config.get("model_max_length"), config["max_position_embeddings"],
                                  config.get("pad_token_id"), str(config.get("model_type", "unknown")))
    if max_length is not None and max_length > natural:
        return None  # the model's load says why it is refused
    return model_hash, natural if max_length is None else max_length, tokenizer_hash, config_hash


def _has_auto_map(folder: Path) -> bool:
    try:
        return "auto_map" in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


class AttentionModel:
    """A loaded encoder and its fast tokenizer."""

    def __init__(self, name_or_path: str, device: str = "cpu", dtype: str = "float32",
                 download: bool = False, max_length: int | None = None):
        if dtype not in _DTYPES:
            raise ModelError(f"unknown dtype {dtype!r}; expected one of: {', '.join(_DTYPES)}")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.name = name_or_path
        self.folder = _resolve(name_or_path, download)  # before importing torch: a bad name fails at once
        # what runs.model records: a local folder as an absolute path (as runs.corpus_path), a hub name as given
        self.source = str(self.folder.resolve()) if Path(name_or_path).expanduser().exists() else name_or_path
        import torch
        import transformers
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"{option('device')} {device}: CUDA is not available on this machine")
        if device not in ("cpu",) and not device.startswith("cuda"):
            raise ModelError(f"unknown device {device!r}; expected cpu or cuda[:N]")
        try:
            config = AutoConfig.from_pretrained(self.folder, trust_remote_code=False, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            if _has_auto_map(self.folder):
                raise ModelError(
                    f"{name_or_path}: the model needs its own Python code (auto_map in config.json), which "
                    "headdb never runs (trust_remote_code is off); pass a model transformers supports natively"
                ) from None
            raise ModelError(f"{self.folder}: cannot read the model config: {str(exc).splitlines()[0]}") from None
        archs = tuple(getattr(config, "architectures", None) or ())
        if getattr(config, "is_decoder", False) or any(a.endswith(_DECODER_ARCH_SUFFIXES) for a in archs) \
                or getattr(config, "model_type", "") in ("gpt2", "llama", "mistral", "gpt_neox", "opt", "qwen2"):
            raise ModelError(
                f"{name_or_path}: {config.model_type} is a decoder-only (causal) model; "
                "headdb analyses bidirectional encoders such as BERT or RoBERTa"
            )
        # an encoder saved alone from an encoder-decoder (T5EncoderModel, MT5EncoderModel) is loaded by its
        # own class: AutoModel loaded the whole encoder-decoder, which failed without decoder inputs. Its
        # config may still say is_encoder_decoder (transformers 4 saved T5's unchanged)
        encoders = [a for a in archs if a.endswith("EncoderModel") and hasattr(transformers, a)]
        if getattr(config, "is_encoder_decoder", False) and len(encoders) != 1:
            raise ModelError(f"{name_or_path}: encoder-decoder models are not supported; pass an encoder")
        self.model_hash = _weights_hash(self.folder)
        self.tokenizer_hash = _tokenizer_hash(self.folder)
        self.config_hash = _config_hash(self.folder)  # read by AutoConfig above: it parses
        self.tokenizer = self._load_tokenizer(AutoTokenizer)
        torch_dtype = getattr(torch, dtype)
        # BigBird's default block-sparse attention returns no maps for short inputs, and for long
        # ones a sentence's attention depends on the padding beside it: its full attention instead
        overrides = {"attention_type": "original_full"} if getattr(config, "model_type", "") == "big_bird" else {}
        loader = getattr(transformers, encoders[0]) if len(encoders) == 1 else AutoModel
        try:
            model = loader.from_pretrained(
                self.folder, attn_implementation="eager", trust_remote_code=False,
                local_files_only=True, dtype=torch_dtype, **overrides,
            )
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{name_or_path}: cannot load the model: {str(exc).splitlines()[0]}") from None
        self.model = model.to(device).eval()
        self.torch = torch
        self.device = device
        self.dtype = dtype
        self.config = model.config
        self.model_type = str(getattr(config, "model_type", "unknown"))
        self.n_layers = int(config.num_hidden_layers)
        self.n_heads = int(config.num_attention_heads)
        self.attn_implementation = str(getattr(model.config, "_attn_implementation", "eager"))
        self.max_length = self._max_length(max_length)
        tok = self.tokenizer
        self._check_vocabulary(name_or_path)
        # segment ids where the model has segment embeddings: transformers 5 dropped token_type_ids
        # from the inputs of ALBERT's, RoFormer's and XLNet's tokenizers, and pairs ran as one segment
        types = getattr(model.config, "type_vocab_size", 0)
        self._uses_token_types = "token_type_ids" in tok.model_input_names or (
            isinstance(types, int) and types > 1 and "token_type_ids" in inspect.signature(model.forward).parameters)
        if types == 1:  # one segment embedding (RoBERTa with a BERT tokenizer, as klue/roberta-base): segment B's
            self._uses_token_types = False  # ids of 1 failed mid-ingest with "index out of range in self"
        self._host_buffers: HostBuffers | None = None  # page-locked copies of a GPU's edges
        # Taps on the attention modules: the forward stops once the last layer's map exists.
        # "unchecked" until the first batch has shown that the taps see exactly the maps that
        # output_attentions returns; False (the model's own full forward) where they do not.
        self._tapped = threading.local()  # .maps: the maps of the forward running on this thread
        self._tapped_modules: list[tuple[str, object, int]] = []  # (name, module, output index)
        self._taps: bool | str = self._install_taps() if STOP_AT_LAST_MAP else False
        # BERT-shaped layers run on the real tokens only (_packed_maps): "unchecked" until the first
        # batch that packs (``_packs``) has matched the model's own forward bit for bit; False where it did not,
        # or where the model is not BERT-shaped, or not in float32 on a CPU
        self._packing = self._packed_layers()
        self._packed: bool | str = "unchecked" if self._packing is not None else False
        self._packed_lock = threading.Lock()  # a failed check is final, whatever thread checks after it
        #: (pieces, kinds): the special tokens of an input stored as 'other', and the delimiter kinds
        #: (cls, sep) that none of its special tokens is taken for; None where every kind is found
        self.unnamed_specials: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._probe()

    def _probe(self) -> None:
        """Run a short input through the model before anything is stored: each layer must give a
        full query x key map of softmax weights, one per head, and not a causal one. Longformer's
        sliding-window maps were stored as if their columns were keys, SqueezeBERT's pre-softmax
        scores as weights, the causal maps of decoders saved as base models (Gemma, Qwen, Phi) as
        an encoder's, ConvBERT's maps with fewer heads than its config names broke classify, and
        models that cannot run an input (Funnel) failed mid-ingest with a failed run."""
        from headdb.corpus import Segment, Sentence, Word

        torch = self.torch
        words = tuple(Word(w) for w in ("The", "probe", "reads", "each", "word", "."))
        (enc,) = align(self.tokenizer, [Sentence(0, (Segment(words, "probe", 0),))], True, self.max_length,
                       self._uses_token_types or None)
        if not enc.input_ids:  # pragma: no cover - max_length fits the special tokens and a piece
            return
        # special tokens it adds that it names neither [CLS] (cls_token, bos_token) nor [SEP] (sep_token,
        # eos_token): stored as 'other', they leave delimiter_cls or delimiter_sep without samples
        missing = tuple(kind for kind in ("cls", "sep") if kind not in enc.special)
        if missing and "other" in enc.special:
            self.unnamed_specials = (tuple(p for p, k in zip(enc.pieces, enc.special) if k == "other"), missing)
        if all(w is None for w in enc.word_pos):  # a vocabulary of special tokens alone, without an unknown one
            raise ModelError(f"{self.name}: its tokenizer gives no word piece to any word of \"The probe reads each "
                             "word .\" (only special tokens): every input would be stored as its special tokens "
                             "alone; pass the model's own tokenizer, or one whose vocabulary covers the text")
        unk = self.tokenizer.unk_token_id
        # the vocabulary is read only where every word came out unknown (a 250k vocabulary takes 0.1 s)
        if unk is not None and all(t == unk for t, w in zip(enc.input_ids, enc.word_pos) if w is not None) \
                and set(vocab := self.tokenizer.get_vocab()) <= set(self.tokenizer.all_special_tokens):
            # transformers 5 builds a tokenizer of its special tokens alone where the folder lacks its
            # vocabulary (vocab.txt, tokenizer.json, the SentencePiece model): every word was stored as [UNK]
            raise ModelError(f"{self.name}: its tokenizer gives every word of \"The probe reads each word .\" the "
                             f"unknown token {self.tokenizer.unk_token} (its vocabulary holds only its {len(vocab)} "
                             "special tokens): are its vocabulary files (vocab.txt, tokenizer.json, vocab.json and "
                             "merges.txt, or the SentencePiece model) missing from the folder? Pass the model's own "
                             "tokenizer")
        try:
            with torch.inference_mode():  # the model's own forward: the taps are checked on the first batch
                maps = self._checked(self.model(**self._inputs([enc]), output_attentions=True,
                                                return_dict=True).attentions)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if self.dtype != "float32" and self._runs_in_float32(enc):
                # DeBERTa (v1) mixes float32 buffers into half-precision matmuls: not an encoder's fault
                raise ModelError(f"{self.name}: the model fails on a short input in {given('dtype', self.dtype)} "
                                 f"({why}) and runs in float32: pass {given('dtype', 'float32')} (the default)") from None
            raise ModelError(f"{self.name}: the model fails on a short input ({why}); headdb needs an encoder "
                             "that returns every layer's attention map") from None
        width = enc.length
        shapes = sorted({tuple(m.shape) for m in maps})
        if len(maps) != self.n_layers or shapes != [(1, self.n_heads, width, width)]:
            raise ModelError(f"{self.name}: its attention maps have the shapes {shapes} ({len(maps)} maps), not "
                             f"one [1, {self.n_heads}, {width}, {width}] map for each of its {self.n_layers} layers: "
                             "headdb needs every head's full query x key map (sliding-window, block-sparse or "
                             "pooled attention is not supported)")
        stacked = torch.stack([m.float() for m in maps])
        tolerance = 1e-3 if self.dtype == "float32" else 3e-2
        if not bool(torch.isfinite(stacked).all()) or bool((stacked < 0).any()) \
                or bool(((stacked.sum(-1) - 1).abs() > tolerance).any()):
            raise ModelError(f"{self.name}: its attention maps are not softmax weights (rows of weights of at least "
                             "0 that sum to 1): the model returns scores of its own as attentions")
        if width >= 3 and bool((torch.triu(stacked, diagonal=1) == 0).all()):
            raise ModelError(f"{self.name}: {self.model_type}'s attention is causal (no token attends to a later "
                             "one), a decoder's; headdb analyses bidirectional encoders such as BERT or RoBERTa")

    def _runs_in_float32(self, enc: Encoded) -> bool:
        """Whether the model, cast to float32, runs ``enc`` (after the probe failed in half precision;
        the load is refused either way)."""
        try:
            with self.torch.inference_mode():
                self.model.float()(**self._inputs([enc]), output_attentions=True, return_dict=True)
        except Exception:  # noqa: BLE001
            return False
        return True

    def _check_vocabulary(self, name: str) -> None:
        """Every token id the tokenizer can give must have a row in the model's embeddings. A
        tokenizer with added tokens and a model whose embeddings were not resized failed
        mid-ingest with "index out of range in self", after the store was written to."""
        try:
            embeddings = self.model.get_input_embeddings()
        except NotImplementedError:  # CANINE hashes characters: no embedding table to check
            return
        rows = getattr(embeddings, "num_embeddings", None)
        if rows is None:
            return
        largest = max(self.tokenizer.get_vocab().values(), default=-1)
        if largest >= rows:
            raise ModelError(f"{name}: the tokenizer has token ids up to {largest}, but the model's embeddings "
                             f"have {rows} rows; resize them to the tokenizer (resize_token_embeddings) "
                             "or pass the model's own tokenizer")

    def _install_taps(self) -> bool | str:
        from functools import partial

        specs = _attention_specs(self.model)
        found = 0
        for name, module in self.model.named_modules():
            for cls, class_name, layer_name, index in specs:
                if not ((cls is not None and isinstance(module, cls))
                        or (class_name is not None and name.endswith(class_name))):
                    continue
                if layer_name is not None and f".{layer_name.strip('.')}." not in f".{name}.":
                    continue
                module.register_forward_hook(partial(self._tap, index=index))
                self._tapped_modules.append((name, module, index))
                found += 1
                break
        return "unchecked" if found else False

    def _packed_layers(self) -> tuple | None:
        """(layers, their self-attentions and the tap's output index, the attention function)
        where every layer has BERT's shape (``attention.self`` with ``query``/``key``/``value``,
        ``attention.output``, ``intermediate``, ``output``; one tapped self-attention each, in
        order; every linear map's widths multiples of ``PACK_WIDTH_MULTIPLE``) and the model runs
        on a CPU in float32; else None (the model's own forward)."""
        import sys

        torch = self.torch
        if not (PACK_TOKENS and self._taps == "unchecked" and self.device == "cpu" and self.dtype == "float32"
                and len(self._tapped_modules) == self.n_layers):
            return None
        modules = dict(self.model.named_modules())
        layers, attns = [], []
        for name, sa, index in self._tapped_modules:
            parent = modules.get(name.rsplit(".", 2)[0]) if name.count(".") >= 2 else None
            if parent is None or getattr(getattr(parent, "attention", None), "self", None) is not sa:
                return None
            parts = [getattr(parent.attention, "output", None), getattr(parent, "intermediate", None),
                     getattr(parent, "output", None)]
            linears = [getattr(sa, n, None) for n in ("query", "key", "value")]
            if not all(isinstance(m, torch.nn.Module) for m in parts) \
                    or not all(isinstance(m, torch.nn.Linear) for m in linears) \
                    or getattr(parent, "chunk_size_feed_forward", 0) or getattr(parent, "is_decoder", False) \
                    or getattr(parent, "add_cross_attention", False) or sa.training \
                    or not isinstance(getattr(sa, "attention_head_size", None), int) \
                    or getattr(sa, "position_embedding_type", "absolute") not in (None, "absolute"):
                return None
            if any(m.in_features % PACK_WIDTH_MULTIPLE or m.out_features % PACK_WIDTH_MULTIPLE
                   for m in parent.modules() if isinstance(m, torch.nn.Linear)):
                return None
            layers.append(parent)
            attns.append((sa, index))
        if len({id(layer) for layer in layers}) != len(layers):  # one layer module run again (ALBERT)
            return None
        attention = getattr(sys.modules.get(type(attns[0][0]).__module__), "eager_attention_forward", None)
        if self.attn_implementation != "eager" or not callable(attention):
            return None
        layers[0].register_forward_pre_hook(self._enter_first_layer, with_kwargs=True)
        return layers, attns, attention

    def _enter_first_layer(self, module, args, kwargs) -> None:
        if getattr(self._tapped, "entering", False):
            hidden = args[0] if args else kwargs.get("hidden_states")
            mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
            raise _FirstLayer(hidden, mask)

    def _packed_maps(self, inputs: dict, rank: int | None) -> list:
        """What the stopped forward's taps collect (``_attention_maps``), with the projections and the
        feed-forward blocks run on the batch's real tokens only: the model's own embeddings and mask
        (its forward up to its first layer), then, per layer, as BERT's layer runs: query, key and
        value of the real tokens, placed in the padded batch for the attention function (the
        model's own, ``eager_attention_forward``), the attention's output of the real rows, its
        output block and the feed-forward block on them. Every real row is computed from the same
        numbers as in the padded forward; the padding's rows are zeros, which the mask gives
        weight 0 as keys, and whose own rows as queries are never stored. The last layer needs no
        value: its map is the end."""
        layers, attns, attention = self._packing
        self._tapped.entering = True
        try:
            self.model(**inputs, return_dict=True)
            raise ModelError(f"{self.name}: the forward did not reach its first layer")  # pragma: no cover
        except _FirstLayer as first:
            hidden, mask = first.hidden, first.mask
        finally:
            self._tapped.entering = False
        real = inputs["attention_mask"].bool()
        b, width, _ = hidden.shape
        h = hidden[real]

        def padded(x, heads: int):
            full = x.new_zeros(b, width, x.shape[-1])
            full[real] = x
            return full.view(b, width, heads, -1).transpose(1, 2)

        self._tapped.maps = maps = []
        self._tapped.rank, self._tapped.ranking = rank, 0.0
        self._tapped.real = real
        try:
            for i, (layer, (sa, index)) in enumerate(zip(layers, attns)):
                heads = sa.query.out_features // sa.attention_head_size
                q, k = padded(sa.query(h), heads), padded(sa.key(h), heads)
                last = i == len(layers) - 1
                v = q.new_zeros(b, heads, width, 0) if last else padded(sa.value(h), heads)
                context, weights = attention(sa, q, k, v, mask, dropout=0.0, scaling=sa.scaling)
                self._tap(sa, (), (context, weights), index)  # raises _LastMap after the last layer's map
                context = context.reshape(b, width, -1)[real]
                a = layer.attention.output(context, h)
                h = layer.output(layer.intermediate(a), a)
        except _LastMap:
            return maps
        finally:
            self._tapped.maps = self._tapped.rank = self._tapped.real = None
        raise ModelError(f"{self.name}: the packed forward passed its last layer without its map")  # pragma: no cover

    def _tap(self, module, args, output, index: int) -> None:
        maps = getattr(self._tapped, "maps", None)
        if maps is None:  # not inside _attention_maps on this thread: the hook does nothing
            return
        weights = output[index] if isinstance(output, tuple) else output
        if weights is None:
            return
        k = self._tapped.rank
        if k is None:
            maps.append(weights)
        else:  # the layer's map is ranked while the model goes on without it (see _attention_maps)
            t0 = time.perf_counter()
            maps.append(_rank_layer(self.torch, weights, k, getattr(self._tapped, "real", None)))
            self._tapped.ranking += time.perf_counter() - t0
        if self._taps is True and len(maps) == self.n_layers:
            raise _LastMap

    def _attention_maps(self, inputs: dict, rank: int | None = None) -> tuple[tuple | list, bool]:
        """Every layer's attention map ``[batch, head, query, key]``, in layer order, and False.
        Once checked, the forward stops at the last layer's map; the maps are the model's own, bit
        for bit. With ``rank`` (a k) and checked taps, each layer's map is ranked as soon as the
        model has made it (``_rank_layer``), and the list holds those rankings, and True: a batch
        then holds one layer's maps at a time, not all of them (peak RSS about 55 against 89 MB an
        input of 512 tokens on the bundled model), and ranks a map while it is still in the CPU's
        cache. The seconds spent ranking go to ``self._tapped.ranking``."""
        if self._taps is True:
            packs = self._packed is not False and self._packs(inputs)
            if packs and self._packed is True:
                return self._packed_maps(inputs, rank), rank is not None
            self._tapped.maps = maps = []
            self._tapped.rank, self._tapped.ranking = rank, 0.0
            self._tapped.real = inputs["attention_mask"].bool()
            try:
                self.model(**inputs, return_dict=True)
            except _LastMap:
                if packs:  # the first batch that packs: the packed forward must give the same
                    self._check_packed(inputs, rank, maps)
                return maps, rank is not None
            finally:
                self._tapped.maps = self._tapped.rank = self._tapped.real = None
            self._taps = False  # the forward ended before the last map: run the model whole from now on
        elif self._taps == "unchecked":
            self._tapped.maps = maps = []
            self._tapped.rank = None
            try:
                out = self.model(**inputs, output_attentions=True, return_dict=True)
            except _LastMap:  # another thread's first batch found the taps good meanwhile: these are its maps
                return self._checked(tuple(maps)), False
            finally:
                self._tapped.maps = None
            got = tuple(out.attentions or ())
            # the taps must see the very tensors transformers returns, in the same order
            same = len(got) == self.n_layers == len(maps) and all(a is b for a, b in zip(got, maps))
            self._taps = bool(same)
            if self._taps is True and self._packed == "unchecked" and self._packs(inputs):
                self._check_packed(inputs, None, list(got))  # against the model's whole forward, here at hand
            return self._checked(got), False
        return self._checked(self.model(**inputs, output_attentions=True, return_dict=True).attentions), False

    def _packs(self, inputs: dict) -> bool:
        """Whether a batch is run packed: it has padding and at least ``PACK_MIN_TOKENS`` real tokens."""
        mask = inputs["attention_mask"]
        real = int(mask.sum())
        return PACK_MIN_TOKENS <= real < mask.numel()

    def _check_packed(self, inputs: dict, rank: int | None, own: list) -> None:
        """Run a batch packed and keep packing only where every real query's row (its ranked keys
        and weights, or its whole map) equals the model's own ``own``, bit for bit: on the first
        batch, against the whole forward that checks the taps; where that batch has no padding or
        few tokens, on the first that has, against the stopped forward. The ranking time of the
        check is not counted."""
        ranking = getattr(self._tapped, "ranking", 0.0)
        try:
            packed = self._packed_maps(inputs, rank)
        except Exception:  # noqa: BLE001 - a layer that does not run as BERT's: the model's own forward
            self._set_packed(False)
            return
        finally:
            self._tapped.ranking = ranking
        real = inputs["attention_mask"].bool()[:, None, :]  # [batch, 1, query]: broadcast over heads
        torch = self.torch

        def same(a, b) -> bool:
            return a.shape == b.shape and bool(torch.equal(a[real.expand(a.shape[:3])], b[real.expand(b.shape[:3])]))

        if rank is None:
            ok = len(packed) == len(own) and all(same(a, b) for a, b in zip(own, packed))
        else:
            ok = len(packed) == len(own) and all(same(a[0], b[0]) and same(a[1], b[1]) for a, b in zip(own, packed))
        self._set_packed(ok)

    def _set_packed(self, ok: bool) -> None:
        """The outcome of a check: two threads' first batches may check at once, and one that
        failed stands (the packed forward gave other numbers on some batch) whatever the other's
        check gives, before or after it."""
        with self._packed_lock:
            self._packed = bool(ok) and self._packed is not False

    @property
    def packs_tokens(self) -> bool:
        """Whether batches with padding run packed (``_packed_maps``; known after the first such batch)."""
        return self._packed is True

    def _checked(self, attentions) -> tuple:
        if not attentions or attentions[0] is None:
            raise ModelError(f"{self.name}: the model returned no attentions with eager attention")
        return attentions

    @property
    def stops_early(self) -> bool:
        """Whether the forward stops at the last layer's attention map (known after one batch)."""
        return self._taps is True

    def _load_tokenizer(self, auto):
        return load_tokenizer(self.folder, self.name)

    def check_pairs_fit(self) -> None:
        """Refuse a max length too short for sentence pairs (special tokens and one piece of each
        segment); called for paired corpora only."""
        smallest = self.tokenizer.num_special_tokens_to_add(pair=True) + 2
        if self.max_length < smallest:
            raise ModelError(f"{option('max_length')} {self.max_length} is too small: a pair input needs at least "
                             f"{smallest} tokens (special tokens and one piece of each segment)")

    def _max_length(self, requested: int | None) -> int:
        natural = _natural_max_length(getattr(self.tokenizer, "model_max_length", None),
                                      getattr(self.config, "max_position_embeddings", None),
                                      getattr(self.config, "pad_token_id", None), self.model_type)
        if requested is not None:
            if requested > natural:
                raise ModelError(f"{option('max_length')} {requested} exceeds the model's maximum of {natural}")
            smallest = self.tokenizer.num_special_tokens_to_add(pair=False) + 1
            if requested < smallest:
                raise ModelError(f"{option('max_length')} {requested} is too small: an input needs at least "
                                 f"{smallest} tokens (special tokens and one piece)")
            return requested
        return natural

    @property
    def tokenizer_name(self) -> str:
        # the folder as runs.model records it: absolute, where name_or_path kept a relative one as typed
        return f"{type(self.tokenizer).__name__} {self.folder.resolve()}"

    def encode(self, sentences: list[Sentence], truncate: bool) -> list[Encoded]:
        """Tokenize pre-split words and align every piece to its word and segment."""
        return align(self.tokenizer, sentences, truncate, self.max_length, self._uses_token_types or None)

    def _inputs(self, batch: list[Encoded]) -> dict:
        """The padded input tensors of a batch, on the model's device (built with numpy at once)."""
        torch = self.torch
        lengths = np.fromiter((e.length for e in batch), dtype=np.int64, count=len(batch))
        width = int(lengths.max())
        real = np.arange(width) < lengths[:, None]  # row-major: the inputs' tokens in order
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = np.full((len(batch), width), pad, dtype=np.int64)
        ids[real] = np.fromiter(chain.from_iterable(e.input_ids for e in batch), dtype=np.int64,
                                count=int(lengths.sum()))
        inputs = {"input_ids": torch.from_numpy(ids).to(self.device),
                  "attention_mask": torch.from_numpy(real.astype(np.int64)).to(self.device)}
        if self._uses_token_types:
            types = np.zeros((len(batch), width), dtype=np.int64)
            if all(e.token_type_ids is not None for e in batch):
                types[real] = np.fromiter(chain.from_iterable(e.token_type_ids for e in batch), dtype=np.int64,
                                          count=int(lengths.sum()))
            else:
                for b, e in enumerate(batch):
                    if e.token_type_ids is not None:
                        types[b, : e.length] = e.token_type_ids
            inputs["token_type_ids"] = torch.from_numpy(types).to(self.device)
        return inputs

    def _ranked(self, batch: list[Encoded], k: int | None, timings: dict[str, float] | None):
        """Ranked rows ``[batch, layer, head, query_pos, rank]`` as tensors on the model's device:
        (float32 weights descending, int64 key positions); ``k=None``: every key in position
        order. Call under ``torch.inference_mode()``."""
        torch = self.torch
        clock = time.perf_counter if timings is not None else None
        t0 = clock() if clock else 0.0
        width = max(e.length for e in batch)
        inputs = self._inputs(batch)
        # a CPU ranks each map inside the forward; a GPU ranks them all after it, with one
        # synchronisation a batch, not one a layer
        attentions, ranked = self._attention_maps(inputs, k if k is not None and self.device == "cpu" else None)
        if clock:
            self._sync()  # only when timing: kernels run async
            t1 = clock()
            ranking = self._tapped.ranking if ranked else 0.0
            timings["forward"] = timings.get("forward", 0.0) + (t1 - t0) - ranking
            timings["topk"] = timings.get("topk", 0.0) + ranking
        if k is None:
            values = torch.stack(tuple(attentions), dim=1).float()  # [batch, layer, head, query, key]
            indices = torch.arange(width, device=values.device).expand_as(values)
        elif ranked:
            values, indices = _stack_ranked(torch, attentions, k)
        else:
            values, indices = _top_keys(torch, attentions, k)
        if clock:
            self._sync()
            timings["topk"] = timings.get("topk", 0.0) + (clock() - t1)
        return values, indices

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize(self.device)

    def forward(self, batch: list[Encoded], k: int | None,
                timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Attention of a padded batch as ranked rows ``[batch, layer, head, query_pos, rank]``.

        Returns (weights descending, key positions) as float32 / int16 numpy arrays; with
        ``k=None`` every key in position order (dense). The top-k runs on the model's device,
        so only the kept entries travel to the host. ``timings`` (seconds) gains ``forward``
        and ``topk`` (top-k plus the transfer). The rows of padding queries (past an input's
        length) are no input's attention (a packed forward leaves them other than the padded one).
        """
        with self.torch.inference_mode():
            values, indices = self._ranked(batch, k, timings)
            t1 = time.perf_counter()
            result = values.cpu().numpy(), indices.to(self.torch.int16).cpu().numpy()
            if timings is not None:
                timings["topk"] = timings.get("topk", 0.0) + (time.perf_counter() - t1)
            return result

    def forward_edges(self, batch: list[Encoded], k: int | None, min_mass: float | None,
                      timings: dict[str, float] | None = None, ids=None, weight_bits: int = 32) -> BatchEdges:
        """The kept edges of a batch (``sparsify.keep_mask`` semantics), selected on the model's
        device so that only they travel to the host, as flat arrays in (input, layer, head,
        query_pos, rank) order: exactly the concatenation of every input's
        ``sparsify.sentence_edges``; ``sentence`` holds ``ids[input]`` (default: the input's
        position in ``batch``). ``timings`` gains ``forward``, ``topk`` (top-k on the device)
        and ``edges`` (keep mask, selection and the transfer; on a GPU, ``pin_alloc`` is the part
        of it spent page-locking new host buffers). With ``weight_bits`` 16 a GPU rounds the
        weights before they leave it (``device_edges``); on a CPU the writer rounds them."""
        with self.torch.inference_mode():
            values, indices = self._ranked(batch, k, timings)
            t1 = time.perf_counter()
            lengths = [e.length for e in batch]
            if values.is_cuda:
                torch = self.torch
                dev_ids = None if ids is None else torch.as_tensor(np.asarray(ids, dtype=np.int32)).to(self.device)
                if self._host_buffers is None:
                    self._host_buffers = HostBuffers()
                pinning = self._host_buffers.alloc_seconds
                edges = device_edges(values, indices, torch.tensor(lengths).to(self.device), min_mass, dev_ids,
                                     self._host_buffers, weight_bits)
                if timings is not None:  # part of `edges`: page-locking new host buffers
                    timings["pin_alloc"] = timings.get("pin_alloc", 0.0) + self._host_buffers.alloc_seconds - pinning
            else:  # numpy's boolean selection is several times faster than torch's on a CPU
                edges = batch_edges(values.numpy(), indices.numpy(), lengths, min_mass, ids)
            if timings is not None:
                timings["edges"] = timings.get("edges", 0.0) + (time.perf_counter() - t1)
            return edges

    def versions(self) -> str:
        import tokenizers
        import transformers

        return json.dumps({"torch": self.torch.__version__, "transformers": transformers.__version__,
                           "tokenizers": tokenizers.__version__}, sort_keys=True)
