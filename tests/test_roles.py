"""Role files: built-ins load and are documented; a user role is picked up, scored and
classified; a broken one is refused with its path and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import headdb
from headdb.errors import RoleError
from headdb.roles import BUILTIN_ORDER, load_roles, parse_role
from role_reference import build_store, simple_seq

PREVIOUS = """\
-- name: previous
-- description: Attends to the previous token: every position but the first is a query,
--   and its sieve is the position just before it.
-- level: token
-- tau: 2
SELECT run_id, sentence_id, token_pos AS query_pos, token_pos - 1 AS key_pos
FROM tokens
WHERE token_pos > 0
"""

VERB_OBJECT = """\
-- name: verb_to_object
-- description: From a verb to its object(s).
-- level: word
-- params: rel=obj
--
-- Free comments may follow a bare `--` line.
SELECT d.corpus_id, d.sentence_id, h.word_pos AS query_word_pos, d.word_pos AS key_word_pos
FROM words AS d
JOIN words AS h ON h.corpus_id = d.corpus_id AND h.sentence_id = d.sentence_id AND h.word_pos = d.head_word_pos
WHERE split_part(d.deprel, ':', 1) = getvariable('rel');
"""

SEQS = [simple_seq([1, 2, 1], [1, None, 1], ["nsubj", "root", "obj"]),
        simple_seq([2, 1, 1, 1], [1, None, 3, 1], ["nsubj", "root", "amod", "obj"])]


def _previous_token_store(path: Path) -> Path:
    """Head 0 puts all mass on the previous token (the first row on itself), head 1 is uniform."""
    att = []
    for q in SEQS:
        L = q.length
        prev = np.zeros((L, L))
        prev[0, 0] = 1.0
        for i in range(1, L):
            prev[i, i - 1] = 1.0
        att.append(np.stack([np.stack([prev, np.full((L, L), 1.0 / L)])]))
    build_store(path, SEQS, att)
    return path


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.sql"
    path.write_text(text)
    return path


def test_builtins_load_in_order_and_are_documented():
    roles = load_roles()
    assert [r.name for r in roles] == list(BUILTIN_ORDER)
    for r in roles:
        assert r.builtin and len(r.description) > 30 and r.tau == 3.0
    assert {r.name: r.level for r in roles}["obj"] == "word"
    assert {r.name: r.params for r in roles}["local"] == {"window": 2}


def test_user_role_is_picked_up_scored_and_classified(tmp_path):
    roles_dir = tmp_path / "roles"
    _write(roles_dir, "previous", PREVIOUS)
    _write(roles_dir, "verb_to_object", VERB_OBJECT)
    names = [r.name for r in load_roles(roles_dir)]
    assert names[-2:] == ["previous", "verb_to_object"]
    db = _previous_token_store(tmp_path / "p.db")
    df = headdb.scores(db, roles="previous,verb_to_object", roles_dir=roles_dir)
    prev = df[df["role"] == "previous"].set_index(["head", "sentence_id"])
    for sid, q in enumerate(SEQS):
        assert prev.loc[(0, sid), "score"] == pytest.approx(q.length)  # L / |S| with |S| = 1
        assert prev.loc[(1, sid), "score"] == pytest.approx(1.0)
        assert prev.loc[(0, sid), "n_queries"] == q.length - 1
    # verb -> object: the verb (word 1, 2 pieces in sentence 0) queries, the object's pieces are its sieve
    vo = df[(df["role"] == "verb_to_object") & (df["head"] == 1)]
    assert list(vo["n_queries"]) == [2, 1]
    res = headdb.classify(db, roles="previous", roles_dir=roles_dir, correction="none")
    assert list(res["tau"].unique()) == [2.0]  # the file's own tau
    by_head = res.set_index("head")
    assert bool(by_head.loc[0, "significant"]) and not bool(by_head.loc[1, "significant"])  # scores L vs 1, tau 2
    stored = headdb.sql(db, "SELECT role, count(*) AS n FROM head_tests GROUP BY role")
    assert stored.to_dict("records") == [{"role": "previous", "n": 2}]


def test_each_test_records_the_version_of_its_role(tmp_path):
    # the roles table keeps the latest definition of a name; every test keeps the sha256 of the
    # role SQL that produced it, so an edited user role does not rewrite history
    roles_dir = tmp_path / "roles"
    path = _write(roles_dir, "previous", PREVIOUS)
    db = _previous_token_store(tmp_path / "p.db")
    first = headdb.classify(db, roles="previous", roles_dir=roles_dir)
    sha_1 = load_roles(roles_dir, "previous")[0].sha256
    other = _previous_token_store(tmp_path / "q.db")
    headdb.classify(other, roles="previous", roles_dir=roles_dir)
    path.write_text(PREVIOUS.replace("-- tau: 2", "-- tau: 2.5"))
    sha_2 = load_roles(roles_dir, "previous")[0].sha256
    assert sha_1 != sha_2 and len(first) == 2
    headdb.classify(db, roles="previous", roles_dir=roles_dir)
    assert headdb.sql(db, "SELECT DISTINCT role_sha256 FROM head_tests")["role_sha256"].tolist() == [sha_2]
    assert headdb.sql(other, "SELECT DISTINCT role_sha256 FROM head_tests")["role_sha256"].tolist() == [sha_1]
    assert headdb.sql(db, "SELECT sha256 FROM roles WHERE role = 'previous'")["sha256"].tolist() == [sha_2]


BROKEN = {
    # name: (file text, expected line, words the message must hold)
    "syntax": ("-- name: syntax\n-- description: d\n-- level: token\nSELECT run_id, sentence_id,\n"
               "  token_pos AS query_pos token_pos AS key_pos\nFROM tokens\n", 5, "syntax error"),
    "notselect": ("-- name: notselect\n-- description: d\n-- level: token\n\nDELETE FROM tokens\n", 5,
                  "read-only SELECT"),
    "two": ("-- name: two\n-- description: d\n-- level: token\nSELECT 1 AS run_id, 1 AS sentence_id, 1 AS query_pos,"
            " 1 AS key_pos;\nSELECT 2;\n", 5, "exactly one SELECT"),
    "columns": ("-- name: columns\n-- description: d\n-- level: token\nSELECT run_id, sentence_id, token_pos\n"
                "FROM tokens\n", 4, "run_id, sentence_id, query_pos, key_pos"),
    "types": ("-- name: types\n-- description: d\n-- level: token\nSELECT run_id, sentence_id, piece AS query_pos,"
              " token_pos AS key_pos FROM tokens\n", 4, "integers"),
    "table": ("-- name: table\n-- description: d\n-- level: word\nSELECT corpus_id, sentence_id, word_pos, head_word_pos\n"
              "FROM wordz\n", 5, "wordz"),
    "unknownkey": ("-- name: unknownkey\n-- colour: red\n-- description: d\n-- level: token\nSELECT 1\n", 2,
                   "unknown header key 'colour'"),
    "dupkey": ("-- name: dupkey\n-- description: d\n-- level: token\n-- description: again\nSELECT 1\n", 4,
               "duplicate header key 'description'"),
    "stem": ("-- name: other\n-- description: d\n-- level: token\nSELECT 1\n", 1, "file name's stem"),
    "level": ("-- name: level\n-- description: d\n-- level: sentence\nSELECT 1\n", 3, "token or word"),
    "missing": ("-- name: missing\n-- level: token\nSELECT 1\n", 1, "missing header key 'description'"),
    "local": ("-- name: local\n-- description: mine\n-- level: token\nSELECT run_id, sentence_id, token_pos AS"
              " query_pos, token_pos AS key_pos FROM tokens\n", 1, "clashes with the built-in"),
    "undeclared": ("-- name: undeclared\n-- description: d\n-- level: token\n-- params: k=2\nSELECT run_id, "
                   "sentence_id, token_pos AS query_pos,\n  token_pos + getvariable('kk') AS key_pos FROM tokens\n", 6,
                   "reads the variable 'kk' with getvariable(), which its `-- params:` line does not declare "
                   "(declared: k)"),
    # without a params line, the name another role binds (local's window) would be read when
    # both are filled together: refused, whatever else is classified
    "borrowed": ("-- name: borrowed\n-- description: d\n-- level: token\nSELECT run_id, sentence_id, token_pos AS"
                 " query_pos, token_pos AS key_pos\nFROM tokens WHERE token_pos < getvariable('WINDOW')\n", 5,
                 "variable 'WINDOW'"),
    "dynamic": ("-- name: dynamic\n-- description: d\n-- level: token\n-- params: k=2\nSELECT run_id, sentence_id,"
                " token_pos AS query_pos, token_pos AS key_pos\nFROM tokens WHERE token_pos < getvariable('k' || '')\n",
                6, "a variable whose name is not a string constant"),
    "external": ("-- name: external\n-- description: d\n-- level: token\nSELECT * FROM read_csv('/etc/passwd')\n", 4,
                 "not through read_csv()"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_role_is_refused_with_path_and_line(tmp_path, name):
    text, line, words = BROKEN[name]
    path = _write(tmp_path / "roles", name, text)
    with pytest.raises(RoleError) as err:
        load_roles(tmp_path / "roles")
    assert str(err.value).startswith(f"{path}:{line}: "), str(err.value)
    assert words in str(err.value)


@pytest.mark.parametrize("name,level,body,words", [
    ("dups", "token", "SELECT t.run_id, t.sentence_id, t.token_pos AS query_pos, 0 AS key_pos\n"
                      "FROM tokens t, (VALUES (1), (2)) v(x)\n", "more than once"),
    ("outside", "token", "SELECT run_id, sentence_id, token_pos AS query_pos, token_pos - 1 AS key_pos\nFROM tokens\n",
     "outside the stored sequence"),
    # the last token's query one past the end: position n_tokens is already outside
    ("pastend", "token", "SELECT run_id, sentence_id, token_pos + 1 AS query_pos, token_pos AS key_pos\nFROM tokens\n",
     "outside the stored sequence"),
    # a NULL key would count in |S_i| and a NULL query drop out: wrong scores, not an error, before
    ("nullkey", "token", "SELECT run_id, sentence_id, token_pos AS query_pos, NULL::SMALLINT AS key_pos\nFROM tokens\n",
     "holds a NULL"),
    ("nullquery", "token", "SELECT run_id, sentence_id, CASE WHEN token_pos > 0 THEN token_pos END AS query_pos, "
                           "token_pos AS key_pos\nFROM tokens\n", "holds a NULL"),
    # word pairs that name no word (or NULL, the root's head) would drop out when expanded to pieces
    ("nowords", "word", "SELECT corpus_id, sentence_id, word_pos AS query_word_pos, word_pos + 100 AS key_word_pos\n"
                        "FROM words\n", "does not have, or a NULL (sentence 0, query_word_pos 0, key_word_pos 100)"),
    ("roothead", "word", "SELECT corpus_id, sentence_id, word_pos AS query_word_pos, head_word_pos AS key_word_pos\n"
                         "FROM words\n", "key_word_pos NULL"),
])
def test_data_contract_is_checked_when_scored(tmp_path, name, level, body, words):
    path = _write(tmp_path / "roles", name, f"-- name: {name}\n-- description: d\n-- level: {level}\n{body}")
    db = _previous_token_store(tmp_path / "p.db")
    with pytest.raises(RoleError) as err:
        headdb.scores(db, roles=[name], roles_dir=tmp_path / "roles")
    assert str(err.value).startswith(f"{path}:4: ") and words in str(err.value), str(err.value)
    with pytest.raises(RoleError, match=words.replace("(", r"\(").replace(")", r"\)")):  # also among other roles
        headdb.classify(db, roles=["local", name], roles_dir=tmp_path / "roles")
    assert headdb.sql(db, "SELECT count(*) AS n FROM head_tests")["n"][0] == 0


def test_params_header_and_unknown_role(tmp_path):
    role = parse_role(_write(tmp_path, "verb_to_object", VERB_OBJECT))
    assert role.params == {"rel": "obj"} and role.tau == 3.0 and role.body_line == 7
    with pytest.raises(RoleError, match="unknown role"):
        load_roles(None, "local,nope")


def test_roles_named_are_loaded_once_each_in_their_order_and_none_is_an_error():
    """A name given twice is one role (classify would test its heads twice); an empty selection
    is refused rather than read as "no roles"."""
    assert [r.name for r in load_roles(None, "delimiter,local,delimiter")] == ["delimiter", "local"]
    assert [r.name for r in load_roles(None, ["local", "local"])] == ["local"]
    for names in ("", " , ", []):
        with pytest.raises(RoleError, match="no roles selected"):
            load_roles(None, names)


def test_a_role_text_is_checked_once_per_process_and_again_when_edited(tmp_path, monkeypatch):
    import headdb.roles as roles_module

    path = _write(tmp_path / "roles", "previous", PREVIOUS)
    first = load_roles(tmp_path / "roles")
    opened = []
    real = roles_module.validation_connection
    monkeypatch.setattr(roles_module, "validation_connection", lambda: opened.append(1) or real())
    again = load_roles(tmp_path / "roles")
    assert [r.name for r in again] == [r.name for r in first] and opened == []
    # the same file edited into a broken role: a new text, checked (and refused) again
    path.write_text(PREVIOUS.replace("token_pos - 1 AS key_pos", "token_pos - 1 AS key"))
    with pytest.raises(RoleError, match="query_pos, key_pos"):
        load_roles(tmp_path / "roles")
    assert opened == [1]


WIDE = """\
-- name: wide
-- description: The local window with its own width (window = 1): the same parameter name as
--   the built-in local role, bound to a different value.
-- level: token
-- params: window=1
SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos
FROM tokens AS q
JOIN tokens AS k
  ON k.run_id = q.run_id AND k.sentence_id = q.sentence_id
 AND k.token_pos BETWEEN q.token_pos - getvariable('window') AND q.token_pos + getvariable('window')
