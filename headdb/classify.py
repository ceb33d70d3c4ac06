"""`headdb classify`: score a run's heads for roles, test them, store and export the results.

Scores are computed on a restricted connection (role SQL runs only there); the results are
written afterwards on a writable one, in one transaction: re-running replaces the run's
results for the roles classified.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa

from headdb.db import connect, connect_restricted, transaction
from headdb.errors import DatabaseError, InputError
from headdb.roles import Role, load_roles
from headdb.stats import CORRECTIONS, RESULT_COLUMNS, head_tests

__all__ = ["classify", "RESULT_COLUMNS", "CORRECTIONS"]

#: DuckDB's memory limit while scoring, in MiB per thread, at least MEMORY_MB_MIN. Without one
#: DuckDB keeps the blocks it reads cached up to 80% of RAM, so classification's memory grew with
#: the run: 1,651 MiB peak RSS for 8,000 sentences (120 M edges) on 2 cores, 1,214 MiB with
#: 768 MiB in 11.8 against 12.0 s, 990 MiB with 512 MiB but 5% slower, and 256 MiB spilled
#: (19 s). The EWT store (2,001 sentences) classifies in the same time with or without it
#: (docs/benchmarks.md).
MEMORY_MB_MIN = 768
MEMORY_MB_PER_THREAD = 96


def _memory_limit_mb() -> int:
    import os

    return max(MEMORY_MB_MIN, MEMORY_MB_PER_THREAD * (os.cpu_count() or 1))


def _import_ahead() -> None:
    """Import scipy.special (the tests' p-values, 0.08 s) on a thread while DuckDB scores: the
    query releases the GIL, and the import is done by the time the tests need it."""
    import threading

    def load() -> None:
        try:
            import scipy.special  # noqa: F401
        except Exception:  # pragma: no cover - the tests import it again and report the error there
            pass

    threading.Thread(target=load, name="headdb-import-scipy", daemon=True).start()


def _check_options(tau: float | None, alpha: float, correction: str) -> None:
    if correction not in CORRECTIONS:
        raise InputError(f"--correction must be one of {', '.join(CORRECTIONS)}, not {correction!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise InputError(f"--alpha must be between 0 and 1, not {alpha!r}")
    if tau is not None and not math.isfinite(tau):
        raise InputError(f"--tau must be a finite number, not {tau!r}")


def classify(
    db: str | Path,
    run: int | str | None = None,
    roles: list[str] | str | None = None,
    roles_dir: str | Path | None = None,
    *,
    tau: float | None = None,
    alpha: float = 0.05,
    correction: str = "bh",
    out: str | Path | None = None,
    store: bool = True,
) -> pd.DataFrame:
    """Test every head of a run (default: the latest finished) for every role (default: the
    built-ins and those in ``roles_dir``); one family per call, corrected with ``correction``.

    ``tau`` overrides every role's own threshold. Returns one row per (role, layer, head) with
    the columns run, layer, head, role, n, mean, std, tau, t, p, p_adj, significant, ci_low,
    ci_high, flip_possible (layers and heads 0-based; run is the run id). With ``store`` the
    per-sentence scores and the tests are saved (tables sentence_scores, head_tests,
    classifications, roles); with ``out`` they are also written to .csv, .json or .parquet.
    ``DataFrame.attrs`` holds run_id, n_layers, n_heads, alpha, correction and
    classification_id.
    """
    from headdb.scores import compute_scores
    from headdb.store import resolve_run

    _check_options(tau, alpha, correction)
    chosen = load_roles(roles_dir, roles)
    con = connect_restricted(db, _memory_limit_mb())
    try:
        run_id = resolve_run(con, run)
        status, n_layers, n_heads = con.execute(
            "SELECT status, n_layers, n_heads FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if status != "done":
            raise DatabaseError(f"run {run_id} is {status}, not done; finish its ingest (re-run it to resume) "
                                "before classifying")
        if "scipy.special" not in sys.modules:
            _import_ahead()
        scores = compute_scores(con, run_id, chosen)
    finally:
        con.close()
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    taus = {r.name: (r.tau if tau is None else float(tau)) for r in chosen}
    results = head_tests(scores, heads, [r.name for r in chosen], taus, alpha, correction, run=run_id)
    classification_id = None
    if store:
        classification_id = _store(db, run_id, chosen, scores, results, alpha, correction, tau)
    results.attrs.update(run_id=run_id, n_layers=n_layers, n_heads=n_heads, alpha=alpha, correction=correction,
                         classification_id=classification_id, roles=[r.name for r in chosen])
    if out is not None:
        from headdb.query import export

        export(results, out)
    return results


def _store(db: str | Path, run_id: int, roles: list[Role], scores: pd.DataFrame, results: pd.DataFrame,
           alpha: float, correction: str, tau: float | None) -> int:
    names = [r.name for r in roles]
    score_table = pa.Table.from_pandas(scores[["run_id", "role", "layer", "head", "sentence_id", "score",
                                               "score_upper", "n_queries"]], preserve_index=False)
    tests = results.rename(columns={"run": "run_id"}).copy()
    con = connect(db)
    try:
        with transaction(con):
            for r in roles:
                con.execute("INSERT OR REPLACE INTO roles (role, level, description, tau, source_path, sql, sha256) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [r.name, r.level, r.description, r.tau, str(r.path), r.text, r.sha256])
            con.execute("DELETE FROM sentence_scores WHERE run_id = ? AND list_contains(?, role)", [run_id, names])
            con.execute("DELETE FROM head_tests WHERE run_id = ? AND list_contains(?, role)", [run_id, names])
            classification_id = con.execute(
                "INSERT INTO classifications (run_id, roles, alpha, correction, tau_override, n_tests) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING classification_id",
                [run_id, ",".join(names), alpha, correction, tau, int(results["p"].notna().sum())]).fetchone()[0]
            con.register("_headdb_scores", score_table)
            try:
                con.execute("INSERT INTO sentence_scores (run_id, role, layer, head, sentence_id, score, score_upper, "
                            "n_queries) SELECT run_id, role, layer, head, sentence_id, score, score_upper, n_queries "
                            "FROM _headdb_scores")
            finally:
                con.unregister("_headdb_scores")
            tests["classification_id"] = classification_id
            tests["role_sha256"] = tests["role"].astype(str).map({r.name: r.sha256 for r in roles})
            con.register("_headdb_tests", tests)
            try:
                con.execute("INSERT INTO head_tests (classification_id, run_id, layer, head, role, n, mean, std, tau, "
                            "t, p, p_adj, significant, ci_low, ci_high, flip_possible, role_sha256) "
                            "SELECT classification_id, run_id, layer, head, role, n, mean, std, tau, t, p, p_adj, "
                            "significant, ci_low, ci_high, flip_possible, role_sha256 FROM _headdb_tests")
            finally:
                con.unregister("_headdb_tests")
    finally:
        con.close()
    return int(classification_id)
