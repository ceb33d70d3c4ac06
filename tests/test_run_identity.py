"""What identifies an ingest run: the weights the model loads (not a Trainer folder's
checkpoint-*/), its tokenizer's files and its config.json; and stores of earlier versions, whose
runs' fingerprints hashed the weights another way and neither the tokenizer nor the config,
still resume and still say "already complete".

The hashing tests write files of bytes and load nothing; those that ingest are `slow`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
from pathlib import Path

import duckdb
import pytest

import headdb
from headdb.errors import ModelError

DATA = Path(__file__).parent / "data"
OLD_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


def old_weights_hash(folder: Path) -> str:
    """runs.model_hash as headdb computed it before it hashed the loaded files alone: every file
    with a weight suffix under the folder, subfolders included."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in OLD_WEIGHT_SUFFIXES)
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode())
        h.update(p.read_bytes())
    return "sha256:" + h.hexdigest()


def old_fingerprint(folder: Path, corpus: Path, *, limit: int | None, batch_size: int, max_length: int,
                    top_k: int = 8, fmt: str = "conllu", parser: str = "gold") -> str:
    """runs.fingerprint as headdb wrote it before the tokenizer was part of it (and before the
    weights were hashed as loaded), written out here so that it cannot follow the code."""
    settings = {"corpus_sha256": hashlib.sha256(corpus.read_bytes()).hexdigest(), "format": fmt, "pairs": False,
                "dtype": "float32", "truncate": False, "top_k": top_k, "min_mass": None, "limit": limit,
                "batch_size": batch_size, "window": 16, "parser": parser, "model_hash": old_weights_hash(folder),
                "max_length": max_length}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _reads(monkeypatch) -> list[Path]:
    """The files headdb.model opens from now on."""
    model = importlib.import_module("headdb.model")
    opened: list[Path] = []

    def recording_open(file, *args, **kwargs):
        opened.append(Path(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr(model, "open", recording_open, raising=False)
    monkeypatch.setattr(model, "_HASHED", {})  # hashes of earlier calls are not reused
    return opened


def _add_trainer_checkpoint(folder: Path, step: int) -> None:
    """What transformers' Trainer writes beside a saved model: checkpoint-N/ with the weights,
    the optimizer's and scheduler's state, and its training arguments."""
    ck = folder / f"checkpoint-{step}"
    _write(ck / "model.safetensors", b"checkpoint weights %d" % step)
    _write(ck / "optimizer.pt", b"\0" * 200_000)
    _write(ck / "scheduler.pt", b"scheduler")
    _write(ck / "rng_state.pth", b"rng")
    _write(ck / "training_args.bin", b"args")
    (ck / "config.json").write_text("{}")
    (ck / "trainer_state.json").write_text("{}")


def test_a_trainer_folders_checkpoints_are_not_hashed_and_change_nothing(tmp_path, monkeypatch):
    """The weight hash walked every subfolder: a Trainer output folder's checkpoint-*/ (each a
    copy of the weights and the optimizer's state) were read on every load, and adding one
    changed the hash, so an interrupted run no longer resumed. Only the files the model loads
    are read now; for a folder of them alone the hash is what it was."""
    from headdb.model import _weights_hash

    folder = tmp_path / "trained"
    _write(folder / "model.safetensors", b"the weights" * 1000)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "tokenizer.json").write_text("{}")
    plain = _weights_hash(folder)
    assert plain == old_weights_hash(folder)  # as before: runs of earlier versions keep their hash
    _write(folder / "training_args.bin", b"args")
    _add_trainer_checkpoint(folder, 500)
    opened = _reads(monkeypatch)
    assert _weights_hash(folder) == plain
    _add_trainer_checkpoint(folder, 1000)
    assert _weights_hash(folder) == plain
    assert opened == [folder / "model.safetensors"]  # nothing of the checkpoints, nothing else (once: kept)
    assert old_weights_hash(folder) != plain  # what the walk over every subfolder gave


def test_unchanged_weight_files_are_hashed_once_a_process(tmp_path, monkeypatch):
    """An ingest's "already complete" check (peek) and the model's load each read every weight
    file: seconds for a large model. A hash is kept while the files' size, modification time,
    inode and device stay; a file written since is read again."""
    import os

    from headdb.model import _weights_hash, peek

    folder = tmp_path / "model"
    weights = _write(folder / "model.safetensors", b"the weights" * 1000)
    (folder / "config.json").write_text('{"model_type": "bert", "max_position_embeddings": 512}')
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 512}')
    opened = _reads(monkeypatch)
    first = peek(str(folder), None)
    assert first is not None and first[0] == old_weights_hash(folder)
    assert opened.count(weights) == 1
    assert _weights_hash(folder) == first[0] and opened.count(weights) == 1  # kept: not read again
    stat = weights.stat()
    weights.write_bytes(b"THE WEIGHTS" * 1000)  # the same size; a later modification time
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = _weights_hash(folder)
    assert opened.count(weights) == 2 and changed == old_weights_hash(folder) != first[0]
    weights.unlink()
    with pytest.raises(ModelError, match="no weight files"):
        _weights_hash(folder)