"""


def test_roles_scored_together_match_each_scored_alone(tmp_path):
    """Roles are scored together (one INSERT of every sieve); roles that bind one parameter to
    different values are filled one by one. Either way each role's scores are its own."""
    import pandas as pd

    _write(tmp_path / "roles", "wide", WIDE)
    _write(tmp_path / "roles", "previous", PREVIOUS)
    db = _previous_token_store(tmp_path / "p.db")
    for together in (["local", "wide"], ["local", "previous", "delimiter"], ["previous", "delimiter_cls"]):
        both = headdb.scores(db, roles=together, roles_dir=tmp_path / "roles")
        for name in together:
            alone = headdb.scores(db, roles=[name], roles_dir=tmp_path / "roles")
            got = both[both["role"] == name].reset_index(drop=True)
            pd.testing.assert_frame_equal(got.drop(columns="role"), alone.drop(columns="role"), check_exact=True)
            assert len(got) > 0
    local = headdb.scores(db, roles=["local"])
    wide = headdb.scores(db, roles=["wide"], roles_dir=tmp_path / "roles")
    assert not np.allclose(local["score"], wide["score"])  # window 2 and window 1 really differ


def test_a_role_that_fails_on_the_data_is_named_among_others(tmp_path):
    """A SELECT that binds but fails while it runs (here a cast of text) is reported with its
    own path, also when it is filled together with other roles."""
    path = _write(tmp_path / "roles", "badcast", (
        "-- name: badcast\n-- description: d\n-- level: token\n"
        "SELECT run_id, sentence_id, token_pos AS query_pos, CAST('x' || token_pos AS INTEGER) AS key_pos\n"
        "FROM tokens\n"))
    db = _previous_token_store(tmp_path / "p.db")
    with pytest.raises(RoleError) as err:
        headdb.scores(db, roles=["local", "badcast", "delimiter"], roles_dir=tmp_path / "roles")
    assert str(err.value).startswith(f"{path}:4: ") and "failed on the store" in str(err.value)


