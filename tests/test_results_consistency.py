"""What the commands that read results say about them: unfinished runs, mixed classifications,
test counts, every version of a role's SQL kept, and a report folder never left half-written."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import headdb
from cli_helpers import run_main
from headdb.errors import DatabaseError
from role_reference import build_store, dirichlet_attention, simple_seq


@pytest.fixture
def db(tmp_path):
    """Two finished runs over one corpus (2 layers x 2 heads, top-3), and a third left running
    by a killed ingest."""
    rng = np.random.default_rng(12)
    seqs = [simple_seq([1, 2, 1, 1], [1, None, 1, 1], ["nsubj", "root", "obj", "advmod"]) for _ in range(6)]
    path = tmp_path / "s.db"
    for run_id in (1, 2, 3):
        build_store(path, seqs, [dirichlet_attention(rng, 2, 2, q.length) for q in seqs], run_id=run_id,
                    add_corpus=run_id == 1, top_k=3)
    con = headdb.connect(path)
    con.execute("UPDATE runs SET status = 'running' WHERE run_id = 3")
    con.close()
    return path


def test_every_command_refuses_an_unfinished_run_in_the_words_of_runs(db, tmp_path):
    assert headdb.runs(db)["status"].tolist() == ["done", "done", "interrupted"]
    headdb.classify(db, run=1)
    refused = "run 3 is interrupted, not done: its ingest did not finish; run the same `headdb ingest` command again"
    for call in (lambda: headdb.classify(db, run=3),
                 lambda: headdb.scores(db, run=3),
                 lambda: headdb.accuracy(db, run=3),
                 lambda: headdb.compare(db, 1, 3),
                 lambda: headdb.report(db, run=3, out=tmp_path / "rep")):
        with pytest.raises(DatabaseError, match=refused.replace("`", ".").replace("(", r"\(")):
            call()
    assert not (tmp_path / "rep").exists()  # and the failed report made no folder
    con = headdb.connect(db)
    con.execute("UPDATE runs SET status = 'failed', error = 'disk full' WHERE run_id = 3")
    con.close()
    with pytest.raises(DatabaseError, match="run 3 is failed, not done"):
        headdb.accuracy(db, run=3)


def test_counts_are_of_tests_and_the_report_names_every_classification_it_shows(db, tmp_path, capsys, monkeypatch):
    # block needs sentence pairs: on single sentences every head has n = 0, no test
    code, out, err = run_main(capsys, monkeypatch, "classify", db, "--run", "1")
    assert code == 0, err
    n_tests = headdb.sql(db, "SELECT n_tests FROM classifications")["n_tests"][0]
    with_p = headdb.sql(db, "SELECT count(p) AS n FROM head_tests")["n"][0]
    assert n_tests == with_p < 40 and out.startswith(f"run 1: {n_tests} tests of 40 (head, role) pairs (bh correction")
    summary = headdb.role_summary(db, run=1).set_index("role")
    assert summary.loc["block", "n_tested"] == 0 and summary.loc["local", "n_tested"] == 4
    assert np.isnan(summary.loc["block", "share_significant"])
    layers = headdb.layer_distribution(db, run=1)
    assert layers.loc[layers["role"] == "block", "n_tested"].tolist() == [0, 0]
    # one role classified again with other settings: the report shows results of two classifications
    headdb.classify(db, run=1, roles="nsubj", tau=1.0, alpha=0.01, correction="none")
    r = headdb.report(db, run=1, out=tmp_path / "rep", accuracy=False)
    line = next(x for x in r.markdown.splitlines() if x.startswith("- classification:"))
    others = ", ".join(x.name for x in headdb.load_roles() if x.name != "nsubj")  # in BUILTIN_ORDER, as the report's
    assert line == (f"- classification: correction bh, alpha 0.05, {n_tests} tests in the family (roles {others}); "
                    "correction none, alpha 0.01, tau 1 for every role, 4 tests in the family (roles nsubj)"), line


def test_a_new_report_into_the_same_folder_leaves_no_figure_of_the_last_one(db, tmp_path):
    headdb.classify(db, run=1)
    out = tmp_path / "rep"
    first = headdb.report(db, run=1, out=out, accuracy=False)
    assert (out / "figures" / "heatmap_nsubj.png").exists()
    (out / "figures" / "notes.txt").write_text("mine")  # not a figure: kept
    second = headdb.report(db, run=1, out=out, roles="local", accuracy=False)
    on_disk = sorted(p.name for p in (out / "figures").iterdir())
    assert on_disk == sorted([p.name for p in second.figures] + ["notes.txt"])
    assert len(second.figures) < len(first.figures) and not (out / "figures" / "heatmap_nsubj.png").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    # a report that fails half-way (here: comparing with an unfinished run) changes nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(DatabaseError, match="not done"):
        headdb.report(db, run=1, out=out, compare=3, accuracy=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_every_version_of_a_role_that_tests_came_from_is_kept(db, tmp_path):
    roles = tmp_path / "roles"
    roles.mkdir()
    role = roles / "mine.sql"
    text = ("-- name: mine\n-- description: d\n-- level: token\n-- params: lag=1\n"
            "SELECT run_id, sentence_id, token_pos AS query_pos, token_pos - getvariable('lag') AS key_pos\n"
            "FROM tokens WHERE token_pos >= getvariable('lag')\n")
    role.write_text(text)
    headdb.classify(db, run=1, roles="mine", roles_dir=roles)
    role.write_text(text.replace("lag=1", "lag=2"))
    headdb.classify(db, run=2, roles="mine", roles_dir=roles)
    got = headdb.sql(db, "SELECT DISTINCT t.run_id, v.sql FROM head_tests t JOIN role_versions v "
                         "ON v.sha256 = t.role_sha256 WHERE t.role = 'mine' ORDER BY t.run_id")
    assert got["sql"].tolist() == [text, text.replace("lag=1", "lag=2")]
    assert headdb.sql(db, "SELECT sql FROM roles WHERE role = 'mine'")["sql"].tolist() == [got["sql"][1]]
    unresolved = headdb.sql(db, "SELECT count(*) AS n FROM head_tests t LEFT JOIN role_versions v "
                                "ON v.sha256 = t.role_sha256 WHERE v.sha256 IS NULL")["n"][0]
    assert unresolved == 0


def test_migration_0008_keeps_the_roles_already_stored(tmp_path):
    db_module = importlib.import_module("headdb.db")
    migrations = db_module.list_migrations()
    con = headdb.connect(tmp_path / "old.db", migrate_schema=False)
    db_module.migrate(con, [m for m in migrations if m.version < 8])
    con.execute("INSERT INTO roles VALUES ('r', 'token', 'd', 3.0, 'r.sql', 'SELECT 1', 'abc')")
    assert db_module.migrate(con) == [8]
    assert con.execute("SELECT sha256, role, sql FROM role_versions").fetchall() == [("abc", "r", "SELECT 1")]
    con.close()


def test_a_run_named_with_digits_is_found_by_name_and_unclassified_roles_name_the_run(db):
    con = headdb.connect(db)
    con.execute("UPDATE runs SET run_name = '7' WHERE run_id = 2")
    con.close()
    headdb.classify(db, run="7", roles="local")  # no run 7: the run named "7"
    assert headdb.sql(db, "SELECT DISTINCT run_id FROM head_tests")["run_id"].tolist() == [2]
    headdb.classify(db, run=1, roles="local")
    with pytest.raises(headdb.errors.InputError, match="role.s. nsubj not classified for run 1; available: local"):
        headdb.layer_distribution(db, run=1, roles="nsubj")
    with pytest.raises(headdb.errors.InputError, match="role.s. nsubj not classified for run 1 or run 2; available"):
        headdb.compare(db, 1, 2, roles="nsubj")
    headdb.classify(db, run=1, roles="local,nsubj")  # only run 2 lacks nsubj: the error named "both runs 1 and 2"
    with pytest.raises(headdb.errors.InputError, match="role.s. nsubj not classified for run 2; available: local$"):
        headdb.compare(db, 1, 2, roles="local,nsubj")


def test_a_report_whose_html_cannot_be_written_leaves_the_old_report(db, tmp_path, monkeypatch):
    """report.html was written last, after the new figures had replaced the old ones: a full disk
    there left the new figures beside the old HTML (and summary). Now the texts are written
    before anything is moved, and a move that fails puts back what was moved."""
    import errno
    from pathlib import Path

    from headdb.errors import InputError

    headdb.classify(db, run=1)
    out = tmp_path / "rep"
    headdb.report(db, run=1, out=out, accuracy=False)

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    before = files()
    assert "figures/heatmap_nsubj.png" in before and "report.html" in before
    write_text, replace = Path.write_text, Path.replace

    def full_disk(self, *args, **kwargs):
        if self.name.startswith("report.html"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)

    def failed_move(self, target):
        # the new report.html moving in; the old one's way back (from the folder it was moved aside to) works
        if Path(target) == out / "report.html" and self.parent.name != "old":
            raise OSError(errno.EIO, "Input/output error", str(target))
        return replace(self, target)

    for patch, said in ((("write_text", full_disk), "No space left on device"),
                        (("replace", failed_move), "Input/output error")):
        with monkeypatch.context() as m:
            m.setattr(Path, *patch)
            with pytest.raises(InputError, match=said):
                headdb.report(db, run=1, out=out, roles="local", accuracy=False)
        assert files() == before, patch[0]
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    second = headdb.report(db, run=1, out=out, roles="local", accuracy=False)  # and without a failure, the new one
    assert files()["report.html"] == second.html.read_bytes() != before["report.html"]
    assert "figures/heatmap_nsubj.png" not in files()
