"""Small hand-made stores whose analysis, comparison and accuracy answers are known by hand.

They are built by inserting rows into a migrated database directly, so the tests of issue 4
(analysis, compare, accuracy, report) depend on the schema only, not on ingest or classify.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from headdb.db import connect


def _insert(con, table: str, rows: list[dict]) -> None:
    df = pd.DataFrame(rows)
    con.register("_rows", df)
    cols = ", ".join(f'"{c}"' for c in df.columns)
    con.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM _rows')
    con.unregister("_rows")


def add_corpus(con, n_sentences: int, corpus_id: int = 1, words: dict[int, list[tuple]] | None = None) -> None:
    """A corpus with ``n_sentences`` sentences; ``words`` maps sentence_id -> [(form, head, deprel)]."""
    _insert(con, "corpora", [{"corpus_id": corpus_id, "path": f"corpus{corpus_id}.conllu", "sha256": f"sha{corpus_id}",
                              "format": "conllu", "pairs": False, "parser": "gold"}])
    srows, wrows = [], []
    for sid in range(n_sentences):
        ws = (words or {}).get(sid, [("w", None, "root")])
        srows.append({"corpus_id": corpus_id, "sentence_id": sid, "line": 1 + 10 * sid,
                      "text_a": " ".join(w[0] for w in ws), "n_words_a": len(ws)})
        for i, (form, head, deprel) in enumerate(ws):
            wrows.append({"corpus_id": corpus_id, "sentence_id": sid, "word_pos": i, "segment": 0, "form": form,
                          "head_word_pos": head, "deprel": deprel})
    _insert(con, "sentences", srows)
    _insert(con, "words", wrows)


def add_run(con, run_id: int, n_layers: int, n_heads: int, n_sentences: int, corpus_id: int = 1,
            name: str | None = None) -> None:
    _insert(con, "runs", [{
        "run_id": run_id, "run_name": name or f"run-{run_id}", "fingerprint": f"fp{run_id}", "corpus_id": corpus_id,
        "corpus_path": f"corpus{corpus_id}.conllu", "corpus_sha256": f"sha{corpus_id}", "corpus_format": "conllu",
        "pairs": False, "model": f"model{run_id}", "model_hash": f"h{run_id}", "model_type": "bert",
        "tokenizer": "tok", "n_layers": n_layers, "n_heads": n_heads, "dtype": "float32",
        "attn_implementation": "eager", "device": "cpu", "max_length": 512, "truncate": False, "top_k": None,
        "min_mass": None, "dense": True, "batch_size": 8, "headdb_version": "test", "library_versions": "{}",
        "status": "done"}])
    _insert(con, "run_sentences", [{"run_id": run_id, "sentence_id": s, "n_tokens": 5, "n_tokens_full": 5,
                                    "status": "ok"} for s in range(n_sentences)])


def add_classification(con, run_id: int, roles: list[str], significant: dict[str, set[tuple[int, int]]],
                       n_layers: int, n_heads: int, means: dict | None = None, classification_id: int | None = None,
                       n: int = 4) -> None:
    """head_tests rows: a head is significant for a role when listed in ``significant[role]``."""
    cid = classification_id or run_id
    _insert(con, "classifications", [{"classification_id": cid, "run_id": run_id, "roles": ",".join(roles),
                                      "alpha": 0.05, "correction": "bh", "n_tests": len(roles) * n_layers * n_heads}])
    rows = []
    for role in roles:
        for layer in range(n_layers):
            for head in range(n_heads):
                sig = (layer, head) in significant.get(role, set())
                mean = (means or {}).get((role, layer, head), 5.0 if sig else 1.0)
                rows.append({"classification_id": cid, "run_id": run_id, "layer": layer, "head": head, "role": role,
                             "n": n, "mean": mean, "std": 1.0, "tau": 3.0, "t": 0.0, "p": 0.01 if sig else 0.9,
                             "p_adj": 0.02 if sig else 0.9, "significant": sig, "ci_low": mean - 1,
                             "ci_high": mean + 1, "flip_possible": False})
    _insert(con, "head_tests", rows)


def add_scores(con, run_id: int, scores: dict[tuple[str, int, int], list[float | None]]) -> None:
    """sentence_scores rows: ``values[i]`` is sentence i's score, None where the head has none."""
    rows = []
    for (role, layer, head), values in scores.items():
        for sid, v in enumerate(values):
            if v is None:
                continue
            rows.append({"run_id": run_id, "role": role, "layer": layer, "head": head, "sentence_id": sid,
                         "score": float(v), "score_upper": float(v), "n_queries": 3})
    _insert(con, "sentence_scores", rows)


