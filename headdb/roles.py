"""Roles are SQL files: a header of ``-- key: value`` lines and one SELECT naming the sieve.

A token-level role returns ``run_id, sentence_id, query_pos, key_pos``; a word-level role
returns ``corpus_id, sentence_id, query_word_pos, key_word_pos`` and is expanded to word
pieces by the framework (queries/framework/word_sieve.sql). Roles never mention layers,
heads, weights or models. Every file is checked when it loads; any breach of the contract
is a :class:`~headdb.errors.RoleError` that names ``path:line``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from headdb.errors import InputError, RoleError, option
from headdb.resources import builtin_roles_dir, query

#: The header keys a role file may set.
HEADER_KEYS = ("name", "description", "level", "tau", "params")
REQUIRED_KEYS = ("name", "description", "level")
DEFAULT_TAU = 3.0
#: Built-in roles in the order of SCORES.md; listings and default classifications use it.
BUILTIN_ORDER = ("local", "delimiter", "delimiter_cls", "delimiter_sep", "block",
                 "nsubj", "obj", "amod", "advmod", "syntactic")

#: The columns each level must return, in this order.
COLUMNS = {
    "token": ("run_id", "sentence_id", "query_pos", "key_pos"),
    "word": ("corpus_id", "sentence_id", "query_word_pos", "key_word_pos"),
}
_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                  "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_HEADER_LINE = re.compile(r"^--\s?([A-Za-z_][A-Za-z0-9_]*)\s*:\s?(.*)$")
_CONTINUATION = re.compile(r"^--\s{2,}(\S.*)$")
#: one `name=value` of a params line, and the comma after it: a value is quoted ('nsubj,obj',
#: "PROPN NOUN": commas and spaces allowed inside) or a bare word without commas or spaces
_BARE_VALUE = r"""[^,\s'"]+"""
_PARAM_ITEM = re.compile(r"""\s*([a-z_][a-z0-9_]*)\s*=\s*('[^']*'|"[^"]*"|""" + _BARE_VALUE + r""")\s*(,|$)""")
_SQL_LINE = re.compile(r"\bLINE (\d+):")


@dataclass(frozen=True)
class Role:
    """One role file, parsed and checked."""

    name: str
    description: str
    level: str  # token | word
    tau: float
    params: dict[str, int | float | str] = field(hash=False)
    path: Path
    text: str  # the whole file
    body: str  # the SELECT, without its terminating semicolon (comments kept)
    body_line: int  # 1-based line of the file where the SELECT starts
    builtin: bool
    params_line: int | None = field(default=None, hash=False, compare=False)  # the `-- params:` line

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def params_text(self) -> str:
        """The params as a `-- params:` line would give them: text quoted where it must be (a
        comma or a space inside, or text that would read as a number)."""
        def shown(v) -> str:
            if isinstance(v, str) and (not re.fullmatch(_BARE_VALUE, v) or _parse_value(v) != v):
                return f'"{v}"' if "'" in v else f"'{v}'"
            return str(v)

        return ", ".join(f"{k}={shown(v)}" for k, v in self.params.items())

    def error(self, message: str, line: int | None = None) -> RoleError:
        return RoleError(message, self.path, self.body_line if line is None else line)

    def failed(self, exc: Exception) -> RoleError:
        """The error for this role's SELECT failing on a store. A conversion error in a role with
        params is most often a value of the wrong type (`rel=5` is an integer, `window=two` text):
        it then names the params, their types and their line."""
        first = str(exc).strip().splitlines()[0]
        message = f"the role's SELECT failed on the store: {first}"
        if self.params and self.params_line and ("Conversion Error" in first or "Could not convert" in first):
            kinds = {int: "INTEGER", float: "DOUBLE", str: "text"}
            typed = ", ".join(f"{k}={v!r} ({kinds[type(v)]})" for k, v in self.params.items())
            return self.error(f"{message}; the role's params, read by getvariable() with these types: {typed}. "
                              f"A bare integer is an INTEGER, a number a DOUBLE, anything else text; quote a "
                              f"value to make it text (rel='5'), or fix it to the type the SELECT compares it "
                              f"with", self.params_line)
        return self.error(message)


# ---------------------------------------------------------------------------------------------
# parsing


def _parse_value(text: str) -> int | float | str:
    """A parameter's value: an integer, a number, or text. Text may be quoted as in SQL or
    Python ('nsubj' or "nsubj"); the quotes are not part of the value."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _parse_header(path: Path, lines: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """The leading ``-- key: value`` block. It ends at the first line that is not a comment,
    or at a bare ``--`` line (free comments may follow that)."""
    values: dict[str, str] = {}
    where: dict[str, int] = {}
    last: str | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip()
        if not line.startswith("--") or line.strip() == "--":
            break
        cont = _CONTINUATION.match(line)
        if cont and last is not None:
            values[last] = (values[last] + " " + cont.group(1)).strip()
            continue
        m = _HEADER_LINE.match(line)
        if not m:
            raise RoleError(
                "expected a header line `-- key: value` (keys: " + ", ".join(HEADER_KEYS)
                + "); indent continuation lines by two spaces after `--`, "
                "and end the header with a bare `--` line before free comments", path, number)
        key, value = m.group(1), m.group(2).strip()
        if key not in HEADER_KEYS:
            raise RoleError(f"unknown header key {key!r}; expected one of: {', '.join(HEADER_KEYS)}", path, number)
        if key in values:
            raise RoleError(f"duplicate header key {key!r} (first set on line {where[key]})", path, number)
        values[key] = value
        where[key] = number
        last = key
    return values, where


def _statement(path: Path, text: str) -> tuple[str, int]:
    """The one SELECT of the file, without its semicolon, and the line it starts on."""
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        raise RoleError(f"SQL syntax error: {_first_line(exc)}", path, _sql_line(exc, 1)) from None
    if not statements:
        raise RoleError("no SQL statement after the header; a role is one SELECT", path, len(text.splitlines()) or 1)
    offset = 0
    starts = []
    for st in statements:
        starts.append(offset)
        offset += len(st.query)
    if len(statements) > 1:
        line = _line_of(text, starts[1] + _leading_space(statements[1].query))
        raise RoleError(f"a role is exactly one SELECT; found {len(statements)} statements", path, line)
    st = statements[0]
    body = st.query
    first = _first_code_token(body)
    line = _line_of(text, first if first is not None else 0)
    if st.type != duckdb.StatementType.SELECT:
        raise RoleError(f"a role must be one read-only SELECT, not a {st.type.name} statement", path, line)
    return _strip_semicolon(body), line


def _first_code_token(sql: str) -> int | None:
    for pos, kind in duckdb.tokenize(sql):
        if kind != duckdb.token_type.comment:
            return pos
    return None


def _strip_semicolon(sql: str) -> str:
    tokens = [(p, k) for p, k in duckdb.tokenize(sql) if k != duckdb.token_type.comment]
    if tokens and tokens[-1][1] == duckdb.token_type.operator and sql[tokens[-1][0]] == ";":
        return sql[: tokens[-1][0]]
    return sql


def _leading_space(s: str) -> int:
    return len(s) - len(s.lstrip())


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def _sql_line(exc: Exception, default: int) -> int:
    m = _SQL_LINE.search(str(exc))
    return int(m.group(1)) if m else default


def _late_header_line(lines: list[str], key: str) -> int | None:
    """The line that sets ``key`` as a header line would, after the header: a missing key there
    is one the user wrote, past a blank line."""
    for number, line in enumerate(lines, start=1):
        m = _HEADER_LINE.match(line.rstrip())
        if m and m.group(1) == key:
            return number
    return None


def _not_utf8(path: Path) -> RoleError:
    """The error for a file that is not UTF-8, at its line and byte, as the corpus readers say it
    (the text decoder's offset counts from its buffer, not the file: decoded again whole)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        return RoleError(f"cannot read the role file: invalid UTF-8 at byte {exc.start - start} of the line; "
                         f"save it as UTF-8", path, raw.count(b"\n", 0, exc.start) + 1)
    return RoleError("cannot read the role file: invalid UTF-8", path)  # pragma: no cover - changed meanwhile


def parse_role(path: str | Path, *, builtin: bool = False) -> Role:
    """Read one role file and check its header and statement (not yet its columns)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not text
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except OSError as exc:
        raise RoleError(f"cannot read the role file: {exc}", path) from None
    lines = text.splitlines()
    values, where = _parse_header(path, lines)
    for key in REQUIRED_KEYS:
        if key not in values:
            late = _late_header_line(lines, key)
            if late is not None:
                raise RoleError(f"header key {key!r} is set after the header ended: a blank line, a bare `--` "
                                f"or a line of SQL ends the header; keep `-- {key}: ...` among the first "
                                f"lines", path, late)
            raise RoleError(f"missing header key {key!r}: a role file starts with `-- {key}: ...`", path, 1)
    name = values["name"]
    if name != path.stem:
        raise RoleError(f"header name {name!r} must equal the file name's stem {path.stem!r}", path, where["name"])
    if not _NAME.match(name):
        raise RoleError(f"role name {name!r} must be lower case letters, digits and _, starting with a letter",
                        path, where["name"])
    if not values["description"]:
        raise RoleError("the description is empty; say what the role's sieve is", path, where["description"])
    level = values["level"]
    if level not in COLUMNS:
        raise RoleError(f"level must be token or word, not {level!r}", path, where["level"])
    tau = DEFAULT_TAU
    if "tau" in values:
        try:
            tau = float(values["tau"])
        except ValueError:
            tau = math.nan
        if not math.isfinite(tau):
            raise RoleError(f"tau must be a number, not {values['tau']!r}", path, where["tau"])
    params: dict[str, int | float | str] = {}
    if values.get("params"):
        spec, pos = values["params"], 0
        while pos < len(spec):
            m = _PARAM_ITEM.match(spec, pos)
            if not m or (m.group(3) == "," and not spec[m.end():].strip()):
                rest = spec[pos:].strip()
                raise RoleError(f"params are `name=value, ...` with lower-case names, and a value with commas or "
                                f"spaces quoted ('a,b'); cannot read {rest!r}", path, where["params"])
            if m.group(1) in params:
                raise RoleError(f"parameter {m.group(1)!r} is set twice", path, where["params"])
            params[m.group(1)] = _parse_value(m.group(2))
            pos = m.end()
    body, body_line = _statement(path, text)
    return Role(name=name, description=values["description"], level=level, tau=tau, params=params, path=path,
                text=text, body=body, body_line=body_line, builtin=builtin,
                params_line=where.get("params") if params else None)


# ---------------------------------------------------------------------------------------------
# the column contract


def validation_connection() -> duckdb.DuckDBPyConnection:
    """An empty in-memory store with the current schema that cannot reach files or network."""
    from headdb.db import migrate

    con = duckdb.connect(":memory:")
    migrate(con)
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def set_params(con: duckdb.DuckDBPyConnection, role: Role) -> None:
    """Bind the role's parameters as DuckDB variables, read in its SQL with ``getvariable``."""
    from headdb.db import quote_ident

    for key, value in role.params.items():
        con.execute(f"SET VARIABLE {quote_ident(key)} = ?", [value])


#: Columns a role may not mention: a sieve is a property of the input, never of the model.
_MODEL_COLUMNS = frozenset({"layer", "head", "weight", "model", "model_hash", "model_type", "n_layers", "n_heads"})


#: The table functions a role may call: they make rows from values. Any other (query(),
#: json_execute_serialized_sql() run SQL given as a string, which would hide what a role reads;
#: pragma_storage_info() and the duckdb_* functions show the store's statistics, weights' ranges
#: among them) is refused.
_ROLE_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})