def test_a_param_of_the_wrong_type_is_named_at_its_params_line(tmp_path):
    """`window=two` is text: the SELECT binds on the empty store and fails only on data with
    DuckDB's "Could not convert string 'two'". The error points at the `-- params:` line and
    names each param with the type getvariable() reads, not only at the SELECT."""
    path = _write(tmp_path / "roles", "wide", (
        "-- name: wide\n-- description: d\n-- level: token\n-- params: window=two, other='x'\n"
        "SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos\n"
        "FROM tokens AS q JOIN tokens AS k ON k.run_id = q.run_id AND k.sentence_id = q.sentence_id\n"
        "AND k.token_pos BETWEEN q.token_pos - getvariable('window') AND q.token_pos + getvariable('window')\n"))
    db = _previous_token_store(tmp_path / "p.db")
    with pytest.raises(RoleError) as err:
        headdb.scores(db, roles=["wide"], roles_dir=tmp_path / "roles")
    message = str(err.value)
    assert message.startswith(f"{path}:4: the role's SELECT failed on the store: Conversion Error"), message
    assert "window='two' (text), other='x' (text)" in message and "quote a value" in message


def test_word_positions_returned_at_token_level_are_refused_when_the_role_loads(tmp_path):
    """`t.word_pos AS query_pos` at token level binds (both are integers) and used to be read as
    token positions, or failed later as a duplicate pair whose advice (SELECT DISTINCT) would
    keep the wrong positions. It is refused at load, naming the column and `level: word`."""
    path = _write(tmp_path / "roles", "headpieces", (
        "-- name: headpieces\n-- description: d\n-- level: token\n"
        "SELECT t.run_id, t.sentence_id, t.token_pos AS query_pos, w.head_word_pos AS key_pos\n"
        "FROM tokens AS t JOIN runs AS r ON r.run_id = t.run_id\n"
        "JOIN words AS w ON w.corpus_id = r.corpus_id AND w.sentence_id = t.sentence_id AND w.word_pos = t.word_pos\n"
        "WHERE w.head_word_pos IS NOT NULL\n"))
    with pytest.raises(RoleError) as err:
        load_roles(tmp_path / "roles", ["headpieces"])
    message = str(err.value)
    assert message.startswith(f"{path}:4: key_pos is w.head_word_pos, a word position"), message
    assert "`-- level: word`" in message
    # an expression over a word position is not judged; token_pos columns pass as before
    _write(tmp_path / "ok", "samepiece", (
        "-- name: samepiece\n-- description: d\n-- level: token\n"
        "SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos\n"
        "FROM tokens AS q JOIN tokens AS k ON k.run_id = q.run_id AND k.sentence_id = q.sentence_id\n"
        " AND k.word_pos = q.word_pos AND k.token_pos <> q.token_pos\n"))
    assert [r.name for r in load_roles(tmp_path / "ok", ["samepiece"])] == ["samepiece"]