def test_the_weight_files_hashed_are_those_transformers_loads(tmp_path):
    """model.safetensors before pytorch_model.bin (a hub folder often holds both, and
    tf_model.h5); a sharded checkpoint's shards as its index names them, the same hash as
    before for a folder of them alone; a missing shard or no weights at all is said."""
    from headdb.model import _weights_hash, legacy_weights_hash

    sharded = tmp_path / "sharded"
    index = {"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                            "b.weight": "model-00002-of-00002.safetensors",
                                            "c.weight": "model-00002-of-00002.safetensors"}}
    _write(sharded / "config.json", b'{"model_type": "bert"}')
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    _write(sharded / "model-00001-of-00002.safetensors", b"one")
    _write(sharded / "model-00002-of-00002.safetensors", b"two")
    assert _weights_hash(sharded) == old_weights_hash(sharded)
    assert legacy_weights_hash(sharded) is None  # the same files: the old hash is not computed again
    sharded_hash = _weights_hash(sharded)
    _write(sharded / "model-00001-of-00003.safetensors", b"left from another save, named by no index")
    assert _weights_hash(sharded) == sharded_hash
    (sharded / "model-00001-of-00003.safetensors").unlink()

    both = tmp_path / "both"
    _write(both / "config.json", b'{"model_type": "bert"}')
    _write(both / "model.safetensors", b"safetensors")
    only = _weights_hash(both)
    _write(both / "pytorch_model.bin", b"torch")
    _write(both / "tf_model.h5", b"tensorflow")
    _write(both / "flax_model.msgpack", b"flax")
    assert _weights_hash(both) == only
    assert legacy_weights_hash(both) == old_weights_hash(both) != only

    torch_only = tmp_path / "torch-only"
    _write(torch_only / "pytorch_model.bin", b"torch")
    assert _weights_hash(torch_only) == old_weights_hash(torch_only)

    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError, match=r"model.safetensors.index.json: its shard model-00002-of-00002.safetensors "
                                         r"not in the model folder"):
        _weights_hash(sharded)
    (sharded / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(ModelError, match="not a sharded checkpoint's index"):
        _weights_hash(sharded)
    empty = tmp_path / "empty"
    _write(empty / "checkpoint-5" / "model.safetensors", b"a checkpoint's, never loaded")
    with pytest.raises(ModelError, match="no weight files"):
        _weights_hash(empty)


def _tiny_bert_with_checkpoint(tiny_bert_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "trained-bert"
    shutil.copytree(tiny_bert_dir, folder)
    _add_trainer_checkpoint(folder, 500)
    return folder


def _set_run(db: Path, run_id: int, **columns) -> None:
    con = duckdb.connect(str(db))
    try:
        for column, value in columns.items():
            con.execute(f"UPDATE runs SET {column} = ? WHERE run_id = ?", [value, run_id])
    finally:
        con.close()


def _fail_second_batch(monkeypatch):
    from headdb.model import AttentionModel

    real = AttentionModel.forward_edges
    calls = {"n": 0}

    def fails_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("stopped on purpose")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AttentionModel, "forward_edges", fails_second)
    monkeypatch.setattr(importlib.import_module("headdb.ingest"), "COMMIT_EDGES", 0)  # a commit per batch
    return lambda: monkeypatch.setattr(AttentionModel, "forward_edges", real)


def _no_load(*args, **kwargs):
    raise AssertionError("the model was loaded")


@pytest.mark.slow
def test_a_run_of_an_earlier_version_still_resumes_and_is_found_complete(tmp_path, tiny_bert_dir, monkeypatch):
    """A store written before the weights were hashed as loaded holds a run whose fingerprint
    has the hash of every weight file under the folder (a Trainer's checkpoint-*/ too): the
    same command still resumes it, and then says it is complete, before loading the model."""
    folder = _tiny_bert_with_checkpoint(tiny_bert_dir, tmp_path)
    corpus = DATA / "sample.conllu"
    db = tmp_path / "old.db"
    restore = _fail_second_batch(monkeypatch)
    with pytest.raises(ModelError, match="stopped on purpose"):
        headdb.ingest(db, corpus, model=str(folder), batch_size=1)
    restore()
    # the run as the earlier version wrote it
    old = old_fingerprint(folder, corpus, limit=None, batch_size=1, max_length=64)
    _set_run(db, 1, fingerprint=old, model_hash=old_weights_hash(folder))
    resumed = headdb.ingest(db, corpus, model=str(folder), batch_size=1)
    assert (resumed.run_id, resumed.resumed, resumed.kept_before, resumed.sentences) == (1, True, 1, 2)
    assert headdb.runs(db)[["run_id", "status", "n_sentences"]].values.tolist() == [[1, "done", 3]]
    assert headdb.runs(db)[["tokenizer_hash", "config_hash"]].values.tolist() == [[None, None]]  # not hashed then
    _set_run(db, 1, fingerprint=old, model_hash=old_weights_hash(folder))
    model_module = importlib.import_module("headdb.model")
    with monkeypatch.context() as m:
        m.setattr(model_module, "AttentionModel", _no_load)
        again = headdb.ingest(db, corpus, model=str(folder), batch_size=1)
    assert (again.run_id, again.already_done) == (1, True)
    # a checkpoint added since changed the old hash (and the old version's run), not the new one
    _add_trainer_checkpoint(folder, 1000)
    assert headdb.ingest(db, corpus, model=str(folder), batch_size=1).run_id == 2
    with monkeypatch.context() as m:
        m.setattr(model_module, "AttentionModel", _no_load)
        _add_trainer_checkpoint(folder, 1500)
        assert headdb.ingest(db, corpus, model=str(folder), batch_size=1).run_id == 2


@pytest.mark.slow
def test_the_old_hash_is_computed_only_for_a_store_that_may_hold_an_old_run(tmp_path, tiny_bert_dir, monkeypatch):
    """The hash of every weight file under the folder (a Trainer folder's checkpoints, which the
    change was to stop reading) is computed only where the store holds an earlier version's run
    of the corpus whose weight hash is another: not for a store of this version's runs."""
    folder = _tiny_bert_with_checkpoint(tiny_bert_dir, tmp_path)
    corpus = DATA / "sample.conllu"
    db = tmp_path / "new.db"
    model_module = importlib.import_module("headdb.model")
    calls = []
    real = model_module.legacy_weights_hash
    monkeypatch.setattr(model_module, "legacy_weights_hash", lambda name: calls.append(name) or real(name))
    first = headdb.ingest(db, corpus, model=str(folder), limit=2)
    again = headdb.ingest(db, corpus, model=str(folder), limit=2)
    assert again.already_done and again.run_id == first.run_id
    restore = _fail_second_batch(monkeypatch)
    with pytest.raises(ModelError, match="stopped on purpose"):
        headdb.ingest(db, corpus, model=str(folder), batch_size=1)
    restore()
    assert headdb.ingest(db, corpus, model=str(folder), batch_size=1).resumed
    assert calls == []
    _set_run(db, first.run_id, model_hash="sha256:another")  # another model's hash: of this version, not looked at
    assert headdb.ingest(db, corpus, model=str(folder), limit=2).already_done
    assert calls == []
    # as a run of an earlier version reads (no tokenizer in its fingerprint), of another weight hash
    _set_run(db, first.run_id, fingerprint="0" * 64)
    assert headdb.ingest(db, corpus, model=str(folder), limit=2).run_id == 3
    assert [str(c) for c in calls] == [str(folder)] * 2  # looked for before the model loads, and again after


def test_the_tokenizer_hash_reads_the_tokenizer_files_alone(tmp_path, monkeypatch):
    """The tokenizer part of a run's fingerprint: the files a tokenizer is read from change it,
    others (a README, a Trainer's checkpoints, the weights) do not, and none of those is read."""
    from headdb.model import _tokenizer_hash

    folder = tmp_path / "model"
    _write(folder / "model.safetensors", b"weights")
    for name, text in (("config.json", "{}"), ("vocab.txt", "[PAD]\n[UNK]\nthe\n"), ("tokenizer.json", "{}"),
                       ("tokenizer_config.json", '{"do_lower_case": true}'), ("special_tokens_map.json", "{}")):
        (folder / name).write_text(text)
    first = _tokenizer_hash(folder)
    opened = _reads(monkeypatch)
    (folder / "README.md").write_text("notes")
    _add_trainer_checkpoint(folder, 500)
    _write(folder / "model.safetensors", b"other weights")
    assert _tokenizer_hash(folder) == first
    assert sorted(p.name for p in opened) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
                                              "vocab.txt"]
    hashes = [first]
    for name, text in (("tokenizer_config.json", '{"do_lower_case": false}'), ("vocab.txt", "[PAD]\n[UNK]\nThe\n"),
                       ("merges.txt", "t h\n"), ("sentencepiece.bpe.model", "spm"), ("added_tokens.json", "{}"),
                       ("tokenizer.v2.json", "{}")):
        (folder / name).write_text(text)
        hashes.append(_tokenizer_hash(folder))
    assert len(set(hashes)) == len(hashes)  # each change gave another hash


