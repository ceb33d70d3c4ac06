"""Syntactic head accuracy (Clark et al. 2019, "What does BERT look at?").

Word-level attention comes from the ``word_attention`` view (migration 0003): attention from a
word is the mean over its pieces, attention to a word the sum over its pieces; special tokens
are left out, and so are a word's attention to itself and to the other segment of a pair. As
in Clark et al.'s released code, a head predicts each dependent's syntactic head from this map
in two ways, and the accuracy is the share of dependency edges whose prediction is the head:

- ``dep->head``: the word the dependent attends to most (the argmax of its row of the map,
  ``word_attention_top``);
- ``head->dep``: the word that attends to the dependent most (the argmax of its column: their
  transposed map), so a head word with several dependents can get each of them right.

Ties go to the lower word_pos (numpy's argmax in their code takes the first). A dependent with no
stored edge from it to another word (dep->head) or to it from another word (head->dep) predicts
nothing and counts as wrong. In a sparse run both are over the stored keys only, and a
dependency edge whose dependent or head has no stored piece (truncation) is left out; the
result's ``attrs`` (``storage``, ``left_out``) and :func:`storage_notes` say so.

Relations are compared on their base label (``obl:tmod`` counts as ``obl``; ``dobj`` as ``obj``),
plus ``all`` for every non-root word. The fixed-offset baseline predicts each dependent's head at
a fixed offset from it (head = dependent + offset; the best in -10..10 per relation and
direction): both directions predict the same thing, the dependent's head, so its numbers are the
same for both, as Clark et al. score one baseline for both.

No number is chosen on the data that reports it: the sentences are split by ``sentence_id``
parity, the **selection split is the even sentence_ids** (where the best head and the best
offset are chosen) and the **report split is the odd sentence_ids** (where their accuracy is
reported). Layers and heads are 0-based.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import pandas as pd

from headdb.analysis import DbLike, open_db
from headdb.db import memory_limit_mb
from headdb.errors import InputError, flag, option
from headdb.progress import takes_progress
from headdb.resources import query
from headdb.store import resolve_run, sentence_ranges

SELECTION_SPLIT = "even sentence_id"
REPORT_SPLIT = "odd sentence_id"
OFFSETS = tuple(o for o in range(-10, 11) if o != 0)
DIRECTIONS = ("dep->head", "head->dep")
#: Stored edges (as the run's top-k bounds them, :func:`headdb.store.sentence_ranges`) per head
#: accuracy query: a larger run is judged in ranges of whole sentences and the counts summed, so
#: that DuckDB's hash tables stay one range's size however large the run (one query peaked at
#: 1,474 MiB RSS on the EWT dev run, 6,459 MiB on five times EWT; in ranges: 437 and 827 MiB,
#: and faster, docs/benchmarks.md). The blocks DuckDB reads stay cached up to its memory limit,
#: so a connection accuracy opens has classify's (:func:`headdb.db.memory_limit_mb`).
CHUNK_EDGES = 2_000_000
_COUNT_KEYS = ["layer", "head", "relation", "direction", "split"]
_SUM_EVERY = 8

def _wide(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per key with n/accuracy on each split (missing split: n = 0, accuracy NaN)."""
    w = df.pivot_table(index=keys, columns="split", values=["n", "n_correct"], aggfunc="sum", fill_value=0)
    out = pd.DataFrame(index=w.index)
    for split, short in (("selection", "select"), ("report", "report")):
        n = w[("n", split)] if ("n", split) in w.columns else 0
        c = w[("n_correct", split)] if ("n_correct", split) in w.columns else 0
        out[f"n_{short}"] = n
        out[f"{short}_accuracy"] = (c / n).where(n > 0) if isinstance(n, pd.Series) else float("nan")
    return out.reset_index()


def _with_dependencies(name: str) -> str:
    """A query file with the shared dependency-edge CTE (queries/analysis/dependencies.sql) put in."""
    return query(name).replace("{dependencies}", query("analysis/dependencies"))


def _summed(parts: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """The counts n and n_correct of several ranges of sentences, added per ``keys``."""
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts, ignore_index=True).groupby(keys, as_index=False, sort=False)[["n", "n_correct"]].sum()