def test_quoted_params_hidden_files_and_a_file_for_a_folder(tmp_path):
    folder = tmp_path / "roles"
    quoted = VERB_OBJECT.replace("-- params: rel=obj", "-- params: rel='obj'")
    assert quoted != VERB_OBJECT
    _write(folder, "verb_to_object", quoted)
    assert parse_role(folder / "verb_to_object.sql").params == {"rel": "obj"}  # not "'obj'"
    (folder / ".#verb_to_object.sql").write_text("an editor's lock file, not SQL")
    assert [r.name for r in load_roles(folder) if not r.builtin] == ["verb_to_object"]
    with pytest.raises(RoleError, match="is a file, not a folder of roles"):
        load_roles(folder / "verb_to_object.sql")
    with pytest.raises(RoleError, match="no such roles folder"):
        load_roles(tmp_path / "nope")


def test_a_cte_named_like_a_store_table_is_the_cte(tmp_path):
    """A CTE of dependency edges called `edges`, built from words, was refused as reading
    attention; the store's own `edges` inside that CTE's definition (or elsewhere) still is."""
    folder = tmp_path / "roles"
    _write(folder, "dep_edges", """\
-- name: dep_edges
-- description: From a word to its head, through a CTE named edges.
-- level: word
WITH edges AS (
    SELECT corpus_id, sentence_id, word_pos AS dep, head_word_pos AS gov FROM words WHERE head_word_pos IS NOT NULL
)
SELECT corpus_id, sentence_id, dep AS query_word_pos, gov AS key_word_pos FROM edges
""")
    db = _previous_token_store(tmp_path / "p.db")
    got = headdb.scores(db, roles="dep_edges", roles_dir=folder)
    assert len(got) > 0 and set(got["role"].astype(str)) == {"dep_edges"}
    for body, line in (("WITH edges AS (SELECT * FROM edges)\nSELECT run_id, sentence_id, query_pos, key_pos FROM edges", 4),
                       ("WITH b AS (SELECT * FROM edges), edges AS (SELECT 1)\n"
                        "SELECT run_id, sentence_id, query_pos, query_pos AS key_pos FROM b", 4)):
        _write(folder, "sneaky", "-- name: sneaky\n-- description: d\n-- level: token\n" + body + "\n")
        with pytest.raises(RoleError, match=f"sneaky.sql:{line}: roles never mention attention.*'edges'"):
            headdb.scores(db, roles="sneaky", roles_dir=folder)
        (folder / "sneaky.sql").unlink()