#: Tables and views of results derived from attention (they have no weight or layer column).
_RESULT_TABLES = frozenset({"role_summary", "role_colocation", "role_layer_distribution", "classifications"})


def _references(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[int, str, str]] | None:
    """What a statement reads, from DuckDB's own parse tree (``json_serialize_sql``): one
    (offset, kind, name) per table ('table'), column ('column': the column's own name, not the
    table or alias that qualifies it), table function ('function'), ``getvariable`` call
    ('variable': the name it reads, '' where that is not a string constant) and prepared-statement
    parameter ('parameter': ``$name``, ``$1`` or ``?`` as written). None if it does not parse
    (binding the role then reports the syntax error).

    A statement nested too deeply for Python to read its tree (an expression of some 400 terms,
    which DuckDB accepts up to its max_expression_depth of 1000) is read the stricter way too:
    json.loads and the walk below recurse once per level, and the RecursionError was a traceback
    from `headdb classify` and `headdb roles list`."""
    try:
        return _tree_references(con, sql)
    except RecursionError:
        return _identifier_tokens(sql)


def _tree_references(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[int, str, str]] | None:
    import json

    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    except (duckdb.Error, ValueError, TypeError):  # json ships with duckdb's wheels; if it fails, be strict
        return _identifier_tokens(sql)
    if tree.get("error"):
        return None
    found: list[tuple[int, str, str]] = []
    rows = _model_table_aliases(tree)

    def walk(node, ctes: frozenset[str], whole: bool = False, near: int = _first_code_token(sql) or 0) -> None:
        """``ctes``: the names of the common table expressions in scope, which a table reference
        without a schema means instead of the store's table (a CTE called `edges` built from
        words reads no attention). A CTE is in scope after its WITH, and in the CTEs that
        follow it, never in its own definition: there the name is the store's table.
        ``whole``: inside a SELECT that reads `runs` itself, where `*`, COLUMNS() and `#n`
        would read its model columns without naming them ('model columns'). ``near``: the
        offset of the closest enclosing node that has one (DESCRIBE and SUMMARIZE give their
        inner query none)."""
        if isinstance(node, dict):
            where = node.get("query_location")
            where = near = where if isinstance(where, int) and 0 <= where < len(sql) else near
            if node.get("type") == "SELECT_NODE":
                whole = any(name == "runs" and name not in ctes for name, _ in _from_tables(node.get("from_table")))
            if whole and node.get("class") in ("STAR", "POSITIONAL_REFERENCE") \
                    and str(node.get("relation_name") or "runs").lower() in rows:
                found.append((where, "model columns", "*" if node.get("class") == "STAR" else f"#{node.get('index')}"))
            if node.get("class") == "COLUMN_REF" and node.get("column_names"):
                found.append((where, "column", str(node["column_names"][-1])))
                if len(node["column_names"]) == 1 and str(node["column_names"][0]).lower() in rows:
                    found.append((where, "model columns", str(node["column_names"][0])))
            elif node.get("type") == "BASE_TABLE" and node.get("table_name"):
                name = str(node["table_name"])
                if name.lower() not in ctes or node.get("schema_name") or node.get("catalog_name"):
                    found.append((where, "table", name))
                    found.append((where, "relation", name))
            elif node.get("type") == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
                found.append((where, "function", str(node["function"].get("function_name", ""))))
            elif node.get("class") == "PARAMETER":  # $name, $1 or ?: as written
                size = node.get("query_location_length")
                text = sql[where:where + size].strip() if isinstance(size, int) and size > 0 else ""
                found.append((where, "parameter", text or f"${node.get('identifier', '')}"))
            elif node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() == "getvariable":
                found.append((where, "variable", _constant_text(node.get("arguments") or node.get("children"))))
            entries = (node.get("cte_map") or {}).get("map") if isinstance(node.get("cte_map"), dict) else None
            if entries:
                names = [str(e.get("key", "")).lower() for e in entries]
                found.extend((where, "cte", name) for name in names)
                for i, entry in enumerate(entries):
                    walk(entry.get("value"), ctes | frozenset(names[:i]), near=near)
                ctes = ctes | frozenset(names)
            for key, value in node.items():
                if key != "cte_map":
                    walk(value, ctes, whole, near)
        elif isinstance(node, list):
            for value in node:
                walk(value, ctes, whole, near)

    walk(tree, frozenset())
    return sorted(found)


