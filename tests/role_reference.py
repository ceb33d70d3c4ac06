"""A reference implementation of SCORES.md in numpy (sieves and sentence scores), and a builder
of synthetic attention stores (rows inserted into a migrated DuckDB directly, no model).

Written from the specification, not from headdb's SQL, so that the tests compare two
independent implementations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from headdb.db import connect

BUILTIN = ["local", "delimiter", "delimiter_cls", "delimiter_sep", "block", "nsubj", "obj", "amod", "advmod",
           "syntactic"]
RELATIONS = {"nsubj": {"nsubj"}, "obj": {"obj", "dobj"}, "amod": {"amod"}, "advmod": {"advmod"},
             "syntactic": {"nsubj", "obj", "dobj", "amod", "advmod"}}


@dataclass
class Seq:
    """One input sequence: per token its special kind (cls/sep/None), word_pos and segment;
    per word (0-based over the whole input) its head word_pos (None = root) and relation."""

    special: list[str | None]
    word: list[int | None]
    segment: list[int | None]
    heads: list[int | None]
    deprels: list[str]
    word_segment: list[int]

    @property
    def length(self) -> int:
        return len(self.special)


def simple_seq(pieces_per_word: list[int], heads: list[int | None], deprels: list[str],
               pieces_b: list[int] | None = None, heads_b: list[int | None] | None = None,
               deprels_b: list[str] | None = None) -> Seq:
    """[CLS] A [SEP] (B [SEP]); heads are word indices within their own segment."""
    special, word, segment = ["cls"], [None], [None]
    all_heads, all_rels, wseg = [], [], []
    offset = 0
    for seg, (pieces, hs, rels) in enumerate([(pieces_per_word, heads, deprels)]
                                             + ([(pieces_b, heads_b, deprels_b)] if pieces_b else [])):
        for w, n in enumerate(pieces):
            special += [None] * n
            word += [offset + w] * n
            segment += [seg] * n
        special.append("sep")
        word.append(None)
        segment.append(None)
        all_heads += [None if h is None else offset + h for h in hs]
        all_rels += list(rels)
        wseg += [seg] * len(pieces)
        offset += len(pieces)
    return Seq(special, word, segment, all_heads, all_rels, wseg)


def sieves(seq: Seq, pairs: bool) -> dict[str, dict[int, set[int]]]:
    """role -> {query position: its non-empty sieve}, exactly as SCORES.md's table says."""
    L = seq.length
    out: dict[str, dict[int, set[int]]] = {}
    out["local"] = {i: {j for j in range(L) if abs(i - j) <= 2} for i in range(L)}
    specials = {j for j in range(L) if seq.special[j] is not None}
    cls = {j for j in range(L) if seq.special[j] == "cls"}
    sep = {j for j in range(L) if seq.special[j] == "sep"}
    out["delimiter"] = {i: set(specials) for i in range(L)} if specials else {}
    out["delimiter_cls"] = {i: set(cls) for i in range(L)} if cls else {}
    out["delimiter_sep"] = {i: set(sep) for i in range(L)} if sep else {}
    block: dict[int, set[int]] = {}
    if pairs:
        for i in range(L):
            if seq.special[i] is None:
                block[i] = {j for j in range(L) if seq.special[j] is None and seq.segment[j] == seq.segment[i]}
    out["block"] = block
    pieces: dict[int, set[int]] = {}
    for j in range(L):
        if seq.word[j] is not None:
            pieces.setdefault(seq.word[j], set()).add(j)
    for role, labels in RELATIONS.items():
        s: dict[int, set[int]] = {}
        for w, (h, rel) in enumerate(zip(seq.heads, seq.deprels)):
            if h is None or rel.split(":")[0] not in labels or w not in pieces or h not in pieces:
                continue
            for i in pieces[w]:
                s.setdefault(i, set()).update(pieces[h])
        out[role] = s
    return out


def sentence_score(A: np.ndarray, sieve: dict[int, set[int]]) -> tuple[float, int] | None:
    """(score, n_queries) of one head on one sentence, or None when no query takes part."""
    L = A.shape[0]
    r = [L * np.mean([float(A[i, j]) for j in sorted(S)]) for i, S in sieve.items() if S]
    if not r:
        return None
    return float(np.mean(r)), len(r)


# ---------------------------------------------------------------------------------------------
# synthetic stores


def _insert(con, table: str, df: pd.DataFrame) -> None:
    con.register("_rows", df)
    cols = ", ".join(f'"{c}"' for c in df.columns)
    con.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM _rows')
    con.unregister("_rows")