def _uncased_to_cased(folder: Path) -> None:
    """The same vocabulary, no longer lower-cased: "The" is cut otherwise than "the"."""
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["normalizer"]["lowercase"] = False
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["do_lower_case"] = False
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def _pieces(db: Path, run_id: int) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT piece FROM tokens WHERE run_id = ? ORDER BY sentence_id, token_pos",
                                          [run_id]).fetchall()]
    finally:
        con.close()


@pytest.mark.slow
def test_a_changed_tokenizer_is_another_run(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    """The same weights with other tokenizer files said "already complete", and an interrupted
    run resumed with the new tokenizer, two tokenizations in one run. The tokenizer's files are
    part of the fingerprint now: a changed tokenizer starts a new run and says so (a run name
    that the other run holds is refused, saying why), an unchanged one still finds its run."""
    from cli_helpers import run_main

    folder = tmp_path / "bert"
    shutil.copytree(tiny_bert_dir, folder)
    original = {name: (folder / name).read_bytes() for name in ("tokenizer.json", "tokenizer_config.json")}
    corpus = DATA / "sample.conllu"
    db = tmp_path / "tok.db"
    first = headdb.ingest(db, corpus, model=str(folder), limit=2)
    _uncased_to_cased(folder)
    second = headdb.ingest(db, corpus, model=str(folder), limit=2)
    assert (second.run_id, second.already_done, second.resumed, second.sentences) == (2, False, False, 2)
    assert second.other_model_files == (first.run_id, "done", first.run_name, "tokenizer")
    assert _pieces(db, 1) != _pieces(db, 2)  # what the change was about: "The" is another piece
    model_module = importlib.import_module("headdb.model")
    with monkeypatch.context() as m:  # unchanged: complete, found before the model loads
        m.setattr(model_module, "AttentionModel", _no_load)
        assert headdb.ingest(db, corpus, model=str(folder), limit=2).run_id == 2
        for name, data in original.items():
            (folder / name).write_bytes(data)
        assert headdb.ingest(db, corpus, model=str(folder), limit=2).run_id == 1

    # an interrupted run is not resumed with another tokenizer
    restore = _fail_second_batch(monkeypatch)
    with pytest.raises(ModelError, match="stopped on purpose"):
        headdb.ingest(db, corpus, model=str(folder), batch_size=1, run_name="named")
    restore()
    _uncased_to_cased(folder)
    with pytest.raises(headdb.errors.InputError) as info:
        headdb.ingest(db, corpus, model=str(folder), batch_size=1, run_name="named")
    assert str(info.value) == (
        f"run name 'named' is taken by run 3, which has these settings but another tokenizer: the tokenizer files "
        f"(tokenizer.json, vocab.txt, tokenizer_config.json, ...) of {folder} changed since it was ingested, so it "
        "is not resumed (its inputs were computed with the other files); choose another name for a run with this "
        "tokenizer, or put the files back to resume it")
    code, _, err = run_main(capsys, monkeypatch, "ingest", db, corpus, "--model", folder, "--batch-size", "1", "-q")
    assert code == 0 and err.splitlines()[1] == (
        "run 3 (named) has these settings but another tokenizer (the model folder's tokenizer files changed since it "
        f"was ingested): this is a new run; run 3 is left failed (delete it: `headdb drop {db} 3 --yes`)"), err
    for name, data in original.items():
        (folder / name).write_bytes(data)
    resumed = headdb.ingest(db, corpus, model=str(folder), batch_size=1, run_name="named")
    assert (resumed.run_id, resumed.resumed, resumed.kept_before) == (3, True, 1)
    runs = headdb.runs(db)
    assert runs[["run_id", "status", "n_sentences"]].values.tolist() == [[1, "done", 2], [2, "done", 2],
                                                                         [3, "done", 3], [4, "done", 3]]
    # the hashes that tell the runs apart are columns of `runs` (they were only inside the fingerprint)
    from headdb.model import _config_hash, _tokenizer_hash

    original_tokenizer = _tokenizer_hash(folder)
    _uncased_to_cased(folder)
    assert runs["tokenizer_hash"].tolist() == [original_tokenizer, _tokenizer_hash(folder), original_tokenizer,
                                               _tokenizer_hash(folder)]
    assert runs["config_hash"].tolist() == [_config_hash(folder)] * 4


def test_the_config_hash_reads_config_json_as_parsed_json(tmp_path, monkeypatch):
    """The config part of a run's fingerprint: what config.json says (its layer norm epsilon,
    position embeddings, activation, heads), not how it is written nor the transformers version
    that saved it; config.json alone is read."""
    from headdb.model import _config_hash

    folder = tmp_path / "model"
    config = {"model_type": "bert", "layer_norm_eps": 1e-12, "hidden_act": "gelu", "num_attention_heads": 4,
              "position_embedding_type": "absolute", "transformers_version": "4.40.0"}
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    _write(folder / "model.safetensors", b"weights")
    (folder / "tokenizer.json").write_text("{}")
    first = _config_hash(folder)
    opened = _reads(monkeypatch)
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: opened.append(self) or open(self, **k).read())
    (folder / "config.json").write_text(json.dumps(dict(reversed(list(config.items()))), indent=2) + "\n")
    assert _config_hash(folder) == first  # another order and whitespace
    (folder / "config.json").write_text(json.dumps(config | {"transformers_version": "4.57.1"}))
    assert _config_hash(folder) == first
    (folder / "tokenizer.json").write_text('{"other": 1}')
    _write(folder / "model.safetensors", b"other weights")
    assert _config_hash(folder) == first
    assert {p.name for p in opened} == {"config.json"}
    hashes = [first]
    for change in ({"layer_norm_eps": 1e-5}, {"hidden_act": "relu"}, {"num_attention_heads": 2},
                   {"position_embedding_type": "relative_key"}):
        (folder / "config.json").write_text(json.dumps(config | change))
        hashes.append(_config_hash(folder))
    assert len(set(hashes)) == len(hashes)