def _from_tables(ref) -> list[tuple[str, str]]:
    """(table name, alias) of the stored tables a FROM clause reads directly (through joins and
    PIVOT, not subqueries), lower case."""
    if not isinstance(ref, dict):
        return []
    if ref.get("type") == "BASE_TABLE" and ref.get("table_name"):
        name = str(ref["table_name"]).lower()
        return [(name, str(ref.get("alias") or name).lower())]
    return _from_tables(ref.get("left")) + _from_tables(ref.get("right")) + _from_tables(ref.get("source"))


def _model_table_aliases(tree) -> frozenset[str]:
    """The names by which a statement reads `runs` (its alias, or `runs`): a column reference of
    that name alone is the whole row, model columns included (`struct_extract(r, 'model')`)."""
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and str(node.get("table_name", "")).lower() == "runs":
                names.update(alias for _, alias in _from_tables(node))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    return frozenset(names)


def _constant_text(arguments) -> str:
    """The first argument of a function call in DuckDB's parse tree when it is a string
    constant; '' when it is anything else."""
    if not arguments:
        return ""
    first = arguments[0]
    expression = first.get("expression", first) if isinstance(first, dict) else None
    if isinstance(expression, dict) and expression.get("class") == "CONSTANT":
        literal = expression.get("literal") or expression.get("value") or {}
        if isinstance(literal, dict) and literal.get("kind", "STRING") == "STRING" and isinstance(literal.get("text"), str):
            return literal["text"]
    return ""


