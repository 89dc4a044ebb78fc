"""The vector index of ``skr index``: exact below the threshold, IVF above it with its recall measured against
exact search, a filter on ids, and resume over shards a killed run left."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skr_ray.tasks.ir.index import (IDS_FILE, INDEX_FILE, SUMMARY, VectorIndex, build_index, finished_shards,
                                    _as_matrix)


def _unit(rng, n, dim):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _clustered(rng, n, dim, centres=50):
    """Vectors around a few directions, as embeddings of a corpus are (uniform random ones have no structure
    for an IVF index to use)."""
    c = _unit(rng, centres, dim)
    v = c[rng.integers(0, centres, n)] + 0.3 * _unit(rng, n, dim)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _save(folder, index, info, ids, texts):
    import faiss

    faiss.write_index(index, str(folder / INDEX_FILE))
    pq.write_table(pa.table({"id": ids, "text": texts}), folder / IDS_FILE)
    (folder / SUMMARY).write_text(json.dumps({"vectors": len(ids), **info}))
    return VectorIndex(folder)


def test_exact_index_finds_each_vector_first_and_filters_by_id(tmp_path):
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 300, 16)
    index, info = build_index(vectors, exact_max=1000, min_recall=0.95, sample=50)
    assert info == {"kind": "exact", "recall_at_10": 1.0}
    ids = [f"d{i}" for i in range(300)]
    found = _save(tmp_path, index, info, ids, [f"text {i}" for i in range(300)])
    hits = found.search(vectors[[7, 42]], top_k=3)
    assert [h[0]["id"] for h in hits] == ["d7", "d42"] and hits[0][0]["text"] == "text 7"
    assert hits[0][0]["score"] == pytest.approx(1.0, abs=1e-5) and hits[0][0]["score"] >= hits[0][1]["score"]
    only = found.search(vectors[7], top_k=5, ids=["d3", "d9", "nope"])[0]
    assert {h["id"] for h in only} == {"d3", "d9"}  # the filter, and an unknown id is no error
    assert found.search(vectors[7], top_k=5, ids=["nope"]) == [[]]


def test_ivf_index_reaches_its_recall_against_exact_search(tmp_path):
    rng = np.random.default_rng(1)
    vectors = _clustered(rng, 5000, 32)
    index, info = build_index(vectors, exact_max=1000, min_recall=0.95, sample=100)
    assert info["kind"] == "ivf" and info["nlist"] == int(4 * np.sqrt(5000))
    assert info["recall_at_10"] >= 0.95 and 1 <= info["nprobe"] <= info["nlist"]
    ids = [f"d{i}" for i in range(5000)]
    found = _save(tmp_path, index, info, ids, ids)
    assert found.index.nprobe == info["nprobe"]
    assert found.search(vectors[123], top_k=1)[0][0]["id"] == "d123"
    only = found.search(vectors[123], top_k=3, ids=["d5", "d6"])[0]  # the filter holds on the IVF index too
    assert {h["id"] for h in only} <= {"d5", "d6"}


def test_resume_keeps_readable_shards_and_removes_a_cut_one(tmp_path):
    good = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["1", "2"],
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array([0.0] * 8, pa.float32()), 4)}), good)
    cut = tmp_path / "b.parquet"
    cut.write_bytes(good.read_bytes()[:40])  # a shard killed mid-write
    done, removed = finished_shards(tmp_path)
    assert done == ["x", "y"] and removed == 1 and not cut.exists() and good.exists()
    table = pq.read_table(good)
    assert _as_matrix(table.column("vector")).shape == (2, 4)
