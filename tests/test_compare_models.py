"""Compare on real models (slow): the bundled model against the same architecture re-initialised."""

from __future__ import annotations

import shutil

import pytest

import headdb

pytestmark = pytest.mark.slow

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, default_model_dir):
    pytest.importorskip("headdb.classify", reason="needs `headdb classify` (issue 3)")
    import torch
    from transformers import AutoConfig, BertModel

    folder = tmp_path_factory.mktemp("reinit")
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(default_model_dir, local_files_only=True)
    BertModel(config).eval().save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(default_model_dir / name, folder / name)
    db = tmp_path_factory.mktemp("cmp") / "m.db"
    a = headdb.ingest(db, None, model=str(default_model_dir), limit=12, top_k=16, run_name="pretrained")
    b = headdb.ingest(db, None, model=str(folder), limit=12, top_k=16, run_name="reinit")
    for r in (a, b):
        headdb.classify(db, run=r.run_id)
    return db, a.run_id, b.run_id


def test_reinitialised_weights_change_heads(two_runs):
    db, a, b = two_runs
    df = headdb.compare(db, a, b)
    assert df.attrs["basis"] == "paired" and df.attrs["n_sentences"] == 12
    assert df["changed"].sum() >= 20
    assert (df["role_change"] == "lost").sum() >= 5  # the trained model's delimiter heads, for one
    assert df["mean_diff"].abs().max() > 1


def test_real_run_compared_with_itself_shows_no_change(two_runs):
    db, a, _ = two_runs
    df = headdb.compare(db, a, a)
    tested = df[df["n"] > 0]
    assert len(tested) > 0.5 * len(df)
    assert not df["changed"].any() and (tested["mean_diff"] == 0).all() and (tested["p"] == 1).all()
    assert df.loc[df["n"] == 0, "mean_diff"].isna().all()  # roles no sentence has (block: pairs only)


def test_accuracy_and_report_on_a_real_run(two_runs, tmp_path):
    db, a, b = two_runs
    acc = headdb.accuracy(db, a, min_count=1)
    assert {"all"} <= set(acc["relation"])
    assert acc["accuracy"].between(0, 1).all() and acc["baseline_accuracy"].between(0, 1).all()
    r = headdb.report(db, a, tmp_path, compare=b)
    assert r.html.exists() and "## Comparison" in r.markdown