# ---------------------------------------------------------------------------------------------
# The results store: runs 1 (A) and 2 (B), 2 layers x 3 heads, and run 3 (C), 1 layer x 2 heads,
# all over the same 4 sentences; roles local, delimiter, nsubj.

ROLES = ["local", "delimiter", "nsubj"]
SIG_A = {"local": {(0, 0), (0, 1), (1, 2)},
         "delimiter": {(0, 1), (1, 0), (1, 1), (1, 2)},
         "nsubj": {(1, 2)}}
SIG_B = {"local": {(0, 1), (1, 2), (1, 0)},   # gains (1,0), loses (0,0)
         "delimiter": {(0, 1), (1, 0), (1, 1), (1, 2)},
         "nsubj": {(1, 2)}}
SIG_C = {"local": {(0, 0), (0, 1)}, "delimiter": {(0, 1)}, "nsubj": set()}
BASE_SCORES = [4.0, 5.0, 6.0, 7.0]
#: (role, layer, head) -> B - A per sentence; every other head has B == A
DIFFS = {("local", 0, 0): [1.0, 2.0, 3.0, 2.0], ("nsubj", 1, 2): [-0.5, -0.5, -0.5, -0.5]}


def build_results_store(path: str | Path) -> Path:
    con = connect(path)
    try:
        add_corpus(con, 4)
        add_run(con, 1, 2, 3, 4, name="base")
        add_run(con, 2, 2, 3, 4, name="tuned")
        add_run(con, 3, 1, 2, 4, name="small")
        add_classification(con, 1, ROLES, SIG_A, 2, 3)
        add_classification(con, 2, ROLES, SIG_B, 2, 3)
        add_classification(con, 3, ROLES, SIG_C, 1, 2)
        sa, sb, sc = {}, {}, {}
        for role in ROLES:
            for layer in range(2):
                for head in range(3):
                    a = np.array(BASE_SCORES) + layer + 0.1 * head
                    sa[(role, layer, head)] = list(a)
                    sb[(role, layer, head)] = list(a + np.array(DIFFS.get((role, layer, head), [0.0] * 4)))
            for head in range(2):
                sc[(role, 0, head)] = BASE_SCORES
        add_scores(con, 1, sa)
        add_scores(con, 2, sb)
        add_scores(con, 3, sc)
    finally:
        con.close()
    return Path(path)


# ---------------------------------------------------------------------------------------------
# The accuracy store: one run, 1 layer x 2 heads, dense, over 4 sentences.
#   s0, s1: "The dog bar##ks"   The -det-> dog, dog -nsubj-> barks, barks root
#   s2, s3: "Dog##s often bark" Dogs -nsubj-> bark, often -advmod-> bark, bark root
# Behaviours: "to-head": every dependent attends its head word, the root its first dependent;
#             "prev":    every word attends the previous word, the first word the next one.
# Head 0 is to-head in s0, s1, s3 and prev in s2; head 1 is to-head in s0, s2 and prev in s1, s3.

