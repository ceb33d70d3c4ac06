"""Sieve bias scores per (run, role, layer, head, sentence), from one framework SQL query.

``queries/framework/scores.sql`` serves every role: the roles' sieves are stacked into one
relation, joined once with the stored edges and aggregated per attention row. Role SQL only
ever runs on a restricted connection (read-only, no file or network access).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pandas as pd

from headdb.db import close_connection, connect_restricted, interrupted, interruptible, quote_ident, registered
from headdb.errors import RoleError
from headdb.resources import query
from headdb.roles import Role, fill, load_roles, set_params, sieve_sql
from headdb.store import resolve_run, sentence_ranges

#: Bits of the HUGEINT that carry the per-role counters of one attention row.
COUNTER_BITS = 126
#: Attention rows (queries x layers x heads) scored per query: a larger run is scored in pieces
#: of whole sentences, so that the query's hash tables stay this size. One query over the whole
#: run slowed down per edge as runs grew (78 ns per edge for 19 M EWT edges, 87 for 120 M);
#: in pieces of about this size the time is linear in the run and DuckDB's memory is bounded.
CHUNK_ROWS = 3_000_000

SCORE_COLUMNS = ["run_id", "role", "layer", "head", "sentence_id", "score", "score_upper", "n_queries"]
_SIEVE_TABLE = "headdb_sieve"
# a pass's sieve where it is scored (a registered Arrow table: a TEMP table created inside the
# transaction that stores the scores would be scanned three times slower)
_ARROW_SIEVE = "_headdb_sieve_arrow"
# one piece of a run: the sentences $lo .. $hi (parameters, so DuckDB skips the other row groups)
_PIECE_EDGES = "(SELECT * FROM edges WHERE run_id = $run_id AND sentence_id BETWEEN $lo AND $hi)"
# a whole run (a constant run id: DuckDB skips other runs' row groups, with no join to the sieve's runs)
_RUN_EDGES = "(SELECT * FROM edges WHERE run_id = $run_id)"


def counter_bits(max_tokens: int) -> int:
    """Width of one role's counter of stored in-sieve keys per row (at most ``max_tokens``)."""
    return max(1, int(max_tokens).bit_length())