def why_no_dependency_edges(con, run_id: int) -> str | None:
    """Why a run whose corpus has syntax has no dependency edge to score: it stored no sentence
    (every one was longer than the model's maximum), or none of the sentences it stored has a head
    word. None where the corpus itself has no syntax."""
    stored, skipped, max_length, syntax = con.execute(
        "SELECT count(*) FILTER (WHERE s.status <> 'skipped'), count(*) FILTER (WHERE s.status = 'skipped'), "
        "(SELECT max_length FROM runs WHERE run_id = ?), "
        "(SELECT count(*) > 0 FROM words w JOIN runs r ON r.corpus_id = w.corpus_id "
        " WHERE r.run_id = ? AND w.head_word_pos IS NOT NULL) FROM run_sentences s WHERE s.run_id = ?",
        [run_id, run_id, run_id]).fetchone()
    if not syntax:
        return None
    if not stored:
        return (f"run {run_id} stored no sentence, so it has no dependency edges to score: all {skipped} were "
                f"longer than its maximum of {max_length} tokens and skipped (ingest with {flag('truncate')} to "
                "keep them, cut to the maximum)")
    return (f"run {run_id} has no dependency edges to score: no word of its {stored} stored "
            f"sentence{'s' if stored != 1 else ''} has a head word among the stored tokens (its corpus has others)")


def _no_dependency_edges(con, run_id: int) -> InputError:
    return InputError(why_no_dependency_edges(con, run_id)
                      or f"run {run_id} has no dependency edges to score (a corpus without syntax?)")