def test_quoted_params_hold_commas_and_spaces_and_a_bom_is_not_text(tmp_path):
    """`rels='nsubj,obj'` failed with "cannot read \\"obj'\\"", and a file saved with a byte-order
    mark said its `-- name:` line was missing."""
    folder = tmp_path / "roles"
    deps = ("-- name: deps\n-- description: From a dependent to its head, for the relations listed.\n"
            "-- level: word\n-- params: {params}\n"
            "SELECT corpus_id, sentence_id, word_pos AS query_word_pos, head_word_pos AS key_word_pos FROM words\n"
            "WHERE head_word_pos IS NOT NULL\n"
            "  AND split_part(deprel, ':', 1) IN (SELECT unnest(string_split(getvariable('rels'), ',')))\n")
    path = _write(folder, "deps", deps.format(params="rels='nsubj,obj', what=\"PROPN NOUN\", n=3"))
    role = parse_role(path)
    assert role.params == {"rels": "nsubj,obj", "what": "PROPN NOUN", "n": 3}
    assert role.params_text == "rels='nsubj,obj', what='PROPN NOUN', n=3"
    db = _previous_token_store(tmp_path / "p.db")
    both = headdb.scores(db, roles="deps", roles_dir=folder)
    _write(tmp_path / "one", "deps", deps.format(params="rels=obj"))
    one = headdb.scores(db, roles="deps", roles_dir=tmp_path / "one")
    assert both["n_queries"].sum() > one["n_queries"].sum() > 0  # the subjects' pieces query as well
    for bad in ("rel=obj,", "rel=obj n=3", "rel='obj"):
        _write(folder, "verb_to_object", VERB_OBJECT.replace("rel=obj", bad))
        with pytest.raises(RoleError, match=r"verb_to_object.sql:4: params are .* quoted \('a,b'\); cannot read"):
            parse_role(folder / "verb_to_object.sql")
    bom = folder / "previous.sql"
    bom.write_bytes(b"\xef\xbb\xbf" + PREVIOUS.encode())
    assert parse_role(bom).name == "previous"