def roles_per_pass(bits: int) -> int:
    return max(1, COUNTER_BITS // bits)


def framework_sql(n_roles: int, sieve: str, bits: int = 16, edges: str = "edges") -> str:
    """The scoring query for ``n_roles`` roles numbered 0..n-1 in the relation ``sieve``, over
    the relation ``edges`` (the table, or a parenthesised SELECT of a part of it).

    Lines of the framework file that hold ``{r}`` are repeated once per role; ``bits`` is the
    width of a role's counter field (positions are SMALLINT, so 16 always suffices).
    """
    if not 1 <= n_roles <= roles_per_pass(bits) or not 1 <= bits <= 16:  # pragma: no cover - callers chunk
        raise ValueError(f"1 to {roles_per_pass(bits)} roles per pass of {bits}-bit counters")
    lines: list[str] = []
    for line in query("framework/scores").splitlines():
        if "{r}" in line and not line.lstrip().startswith("--"):
            lines.extend(line.replace("{r}", str(r)) for r in range(n_roles))
        else:
            lines.append(line)
    text = "\n".join(lines).replace("{bits}", str(int(bits)))
    if text.count("{edges}") != 2:  # pragma: no cover - a bug in the shipped file
        raise RuntimeError("framework/scores must read {edges} twice")
    return fill(text.replace("{edges}", edges), "sieve", sieve)


def _unset_params(con: duckdb.DuckDBPyConnection, role: Role) -> None:
    for key in role.params:
        con.execute(f"RESET VARIABLE {quote_ident(key)}")


def _sieve_select(role: Role) -> str:
    """One role's sieve as the rows of the sieve table; parameters: its number, the run id."""
    return f"SELECT ?, run_id, sentence_id, query_pos, key_pos FROM {sieve_sql(role)} WHERE run_id = ?"


def _param_clash(roles: list[Role]) -> tuple[Role, str] | None:
    """The first role (and parameter) that binds a parameter to another value than a role before
    it; None when the roles agree (their variables can then be set on one connection at once)."""
    seen: dict[str, object] = {}
    for role in roles:
        for key, value in role.params.items():
            if seen.setdefault(key, value) != value:
                return role, key
    return None


def _insert_sieves(con: duckdb.DuckDBPyConnection, run_id: int, roles: list[Role]) -> bool:
    """All roles' sieves in one INSERT (DuckDB runs the SELECTs side by side: 0.07 against 0.11 s
    one by one for the built-ins on EWT). False, with nothing inserted, where roles bind one
    parameter to different values or a SELECT fails: the caller then goes role by role, which
    names the role at fault."""
    if _param_clash(roles) is not None:
        return False
    union_sql = "\nUNION ALL\n".join(_sieve_select(role) for role in roles)
    for role in roles:
        set_params(con, role)
    try:
        con.execute(f"INSERT INTO {_SIEVE_TABLE}\n{union_sql}", [v for number in range(len(roles)) for v in (number, run_id)])
    except duckdb.Error as exc:
        if interrupted(exc):  # Ctrl-C: not a role to find by going role by role
            raise
        con.execute(f"DELETE FROM {_SIEVE_TABLE}")
        return False
    finally:
        for role in roles:
            _unset_params(con, role)
    return True


def _fill_sieve(con: duckdb.DuckDBPyConnection, run_id: int, roles: list[Role]) -> list[bool]:
    """Materialise the sieves of ``roles`` for one run as numbered roles; check the contract
    that can only be checked on data. Returns which roles have a non-empty sieve."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_SIEVE_TABLE} (role SMALLINT, run_id INTEGER, "
                "sentence_id INTEGER, query_pos SMALLINT, key_pos SMALLINT)")
    if not (len(roles) > 1 and _insert_sieves(con, run_id, roles)):
        for number, role in enumerate(roles):
            set_params(con, role)
            try:
                select_sql = _sieve_select(role)
                con.execute(f"INSERT INTO {_SIEVE_TABLE}\n{select_sql}", [number, run_id])
            except duckdb.Error as exc:
                if interrupted(exc):
                    raise
                raise role.failed(exc) from None
            finally:
                _unset_params(con, role)
    for role in roles:
        if role.level == "word" and not role.builtin:  # the built-ins' words are tested in the suite
            _check_words(con, run_id, role)
    filled = {number for (number,) in con.execute(f"SELECT DISTINCT role FROM {_SIEVE_TABLE}").fetchall()}
    nonempty = [number in filled for number in range(len(roles))]
    bad = con.execute(query("framework/sieve_checks").replace("{sieve}", _SIEVE_TABLE)).fetchall()
    if bad:
        number, kind, sentence_id, query_pos, key_pos = bad[0]
        role = roles[number]
        where = f"sentence {_shown(sentence_id)}, query_pos {_shown(query_pos)}, key_pos {_shown(key_pos)}"
        if kind == "null":
            raise role.error(f"the sieve holds a NULL ({where}); every row names a sentence and two "
                             "positions (a NULL often comes from a misspelt getvariable() name or an outer join)")
        if kind == "duplicate":
            raise role.error(f"the sieve holds the pair ({where}) more than once; a role lists each "
                             "(query, key) pair once (use SELECT DISTINCT or fix the join)")
        raise role.error(f"the sieve names a position outside the stored sequence ({where}); positions "
                         "are 0-based and below the sentence's n_tokens")
    return nonempty


def _check_words(con: duckdb.DuckDBPyConnection, run_id: int, role: Role) -> None:
    """Refuse a word-level role whose pairs hold a NULL, name a word its sentence lacks, or list a
    pair twice (in the role's own word positions, before they become piece positions)."""
    set_params(con, role)
    try:
        bad = con.execute(fill(query("framework/word_checks"), "word_pairs", "(\n" + role.body + "\n)"),
                          {"run_id": run_id}).fetchall()
    except duckdb.Error as exc:
        if interrupted(exc):
            raise
        raise role.failed(exc) from None
    finally:
        _unset_params(con, role)
    if bad:
        kind, sentence_id, query_word, key_word = bad[0]
        where = (f"sentence {_shown(sentence_id)}, query_word_pos {_shown(query_word)}, "
                 f"key_word_pos {_shown(key_word)}")
        if kind == "duplicate":
            raise role.error(f"the role lists the word pair ({where}) more than once; a role lists each "
                             "(query word, key word) pair once (use SELECT DISTINCT or fix the join)")
        raise role.error(f"the role names a word its sentence does not have, or a NULL ({where}); word "
                         "positions are the 0-based word_pos of the words table")


def _shown(value) -> str:
    return "NULL" if value is None else str(value)


def _sentence_ranges(con: duckdb.DuckDBPyConnection, run_id: int) -> list[tuple[int, int]]:
    """Consecutive ranges (first, last sentence_id) of a run with about ``CHUNK_ROWS``
    attention rows each (one range for runs up to that size)."""
    return sentence_ranges(con, run_id, CHUNK_ROWS)


def _pass_queries(n_roles: int, sieve_relation: str, bits: int, pieces: list[tuple[int, int]],
                  run_id: int) -> list[tuple[str, dict]]:
    """The scoring query of one pass of ``n_roles`` roles whose sieve is the relation named
    ``sieve_relation`` (headdb's own table names): one (sql, parameters) per piece of the run."""
    if len(pieces) == 1:
        return [(framework_sql(n_roles, sieve_relation, bits, _RUN_EDGES), {"run_id": run_id})]
    piece = f"(SELECT * FROM {sieve_relation} WHERE sentence_id BETWEEN $lo AND $hi)"
    sql = framework_sql(n_roles, piece, bits, _PIECE_EDGES)
    return [(sql, {"run_id": run_id, "lo": lo, "hi": hi}) for lo, hi in pieces]


def sieve_passes(con: duckdb.DuckDBPyConnection, run_id: int, roles: list[Role]) -> tuple[int, list[tuple[int, int, object]]]:
    """The roles' sieves for one run, filled and checked on a restricted connection, as Arrow
    tables to score elsewhere (:func:`store_scores`). Returns the counter width and one
    (index of the pass's first role, its number of roles, its sieve) per pass whose sieve is
    not empty; roles are numbered from 0 within a pass, as :func:`framework_sql` expects.

    Role SQL runs only here, on a worker thread (:func:`headdb.db.interruptible`), so that
    Ctrl-C stops a role whose query DuckDB would not stop for the signal (an endless recursive
    CTE, a cross join in a scalar subquery)."""
    return interruptible(con, lambda: _sieve_passes(con, run_id, roles))


def _sieve_passes(con: duckdb.DuckDBPyConnection, run_id: int, roles: list[Role]) -> tuple[int, list[tuple[int, int, object]]]:
    longest = con.execute("SELECT coalesce(max(n_tokens), 1) FROM run_sentences WHERE run_id = ?", [run_id]).fetchone()[0]
    bits = counter_bits(longest)
    step = roles_per_pass(bits)
    passes = []
    for start in range(0, len(roles), step):
        chunk = roles[start : start + step]
        if any(_fill_sieve(con, run_id, chunk)):
            passes.append((start, len(chunk), con.sql(f"SELECT * FROM {_SIEVE_TABLE}").to_arrow_table()))
    con.execute(f"DROP TABLE IF EXISTS {_SIEVE_TABLE}")
    return bits, passes


def _scoring_queries(con: duckdb.DuckDBPyConnection, run_id: int, bits: int,
                     passes: list[tuple[int, int, object]],
                     progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, str, dict]]:
    """(index of the pass's first role, query, parameters) for every piece of every pass of
    :func:`sieve_passes`, each pass's sieve registered on ``con`` while its queries run.
    Consumes ``passes``: each sieve is let go once scored. ``progress(done, total)`` is called
    before the first query and after each one (a large run is scored in pieces)."""
    pieces = _sentence_ranges(con, run_id)
    total, done = len(passes) * len(pieces), 0
    if progress is not None:
        progress(0, total)
    while passes:
        start, n_roles, sieve = passes.pop(0)
        with registered(con, _ARROW_SIEVE, sieve):
            for sql, params in _pass_queries(n_roles, _ARROW_SIEVE, bits, pieces, run_id):
                yield start, sql, params
                done += 1
                if progress is not None:
                    progress(done, total)
        del sieve


def store_scores(con: duckdb.DuckDBPyConnection, run_id: int, roles: list[Role], bits: int,
                 passes: list[tuple[int, int, object]], progress: Callable[[int, int], None] | None = None) -> None:
    """Score :func:`sieve_passes`' sieves on ``con``, a writable connection inside the caller's
    transaction, straight into ``sentence_scores``: the scores never pass through Python.
    Runs only headdb's own framework query, never role SQL. Consumes ``passes``.
    ``progress(done, total)`` counts the scoring queries (:func:`_scoring_queries`)."""
    names = [r.name for r in roles]
    for start, sql, params in _scoring_queries(con, run_id, bits, passes, progress):
        con.execute("INSERT INTO sentence_scores (run_id, role, layer, head, sentence_id, score, score_upper, "
                    "n_queries) SELECT s.run_id, list_extract($names, s.role + $first), s.layer, s.head, "
                    f"s.sentence_id, s.score, s.score_upper, s.n_queries FROM (\n{sql}\n) AS s",
                    params | {"names": names, "first": start + 1})


def stored_head_moments(con: duckdb.DuckDBPyConnection, run_id: int, roles: list[str]) -> dict:
    """What the per-head t-tests need of a run's stored scores of ``roles``, computed by DuckDB:
    per (role, layer, head) with scores, the columns of :data:`headdb.stats.MOMENT_COLUMNS` (role
    as its position in ``roles``; the means with DuckDB's compensated ``favg``, the variances
    ``var_samp``, the minimum and maximum, which say where all scores are equal). Reading the
    EWT run's 961,560 scores back into Python instead took 4-8 times as long (docs/benchmarks.md)."""
    return con.execute(
        "SELECT (list_position($roles, role) - 1)::INTEGER AS role, layer, head, count(*) AS n, "
        "favg(score) AS mean, var_samp(score) AS var, min(score) AS min, max(score) AS max, "
        "favg(score_upper) AS mean_upper, var_samp(score_upper) AS var_upper, min(score_upper) AS min_upper, "
        "max(score_upper) AS max_upper FROM sentence_scores "
        "WHERE run_id = $run AND list_contains($roles, role) GROUP BY ALL",
        {"run": run_id, "roles": roles}).fetchnumpy()


def compute_scores(con: duckdb.DuckDBPyConnection, run_id: int, roles: list[Role],
                   progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Per-sentence scores of ``roles`` for one run, on an open (restricted) connection.

    Sorted by role (in the given order), layer, head, sentence_id; ``role`` is categorical.
    ``progress(done, total)`` counts the scoring queries (:func:`_scoring_queries`).
    """
    import numpy as np

    cols: dict[str, list[np.ndarray]] = {c: [] for c in SCORE_COLUMNS}
    bits, passes = sieve_passes(con, run_id, roles)
    for start, sql, params in _scoring_queries(con, run_id, bits, passes, progress):
        # each piece sorted by DuckDB (in parallel), so that the pieces only need merging below
        got = con.execute(f"SELECT * FROM (\n{sql}\n) ORDER BY role, layer, head, sentence_id",
                          params or None).fetchnumpy()
        got["role"] = np.asarray(got["role"], dtype=np.int64) + start  # the role's index in ``roles``
        for c in SCORE_COLUMNS:
            cols[c].append(np.asarray(got[c]))
    if not cols["run_id"]:
        return pd.DataFrame({c: pd.Categorical([], categories=[r.name for r in roles]) if c == "role" else
                             np.empty(0, dtype=float if c.startswith("score") else np.int64) for c in SCORE_COLUMNS})
    data = {}
    for c in SCORE_COLUMNS:  # a column's pieces are let go once joined: one copy of the scores, not two
        pieces_of_c = cols.pop(c)
        data[c] = np.concatenate(pieces_of_c) if len(pieces_of_c) > 1 else pieces_of_c[0]
        del pieces_of_c
    # role passes come in role order and each piece is sorted; pieces of a large run are ranges of
    # sentences in ascending order, so a stable sort by (role, layer, head) alone merges them
    # (timsort finds the sorted runs: linear in the rows for one piece, n log(pieces) for more)
    layers = int(data["layer"].max()) + 1 if len(data["layer"]) else 1
    heads = int(data["head"].max()) + 1 if len(data["head"]) else 1
    group = (data["role"] * layers + data["layer"].astype(np.int64)) * heads + data["head"].astype(np.int64)
    if len(group) > 1 and (np.diff(group) < 0).any():
        order = np.argsort(group, kind="stable")
        for c in SCORE_COLUMNS:  # one column at a time, each replacing its unsorted self
            data[c] = data[c][order]
        del order
    del group
    codes = data["role"]
    data["role"] = pd.Categorical.from_codes(codes, categories=[r.name for r in roles])
    # copy=False: the arrays are this function's own; without it pandas copies them into one
    # block per dtype (0.06 s for the 1 M scores of the EWT store)
    return pd.DataFrame(data, columns=SCORE_COLUMNS, copy=False)


def scores(db: str | Path, run: int | str | None = None, roles: list[str] | str | None = None,
           roles_dir: str | Path | None = None) -> pd.DataFrame:
    """Per-sentence sieve bias scores of a run (default: the latest finished) for the given
    roles (default: every built-in and every role in ``roles_dir``), without storing them.

    Columns: run_id, role, layer, head, sentence_id, score, score_upper, n_queries
    (layers and heads 0-based).
    """
    chosen = load_roles(roles_dir, roles)
    con = connect_restricted(db)
    try:
        run_id = resolve_run(con, run, finished=True)
        return compute_scores(con, run_id, chosen)
    finally:
        close_connection(con)


def register_views(con: duckdb.DuckDBPyConnection) -> None:
    """TEMP views ``sieve_<role>`` and ``scores_<role>`` of the built-in roles, over all runs.

    ``scores_<role>`` has the columns run_id, layer, head, sentence_id, score, score_upper,
    n_queries. Role parameters are bound as variables on ``con``.
    """
    builtins = [r for r in load_roles() if r.builtin]
    clash = _param_clash(builtins)
    if clash is not None:  # pragma: no cover - shipped roles agree
        raise RoleError(f"parameter {clash[1]!r} differs between built-in roles", clash[0].path)
    for role in builtins:
        set_params(con, role)
        sieve_view = quote_ident(f"sieve_{role.name}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {sieve_view} AS SELECT run_id, sentence_id, query_pos, key_pos "
                    f"FROM {sieve_sql(role)}")
        relation = f"(SELECT 0 AS role, run_id, sentence_id, query_pos, key_pos FROM {sieve_view})"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {quote_ident('scores_' + role.name)} AS "
                    "SELECT run_id, layer, head, sentence_id, score, score_upper, n_queries FROM (\n"
                    + framework_sql(1, relation) + "\n)")


__all__ = ["compute_scores", "framework_sql", "register_views", "scores", "sieve_passes", "store_scores",
           "stored_head_moments"]