def head_accuracy(db: DbLike, run: int | str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Accuracy of every head for every relation and direction, on each split.

    Columns: layer, head, relation, direction, n_select, select_accuracy, n_report, report_accuracy.
    A large run is judged in ranges of sentences (``CHUNK_EDGES``), whose counts add up;
    ``progress(done, total)`` is called before the first range and after each one.
    """
    sql = _with_dependencies("analysis/head_accuracy")
    with open_db(db, memory_limit_mb()) as con:
        run_id = resolve_run(con, run, finished=True)
        pieces = sentence_ranges(con, run_id, CHUNK_EDGES, edges=True)
        if progress is not None:
            progress(0, len(pieces))
        parts: list[pd.DataFrame] = []
        for done, (lo, hi) in enumerate(pieces, 1):
            parts.append(con.execute(sql, {"run": run_id, "lo": lo, "hi": hi}).df())
            if len(parts) == _SUM_EVERY:  # a range's rows are heads x relations x 4: few ranges' at a time
                parts = [_summed(parts, _COUNT_KEYS)]
            if progress is not None:
                progress(done, len(pieces))
        raw = _summed(parts, _COUNT_KEYS)
        if raw.empty:
            raise _no_dependency_edges(con, run_id)
    return _wide(raw, ["layer", "head", "relation", "direction"])


def offset_baselines(db: DbLike, run: int | str | None = None) -> pd.DataFrame:
    """Accuracy of every fixed offset in -10..10 (not 0) per relation and direction, on each split."""
    with open_db(db) as con:
        run_id = resolve_run(con, run, finished=True)
        raw = con.execute(_with_dependencies("analysis/offset_accuracy"), {"run": run_id, "offsets": list(OFFSETS)}).df()
        if raw.empty:
            raise _no_dependency_edges(con, run_id)
    return _wide(raw, ["offset", "relation", "direction"])


def _best(df: pd.DataFrame, tie: list[str]) -> pd.DataFrame:
    """Per (relation, direction) the row with the best selection accuracy; ties by ``tie`` ascending."""
    d = df[df["n_select"] > 0].copy()
    d["_key"] = -d["select_accuracy"]
    d = d.sort_values(["relation", "direction", "_key", *tie])
    return d.groupby(["relation", "direction"], sort=False).head(1).drop(columns="_key")


@takes_progress("accuracy")
def accuracy(db: DbLike, run: int | str | None = None, min_count: int = 1,
             progress: Callable[[int, int], None] | bool | None = None) -> pd.DataFrame:
    """The best head per relation and direction, chosen on the selection split (even
    sentence_ids) and reported on the report split (odd sentence_ids), beside the best fixed
    offset chosen and reported the same way.

    One row per (relation, direction) with at least ``min_count`` edges in each split. Columns:
    relation, direction, n_select, n_report, layer, head, select_accuracy, accuracy (the head on
    the report split), baseline_offset, baseline_select_accuracy, baseline_accuracy, selected_on,
    reported_on. Sorted by relation frequency ("all" first). ``attrs`` holds run_id, run_name,
    min_count, most_in_both_splits (the most edges any relation has in both splits), selected_on,
    reported_on, storage ("dense", or "top-K" with a min-mass: the keys each attention row kept,
    which word attention is summed from) and left_out (dependency edges of the stored sentences
    whose dependent or head has no stored piece: not judged; :func:`storage_notes` words both). ``progress(done, total)`` counts the ranges of sentences the heads are judged in
    (:func:`head_accuracy`); True draws a bar on stderr.
    """
    if isinstance(min_count, bool) or not isinstance(min_count, numbers.Integral) or min_count < 1:
        raise InputError(f"{option('min_count')} must be a whole number of at least 1, not {min_count!r}")
    with open_db(db, memory_limit_mb()) as con:  # one connection: the run resolved once, named in attrs
        run_id = resolve_run(con, run, finished=True)
        run_name, top_k, min_mass, dense = con.execute(
            "SELECT run_name, top_k, min_mass, dense FROM runs WHERE run_id = ?", [run_id]).fetchone()
        heads = head_accuracy(con, run_id, progress)
        offs = offset_baselines(con, run_id)
        left_out = con.execute(_LEFT_OUT, [run_id]).fetchone()[0]
    storage = "dense" if dense else f"top-{top_k}" + (f", min-mass {min_mass:g}" if min_mass is not None else "")
    bh = _best(heads, ["layer", "head"])
    bo = offs.assign(abs_offset=offs["offset"].abs())
    bo = _best(bo, ["abs_offset", "offset"])
    out = bh.rename(columns={"report_accuracy": "accuracy"})[
        ["relation", "direction", "n_select", "n_report", "layer", "head", "select_accuracy", "accuracy"]]
    base = bo.rename(columns={"offset": "baseline_offset", "select_accuracy": "baseline_select_accuracy",
                              "report_accuracy": "baseline_accuracy"})[
        ["relation", "direction", "baseline_offset", "baseline_select_accuracy", "baseline_accuracy"]]
    out = out.merge(base, on=["relation", "direction"], how="left")
    # the most edges any relation has in both splits: what an empty result can say about --min-count
    most = int(out[["n_select", "n_report"]].min(axis=1).max()) if len(out) else 0
    out = out[(out["n_select"] >= min_count) & (out["n_report"] >= min_count)].copy()
    out["_all"] = out["relation"] != "all"
    out["_n"] = -(out["n_select"] + out["n_report"])
    out = out.sort_values(["_all", "_n", "relation", "direction"]).drop(columns=["_all", "_n"])
    out["selected_on"] = SELECTION_SPLIT
    out["reported_on"] = REPORT_SPLIT
    out = out.reset_index(drop=True).astype({"n_select": "int64", "n_report": "int64", "layer": "int64",
                                             "head": "int64", "baseline_offset": "int64"})
    out.attrs = {"selected_on": SELECTION_SPLIT, "reported_on": REPORT_SPLIT, "run_id": run_id, "run_name": run_name,
                 "min_count": int(min_count), "most_in_both_splits": most, "storage": storage,
                 "left_out": int(left_out)}
    return out


#: The dependency edges of a run's stored sentences that accuracy cannot judge: the dependent or
#: its head has no stored piece (cut off by --truncate, or a word the tokenizer gave no piece).
_LEFT_OUT = """
SELECT count(*) FROM words w
JOIN runs r ON r.corpus_id = w.corpus_id AND r.run_id = ?
JOIN run_sentences s ON s.run_id = r.run_id AND s.sentence_id = w.sentence_id AND s.status <> 'skipped'
WHERE w.head_word_pos IS NOT NULL AND (
    NOT EXISTS (SELECT 1 FROM tokens t WHERE t.run_id = r.run_id AND t.sentence_id = w.sentence_id
                AND t.word_pos = w.word_pos)
    OR NOT EXISTS (SELECT 1 FROM tokens t WHERE t.run_id = r.run_id AND t.sentence_id = w.sentence_id
                   AND t.word_pos = w.head_word_pos))
"""


def storage_notes(attrs: dict) -> list[str]:
    """What the numbers of :func:`accuracy` (its ``attrs``) rest on, where a user could not tell:
    a sparse run's word attention is over its stored keys only, and dependency edges whose words
    have no stored piece are left out."""
    notes = []
    if attrs["storage"] != "dense":
        notes.append(f"word attention is summed from the run's stored edges ({attrs['storage']} keys per "
                     "row), so a word's most-attended word, and the word attending most to it, come from the "
                     "kept keys only and can differ from the full attention's (Clark et al. use all of it): "
                     "ingest with "
                     f"{flag('dense')} for that")
    if attrs["left_out"]:
        n = attrs["left_out"]
        notes.append(f"{n:,} dependency edge{'s' if n != 1 else ''} of the stored sentences left out: "
                     "the dependent or its head has no stored piece (cut off by truncation, or given no "
                     "piece by the tokenizer)")
    return notes


__all__ = ["accuracy", "head_accuracy", "offset_baselines", "storage_notes", "SELECTION_SPLIT", "REPORT_SPLIT"]