def _identifier_tokens(sql: str) -> list[tuple[int, str, str]]:
    """Every identifier of a statement as both a table and a column name: the stricter reading
    used where DuckDB cannot serialise the parse tree."""
    tokens = duckdb.tokenize(sql)
    out = []
    for i, (pos, kind) in enumerate(tokens):
        if kind == duckdb.token_type.identifier:
            end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
            word = sql[pos:end].strip().strip('"')
            out += [(pos, "table", word), (pos, "column", word)]
            if word.lower() in _KNOWN_TABLE_FUNCTIONS or word.lower().startswith(("pragma_", "duckdb_")):
                out.append((pos, "function", word))
    return out


#: Table functions that reach SQL text or the store's internals, recognised by name where there is
#: no parse tree to tell a function from a table.
_KNOWN_TABLE_FUNCTIONS = frozenset({"query", "query_table", "json_execute_serialized_sql"})


def attention_tables(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """The tables and views of a store that hold attention: those with a weight or layer column
    (lower case)."""
    return frozenset(r[0].lower() for r in con.execute(
        "SELECT DISTINCT table_name FROM information_schema.columns WHERE column_name IN ('weight', 'layer')"
    ).fetchall())


def store_tables(con: duckdb.DuckDBPyConnection) -> tuple[frozenset[str], frozenset[str]]:
    """The tables and views of the store's own schema (lower case): all a role may read, but
    those of :func:`attention_tables` and the results; and those of every schema, DuckDB's
    catalog views (duckdb_tables, information_schema, pg_catalog) among them."""
    rows = con.execute(
        "SELECT lower(table_name), database_name = current_database() AND schema_name = 'main' FROM duckdb_tables() "
        "UNION ALL SELECT lower(view_name), database_name = current_database() AND schema_name = 'main' "
        "FROM duckdb_views()").fetchall()
    return frozenset(name for name, own in rows if own), frozenset(name for name, _ in rows)


def check_mentions(con: duckdb.DuckDBPyConnection, role: Role, attention: frozenset[str] | None = None) -> None:
    """Refuse a role that reads attention (edges and the views over them) or the model: a table
    with a weight or layer column (``attention``: :func:`attention_tables` of ``con``, looked up
    when not given), a column named like a model property, SQL run from a string, or a
    ``getvariable()`` of a name the role's params do not declare (it would read NULL, or another
    role's parameter when roles are filled together). Read from the parse tree, so a table
    alias or CTE that happens to be called ``head`` is fine; only names, never what is inside
    string literals, count."""
    if attention is None:
        attention = attention_tables(con)
    refs = _references(con, role.body)
    if refs is None:
        return
    declared = {key.lower() for key in role.params}
    own_ctes = {name.lower() for _, kind, name in refs if kind == "cte"}
    readable: frozenset[str] | None = None
    catalog: frozenset[str] = frozenset()
    for pos, kind, name in refs:
        word = name.lower()
        if kind == "relation":
            if readable is None:
                readable, catalog = store_tables(con)
            if word not in readable and word in catalog:  # an unknown name: DESCRIBE names it
                raise role.error(f"roles read the store's tables (tokens, words, sentences, runs, ...), not {name!r} "
                                 "(DuckDB's catalog, information_schema and pg_catalog describe the store, "
                                 "the edges' sizes among it)", _line_of(role.text, pos))
        if kind == "parameter":
            raise role.error(_parameter_message(name), _line_of(role.text, pos))
        if kind == "variable" and word not in declared:
            what = f"the variable {name!r}" if name else "a variable whose name is not a string constant"
            params = ", ".join(role.params) or "none"
            raise role.error(f"the role reads {what} with getvariable(), which its `-- params:` line does not "
                             f"declare (declared: {params}); a role reads only its own parameters",
                             _line_of(role.text, pos))
        if kind == "model columns":
            what = f"the whole row {name!r} of runs" if name[0] not in "*#" else \
                f"runs with {'`*` or COLUMNS()' if name == '*' else name}"
            raise role.error(f"roles never mention the model; this one reads {what}, and runs holds the "
                             f"model's columns (model, n_layers, ...): name the columns of runs it needs "
                             f"(run_id, corpus_id, ...)", _line_of(role.text, pos))
        if kind == "function" and word not in _ROLE_TABLE_FUNCTIONS:
            raise role.error(f"roles read the store's tables by name, not through {word}() (table functions a role "
                             f"may use: {', '.join(sorted(_ROLE_TABLE_FUNCTIONS))})", _line_of(role.text, pos))
        if (kind == "table" and (word in attention or word in _RESULT_TABLES)) \
                or (kind == "column" and word in _MODEL_COLUMNS):
            hint = (" (a column or alias of your own with that name: rename it)" if kind == "column"
                    else " (a CTE of your own by that name: rename it)" if word in own_ctes
                    else ": read the tokens, words and their syntax instead")
            raise role.error(f"roles never mention attention, layers, heads, weights or the model; "
                             f"this one uses {name.lower()!r}{hint}", _line_of(role.text, pos))


def _parameter_message(parameter: str) -> str:
    """Why a role cannot use a prepared-statement parameter, and what it does instead."""
    what = f"the parameter {parameter}" if parameter else "prepared-statement parameters"
    return (f"the role uses {what}, which nothing binds: a role's SQL takes no parameters; it returns its "
            f"pairs for every run (token level: run_id from tokens; word level: corpus_id from words) and "
            f"headdb keeps those of the run it classifies. A value of the role's own goes in its `-- params:` "
            f"line (`-- params: name=value`), read as getvariable('name')")


def check_columns(con: duckdb.DuckDBPyConnection, role: Role, attention: frozenset[str] | None = None) -> None:
    """DESCRIBE the role's SELECT and compare with the column contract of its level
    (``attention``: as for :func:`check_mentions`)."""
    check_mentions(con, role, attention)
    set_params(con, role)
    # pad with newlines so that DuckDB's `LINE n` is the file's line
    sql = "DESCRIBE" + "\n" * (role.body_line - 1) + " " + _from_body_start(role)
    try:
        described = con.execute(sql).fetchall()
    except duckdb.Error as exc:
        if "Values were not provided" in str(exc):  # a parameter the parse tree could not show
            raise role.error(_parameter_message(""), _sql_line(exc, role.body_line)) from None
        raise role.error(f"the role's SELECT does not bind against the store schema: {_first_line(exc)}",
                         _sql_line(exc, role.body_line)) from None
    got = [(r[0], str(r[1]).upper()) for r in described]
    want = COLUMNS[role.level]
    names = tuple(n for n, _ in got)
    if names != want:
        other = next((level for level, cols in COLUMNS.items() if cols == names and level != role.level), None)
        hint = f"; these are a {other}-level role's: set `-- level: {other}`" if other else ""
        raise role.error(f"a {role.level}-level role returns exactly the columns {', '.join(want)} "
                         f"(in this order); this one returns {', '.join(names) or 'none'}{hint}")
    bad = [f"{n} {t}" for n, t in got if t not in _INTEGER_TYPES]
    if bad:
        raise role.error(f"the role's columns must be integers; got {', '.join(bad)}")
    if role.level == "token":
        _check_token_positions(con, role)


#: columns that hold word positions: returned as a token-level role's query_pos or key_pos, they
#: would be read as token positions (shifted by [CLS] and by every word of several pieces)
_WORD_POSITION_COLUMNS = frozenset({"word_pos", "head_word_pos", "query_word_pos", "key_word_pos"})


def _check_token_positions(con: duckdb.DuckDBPyConnection, role: Role) -> None:
    """A token-level role whose query_pos or key_pos is a word position column as it stands
    (`t.word_pos AS query_pos`) is an error: the positions are pieces', not words'."""
    import json

    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [role.body]).fetchone()[0])
        node = tree["statements"][0]["node"]
    except (duckdb.Error, KeyError, IndexError, TypeError, ValueError, RecursionError):
        return
    items = node.get("select_list") or [] if node.get("type") == "SELECT_NODE" else []
    for column, item in zip(COLUMNS["token"][2:], items[2:4]):
        names = item.get("column_names") if item.get("class") == "COLUMN_REF" else None
        if names and names[-1].lower() in _WORD_POSITION_COLUMNS:
            raise role.error(f"{column} is {'.'.join(names)}, a word position; a token-level role returns "
                             f"token positions (tokens.token_pos, [CLS] at 0, one per piece). For a sieve "
                             f"of words, set `-- level: word` and return corpus_id, sentence_id, "
                             f"query_word_pos, key_word_pos over words: headdb expands it to pieces")