def test_a_word_pair_listed_twice_is_named_in_word_positions(tmp_path):
    """The duplicate was reported as (query_pos 6, key_pos 4), piece positions the role never wrote."""
    folder = tmp_path / "roles"
    body = ("SELECT corpus_id, sentence_id, word_pos AS query_word_pos, head_word_pos AS key_word_pos FROM words "
            "WHERE deprel = 'nsubj'")
    _write(folder, "twice", f"-- name: twice\n-- description: d\n-- level: word\n{body}\nUNION ALL\n{body}\n")
    db = _previous_token_store(tmp_path / "p.db")
    with pytest.raises(RoleError, match=r"twice.sql:\d+: the role lists the word pair \(sentence 0, query_word_pos 0, "
                                        r"key_word_pos 1\) more than once"):
        headdb.classify(db, roles="twice", roles_dir=folder)
    assert headdb.sql(db, "SELECT count(*) AS n FROM head_tests")["n"][0] == 0


def test_a_broken_file_beside_a_chosen_role_does_not_stop_it(tmp_path):
    """One invalid file in --roles-dir blocked `classify --roles previous` and `roles show previous`,
    though `previous` itself was fine; it still stops a classification of every role, by name."""
    folder = tmp_path / "roles"
    _write(folder, "previous", PREVIOUS)
    _write(folder, "broken", "-- name: broken\n-- description: d\n-- level: token\nSELEC nonsense\n")
    assert [r.name for r in load_roles(folder, "previous")] == ["previous"]
    from headdb.roles import get_role

    assert get_role("previous", folder).tau == 2
    db = _previous_token_store(tmp_path / "p.db")
    assert len(headdb.classify(db, roles="previous", roles_dir=folder)) == 2
    with pytest.raises(RoleError, match="broken.sql:4: SQL syntax error"):
        load_roles(folder)
    with pytest.raises(RoleError, match="unknown role.s. nope; known: .*syntactic, previous; other files in .*roles: "
                                        "broken$"):
        load_roles(folder, "nope,previous")


