"""Stores and outputs in places this process cannot write: a read-only folder or file, a full disk.

These run the real command in a subprocess without the privilege to write whatever it likes: as
root (CI containers), with CAP_DAC_OVERRIDE dropped through ``setpriv``, so that a folder of mode
0555 is as read-only to it as to any user; as anyone else, as they are."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from role_reference import build_store, dirichlet_attention, simple_seq

ROOT = Path(__file__).resolve().parents[1]
_NO_OVERRIDE = "-dac_override,-dac_read_search,-fowner"


def _unprivileged() -> list[str]:
    """The prefix that runs a command without root's right to write any file; skips where none can."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    prefix = [setpriv, f"--bounding-set={_NO_OVERRIDE}", f"--inh-caps={_NO_OVERRIDE}"] if setpriv else []
    if not setpriv or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here")
    return prefix


def run_headdb(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200")
    return subprocess.run([*_unprivileged(), sys.executable, "-m", "headdb", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(2)
    seqs = [simple_seq([1, 2, 1], [1, None, 1], ["nsubj", "root", "obj"]) for _ in range(4)]
    folder = tmp_path / "shared"
    folder.mkdir()
    db = folder / "s.db"
    build_store(db, seqs, [dirichlet_attention(rng, 1, 2, q.length) for q in seqs], top_k=3)
    return db


@pytest.fixture
def read_only(request):
    """Makes a folder or file read-only for the test; its mode comes back afterwards (tmp_path's
    clean-up removes it)."""
    made = []

    def lock(path: Path) -> Path:
        made.append((path, stat.S_IMODE(path.stat().st_mode)))
        path.chmod(0o555 if path.is_dir() else 0o444)
        return path

    yield lock
    for path, mode in made:
        path.chmod(mode)


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_writes_to_a_store_in_a_read_only_folder_are_refused_at_once_naming_the_folder(store, tmp_path, read_only):
    """DuckDB writes the store's log (s.db.wal) beside it: an ingest into a store in a read-only
    folder failed only after reading the corpus and loading the model (16 s for the sample
    corpus), classify after scoring the whole run, both with DuckDB's ``Failed to commit: Cannot
    open file ".../s.db.wal": Permission denied``; an ingest into a new store there the same way."""
    corpus = tmp_path / "bad.conllu"  # read only after the store is checked: its error means the check let it by
    corpus.write_text("1\tThe\n", encoding="utf-8")
    folder = read_only(store.parent)
    before = _bytes(folder)
    said = (f"error: {store}: its folder {folder} cannot be written (permission denied), and DuckDB writes its log "
            "s.db.wal there as it changes the store; the commands that only read it (runs, summary, sql, accuracy, "
            "report, compare) work, or copy the store to a folder you can write\n")
    for args in (("ingest", store, corpus), ("classify", store), ("drop", store, "1", "--yes"),
                 ("sql", store, "CREATE TABLE t (i INT)", "--write"), ("compact", store), ("init", store)):
        proc = run_headdb(*args)
        assert (proc.returncode, proc.stderr) == (1, said), args
    new = folder / "new.db"
    proc = run_headdb("ingest", new, corpus)
    assert (proc.returncode, proc.stderr) == (
        1, f"error: {new}: cannot create the store: its folder {folder} cannot be written (permission denied)\n")
    assert _bytes(folder) == before
    proc = run_headdb("runs", store, "--format", "csv")  # reading needs nothing written
    assert proc.returncode == 0 and proc.stdout.splitlines()[1].startswith("1,"), proc.stderr


def test_writes_to_a_read_only_store_file_are_refused_naming_it(store, tmp_path, read_only):
    corpus = tmp_path / "bad.conllu"
    corpus.write_text("1\tThe\n", encoding="utf-8")
    read_only(store)
    before = store.read_bytes()
    for args in (("ingest", store, corpus), ("classify", store), ("drop", store, "1", "--yes")):
        proc = run_headdb(*args)
        assert (proc.returncode, proc.stderr) == (
            1, f"error: {store}: the store file cannot be written (permission denied); the commands that only read "
               "it (runs, summary, sql, accuracy, report, compare) work\n"), args
    assert store.read_bytes() == before
    assert run_headdb("summary", store).returncode == 0


def _full_disk_at(limit: int):
    """For a subprocess: every write past ``limit`` bytes of a file fails as on a full disk, with
    an OSError that names no file (EFBIG, 'File too large', where the disk's is ENOSPC)."""
    import resource
    import signal

    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of the process dying
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_writes


def test_a_report_that_cannot_be_written_names_its_folder(store, tmp_path, read_only):
    """A full disk said `error: No space left on device` and nothing more (a failed write names no
    file); a read-only folder named the report's hidden staging folder, not the report."""
    import headdb

    headdb.classify(store)
    out = tmp_path / "rep"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "headdb", "report", str(store), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300, preexec_fn=_full_disk_at(4096))
    assert (proc.returncode, proc.stderr) == (1, f"error: {out}: cannot write the report: File too large\n")
    assert not out.exists()  # the folder it made goes with the failed report

    (tmp_path / "reports").mkdir()
    folder = read_only(tmp_path / "reports")
    proc = run_headdb("report", store, "--out", folder, "--quiet")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {folder}: cannot write the report: Permission denied ("), proc.stderr
    assert list(folder.iterdir()) == []


def test_a_large_query_on_a_store_in_a_read_only_folder_spills_to_the_temp_folder(store, tmp_path, read_only):
    """DuckDB spills a query larger than its memory to ``DB.tmp`` beside the store: in a read-only
    folder a reading command's large query failed with ``Failed to create directory
    ".../s.db.tmp": Permission denied``. It spills to the system's temp folder instead, and
    leaves nothing there."""
    folder = read_only(store.parent)
    before = _bytes(folder)
    temp = tmp_path / "temp"
    temp.mkdir()
    script = (
        "import sys, headdb\n"
        "con = headdb.connect(sys.argv[1], read_only=True)\n"
        "con.execute(\"SET memory_limit = '16MiB'\"); con.execute('SET threads = 1')\n"
        "n = con.execute('SELECT count(*) FROM (SELECT i, hash(i) AS h, repeat(i::VARCHAR, 4) AS s '\n"
        "                'FROM range(2000000) t(i) ORDER BY h)').fetchone()[0]\n"
        "print(n, con.execute(\"SELECT current_setting('temp_directory')\").fetchone()[0])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), TMPDIR=str(temp))
    proc = subprocess.run([*_unprivileged(), sys.executable, "-c", script, str(store)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    count, spilled_to = proc.stdout.split()
    assert count == "2000000" and Path(spilled_to).parent == temp
    assert _bytes(folder) == before and list(temp.iterdir()) == []  # DuckDB removed the folder it made


def test_a_compact_on_a_full_disk_says_the_store_is_unchanged(store, tmp_path):
    """A full disk said only DuckDB's `IO Error: Could not write file ".../s.db.compact-tmp": No
    space left on device`, not what became of the store."""
    before = _bytes(store.parent)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200")
    limit = 64 * 1024  # the copy's first blocks go past it; the store, already checkpointed, is not written
    proc = subprocess.run([sys.executable, "-m", "headdb", "compact", str(store), "--quiet"], capture_output=True,
                          text=True, env=env, timeout=300, preexec_fn=_full_disk_at(limit))
    tmp = store.with_name("s.db.compact-tmp")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {store}: cannot compact the store: "), proc.stderr
    assert proc.stderr.endswith(f"; the store is unchanged, and its temporary copy {tmp} was removed\n"), proc.stderr
    assert "\n" not in proc.stderr[:-1]
    assert _bytes(store.parent) == before  # the store byte for byte, and no copy beside it


def test_spill_folders_of_ended_processes_are_removed(store, tmp_path, read_only):
    """A process killed with a store in a read-only folder open left its spill folder (and any
    spill files) in the temp folder for good. The next such open removes the folders of this
    user's processes that no longer run, once nothing was written in it for an hour (a container
    of the same host name, with PIDs of its own, may share the temp folder); a running process's
    folder, a recent one and other files stay."""
    read_only(store.parent)
    temp = tmp_path / "temp"
    temp.mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    left = temp / f"headdb-spill-{dead_pid}-0123456789ab.tmp"
    left.mkdir()
    (left / "duckdb_temp_storage_DEFAULT-0.tmp").write_bytes(b"\0" * 4096)
    running = temp / f"headdb-spill-{os.getpid()}-ba9876543210.tmp"  # this test's process runs
    running.mkdir()
    other = temp / f"headdb-spill-{dead_pid}-notours.tmp"
    other.mkdir()
    recent = temp / f"headdb-spill-{dead_pid}-aaaaaaaaaaaa.tmp"  # written to a minute ago: kept
    recent.mkdir()
    (recent / "duckdb_temp_storage_DEFAULT-0.tmp").write_bytes(b"\0" * 4096)
    _age(recent, 60)
    for folder in (left, running, other):
        _age(folder, 2 * 3600)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), TMPDIR=str(temp))
    script = "import sys, headdb\nheaddb.connect(sys.argv[1], read_only=True).close()\n"
    proc = subprocess.run([*_unprivileged(), sys.executable, "-c", script, str(store)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in temp.iterdir()) == sorted([running.name, other.name, recent.name])


def _age(folder: Path, seconds: float) -> None:
    """Make ``folder`` and the files in it last modified ``seconds`` ago."""
    import time

    then = time.time() - seconds
    for path in (*folder.iterdir(), folder):
        os.utime(path, (then, then))


def test_spill_folders_of_another_machines_processes_stay(tmp_path):
    """A temp folder shared by machines (a cluster's $TMPDIR on a network disk) holds the spill
    folders of processes on other machines, whose PIDs this machine does not run: they were
    removed as left over, under a query spilling there. A folder names its host; only this
    machine's ended processes' folders go."""
    from headdb.db import _host, _remove_stale_spills

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    here = tmp_path / f"headdb-spill-{dead_pid}-0123456789ab-{_host()}.tmp"
    elsewhere = tmp_path / f"headdb-spill-{dead_pid}-0123456789ab-{_host()}-other-node.tmp"
    for folder in (here, elsewhere):
        folder.mkdir()
        (folder / "duckdb_temp_storage_DEFAULT-0.tmp").write_bytes(b"\0" * 4096)
        _age(folder, 2 * 3600)
    _remove_stale_spills(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [elsewhere.name]


def test_a_process_is_taken_as_gone_only_where_that_is_known(monkeypatch):
    """The clean-ups of killed processes' folders (spill folders, a report's staging folders)
    ask whether a PID still runs with os.kill(pid, 0), which on Windows sends the process group
    a Ctrl-C: there nothing is taken as gone, and nothing is signalled."""
    import headdb.db as db

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert db.process_gone(int(ended.stdout)) and not db.process_gone(os.getpid())
    assert not db.process_gone(2**80)  # out of range: not known to be gone
    signalled = []
    monkeypatch.setattr(db.os, "name", "nt")
    monkeypatch.setattr(db.os, "kill", lambda *args: signalled.append(args))
    assert not db.process_gone(int(ended.stdout)) and signalled == []


def test_a_read_only_store_on_windows_is_refused_naming_it(store, monkeypatch):
    """Windows' os has no statvfs: a store os.access says cannot be written (a read-only file
    there) failed with "module 'os' has no attribute 'statvfs'", a traceback, not headdb's line."""
    import headdb
    from headdb.errors import DatabaseError

    monkeypatch.delattr(os, "statvfs")
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: Path(path) != store)
    with pytest.raises(DatabaseError, match=r"the store file cannot be written \(permission denied\)"):
        headdb.sql(store, "DELETE FROM runs", write=True)
    monkeypatch.undo()
    assert len(headdb.runs(store)) == 1
