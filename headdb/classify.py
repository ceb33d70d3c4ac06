"""`headdb classify`: score a run's heads for roles, test them, store and export the results.

The roles' sieves are filled on a restricted connection (role SQL runs only there). The scores
are then computed by headdb's own framework query on a writable connection, straight into
sentence_scores, and tested from each head's mean and variance, which DuckDB computes there
too, in one transaction with the tests: the scores never pass through Python, so memory does
not grow with the run, and re-running replaces the run's results for the roles classified.
``store=False`` scores on the restricted connection and holds the scores in memory instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from headdb.db import close_connection, connect, connect_restricted, memory_limit_mb, registered, transaction
from headdb.errors import InputError, yes_no
from headdb.progress import takes_progress
from headdb.roles import Role, load_roles
from headdb.stats import CORRECTIONS, RESULT_COLUMNS, check_options, head_tests, moment_tests

__all__ = ["classify", "RESULT_COLUMNS", "CORRECTIONS"]


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


@takes_progress("scoring")
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
    progress: Callable[[int, int], None] | bool | None = None,
) -> pd.DataFrame:
    """Test every head of a run (default: the latest finished) for every role (default: the
    built-ins and those in ``roles_dir``); one family per call, corrected with ``correction``.

    ``tau`` overrides every role's own threshold. Returns one row per (role, layer, head) with
    the columns run, layer, head, role, n, mean, std, tau, t, p, p_adj, significant, ci_low,
    ci_high, flip_possible (layers and heads 0-based; run is the run id). With ``store`` the
    per-sentence scores and the tests are saved (tables sentence_scores, head_tests,
    classifications, roles); with ``out`` they are also written to .csv, .json or .parquet.
    ``DataFrame.attrs`` holds run_id, n_layers, n_heads, alpha, correction, classification_id
    (None without ``store``), roles (the names, in test order) and pairs (whether the run's inputs
    are sentence pairs, so that n counts pairs). ``progress(done, total)`` is
    called as the scoring queries finish (a large run is scored in pieces of about 3 M attention
    rows, and many roles in several passes); True draws a bar on stderr.
    """
    from headdb.scores import compute_scores, sieve_passes
    from headdb.store import resolve_run

    check_options(alpha, correction, tau)
    store = yes_no("store", store)
    # as Python's floats: DuckDB stores no numpy scalar (np.float32 tau failed its INSERT)
    alpha, tau = float(alpha), (None if tau is None else float(tau))
    if out is not None:
        from headdb.query import check_export

        check_export(out, db)  # before anything is stored; never the store itself
    chosen = load_roles(roles_dir, roles)
    con = connect_restricted(db, memory_limit_mb())
    try:
        run_id = resolve_run(con, run, finished=True)
        n_layers, n_heads, pairs = con.execute("SELECT n_layers, n_heads, pairs FROM runs WHERE run_id = ?",
                                               [run_id]).fetchone()
        if "scipy.special" not in sys.modules:
            _import_ahead()
        if store:  # the sieves only: the scores are computed where they are stored
            bits, passes = sieve_passes(con, run_id, chosen)
        else:
            scores = compute_scores(con, run_id, chosen, progress)
    finally:
        close_connection(con)  # not one a role's statement still holds after a second Ctrl-C
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    taus = {r.name: (r.tau if tau is None else float(tau)) for r in chosen}
    classification_id = None
    committed: list[int] = []  # the classification's id, once its transaction has committed
    try:
        if store:
            results, classification_id = _score_and_store(db, run_id, chosen, bits, passes, heads, taus, alpha,
                                                          correction, tau, progress, committed)
        else:
            results = head_tests(scores, heads, [r.name for r in chosen], taus, alpha, correction, run=run_id)
        results.attrs.update(run_id=run_id, n_layers=n_layers, n_heads=n_heads, alpha=alpha, correction=correction,
                             classification_id=classification_id, roles=[r.name for r in chosen],
                             pairs=bool(pairs))
        if out is not None:
            from headdb.query import export

            try:
                export(results, out)
            except InputError as exc:
                if classification_id is None:
                    raise
                raise InputError(f"{exc}; the classification itself is stored (classification {classification_id}: "
                                 "its tests are the rows of head_tests with that classification_id)") from None
    except KeyboardInterrupt:
        # Ctrl-C once the results were committed (while --out was written) read "interrupted",
        # as if nothing had been stored
        if committed:
            from headdb.errors import ClassifyInterrupted

            raise ClassifyInterrupted(run_id, committed[0], out) from None
        raise
    return results


def _score_and_store(db: str | Path, run_id: int, roles: list[Role], bits: int, passes: list,
                     heads: list[tuple[int, int]], taus: dict[str, float], alpha: float, correction: str,
                     tau: float | None, progress: Callable[[int, int], None] | None = None,
                     committed: list[int] | None = None) -> tuple[pd.DataFrame, int]:
    """In one transaction: the roles, the per-sentence scores (computed by DuckDB straight into
    sentence_scores, with classification's memory limit), the tests (from each head's moments,
    computed there) and the classification. Nothing is stored unless all of it is."""
    from headdb.scores import store_scores, stored_head_moments
    from headdb.store import resolve_run

    names = [r.name for r in roles]
    con = connect(db)
    try:
        con.execute("SET memory_limit = ?", [f"{memory_limit_mb()}MiB"])
        with transaction(con):
            # again, under the write lock: a `headdb drop` may have taken the run since it was read
            resolve_run(con, run_id, finished=True)
            # all roles in one statement per table (0.03 s as twenty statements)
            rows_sql = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(roles))  # placeholders only
            values = [v for r in roles for v in (r.name, r.level, r.description, r.tau, str(r.path), r.text, r.sha256)]
            con.execute("INSERT OR REPLACE INTO roles (role, level, description, tau, source_path, sql, sha256) "
                        f"VALUES {rows_sql}", values)
            con.execute("INSERT OR IGNORE INTO role_versions (role, level, description, tau, source_path, sql, "
                        f"sha256) VALUES {rows_sql}", values)
            con.execute("DELETE FROM sentence_scores WHERE run_id = ? AND list_contains(?, role)", [run_id, names])
            con.execute("DELETE FROM head_tests WHERE run_id = ? AND list_contains(?, role)", [run_id, names])
            store_scores(con, run_id, roles, bits, passes, progress)
            results = moment_tests(stored_head_moments(con, run_id, names), heads, names, taus, alpha, correction,
                                   run=run_id)
            classification_id = con.execute(
                "INSERT INTO classifications (run_id, roles, alpha, correction, tau_override, n_tests) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING classification_id",
                [run_id, ",".join(names), alpha, correction, tau, int(results["p"].notna().sum())]).fetchall()[0][0]
            tests = results.rename(columns={"run": "run_id"})
            tests["classification_id"] = classification_id
            tests["role_sha256"] = tests["role"].astype(str).map({r.name: r.sha256 for r in roles})
            with registered(con, "_headdb_tests", tests):
                con.execute("INSERT INTO head_tests (classification_id, run_id, layer, head, role, n, mean, std, tau, "
                            "t, p, p_adj, significant, ci_low, ci_high, flip_possible, role_sha256) "
                            "SELECT classification_id, run_id, layer, head, role, n, mean, std, tau, t, p, p_adj, "
                            "significant, ci_low, ci_high, flip_possible, role_sha256 FROM _headdb_tests")
            # an earlier classification whose tests have all been replaced by these goes with them
            con.execute("DELETE FROM classifications c WHERE c.run_id = ? AND NOT EXISTS "
                        "(SELECT 1 FROM head_tests t WHERE t.classification_id = c.classification_id)", [run_id])
        if committed is not None:
            committed.append(int(classification_id))
    finally:
        con.close()
    return results, int(classification_id)