ACC_WORDS = {
    0: [("The", 1, "det"), ("dog", 2, "nsubj"), ("barks", None, "root")],
    2: [("Dogs", 2, "nsubj"), ("often", 2, "advmod:emph"), ("bark", None, "root")],
}
ACC_WORDS[1] = ACC_WORDS[0]
ACC_WORDS[3] = ACC_WORDS[2]
ACC_PIECES = {0: [["The"], ["dog"], ["bar", "##ks"]], 2: [["Dog", "##s"], ["often"], ["bark"]]}
ACC_PIECES[1] = ACC_PIECES[0]
ACC_PIECES[3] = ACC_PIECES[2]
BEHAVIOUR = {(0, 0): "to-head", (1, 0): "to-head", (2, 0): "prev", (3, 0): "to-head",
             (0, 1): "to-head", (1, 1): "prev", (2, 1): "to-head", (3, 1): "prev"}


def _targets(words: list[tuple], behaviour: str) -> list[int]:
    out = []
    for i, (_, head, _) in enumerate(words):
        if behaviour == "prev":
            out.append(i - 1 if i > 0 else 1)
        elif head is not None:
            out.append(head)
        else:
            out.append(min(j for j, w in enumerate(words) if w[1] == i))
    return out


def build_accuracy_store(path: str | Path) -> Path:
    """Each word piece puts 0.6 on its target word (split over the target's pieces) and 0.4 on the
    first piece of the lowest other word, so only the sum over target pieces finds the target."""
    con = connect(path)
    try:
        add_corpus(con, 4, words=ACC_WORDS)
        add_run(con, 1, 1, 2, 4, name="acc")
        toks, edges = [], []
        for sid in range(4):
            pieces = ACC_PIECES[sid]
            layout = [("[CLS]", None)] + [(p, w) for w, ps in enumerate(pieces) for p in ps] + [("[SEP]", None)]
            for pos, (piece, w) in enumerate(layout):
                toks.append({"run_id": 1, "sentence_id": sid, "token_pos": pos, "piece": piece, "word_pos": w,
                             "segment": None if w is None else 0,
                             "special": None if w is not None else ("cls" if pos == 0 else "sep")})
            first = {w: min(p for p, (_, ww) in enumerate(layout) if ww == w) for w in range(len(pieces))}
            of = {w: [p for p, (_, ww) in enumerate(layout) if ww == w] for w in range(len(pieces))}
            for head in range(2):
                targets = _targets(ACC_WORDS[sid], BEHAVIOUR[(sid, head)])
                for q, (_, w) in enumerate(layout):
                    if w is None:
                        row = {0: 1.0}
                    else:
                        t = targets[w]
                        other = min(x for x in range(len(pieces)) if x not in (w, t))
                        row = {p: 0.6 / len(of[t]) for p in of[t]}
                        row[first[other]] = 0.4
                    for k, wt in row.items():
                        edges.append({"run_id": 1, "sentence_id": sid, "layer": 0, "head": head, "query_pos": q,
                                      "key_pos": k, "weight": wt})
        _insert(con, "tokens", toks)
        _insert(con, "edge_store", edges)
    finally:
        con.close()
    return Path(path)


def build_random_results(path: str | Path, runs: list[tuple[int, str, int, int]], roles: list[str],
                         n_sentences: int = 6, seed: int = 0) -> Path:
    """Runs of given shapes (run_id, name, n_layers, n_heads) with random scores and tests, for reports."""
    rng = np.random.default_rng(seed)
    con = connect(path)
    try:
        add_corpus(con, n_sentences)
        for run_id, name, n_layers, n_heads in runs:
            add_run(con, run_id, n_layers, n_heads, n_sentences, name=name)
            means, sig, scores = {}, {}, {}
            for role in roles:
                sig[role] = set()
                for layer in range(n_layers):
                    for head in range(n_heads):
                        m = float(np.exp(rng.normal(0.5, 0.8)))
                        means[(role, layer, head)] = m
                        if m > 3:
                            sig[role].add((layer, head))
                        scores[(role, layer, head)] = list(m + rng.normal(0, 0.3, n_sentences))
            add_classification(con, run_id, roles, sig, n_layers, n_heads, means=means, n=n_sentences)
            add_scores(con, run_id, scores)
    finally:
        con.close()
    return Path(path)
