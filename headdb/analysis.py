"""Reading classification results the way the paper does: layer distribution, co-location of
roles on the same heads, and counts per role.

Every function reads ``head_tests`` (filled by ``headdb classify``) through the views of
migration 0003 (``role_layer_distribution``, ``role_colocation``, ``head_roles``,
``role_summary``), so the same numbers are one ``headdb sql`` away. Layers and heads are 0-based.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd

from headdb.db import connect, connect_capped, quote_ident
from headdb.errors import DatabaseError, InputError, option
from headdb.roles import BUILTIN_ORDER, requested_roles
from headdb.store import resolve_run

DbLike = str | Path | duckdb.DuckDBPyConnection  #: a database path or an open connection


@contextmanager
def open_db(db: DbLike, memory_limit_mb: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for a path; a connection passed in is used as is and left open.
    ``memory_limit_mb`` caps DuckDB's memory on a connection opened here
    (:func:`headdb.db.connect_capped`)."""
    if isinstance(db, duckdb.DuckDBPyConnection):
        yield db
        return
    con = connect(db, read_only=True) if memory_limit_mb is None else connect_capped(db, memory_limit_mb)
    try:
        yield con
    finally:
        con.close()


def classified_roles(con: duckdb.DuckDBPyConnection, run_id: int) -> list[str]:
    """The roles tested for a run: the built-ins in ``BUILTIN_ORDER`` (SCORES.md's order, as
    ``roles list`` and a default classify list them), then the others by name. It followed the
    latest classification: after a ``classify --roles mine``, ``mine`` came first and the
    built-ins fell into alphabetical order."""
    present = [r[0] for r in con.execute(
        "SELECT DISTINCT role FROM head_tests WHERE run_id = ? ORDER BY role", [run_id]).fetchall()]
    if not present:
        from headdb.store import command_store

        db = command_store(con) or "DB"  # the store's file, so that the command can be pasted
        raise DatabaseError(f"run {run_id} has no classification results; "
                            f"run `headdb classify {db} --run {run_id}` first")
    rank = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    return sorted(present, key=lambda r: (rank.get(r, len(rank)), r))


def select_roles(available: Sequence[str], roles: Sequence[str] | str | None, where: str = "this run") -> list[str]:
    """The requested roles (comma-separated string or list) in the order given; all when None.
    ``where`` names the run(s) in the error for a role not among ``available``."""
    if roles is None:
        return list(available)
    roles = requested_roles(roles)
    if not roles:
        raise InputError("no roles selected (roles=None means all of them)")
    unknown = [r for r in roles if r not in available]
    if unknown:
        raise InputError(f"role(s) {', '.join(unknown)} not classified for {where}; "
                         f"available: {', '.join(available)}")
    return list(dict.fromkeys(roles))


def _order(df: pd.DataFrame, column: str, roles: list[str]) -> pd.DataFrame:
    df = df[df[column].isin(roles)].copy()
    df[column] = pd.Categorical(df[column], categories=roles, ordered=True)
    return df


def layer_distribution(db: DbLike, run: int | str | None = None, roles: Sequence[str] | str | None = None) -> pd.DataFrame:
    """Per role and layer: ``n_significant`` heads with the role out of ``n_tested``.

    Columns: run_id, role, layer, n_significant, n_tested (view ``role_layer_distribution``).
    """
    with open_db(db) as con:
        run_id = resolve_run(con, run)
        wanted = select_roles(classified_roles(con, run_id), roles, f"run {run_id}")
        df = con.execute(
            "SELECT run_id, role, layer, n_significant, n_tested FROM role_layer_distribution WHERE run_id = ?",
            [run_id]).df()
    df = _order(df, "role", wanted).sort_values(["role", "layer"])
    df["role"] = df["role"].astype(str)
    return df.reset_index(drop=True).astype({"layer": "int64", "n_significant": "int64", "n_tested": "int64"})


def colocation(db: DbLike, run: int | str | None = None, roles: Sequence[str] | str | None = None) -> pd.DataFrame:
    """Per pair of roles: how many heads have both (long form; the diagonal is the role's count).

    Columns: run_id, role_a, role_b, n_heads (view ``role_colocation``). Pivot it with
    ``df.pivot(index="role_a", columns="role_b", values="n_heads")`` for the matrix.
    """
    with open_db(db) as con:
        run_id = resolve_run(con, run)
        wanted = select_roles(classified_roles(con, run_id), roles, f"run {run_id}")
        df = con.execute("SELECT run_id, role_a, role_b, n_heads FROM role_colocation WHERE run_id = ?",
                         [run_id]).df()
    df = _order(_order(df, "role_a", wanted), "role_b", wanted).sort_values(["role_a", "role_b"])
    df["role_a"] = df["role_a"].astype(str)
    df["role_b"] = df["role_b"].astype(str)
    return df.reset_index(drop=True).astype({"n_heads": "int64"})


