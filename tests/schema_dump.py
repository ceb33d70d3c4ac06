"""A stable text form of a database's schema, for the golden schema test.

Regenerate the golden file after adding a migration:

    .venv/bin/python -m pytest tests/test_migrations.py --update-golden

(or ``.venv/bin/python tests/schema_dump.py > tests/golden/schema.sql``), then review the diff.
"""

from __future__ import annotations

import duckdb


def schema_text(con: duckdb.DuckDBPyConnection) -> str:
    """Tables with their columns (type, forced compression, nullability, default), constraints,
    sequences and views."""
    out: list[str] = []
    tables = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT temporary ORDER BY table_name"
    ).fetchall()
    import re

    for (table,) in tables:
        out.append(f"TABLE {table}")
        sql = con.execute("SELECT sql FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
                          [table]).fetchone()[0]
        # a compression method named in the DDL (USING COMPRESSION) is part of the schema
        forced = dict(re.findall(r"(\w+) [A-Z0-9_\[\]]+ USING COMPRESSION (\w+)", sql))
        for name, dtype, nullable, default in con.execute(
            "SELECT column_name, data_type, is_nullable, column_default FROM duckdb_columns() "
            "WHERE schema_name = 'main' AND table_name = ? ORDER BY column_index", [table]
        ).fetchall():
            line = f"  {name} {dtype}{f' USING COMPRESSION {forced[name]}' if name in forced else ''}"
            line += "" if nullable else " NOT NULL"
            if default is not None:
                line += f" DEFAULT {default}"
            out.append(line)
        for ctype, cols in con.execute(
            "SELECT constraint_type, constraint_column_names FROM duckdb_constraints() "
            "WHERE schema_name = 'main' AND table_name = ? AND constraint_type IN ('PRIMARY KEY', 'UNIQUE') "
            "ORDER BY constraint_type, constraint_column_names::VARCHAR", [table]
        ).fetchall():
            out.append(f"  {ctype} ({', '.join(cols)})")
    for (seq,) in con.execute(
        "SELECT sequence_name FROM duckdb_sequences() WHERE schema_name = 'main' ORDER BY sequence_name"
    ).fetchall():
        out.append(f"SEQUENCE {seq}")
    for view, sql in con.execute(
        "SELECT view_name, sql FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal ORDER BY view_name"
    ).fetchall():
        body = "\n".join("  " + line.rstrip() for line in sql.strip().splitlines())
        out.append(f"VIEW {view}\n{body}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    from headdb.db import migrate

    c = duckdb.connect(":memory:")
    migrate(c)
    print(schema_text(c), end="")