def _from_body_start(role: Role) -> str:
    """The SELECT from its first code token (the header comments dropped, lines kept)."""
    start = _first_code_token(role.body) or 0
    return role.body[start:]


def sieve_sql(role: Role) -> str:
    """The role's sieve at token level: ``run_id, sentence_id, query_pos, key_pos``."""
    inner = "(\n" + role.body + "\n)"
    if role.level == "token":
        return inner
    return "(\n" + fill(query("framework/word_sieve"), "word_pairs", inner) + "\n)"


def fill(template: str, placeholder: str, sql: str) -> str:
    """Put a relation (a quoted name or a parenthesised SELECT) where a framework query has
    ``{placeholder}``; the framework files hold each placeholder exactly once."""
    mark = "{" + placeholder + "}"
    if template.count(mark) != 1:  # pragma: no cover - a bug in a shipped file
        raise RuntimeError(f"framework query must hold {mark} exactly once")
    return template.replace(mark, sql)


# ---------------------------------------------------------------------------------------------
# loading


def _role_files(directory: Path) -> list[Path]:
    rank = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    # hidden files (an editor's lock or backup, .#name.sql) are not roles
    files = [p for p in directory.glob("*.sql") if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


#: Role texts (sha256) that passed the checks in this process. The checks read nothing but the
#: text and headdb's own schema, so a text that passed once passes again; a process that loads
#: roles again (a notebook, `headdb report` after `classify`) skips the in-memory store and the
#: DESCRIBEs (about 0.1 s for the built-ins).
_CHECKED: set[str] = set()


#: sha256 of each built-in role's text as shipped. The suite checks every built-in file against
#: the contract and against this table (tests/test_roles.py::test_builtin_roles_checked_as_shipped),
#: so a built-in whose text is listed here is not checked again in every process (the in-memory
#: store and the DESCRIBEs: 0.08 s of each classification of the EWT store); a built-in edited in
#: place has another hash and is checked like any role. After changing a built-in, the test
#: prints the table to paste here.
BUILTIN_CHECKED = {
    "local": "e1bc2f656170a73da2343a234183ce7a7f8908276c7db5435ad4a04840257d5c",
    "delimiter": "9a3eb63bf27be95d3d551e03b9a2710f7ea03e81aab6db917e3517d6146a8a78",
    "delimiter_cls": "ec73238966861370005949dc47aeda68e49b84f46a167eab2dc2c5cc0fb1a089",
    "delimiter_sep": "43929c0ff4778f99c584b4c4a4682ce6abf5c88e7d19e35c9b62775d930375e9",
    "block": "10057824e3400f31857136da57a3e7bf7f852849a2470cf6487b815eb30bc33d",
    "nsubj": "b41f9db2c90ebc6bb1d9c50963d0e0e96636bfa466265f7f75a745f168be4aa8",
    "obj": "bc25ee3d3231967c405c456d1569ccd2b805191906143f4ddea60ab1b2a0fe29",
    "amod": "b5b79eb29e3f6a3c1c1a80e4630cf6ddd77f979f24ce53e0302c0d0495a71358",
    "advmod": "d6a5c1fd810b539e8350d3053abd0d8e7039057ea1f99cb6eab83f79ab830d7f",
    "syntactic": "c97d91888f6548f9dc0d54b2168cfc7ac20a61c13dc61c4278fbd54331df51c0",
}


class _Checker:
    """Checks roles in the order given, opening the in-memory store only for a text not yet
    checked (in this process, or by the suite: a built-in as shipped)."""

    def __init__(self) -> None:
        self.con: duckdb.DuckDBPyConnection | None = None
        self.attention: frozenset[str] = frozenset()

    def __call__(self, role: Role) -> None:
        if role.sha256 in _CHECKED or (role.builtin and BUILTIN_CHECKED.get(role.name) == role.sha256):
            return
        if self.con is None:
            self.con = validation_connection()
            # looked up once: the in-memory store's schema does not change (0.035 s for ten roles)
            self.attention = attention_tables(self.con)
        check_columns(self.con, role, self.attention)
        _CHECKED.add(role.sha256)

    def close(self) -> None:
        if self.con is not None:
            self.con.close()


def requested_roles(roles: Sequence[str] | str | None) -> list[str]:
    """The roles a caller names: a comma-separated string or a list, as given (none: []).
    Any iterable of names will do (a tuple, a DataFrame's column); anything else is an InputError."""
    if isinstance(roles, str):
        return [r.strip() for r in roles.split(",") if r.strip()]
    if roles is None:
        return []
    try:
        names = list(roles)
    except TypeError:
        names = None
    if isinstance(roles, (bytes, dict)) or names is None or not all(isinstance(r, str) for r in names):
        raise InputError(f"{option('roles')} must be role names: a list of strings or one comma-separated "
                         f"string, not {roles!r}")
    return names


def load_roles(roles_dir: str | Path | None = None, names: list[str] | str | None = None) -> list[Role]:
    """The built-in roles and those in ``roles_dir``, checked against the contract.

    ``names`` (a list or a comma-separated string) selects and orders roles; default: all,
    built-ins first. A user role may not reuse a built-in's name. With ``names``, only the chosen
    files of ``roles_dir`` are read: a broken file beside them does not stop their classification.
    """
    if names is not None:
        names = requested_roles(names)
    if roles_dir is not None and not isinstance(roles_dir, (str, os.PathLike)):  # Path(5): a bare TypeError
        raise InputError(f"{option('roles_dir')} must be a folder's path (a str or pathlib.Path), not {roles_dir!r}")
    wanted = None if names is None else set(names)
    skipped: list[str] = []  # files of roles_dir not read, for the list of known roles
    check = _Checker()
    try:
        found: dict[str, Role] = {}
        for path in _role_files(builtin_roles_dir()):
            role = parse_role(path, builtin=True)
            check(role)
            found[role.name] = role
        if roles_dir is not None:
            directory = Path(roles_dir)
            if not directory.is_dir():
                raise RoleError("is a file, not a folder of roles (pass the folder that holds it)"
                                if directory.exists() else "no such roles folder", directory)
            for path in _role_files(directory):
                if wanted is not None and path.stem not in wanted:
                    skipped.append(path.stem)
                    continue
                role = parse_role(path)
                if role.name in found:
                    line = _header_line(role, "name")
                    raise RoleError(f"role {role.name!r} clashes with the built-in role of that name "
                                    f"({found[role.name].path}); rename the file and its name", path, line)
                check(role)
                found[role.name] = role
    finally:
        check.close()
    if names is None:
        return list(found.values())
    if not names:
        raise RoleError("no roles selected")
    unknown = [n for n in names if n not in found]
    if unknown:
        others = [n for n in dict.fromkeys(skipped) if n not in found]
        raise RoleError(f"unknown role(s) {', '.join(unknown)}; known: {', '.join(found)}"
                        + (f"; other files in {roles_dir}: {', '.join(others)}" if others else ""))
    return [found[n] for n in dict.fromkeys(names)]


def _header_line(role: Role, key: str) -> int:
    for number, line in enumerate(role.text.splitlines(), start=1):
        m = _HEADER_LINE.match(line.rstrip())
        if m and m.group(1) == key:
            return number
    return 1


def get_role(name: str, roles_dir: str | Path | None = None) -> Role:
    """One role by name."""
    return load_roles(roles_dir, [name])[0]
