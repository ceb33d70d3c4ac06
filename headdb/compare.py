"""Comparing two runs over the same sentences, such as a pre-trained and a fine-tuned model.

Per head and role, the per-sentence scores of both runs are paired on ``sentence_id`` and the
differences ``d = score_b - score_a`` are tested with a two-sided paired Student t-test
(``scipy.stats.ttest_rel(score_b, score_a)``, H0: E[d] = 0), computed from each head's count,
means and variance of d, which DuckDB computes where the scores are stored, as for classify's
tests: the paired scores never pass through Python (DuckDB joins and aggregates them, and can
spill to disk). Every (head, role) test of one comparison is one family, corrected like a
classification (Benjamini-Hochberg by default; holm, bonferroni, none). Roles gained and lost
come from ``head_tests`` of each run. Runs whose layer x head shapes differ cannot be paired
head by head: they are compared by the per-layer counts of heads with each role only, and the
result says so (``basis`` column and ``attrs``). Layers and heads are 0-based.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from headdb.analysis import DbLike, classified_roles, open_db, select_roles
from headdb.errors import DatabaseError, InputError, count, flag, option
from headdb.resources import model_label
from headdb.roles import BUILTIN_ORDER, requested_roles
from headdb.stats import CORRECTIONS, adjust, check_options
from headdb.store import resolve_run

BASIS_PAIRED = "paired"
BASIS_LAYER_COUNTS = "layer_counts"


def adjust_pvalues(p: np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values for one family, as a classification adjusts them
    (:func:`headdb.stats.adjust`); NaN entries stay NaN and are not counted in the family."""
    if method not in CORRECTIONS:
        raise InputError(f"unknown correction {method!r}; expected one of: {', '.join(CORRECTIONS)}")
    return adjust(p, method)


#: differences of at most this share of the score are float rounding, not change: the same edges
#: scored twice differ by about 1e-16 relative (DuckDB adds them in parallel, in varying order)
ROUNDING = 1e-12

#: per (role, layer, head), what its paired test needs of the paired scores, computed where they
#: are stored: d = B - A per sentence, 0 where within ROUNDING of the larger score (two runs over
#: the same attention compare as unchanged, not as t = +-1 from a last bit that differs in one
#: sentence); the means with the compensated favg; the variance var_samp (ddof = 1); min and max
#: of d for the case of all differences equal.
PAIRED_MOMENTS_SQL = """
SELECT role, layer::BIGINT AS layer, head::BIGINT AS head, count(*) AS n, favg(score_a) AS mean_a,
       favg(score_b) AS mean_b, favg(d) AS mean_diff, var_samp(d) AS var_diff, min(d) AS min_diff,
       max(d) AS max_diff
FROM (
    SELECT a.role, a.layer, a.head, a.score AS score_a, b.score AS score_b,
           CASE WHEN abs(b.score - a.score) <= $rounding * greatest(abs(a.score), abs(b.score)) THEN 0::DOUBLE
                ELSE b.score - a.score END AS d
    FROM sentence_scores a
    JOIN sentence_scores b
      ON b.role = a.role AND b.layer = a.layer AND b.head = a.head AND b.sentence_id = a.sentence_id
    WHERE a.run_id = $run_a AND b.run_id = $run_b AND list_contains($roles, a.role)
)
GROUP BY ALL
"""