def _edges(db: Path, run_id: int) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT sentence_id, layer, head, query_pos, key_pos, weight FROM edges WHERE run_id = ? "
                           "ORDER BY ALL", [run_id]).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_a_changed_config_is_another_run(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    """The same weights with an edited config.json (another layer_norm_eps) compute other
    attention, but said "already complete", and an interrupted run resumed with the other
    config. config.json is part of the fingerprint now: the edit starts a new run, which names
    the config as what changed; an unchanged config still finds its run before the model loads."""
    from cli_helpers import run_main

    folder = tmp_path / "bert"
    shutil.copytree(tiny_bert_dir, folder)
    original = (folder / "config.json").read_text()
    edited = json.dumps(json.loads(original) | {"layer_norm_eps": 0.5})
    corpus = DATA / "sample.conllu"
    db = tmp_path / "config.db"
    first = headdb.ingest(db, corpus, model=str(folder), limit=2)
    (folder / "config.json").write_text(edited)
    second = headdb.ingest(db, corpus, model=str(folder), limit=2)
    assert (second.run_id, second.already_done, second.resumed, second.sentences) == (2, False, False, 2)
    assert second.other_model_files == (first.run_id, "done", first.run_name, "config")
    assert _edges(db, 1) != _edges(db, 2)  # what the change was about: other attention
    model_module = importlib.import_module("headdb.model")
    with monkeypatch.context() as m:  # unchanged: complete, found before the model loads
        m.setattr(model_module, "AttentionModel", _no_load)
        assert headdb.ingest(db, corpus, model=str(folder), limit=2).already_done
        (folder / "config.json").write_text(json.dumps(json.loads(original), indent=4))  # whitespace alone
        again = headdb.ingest(db, corpus, model=str(folder), limit=2)
        assert (again.run_id, again.already_done) == (1, True)

    # an interrupted run is not resumed with another config
    restore = _fail_second_batch(monkeypatch)
    with pytest.raises(ModelError, match="stopped on purpose"):
        headdb.ingest(db, corpus, model=str(folder), batch_size=1, run_name="named")
    restore()
    (folder / "config.json").write_text(edited)
    with pytest.raises(headdb.errors.InputError) as info:
        headdb.ingest(db, corpus, model=str(folder), batch_size=1, run_name="named")
    assert str(info.value) == (
        f"run name 'named' is taken by run 3, which has these settings but another config: the config.json of "
        f"{folder} changed since it was ingested, so it is not resumed (its inputs were computed with the other "
        "files); choose another name for a run with this config, or put the files back to resume it")
    code, _, err = run_main(capsys, monkeypatch, "ingest", db, corpus, "--model", folder, "--batch-size", "1", "-q")
    assert code == 0 and err.splitlines()[1] == (
        "run 3 (named) has these settings but another config (the model folder's config.json changed since it was "
        f"ingested): this is a new run; run 3 is left failed (delete it: `headdb drop {db} 3 --yes`)"), err
    # a tokenizer and a config both changed since, named so
    _uncased_to_cased(folder)
    (folder / "config.json").write_text(original)
    both = headdb.ingest(db, corpus, model=str(folder), limit=2)
    assert both.run_id == 5 and both.other_model_files == (2, "done", "run-2", "tokenizer and config")


@pytest.mark.slow
def test_the_bundled_model_resumes_a_run_of_an_earlier_version(tmp_path, default_model_dir, monkeypatch):
    """The default model's runs stored before the tokenizer was part of the fingerprint: the
    same command resumes an interrupted one and finds a complete one, without loading."""
    corpus = DATA / "sample.conllu"
    db = tmp_path / "default.db"
    restore = _fail_second_batch(monkeypatch)
    with pytest.raises(ModelError, match="stopped on purpose"):
        headdb.ingest(db, corpus, batch_size=1)
    restore()
    old = old_fingerprint(default_model_dir, corpus, limit=None, batch_size=1, max_length=512)
    con = duckdb.connect(str(db))
    (now,) = con.execute("SELECT fingerprint FROM runs").fetchone()
    # the settings' part is what the earlier version wrote, its tokenizer's and config's part the new one
    assert now.split(".")[0] == old and [len(h) for h in now.split(".")[1].split("-")] == [64, 64]
    con.execute("UPDATE runs SET fingerprint = ?", [old])
    con.close()
    resumed = headdb.ingest(db, corpus, batch_size=1)
    assert (resumed.run_id, resumed.resumed, resumed.kept_before, resumed.sentences) == (1, True, 1, 2)
    with monkeypatch.context() as m:
        m.setattr(importlib.import_module("headdb.model"), "AttentionModel", _no_load)
        again = headdb.ingest(db, corpus, batch_size=1)
    assert (again.run_id, again.already_done) == (1, True)
    assert headdb.runs(db)[["run_id", "status", "n_sentences"]].values.tolist() == [[1, "done", 3]]


@pytest.mark.parametrize(("status", "shown"), [("failed", "failed"), ("interrupted", "interrupted"),
                                               ("running", "interrupted")])
def test_the_other_runs_status_is_said_as_runs_shows_it(tmp_path, monkeypatch, capsys, status, shown):
    """The note of a run beside one with another tokenizer names that run's status as `headdb runs` does: a
    run whose ingest failed was said to be "left interrupted"."""
    from cli_helpers import run_main

    from headdb.ingest import IngestResult

    def fake_ingest(*args, **kwargs):
        return IngestResult(4, "run-4", False, False, other_model_files=(3, status, "named", "tokenizer"))

    monkeypatch.setattr(importlib.import_module("headdb.ingest"), "ingest", fake_ingest)
    db = tmp_path / "s.db"
    code, out, err = run_main(capsys, monkeypatch, "ingest", db, "--model", tmp_path, "-q")
    assert code == 0 and out.strip() == "4", err
    assert err.splitlines()[1] == (
        "run 3 (named) has these settings but another tokenizer (the model folder's tokenizer files changed since it "
        f"was ingested): this is a new run; run 3 is left {shown} (delete it: `headdb drop {db} 3 --yes`)"), err


@pytest.mark.slow
def test_an_earlier_versions_run_of_a_trainer_folder_and_a_pipeline_folder_is_found_complete(tmp_path, tiny_bert_dir):
    """A run stored before the weights were hashed as loaded had also described a pipeline folder
    without its files' hash: with both old, it was not found, and a second run was started."""
    import spacy

    from headdb.parse import DEFAULT_PIPELINE, legacy_description, peek_description

    folder = _tiny_bert_with_checkpoint(tiny_bert_dir, tmp_path)
    nlp = spacy.load(DEFAULT_PIPELINE)
    nlp.meta["name"] = "own_parser"  # a pipeline of its own, not a copy of the installed one
    pipeline = tmp_path / "pipeline"
    nlp.to_disk(pipeline)
    corpus = tmp_path / "t.txt"
    corpus.write_text("The cat sat on the mat .\nShe gave him a book .\n")
    db = tmp_path / "old.db"
    first = headdb.ingest(db, corpus, model=str(folder), parser=str(pipeline))
    old_parser = legacy_description(str(pipeline), peek_description(str(pipeline)))
    assert old_parser is not None and "sha256" not in old_parser
    old = old_fingerprint(folder, corpus, limit=None, batch_size=32, max_length=64, fmt="text", parser=old_parser)
    _set_run(db, first.run_id, fingerprint=old, model_hash=old_weights_hash(folder))
    again = headdb.ingest(db, corpus, model=str(folder), parser=str(pipeline))
    assert (again.run_id, again.already_done) == (first.run_id, True)