def colocation_matrix(db: DbLike, run: int | str | None = None, roles: Sequence[str] | str | None = None) -> pd.DataFrame:
    """The co-location counts as a role x role matrix (index and columns in role order)."""
    long = colocation(db, run, roles)
    order = list(dict.fromkeys(long["role_a"]))
    m = long.pivot(index="role_a", columns="role_b", values="n_heads").reindex(index=order, columns=order)
    m.index.name, m.columns.name = "role", None
    return m.fillna(0).astype("int64")


def multi_role_heads(db: DbLike, run: int | str | None = None, min_roles: int = 2,
                     roles: Sequence[str] | str | None = None) -> pd.DataFrame:
    """Heads with at least ``min_roles`` roles (of ``roles``, default: every classified role).
    Columns: run_id, layer, head, n_roles, roles (in :func:`classified_roles`' order)."""
    import numbers

    if isinstance(min_roles, bool) or not isinstance(min_roles, numbers.Integral) or min_roles < 1:
        raise InputError(f"{option('min_roles')} must be a whole number of at least 1, not {min_roles!r}")
    min_roles = int(min_roles)
    with open_db(db) as con:
        run_id = resolve_run(con, run)
        order = classified_roles(con, run_id)
        wanted = select_roles(order, roles, f"run {run_id}")
        # the view head_roles, over the chosen roles only
        df = con.execute(
            "SELECT run_id, layer, head, count(*) AS n_roles, string_agg(role, ',' ORDER BY role) AS roles "
            "FROM head_tests WHERE significant AND run_id = ? AND list_contains(?, role) "
            "GROUP BY run_id, layer, head HAVING count(*) >= ? ORDER BY layer, head",
            [run_id, wanted, min_roles]).df()
    rank = {r: i for i, r in enumerate(order)}
    df["roles"] = [",".join(sorted(s.split(","), key=lambda r: rank.get(r, len(rank)))) for s in df["roles"]]
    return df.astype({"layer": "int64", "head": "int64", "n_roles": "int64"})


def role_summary(db: DbLike, run: int | str | None = None, roles: Sequence[str] | str | None = None) -> pd.DataFrame:
    """Per role: heads tested and significant, share, heads whose decision could flip within the
    sparse-storage bound, tau, and the mean and largest per-head mean score (view ``role_summary``)."""
    with open_db(db) as con:
        run_id = resolve_run(con, run)
        wanted = select_roles(classified_roles(con, run_id), roles, f"run {run_id}")
        df = con.execute("SELECT * FROM role_summary WHERE run_id = ?", [run_id]).df()
    df = _order(df, "role", wanted).sort_values("role")
    df["role"] = df["role"].astype(str)
    return df.reset_index(drop=True).astype({"n_tested": "int64", "n_significant": "int64",
                                             "n_flip_possible": "int64"})


def head_grid(db: DbLike, run: int | str | None = None, role: str | None = None,
              column: str = "mean") -> pd.DataFrame:
    """One column of ``head_tests`` for one role as a layer x head matrix (rows: layer, columns: head)."""
    with open_db(db) as con:
        run_id = resolve_run(con, run)
        if role is None:
            raise InputError("head_grid needs a role")
        select_roles(classified_roles(con, run_id), [role], f"run {run_id}")
        if column not in ("mean", "std", "t", "p", "p_adj", "significant", "n", "ci_low", "ci_high",
                          "flip_possible"):
            raise InputError(f"head_grid: unknown column {column!r}")
        df = con.execute(f"SELECT layer, head, {quote_ident(column)} AS value FROM head_tests "
                         "WHERE run_id = ? AND role = ?", [run_id, role]).df()
        shape = con.execute("SELECT n_layers, n_heads FROM runs WHERE run_id = ?", [run_id]).fetchone()
    grid = df.pivot(index="layer", columns="head", values="value")
    return grid.reindex(index=range(shape[0]), columns=range(shape[1]))


__all__ = ["layer_distribution", "colocation", "colocation_matrix", "multi_role_heads", "role_summary",
           "head_grid", "open_db", "classified_roles"]
