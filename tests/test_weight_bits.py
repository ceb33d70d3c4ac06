"""16-bit weights (`--weight-bits 16`): the rounding in numpy (`store.weight16`, on a CPU) and on
the model's device (`model.device_edges`, on a GPU) gives the numbers of the SQL rounding
(`store.WEIGHT16_SQL`) bit for bit, and every way into edge_store16 stores the same rows."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import torch

from headdb.db import connect, transaction
from headdb.model import device_edges
from headdb.sparsify import BatchEdges
from headdb.store import WEIGHT16_SQL, edge_table, insert_edges, weight16

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def hard_weights() -> np.ndarray:
    """float32 weights in [0, 1] where rounding is delicate: every multiple of 1/65535 as float32
    and its neighbours, the ends, tiny values, and random ones."""
    k = np.arange(65536, dtype=np.float64) / 65535
    exact = k.astype(np.float32)
    near = np.concatenate([exact, np.nextafter(exact, np.float32(0)), np.nextafter(exact, np.float32(1))])
    rng = np.random.default_rng(3)
    rand = np.concatenate([rng.random(200_000), rng.random(50_000) ** 8]).astype(np.float32)
    ends = np.array([0, 1, 1e-30, 1e-8, 1 - 1e-7, np.float32(1) - np.finfo(np.float32).eps], dtype=np.float32)
    return np.clip(np.concatenate([near, rand, ends]), 0, 1).astype(np.float32)


def sql_weight16(w: np.ndarray) -> np.ndarray:
    con = duckdb.connect()
    try:
        con.register("w", pa.table({"weight": w}))
        return con.execute(f"SELECT {WEIGHT16_SQL} AS w16 FROM w").fetchnumpy()["w16"].astype(np.uint16)
    finally:
        con.close()


def test_numpy_rounding_is_the_sql_rounding():
    w = hard_weights()
    got = weight16(w)
    assert got.dtype == np.uint16
    assert np.array_equal(got, sql_weight16(w))
    assert got.max() == 65535 and got.min() == 0
    assert (got.astype(np.float64) / 65535 <= w.astype(np.float64)).all()  # never above the model's


@pytest.mark.parametrize("device", DEVICES)
def test_device_rounding_is_the_numpy_rounding(device):
    """device_edges(weight_bits=16): the same edges as with float32 weights, the weights rounded
    on the device exactly as store.weight16 rounds them, in a 14-byte-an-edge buffer."""
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.permutation(hard_weights())[:131_072].reshape(2, 2, 4, 128, 64))  # [batch, layer, head, query, rank]
    values, _ = torch.sort(w, dim=-1, descending=True)
    indices = torch.from_numpy(rng.integers(0, 128, size=values.shape)).to(torch.int64)
    lengths = torch.tensor([128, 100])
    for min_mass in (None, 0.9):
        full = device_edges(values.to(device), indices.to(device), lengths.to(device), min_mass)
        half = device_edges(values.to(device), indices.to(device), lengths.to(device), min_mass, weight_bits=16)
        assert half.weight.dtype == np.uint16 and len(half) == len(full) > 0
        assert np.array_equal(half.weight, weight16(full.weight))
        for name in ("sentence", "layer", "head", "query_pos", "key_pos"):
            assert np.array_equal(getattr(half, name), getattr(full, name)), name


def _parts(rng, n: int) -> BatchEdges:
    return BatchEdges(*(rng.integers(0, 100, n).astype(np.int16) for _ in range(4)),
                      rng.random(n).astype(np.float32), sentence=np.sort(rng.integers(0, 9, n)).astype(np.int32))


def test_every_way_into_a_16_bit_run_stores_the_same_rows(tmp_path):
    rng = np.random.default_rng(1)
    parts = [_parts(rng, 1000), _parts(rng, 500)]
    rounded = [BatchEdges(p.layer, p.head, p.query_pos, p.key_pos, weight16(p.weight), sentence=p.sentence)
               for p in parts]
    tables = {"float, rounded by DuckDB": edge_table(parts, 16),  # a CPU ingest
              "rounded on the device": edge_table(rounded, 16),  # a GPU ingest
              "mixed, the float part rounded in numpy": edge_table([parts[0], rounded[1]], 16)}
    assert [t.column_names[-1] for t in tables.values()] == ["weight", "weight16", "weight16"]
    stored = {}
    for i, (name, table) in enumerate(tables.items()):
        con = connect(tmp_path / f"{i}.db")
        with transaction(con):
            insert_edges(con, 1, table, 16)
        stored[name] = con.execute("SELECT sentence_id, layer, head, query_pos, key_pos, weight16 "
                                   "FROM edge_store16 ORDER BY ALL").fetchall()
        assert con.execute("SELECT count(*) FROM edge_store").fetchone()[0] == 0  # 16-bit runs keep no float weight
        con.close()
    first = next(iter(stored.values()))
    assert len(first) == 1500 and all(rows == first for rows in stored.values())
    with pytest.raises(ValueError, match="16-bit weights in a 32-bit run"):
        edge_table(rounded)
    con = connect(tmp_path / "x.db")
    with pytest.raises(ValueError, match="16-bit run"):
        insert_edges(con, 1, tables["rounded on the device"], 32)
    con.close()