def test_contract_errors_say_how_to_fix_them(tmp_path):
    folder = tmp_path / "roles"
    _write(folder, "wordish", "-- name: wordish\n-- description: d\n-- level: token\n"
           "SELECT corpus_id, sentence_id, word_pos AS query_word_pos, word_pos AS key_word_pos FROM words\n")
    with pytest.raises(RoleError, match="these are a word-level role's: set `-- level: word`"):
        load_roles(folder, "wordish")
    _write(folder, "headish", "-- name: headish\n-- description: d\n-- level: word\n"
           "SELECT corpus_id, sentence_id, word_pos AS query_word_pos, head FROM "
           "(SELECT *, head_word_pos AS head FROM words WHERE head_word_pos IS NOT NULL)\n")
    with pytest.raises(RoleError, match="uses 'head' \\(a column or alias of your own with that name: rename it\\)"):
        load_roles(folder, "headish")


def test_builtin_roles_checked_as_shipped(monkeypatch):
    """Every built-in file passes the contract's checks (run here, whatever the table says), and
    BUILTIN_CHECKED lists exactly the texts that passed, so processes may skip them; an edited
    built-in is checked again when it loads."""
    import headdb.roles as roles_module
    from headdb.resources import builtin_roles_dir

    con = roles_module.validation_connection()
    try:
        attention = roles_module.attention_tables(con)
        shipped = {}
        for path in sorted(builtin_roles_dir().glob("*.sql")):
            role = parse_role(path, builtin=True)
            roles_module.check_columns(con, role, attention)  # raises RoleError naming the file
            shipped[role.name] = role.sha256
    finally:
        con.close()
    table = "".join(f'    "{name}": "{sha}",\n' for name, sha in shipped.items())
    assert roles_module.BUILTIN_CHECKED == shipped, (
        "a built-in role changed (or was added): it passes the checks; set BUILTIN_CHECKED in "
        "headdb/roles.py to\n{\n" + table + "}")
    # listed built-ins open no in-memory store; an edited one (another text) is checked again
    monkeypatch.setattr(roles_module, "_CHECKED", set())
    opened = []
    real = roles_module.validation_connection
    monkeypatch.setattr(roles_module, "validation_connection", lambda: opened.append(1) or real())
    assert [r.name for r in load_roles()] == list(BUILTIN_ORDER) and opened == []
    monkeypatch.setitem(roles_module.BUILTIN_CHECKED, "local", "0" * 64)
    load_roles(None, "local")
    assert opened == [1]


def test_roles_dir_that_is_not_a_path_is_refused_by_name():
    """load_roles(roles_dir=5) failed with Path's bare TypeError; load_roles(5) names the roles_dir."""
    from headdb.errors import InputError

    for call in (lambda: load_roles(5), lambda: headdb.classify("x.db", roles_dir=5)):
        with pytest.raises(InputError, match=r"^roles_dir must be a folder's path \(a str or pathlib.Path\), not 5$"):
            call()