def build_store(path: str | Path, seqs: list[Seq], attention: list[np.ndarray], *, pairs: bool = False,
                top_k: int | None = None, run_id: int = 1, corpus_id: int = 1, add_corpus: bool = True,
                weight_bits: int = 32, dtype: str = "float32") -> int:
    """Write ``attention[s]`` ([layers, heads, L, L], rows summing to 1) of ``seqs`` as a run.

    Dense unless ``top_k``: then only the k largest weights of each row are stored. With
    ``weight_bits`` 16 as ``headdb ingest --weight-bits 16`` stores them: floor(w * 65535).
    """
    n_layers, n_heads = attention[0].shape[:2]
    con = connect(path)
    try:
        if add_corpus:
            _insert(con, "corpora", pd.DataFrame([{"corpus_id": corpus_id, "path": "synthetic", "sha256": f"s{corpus_id}",
                                                   "format": "conllu", "pairs": pairs, "parser": "gold"}]))
            srows, wrows = [], []
            for sid, seq in enumerate(seqs):
                srows.append({"corpus_id": corpus_id, "sentence_id": sid, "line": 1, "text_a": "x",
                              "n_words_a": len(seq.heads)})
                for w, (h, rel) in enumerate(zip(seq.heads, seq.deprels)):
                    wrows.append({"corpus_id": corpus_id, "sentence_id": sid, "word_pos": w,
                                  "segment": seq.word_segment[w], "form": f"w{w}", "head_word_pos": h, "deprel": rel})
            _insert(con, "sentences", pd.DataFrame(srows))
            _insert(con, "words", pd.DataFrame(wrows).astype({"head_word_pos": "Int64"}))
        _insert(con, "runs", pd.DataFrame([{
            "run_id": run_id, "run_name": f"synthetic-{run_id}", "fingerprint": f"fp{run_id}", "corpus_id": corpus_id,
            "corpus_path": "synthetic", "corpus_sha256": f"s{corpus_id}", "corpus_format": "conllu", "pairs": pairs,
            "model": "synthetic", "model_hash": "h", "model_type": "bert", "tokenizer": "tok", "n_layers": n_layers,
            "n_heads": n_heads, "dtype": dtype, "attn_implementation": "eager", "device": "cpu",
            "max_length": 512, "truncate": False, "top_k": top_k, "min_mass": None, "dense": top_k is None,
            "batch_size": 1, "headdb_version": "test", "library_versions": "{}", "status": "done",
            "weight_bits": weight_bits}]))
        _insert(con, "run_sentences", pd.DataFrame([{"run_id": run_id, "sentence_id": s, "n_tokens": q.length,
                                                     "n_tokens_full": q.length, "status": "ok"}
                                                    for s, q in enumerate(seqs)]))
        trows = []
        for sid, seq in enumerate(seqs):
            for pos in range(seq.length):
                trows.append({"run_id": run_id, "sentence_id": sid, "token_pos": pos, "piece": "p",
                              "word_pos": seq.word[pos], "segment": seq.segment[pos], "special": seq.special[pos]})
        _insert(con, "tokens", pd.DataFrame(trows).astype({"word_pos": "Int64", "segment": "Int64"}))
        parts = []
        for sid, A in enumerate(attention):
            A = np.asarray(A, dtype=np.float32)
            nl, nh, L, _ = A.shape
            layer, head, q, k = np.meshgrid(np.arange(nl), np.arange(nh), np.arange(L), np.arange(L), indexing="ij")
            keep = np.ones(A.shape, dtype=bool)
            if top_k is not None and top_k < L:
                rank = np.argsort(np.argsort(-A, axis=-1, kind="stable"), axis=-1, kind="stable")
                keep = rank < top_k
            parts.append(pd.DataFrame({"run_id": run_id, "sentence_id": sid, "layer": layer[keep].astype(np.int16),
                                       "head": head[keep].astype(np.int16), "query_pos": q[keep].astype(np.int16),
                                       "key_pos": k[keep].astype(np.int16), "weight": A[keep]}))
        edges = pd.concat(parts, ignore_index=True)
        if weight_bits == 16:
            w = edges.pop("weight").to_numpy(np.float64)
            edges["weight16"] = np.minimum(np.floor(w * 65535), 65535).astype(np.uint16)
        _insert(con, "edge_store16" if weight_bits == 16 else "edge_store", edges)
    finally:
        con.close()
    return run_id


def dirichlet_attention(rng: np.random.Generator, n_layers: int, n_heads: int, L: int) -> np.ndarray:
    """Rows drawn from a flat Dirichlet: no structure, E[A_ij] = 1/L for every key."""
    return rng.dirichlet(np.ones(L), size=(n_layers, n_heads, L)).astype(np.float32)


def sparse_sentence_bounds(A: np.ndarray, sieve: dict[int, set[int]], top_k: int) -> tuple[float, float] | None:
    """(score, score_upper) of one head on one sentence when only the ``top_k`` largest weights of
    each row are stored, from SCORES.md's bound: per query, the stored in-sieve mass plus
    min(residual, unstored keys of S_i * smallest stored weight), residual = 1 - stored mass
    (at least 0). None when no query takes part."""
    L = A.shape[0]
    lows, highs = [], []
    for i, S in sieve.items():
        if not S:
            continue
        row = A[i].astype(np.float64)
        stored = set(np.argsort(-A[i], kind="stable")[:top_k].tolist())
        residual = max(0.0, 1.0 - sum(row[j] for j in stored))
        smallest = min(row[j] for j in stored)
        inside = [j for j in S if j in stored]
        mass = sum(row[j] for j in inside)
        lows.append(L * mass / len(S))
        highs.append(L * (mass + min(residual, (len(S) - len(inside)) * smallest)) / len(S))
    if not lows:
        return None
    return float(np.mean(lows)), float(np.mean(highs))
