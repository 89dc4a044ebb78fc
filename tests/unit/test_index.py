"""The vector index of ``skr index``: exact below the threshold, IVF above it with its recall measured against
exact search, a filter on ids, and resume over shards a killed run left."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skr_ray.corpus import done_keys, drop_done
from skr_ray.tasks.ir.index import (IDS_FILE, INDEX_FILE, SUMMARY, VectorIndex, build_from_shards, build_index,
                                    build_index_chunked, finished_shards, _as_matrix)


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
    with pa.OSFile(str(folder / IDS_FILE), "wb") as sink, pa.ipc.new_file(
            sink, pa.schema([("id", pa.string()), ("text", pa.large_string())])) as writer:
        writer.write_table(pa.table({"id": pa.array(ids), "text": pa.array(texts, pa.large_string())}))
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
    assert sorted(done.to_pylist()) == ["x", "y"] and removed == 1 and not cut.exists() and good.exists()
    table = pq.read_table(good)
    assert _as_matrix(table.column("vector")).shape == (2, 4)


def _shard(path, ids, vectors):
    pq.write_table(pa.table({"id": ids, "text": [f"text of {i}" for i in ids],
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)),
                                                                         vectors.shape[1])}), path)


def test_an_index_built_block_by_block_is_the_index_built_at_once():
    """The IVF build reads its vectors a block at a time (training sample, exact search for the recall check):
    the same index, probes and recall as over the whole matrix."""
    rng = np.random.default_rng(2)
    vectors = _clustered(rng, 3000, 16)
    whole, info = build_index(vectors, exact_max=1000, min_recall=0.9, sample=80, seed=3)
    blocks = lambda: iter(np.array_split(vectors, 7))  # noqa: E731
    parts, part_info = build_index_chunked(blocks, 3000, exact_max=1000, min_recall=0.9, sample=80, seed=3)
    assert part_info == info and parts.ntotal == whole.ntotal == 3000
    whole.nprobe = parts.nprobe = info["nprobe"]
    assert np.array_equal(whole.search(vectors[:20], 5)[1], parts.search(vectors[:20], 5)[1])
    with pytest.raises(RuntimeError, match="expected 3001 vectors"):
        build_index_chunked(blocks, 3001, exact_max=1000, min_recall=0.9, sample=80)


def test_build_from_shards_writes_index_and_ids_and_refuses_an_id_twice(tmp_path):
    rng = np.random.default_rng(4)
    vectors = _unit(rng, 50, 8)
    shards, out = tmp_path / "vectors", tmp_path / "index"
    shards.mkdir()
    out.mkdir()
    _shard(shards / "0.parquet", [f"d{i}" for i in range(30)], vectors[:30])
    _shard(shards / "1.parquet", [f"d{i}" for i in range(30, 50)], vectors[30:])
    info = build_from_shards(str(shards), str(out), exact_max=100, min_recall=0.95, sample=10)
    assert info == {"vectors": 50, "dim": 8, "kind": "exact", "recall_at_10": 1.0}
    (out / SUMMARY).write_text(json.dumps(info))
    found = VectorIndex(out)
    assert [h["id"] for h in found.search(vectors[[3, 41]], top_k=1)[0]] == ["d3"]
    assert found.search(vectors[41], top_k=1)[0][0] == {"id": "d41", "score": pytest.approx(1.0, abs=1e-5),
                                                         "text": "text of d41"}
    _shard(shards / "2.parquet", ["d7", "new"], vectors[:2])  # a row written twice (a resume gone wrong)
    with pytest.raises(RuntimeError, match="1 ids stored twice"):
        build_from_shards(str(shards), str(out), exact_max=100, min_recall=0.95, sample=10)


def test_drop_done_skips_exactly_the_finished_ids():
    batch = {"doc_id": np.asarray(["a", "b", "zz", "c", "0"]), "text": np.asarray(["1", "2", "3", "4", "5"])}
    kept = drop_done(batch, done_keys(["c", "a", "q"]))
    assert kept["doc_id"].tolist() == ["b", "zz", "0"] and kept["text"].tolist() == ["2", "3", "5"]
    assert drop_done(batch, done_keys([]))["doc_id"].tolist() == batch["doc_id"].tolist()
    assert drop_done(batch, ["zz"])["doc_id"].tolist() == ["a", "b", "c", "0"]  # a plain list still works


def test_an_index_folder_from_before_ids_arrow_still_loads(tmp_path):
    rng = np.random.default_rng(5)
    vectors = _unit(rng, 20, 8)
    index, info = build_index(vectors, exact_max=100, min_recall=0.95, sample=5)
    found = _save(tmp_path, index, info, [f"d{i}" for i in range(20)], [f"t{i}" for i in range(20)])
    (tmp_path / IDS_FILE).unlink()
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(20)], "text": [f"t{i}" for i in range(20)]}),
                   tmp_path / "ids.parquet")
    old = VectorIndex(tmp_path)
    assert old.search(vectors[4], top_k=1) == found.search(vectors[4], top_k=1)
    assert old.search(vectors[4], top_k=1)[0][0]["text"] == "t4"