def _paired_tests(m: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """t and p of the two-sided paired t-test of each head from its moments (the columns of
    :data:`PAIRED_MOMENTS_SQL`): ``scipy.stats.ttest_rel(score_b, score_a)``'s arithmetic, t =
    mean(d) / sqrt(var(d) / n) and p = 2 * stdtr(n - 1, -|t|), with the degenerate cases made
    explicit: fewer than 2 pairs -> NaN; all differences equal -> t = 0, p = 1 when they are 0 (no
    change), t = +-inf, p = 0 otherwise (every sentence moved by the same amount). The numbers
    equal scipy's from the scores to float rounding (tests/test_compare.py): the sums are added
    in another order, and var_samp's running updates lose a little more than numpy's two passes
    where the differences hardly vary, about 1e-12 of the variance at a mean of 10^4 standard
    deviations (t = 10^4 sqrt(n), far beyond any threshold)."""
    from scipy import special

    n = m["n"].to_numpy(np.int64)
    mean, var = m["mean_diff"].to_numpy(float), m["var_diff"].to_numpy(float)
    lo, hi = m["min_diff"].to_numpy(float), m["max_diff"].to_numpy(float)
    same = lo == hi
    with np.errstate(divide="ignore", invalid="ignore"):  # the degenerate heads' 0/0 is replaced below
        t = mean / np.sqrt(var / n)
        t = np.where(same, np.where(hi == 0, 0.0, np.copysign(np.inf, hi)), t)
    p = np.where(same, np.where(hi == 0, 1.0, 0.0), 2 * special.stdtr(np.maximum(n - 1, 1), -np.abs(t)))
    small = n < 2
    return np.where(small, np.nan, t), np.where(small, np.nan, p)


def _check_role_versions(con, run_a: int, run_b: int, roles: list[str]) -> None:
    """Refuse a role whose tests in the two runs come from SQL with different sieves
    (head_tests.role_sha256, read in role_versions): the scores would differ whatever the models
    do. Versions that differ only in comments, the description or tau have the same sieve.
    Tests stored before headdb recorded the version (NULL) are taken as they are; a version whose
    text the store lacks counts as different."""
    rows = con.execute(
        "SELECT t.role, t.run_id, list(DISTINCT t.role_sha256 ORDER BY t.role_sha256), "
        "list(DISTINCT v.sql ORDER BY v.sql) FILTER (WHERE v.sql IS NOT NULL), "
        "count(DISTINCT t.role_sha256) FILTER (WHERE v.sha256 IS NULL) "
        "FROM head_tests t LEFT JOIN role_versions v ON v.sha256 = t.role_sha256 "
        "WHERE t.run_id IN (?, ?) AND list_contains(?, t.role) AND t.role_sha256 IS NOT NULL "
        "GROUP BY t.role, t.run_id", [run_a, run_b, roles]).fetchall()
    versions = {(role, run): (set(shas), {_sieve_text(t) for t in (texts or [])}, unknown)
                for role, run, shas, texts, unknown in rows}
    for role in roles:
        a, b = versions.get((role, run_a)), versions.get((role, run_b))
        if not a or not b or a[0] == b[0]:
            continue
        if not a[2] and not b[2] and a[1] == b[1] and len(a[1]) == 1:
            continue  # other text, the same sieve
        # a role of the user's own is found only in its folder
        folder = "" if role in BUILTIN_ORDER else " --roles-dir DIR"
        raise DatabaseError(
            f"role {role!r} was classified from different SQL for run {run_a} (sha256 "
            f"{', '.join(sorted(x[:12] for x in a[0]))}) and run {run_b} ({', '.join(sorted(x[:12] for x in b[0]))}): "
            f"their scores are not comparable; classify both runs again with the same role file "
            f"(headdb classify DB --run {run_a} --roles {role}{folder}, then --run {run_b})")


def _unlike_decisions(con, run_a: int, run_b: int, roles: list[str]) -> dict[str, str]:
    """The roles whose significance in the two runs came from differently made decisions: other
    roles in the classification (the correction's family; not with correction none), another
    alpha, correction or tau.
    Each maps to what differed, for the note; gained and lost mean nothing for them (a head
    with the same scores could be "gained"). Tests from before headdb recorded their
    classification are taken as they are."""
    rows = con.execute(
        "SELECT t.role, t.run_id, any_value(c.classification_id), any_value(c.roles), any_value(c.alpha), "
        "any_value(c.correction), list(DISTINCT t.tau ORDER BY t.tau) "
        "FROM head_tests t JOIN classifications c USING (classification_id) "
        "WHERE t.run_id IN (?, ?) AND list_contains(?, t.role) GROUP BY t.role, t.run_id",
        [run_a, run_b, roles]).fetchall()
    # without a correction the family cannot change a decision: only with one do the roles count
    made = {(role, run): (cid, tuple(sorted(names.split(","))) if correction != "none" else (), alpha, correction,
                          tuple(taus))
            for role, run, cid, names, alpha, correction, taus in rows}

    def say(run: int, m: tuple) -> str:
        family = "" if not m[1] else " of " + (",".join(m[1]) if len(m[1]) <= 3 else f"{len(m[1])} roles")
        taus = "/".join(f"{t:g}" for t in m[4])
        return f"run {run}: classification {m[0]}{family}, {m[3]}, alpha {m[2]:g}, tau {taus}"

    unlike = {}
    for role in roles:
        a, b = made.get((role, run_a)), made.get((role, run_b))
        if a and b and a[1:] != b[1:]:
            unlike[role] = f"{say(run_a, a)}; {say(run_b, b)}"
    return unlike


def _sieve_text(text: str) -> str:
    """What of a role file decides its sieve: the level, the params and the SQL, without comments
    (the description, free comment lines, a comment at the end of a line of SQL, ``/* ... */``)
    or tau, one stripped line each. DuckDB's tokenizer finds the comments, so that ``--`` inside
    a string stays SQL."""
    import re

    import duckdb

    keep = re.compile(r"--\s*(level|params)\s*:")
    try:
        tokens = list(duckdb.tokenize(text))
    except Exception:  # pragma: no cover - stored role texts passed DuckDB's parser
        tokens = []
    pieces, last = [], 0
    for i, (pos, kind) in enumerate(tokens):
        if kind != duckdb.token_type.comment:
            continue
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(text)  # the comment and the space after it
        comment = text[pos:end]
        before = text[last:pos]
        pieces.append(before)
        pieces.append(comment.strip() + "\n" if keep.match(comment.strip())
                      else "\n" if "\n" in comment else "" if before[-1:].isspace() else " ")
        last = end
    pieces.append(text[last:])
    return "\n".join(line.strip() for line in "".join(pieces).splitlines()
                     if line.strip() and (not line.strip().startswith("--") or keep.match(line.strip())))


def _role_changes(df: pd.DataFrame, change: str, what: str, count: Callable[[int], str]) -> str:
    """How many heads gained (lost) a role, and how many roles where a head gained (lost) several:
    the (head, role) pairs alone read "72 heads gained a role" of 72 heads, 51 of which did."""
    rows = df[df["role_change"] == change]
    heads = len(rows[["layer", "head"]].drop_duplicates())
    return f"{count(heads)} {what}" + (f" ({len(rows):,} roles in all)" if len(rows) != heads else "")


def _run_info(con, run_id: int) -> dict:
    row = con.execute("SELECT run_id, run_name, corpus_id, n_layers, n_heads, model, dense, top_k, min_mass, "
                      "weight_bits, dtype, tokenizer, pairs FROM runs WHERE run_id = ?", [run_id]).fetchone()
    dense, top_k, min_mass, weight_bits, dtype, tokenizer = row[6:12]
    storage = "dense" if dense else f"top-{top_k}" + (f", min-mass {min_mass:g}" if min_mass is not None else "")
    storage += (", 16-bit weights" if weight_bits == 16 else "") + (f", {dtype}" if dtype != "float32" else "")
    return {"run_id": row[0], "run_name": row[1], "corpus_id": row[2], "n_layers": int(row[3]),
            "n_heads": int(row[4]), "model": row[5], "storage": storage, "tokenizer": _tokenizer_label(tokenizer),
            "pairs": bool(row[12])}


def _tokenizer_label(tokenizer: str | None) -> str:
    """runs.tokenizer (its class, a space, the folder it was loaded from) as a note names it."""
    cls, _, folder = (tokenizer or "").partition(" ")
    return f"{cls} ({model_label(folder)})" if folder else cls


#: Per shared sentence of two runs (both not skipped): whether the runs' inputs differ, by the
#: truncation, the length, or the pieces (other tokenizers cut the same words otherwise, often
#: into as many pieces)
_UNLIKE_INPUTS_SQL = """
WITH pieces AS (
    SELECT run_id, sentence_id, list(piece ORDER BY token_pos) AS pieces
    FROM tokens WHERE run_id IN ($a, $b) GROUP BY run_id, sentence_id
)
SELECT count(*),
       count(*) FILTER (WHERE a.status <> b.status OR a.n_tokens IS DISTINCT FROM b.n_tokens
                        OR pa.pieces IS DISTINCT FROM pb.pieces)
FROM run_sentences a JOIN run_sentences b USING (sentence_id)
LEFT JOIN pieces pa ON pa.run_id = a.run_id AND pa.sentence_id = a.sentence_id
LEFT JOIN pieces pb ON pb.run_id = b.run_id AND pb.sentence_id = b.sentence_id
WHERE a.run_id = $a AND b.run_id = $b AND a.status <> 'skipped' AND b.status <> 'skipped'
"""


def _tokenizers_note(ia: dict, ib: dict) -> str:
    """Where the runs' tokenizers differ, which they are (a note's parenthesis)."""
    if ia["tokenizer"] == ib["tokenizer"]:
        return ""
    return f" (the runs' tokenizers: run {ia['run_id']} {ia['tokenizer']}, run {ib['run_id']} {ib['tokenizer']})"


def _corpora_text(con, ia: dict, ib: dict) -> tuple[str, bool]:
    """What differs between the corpora of two runs, for the refusal: each run's corpus file, read
    in pairs or not, and its sha256 where the file is the same path (it changed between the runs).
    A run of the same file with --pairs is another corpus: "different corpora" alone named no
    difference the user could see. Also whether --pairs is what differs: one CoNLL-U file read in
    pairs and the other not (a TSV file holds pairs whatever the flags, and --pairs is refused for it)."""
    rows = {cid: (path, sha, pairs, fmt) for cid, path, sha, pairs, fmt in con.execute(
        "SELECT corpus_id, path, sha256, pairs, format FROM corpora WHERE corpus_id IN (?, ?)",
        [ia["corpus_id"], ib["corpus_id"]]).fetchall()}
    (pa, sa, qa, fa), (pb, sb, qb, fb) = rows[ia["corpus_id"]], rows[ib["corpus_id"]]

    def say(info: dict, path: str, sha: str, pairs: bool, fmt: str) -> str:
        read = "" if not pairs else f" in pairs ({flag('pairs')})" if fmt == "conllu" else " (TSV pairs)"
        return (f"run {info['run_id']}: {path}" + read
                + (f", sha256 {sha[:12]}" if pa == pb and sa != sb else ""))
    return f"{say(ia, pa, sa, qa, fa)}; {say(ib, pb, sb, qb, fb)}", qa != qb and fa == fb == "conllu"


def _storage_note(ia: dict, ib: dict) -> str:
    """A line where the runs were ingested with other storage settings (top-k, min-mass, dense,
    weight bits, dtype): a sparse score is a lower bound that grows with the keys kept, so the
    same model at top-8 and top-16 showed 622 of 648 (head, role) scores changed and 4 heads
    gained a role, without a word about the storage."""
    if ia["storage"] == ib["storage"]:
        return ""
    return (f"\nthe runs store attention differently (run {ia['run_id']}: {ia['storage']}; run {ib['run_id']}: "
            f"{ib['storage']}): part of every difference comes from what was stored, not from the model; "
            "compare runs ingested with the same "
            + ", ".join(map(option, ("top_k", "min_mass", "dense", "weight_bits"))) + " and " + option("dtype"))


def compare(db: DbLike, run_a: int | str, run_b: int | str, roles: Sequence[str] | str | None = None,
            correction: str = "bh", alpha: float = 0.05) -> pd.DataFrame:
    """Compare run B against run A head by head (see the module docstring).

    Same shapes: one row per (role, layer, head) with n (paired sentences), mean_a, mean_b,
    mean_diff (B - A), std_diff, t, p, p_adj, changed (p_adj < alpha), direction (up / down),
    significant_a, significant_b and role_change (gained / lost / kept / none, or unknown where a
    run has no test of that head and role).
    Different shapes: one row per (role, layer) with n_significant_a, n_significant_b and change.
    ``df.attrs`` holds basis, note, run ids and names, correction, alpha and test.
    """
    check_options(alpha, correction)
    alpha = float(alpha)  # numpy's as Python's, in attrs and the note
    with open_db(db) as con:
        ia = _run_info(con, resolve_run(con, run_a, finished=True))
        ib = _run_info(con, resolve_run(con, run_b, finished=True))
        if ia["corpus_id"] != ib["corpus_id"]:
            corpora, pairs_differ = _corpora_text(con, ia, ib)
            # --pairs named only where it is what differs (it applies to CoNLL-U alone)
            raise DatabaseError(
                f"runs {ia['run_id']} and {ib['run_id']} are over different corpora ({corpora}); "
                "compare needs two runs over the same sentences: ingest one corpus file for both models"
                + (", both with " + flag("pairs") + " or both without" if pairs_differ else ""))
        roles_a = classified_roles(con, ia["run_id"])
        roles_b = set(classified_roles(con, ib["run_id"]))
        common = [r for r in roles_a if r in roles_b]
        if not common:
            raise DatabaseError(f"runs {ia['run_id']} and {ib['run_id']} have no classified role in common")
        asked = requested_roles(roles)
        lacking = [f"run {info['run_id']}" for info, present in ((ia, roles_a), (ib, roles_b))
                   if any(r not in present for r in asked)]  # the error names the run(s) that lack a role
        wanted = select_roles(common, roles, " or ".join(lacking))
        _check_role_versions(con, ia["run_id"], ib["run_id"], wanted)
        unlike = _unlike_decisions(con, ia["run_id"], ib["run_id"], wanted)

        def unlike_note(what: str) -> str:  # a line per role
            return "".join(f"\n{role}: the runs' tests were decided differently ({how}), so {what}; classify "
                           "both runs with the same roles and options" for role, how in unlike.items())
        attrs = {"run_a": ia["run_id"], "run_b": ib["run_id"], "run_name_a": ia["run_name"],
                 "run_name_b": ib["run_name"], "model_a": ia["model"], "model_b": ib["model"],
                 "shape_a": (ia["n_layers"], ia["n_heads"]), "shape_b": (ib["n_layers"], ib["n_heads"]),
                 "roles": wanted, "correction": correction, "alpha": alpha}
        # each run's tests are over its own sentences: where the runs hold other sentences (another
        # --limit, sentences one run skipped), a head with the same scores on the shared ones
        # could be "lost" (60 against 40 sentences: 3 lost, 0 changed)
        n_run_a, n_run_b = (con.execute("SELECT count(*) FROM run_sentences WHERE run_id = ? AND status <> 'skipped'",
                                        [r]).fetchone()[0] for r in (ia["run_id"], ib["run_id"]))
        n_shared = con.execute(
            "SELECT count(*) FROM run_sentences a JOIN run_sentences b USING (sentence_id) WHERE a.run_id = ? "
            "AND b.run_id = ? AND a.status <> 'skipped' AND b.status <> 'skipped'",
            [ia["run_id"], ib["run_id"]]).fetchone()[0]
        other_sentences = n_run_a != n_shared or n_run_b != n_shared
        # a pair is one input, as ingest and the report count it (runs over one corpus both have pairs or not)
        unit = "pair" if ia["pairs"] else "sentence"

        def sentences_note(what: str) -> str:
            return (f"\nthe runs' tests are over other {unit}s (run {ia['run_id']}: {n_run_a:,}, run "
                    f"{ib['run_id']}: {n_run_b:,}, {n_shared:,} shared), so {what}" if other_sentences else "")
        if (ia["n_layers"], ia["n_heads"]) != (ib["n_layers"], ib["n_heads"]):
            # counts of heads with a role come from each run's tests over its own sentences: 300
            # against 50 sentences gave fewer heads for the run of fewer, without a word
            df = _layer_counts(con, ia["run_id"], ib["run_id"], wanted)
            attrs.update(basis=BASIS_LAYER_COUNTS, test="none", note=(
                f"layer x head shapes differ ({ia['n_layers']}x{ia['n_heads']} vs {ib['n_layers']}x{ib['n_heads']}): "
                "compared by per-layer counts of heads with each role only; no head-by-head test"
                + _storage_note(ia, ib) + unlike_note("its counts do not compare")
                + sentences_note(f"part of every change in the counts comes from the {unit}s (a test over fewer "
                                 "finds fewer heads), not from the model")), unlike_decisions=unlike)
            df.attrs = attrs
            return df
        moments = con.execute(PAIRED_MOMENTS_SQL, {"run_a": ia["run_id"], "run_b": ib["run_id"], "roles": wanted,
                                                   "rounding": ROUNDING}).df()
        sig = con.execute(
            """
            -- an untested head (p NULL: fewer than two scores, or every score equals tau) is stored
            -- as not significant; it has neither decision here, so its role_change is unknown
            SELECT role, layer, head,
                   bool_or(CASE WHEN p IS NOT NULL THEN significant END) FILTER (WHERE run_id = ?) AS significant_a,
                   bool_or(CASE WHEN p IS NOT NULL THEN significant END) FILTER (WHERE run_id = ?) AS significant_b
            FROM head_tests WHERE run_id IN (?, ?) AND list_contains(?, role)
            GROUP BY role, layer, head
            """, [ia["run_id"], ib["run_id"], ia["run_id"], ib["run_id"], wanted]).df()
        # shared sentences cut in one run and not the other, or of other pieces: their changes
        # come from the input (a pair of a truncated and a whole run gave "56 lost" without a word)
        n_sent, n_unlike = con.execute(_UNLIKE_INPUTS_SQL, {"a": ia["run_id"], "b": ib["run_id"]}).fetchone()
    t, p = _paired_tests(moments)
    df = moments[["role", "layer", "head", "n", "mean_a", "mean_b", "mean_diff"]].assign(
        std_diff=np.sqrt(moments["var_diff"].to_numpy(float)), t=t, p=p)
    # every head of the shape appears, even one without paired sentences (n = 0, untested)
    grid = pd.MultiIndex.from_product([wanted, range(ia["n_layers"]), range(ia["n_heads"])],
                                      names=["role", "layer", "head"]).to_frame(index=False)
    df = grid.merge(df, how="left", on=["role", "layer", "head"])
    df["n"] = df["n"].fillna(0).astype("int64")
    df["p_adj"] = adjust_pvalues(df["p"].to_numpy(), correction)
    df["changed"] = (df["p_adj"] < alpha).fillna(False).astype(bool)
    df["direction"] = np.where(df["changed"], np.where(df["mean_diff"] > 0, "up", "down"), "")
    sig["layer"] = sig["layer"].astype("int64")
    sig["head"] = sig["head"].astype("int64")
    df = df.merge(sig, how="left", on=["role", "layer", "head"])
    sa = df["significant_a"].astype("boolean")
    sb = df["significant_b"].astype("boolean")
    unlike_roles = df["role"].isin(list(unlike)).to_numpy() | other_sentences
    # plain bool arrays (NA as False, already taken by the first): numpy before 1.25 refused pandas' nullable ones
    conditions = [sa.isna() | sb.isna() | unlike_roles, ~sa & sb, sa & ~sb, sa & sb]
    df["role_change"] = np.select(
        [np.asarray(pd.array(c, dtype="boolean").fillna(False), dtype=bool) for c in conditions],
        ["unknown", "gained", "lost", "kept"], "none")
    df["significant_a"], df["significant_b"] = sa, sb
    order = {r: i for i, r in enumerate(wanted)}
    df = df.sort_values(["role", "layer", "head"], key=lambda s: s.map(order) if s.name == "role" else s)
    df.insert(0, "basis", BASIS_PAIRED)
    df = df.reset_index(drop=True)
    n_changed = int(df["changed"].sum())
    # of how many tests: runs over one shared sentence read "0 (head, role) scores changed", as if
    # every head had been tested and none had moved, where none could be tested
    n_tested = int(df["p"].notna().sum())
    attrs.update(basis=BASIS_PAIRED, n_sentences=int(n_sent), n_tested=n_tested,
                 test="two-sided paired t-test, scipy.stats.ttest_rel(score_b, score_a), per (head, role)",
                 note=(f"{len(wanted)} role(s) x {ia['n_layers']}x{ia['n_heads']} heads over "
                       f"{count(int(n_sent), 'shared ' + unit)}; {n_changed:,} of {n_tested:,} tested (head, role) scores "
                       f"changed at {correction} alpha={alpha}"
                       + ("" if n_tested else f" (a paired test needs scores on two shared {unit}s)") + "; "
                       # where every role_change is unknown, "0 heads gained a role, 0 lost one" read as a finding
                       + (f"{_role_changes(df, 'gained', 'gained a role', lambda n: count(n, 'head'))}, "
                          f"{_role_changes(df, 'lost', 'lost one', '{:,}'.format)}"
                          if (df["role_change"] != "unknown").any() else "roles gained and lost unknown" + (
                              # untested heads (p NULL) have no line below that says why
                              "" if other_sentences else
                              f" (no head{' of the roles decided alike' if unlike else ''} has a test in both "
                              f"runs: fewer than two {unit}s with scores, or every score equal to tau)"
                              if any(r not in unlike for r in wanted) else "")
                          + (" (below)" if other_sentences or unlike else ""))
                       + (f"\n{n_unlike:,} of the shared {unit}s were truncated in one run and not in the other, "
                          "or are other pieces" + _tokenizers_note(ia, ib)
                          + ": their differences come from the input, not only the model" if n_unlike else "")
                       + _storage_note(ia, ib)
                       + unlike_note("its role_change is unknown")
                       + sentences_note("role_change is unknown for every role; the paired tests use the shared "
                                        + unit + "s")
                       # a table of zeros without a word: `compare DB 1 base` where base is run 1
                       + (f"\nrun A and run B are the same run ({ia['run_id']}): every difference is 0"
                          if ia["run_id"] == ib["run_id"] else "")),
                 unlike_decisions=unlike)
    df.attrs = attrs
    return df


def _layer_counts(con, run_a: int, run_b: int, roles: list[str]) -> pd.DataFrame:
    df = con.execute(
        """
        SELECT coalesce(a.role, b.role) AS role, coalesce(a.layer, b.layer) AS layer,
               coalesce(a.n_significant, 0) AS n_significant_a, coalesce(b.n_significant, 0) AS n_significant_b,
               coalesce(a.n_tested, 0) AS n_tested_a, coalesce(b.n_tested, 0) AS n_tested_b
        FROM (SELECT * FROM role_layer_distribution WHERE run_id = ?) a
        FULL OUTER JOIN (SELECT * FROM role_layer_distribution WHERE run_id = ?) b
          ON a.role = b.role AND a.layer = b.layer
        WHERE list_contains(?, coalesce(a.role, b.role))
        """, [run_a, run_b, roles]).df()
    df = df.astype({"layer": "int64", "n_significant_a": "int64", "n_significant_b": "int64",
                    "n_tested_a": "int64", "n_tested_b": "int64"})
    # no change where a run tested none of the role's heads in the layer (a layer only the deeper
    # run has, say): its count against nothing read as "-12" heads in the command's table
    both = (df["n_tested_a"] > 0) & (df["n_tested_b"] > 0)
    df["change"] = (df["n_significant_b"] - df["n_significant_a"]).astype("Int64").where(both, pd.NA)
    order = {r: i for i, r in enumerate(roles)}
    df = df.sort_values(["role", "layer"], key=lambda s: s.map(order) if s.name == "role" else s)
    df.insert(0, "basis", BASIS_LAYER_COUNTS)
    return df.reset_index(drop=True)


def layer_profile(comparison: pd.DataFrame) -> pd.DataFrame:
    """The per-layer profile of change of a :func:`compare` result.

    Paired basis: per (role, layer) the heads, mean and mean absolute score difference, heads
    whose score went up / down significantly, heads with the role in A and in B, gained, lost.
    Layer-counts basis: the counts themselves.
    """
    if comparison.empty or comparison["basis"].iloc[0] == BASIS_LAYER_COUNTS:
        return comparison.copy()
    c = comparison.assign(abs_diff=comparison["mean_diff"].abs(),
                          up=comparison["direction"] == "up", down=comparison["direction"] == "down",
                          gained=comparison["role_change"] == "gained", lost=comparison["role_change"] == "lost",
                          known=comparison["role_change"] != "unknown",
                          sig_a=comparison["significant_a"].fillna(False).astype(bool),
                          sig_b=comparison["significant_b"].fillna(False).astype(bool))
    prof = c.groupby(["role", "layer"], sort=False).agg(
        n_heads=("head", "size"), mean_diff=("mean_diff", "mean"), mean_abs_diff=("abs_diff", "mean"),
        n_up=("up", "sum"), n_down=("down", "sum"), n_significant_a=("sig_a", "sum"),
        n_significant_b=("sig_b", "sum"), gained=("gained", "sum"), lost=("lost", "sum"),
        known=("known", "sum")).reset_index()
    prof = prof.astype({"n_up": "int64", "n_down": "int64", "n_significant_a": "int64",
                        "n_significant_b": "int64", "gained": "Int64", "lost": "Int64"})
    # where no head's role_change is known (runs over other sentences, tests decided differently),
    # gained and lost are unknown, not 0 heads
    for col in ("gained", "lost"):
        prof[col] = prof[col].where(prof["known"] > 0, pd.NA)
    return prof.drop(columns="known")


def compare_layers(db: DbLike, run_a: int | str, run_b: int | str, roles: Sequence[str] | str | None = None,
                   correction: str = "bh", alpha: float = 0.05) -> pd.DataFrame:
    """:func:`layer_profile` of :func:`compare` (same arguments)."""
    cmp = compare(db, run_a, run_b, roles, correction, alpha)
    prof = layer_profile(cmp)
    prof.attrs = dict(cmp.attrs)
    return prof


def role_changes(comparison: pd.DataFrame) -> pd.DataFrame:
    """The heads that gained or lost a role in a paired :func:`compare` result."""
    if comparison.empty or comparison["basis"].iloc[0] == BASIS_LAYER_COUNTS:
        return pd.DataFrame(columns=["role", "layer", "head", "role_change", "mean_a", "mean_b"])
    keep = comparison["role_change"].isin(["gained", "lost"])
    return comparison.loc[keep, ["role", "layer", "head", "role_change", "mean_a", "mean_b"]].reset_index(drop=True)


def colocation_change(db: DbLike, run_a: int | str, run_b: int | str, roles: Sequence[str] | str | None = None,
                      correction: str = "bh", alpha: float = 0.05) -> pd.DataFrame:
    """How fine-tuning changes the co-location of roles: per pair of roles (``role_a`` before or
    equal to ``role_b`` in the roles' order; the diagonal is the role itself), the heads with both
    roles in run A (``n_heads_a``, as :func:`headdb.colocation` counts them) and in run B
    (``n_heads_b``), ``change`` (B - A), and the heads that ``gained`` and ``lost`` the pair (both
    roles in B and not in A, and the other way). Gained and lost come from :func:`compare`'s
    ``role_change`` (same arguments): they count the heads whose change of both roles is known,
    and are missing (NA) where none is (tests decided differently, runs over other sentences: the
    note says why) and where the runs' layer x head shapes differ (no head to pair).
    ``df.attrs`` is :func:`compare`'s."""
    cmp = compare(db, run_a, run_b, roles, correction, alpha)
    with open_db(db) as con:
        df = colocation_profile(con, cmp)
    return df


def colocation_profile(con, comparison: pd.DataFrame) -> pd.DataFrame:
    """:func:`colocation_change` of a :func:`compare` result, read on the open store ``con`` (a
    comparison of runs of other shapes holds no head's decisions: their counts are read there)."""
    a = comparison.attrs
    roles = list(a["roles"])
    pairs = [(x, y) for i, x in enumerate(roles) for y in roles[i:]]
    out = pd.DataFrame(pairs, columns=["role_a", "role_b"])
    if a["basis"] == BASIS_PAIRED:
        def grid(column: str) -> pd.DataFrame:  # (layer, head) x role
            return comparison.pivot(index=["layer", "head"], columns="role", values=column)
        sig_a = grid("significant_a").fillna(False).astype(bool)
        sig_b = grid("significant_b").fillna(False).astype(bool)
        known = grid("role_change") != "unknown"
        rows = []
        for x, y in pairs:
            both_a, both_b, ok = sig_a[x] & sig_a[y], sig_b[x] & sig_b[y], known[x] & known[y]
            # where no head's change of both roles is known, gained and lost are unknown, not 0 heads
            rows.append({"n_heads_a": int(both_a.sum()), "n_heads_b": int(both_b.sum()),
                         "gained": int((ok & ~both_a & both_b).sum()) if ok.any() else pd.NA,
                         "lost": int((ok & both_a & ~both_b).sum()) if ok.any() else pd.NA})
        out = pd.concat([out, pd.DataFrame(rows, columns=["n_heads_a", "n_heads_b", "gained", "lost"])], axis=1)
        out.insert(4, "change", out["n_heads_b"] - out["n_heads_a"])
    else:
        # each run's own counts (view role_colocation), as headdb.colocation gives them
        for run, col in ((a["run_a"], "n_heads_a"), (a["run_b"], "n_heads_b")):
            n_heads = {(x, y): int(n) for x, y, n in con.execute(
                "SELECT role_a, role_b, n_heads FROM role_colocation WHERE run_id = ?", [run]).fetchall()}
            out[col] = [n_heads.get(p, 0) for p in pairs]
        out["change"] = out["n_heads_b"] - out["n_heads_a"]
        out["gained"] = out["lost"] = pd.NA  # no head to pair
    out = out.astype({"n_heads_a": "int64", "n_heads_b": "int64", "change": "int64",
                      "gained": "Int64", "lost": "Int64"})
    out.attrs = dict(a)
    return out


__all__ = ["compare", "compare_layers", "layer_profile", "role_changes", "colocation_change", "colocation_profile",
           "adjust_pvalues", "CORRECTIONS"]
