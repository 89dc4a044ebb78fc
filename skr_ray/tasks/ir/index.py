"""``skr index``: a corpus encoded with a trained IR checkpoint, searchable (text, PDF pages, or page images
with ``data.modality=image``).

The corpus streams through Ray Data: read in blocks, embedded by an actor pool of encoders (the evaluation's
TextEncoder: same weights, prompt and pooling as the checkpoint was evaluated with), written as parquet shards
of (id, text, vector) under ``index/vectors/`` as the blocks come. A killed run resumes by shard: the ids of the
shards on disk are skipped, and a shard that cannot be read (cut off mid-write) is removed and its rows encoded
again. Then a faiss index is built over the vectors (inner product: SKR vectors are L2-normalized): exact up to
``index.exact_max`` vectors, above it an IVF index whose probes are raised until its recall@10 against exact
search on a sample of the corpus reaches ``index.min_recall``; the recall is written to ``summary.json``.
``skr serve`` answers ``POST /v1/search`` from it (:class:`VectorIndex`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from skr_ray.artifacts import Artifacts, StageInputError, write_json
from skr_ray.config import SKRConfig
from skr_ray.evaluate.encode import EncoderSpec, TextEncoder
from skr_ray.schema import DOC_ID, TEXT

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.arrow"
"""(id, text) of every vector, in the index's order: a search answers positions, this names them. An Arrow IPC
file, which a server memory-maps instead of reading a large corpus's texts into its heap."""
LEGACY_IDS_FILE = "ids.parquet"
SUMMARY = "summary.json"
VECTORS = "vectors"


class IndexEncoder(TextEncoder):
    """TextEncoder over corpus rows (doc_id, text) that keeps each row's text and writes its vector as a
    fixed-size list (plain parquet any reader can take). With ``images`` every row is an image document whose
    text names the page (``path`` or ``path#page=N``)."""

    def __init__(self, *args: Any, images: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.images = images

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:  # type: ignore[override]
        import pyarrow as pa

        texts = batch[TEXT]
        out = super().__call__({"id": batch[DOC_ID], "text": texts, "image": np.full(len(texts), self.images)})
        emb = np.ascontiguousarray(out["embedding"], dtype=np.float32)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
        return pa.table({"id": pa.array([str(i) for i in out["id"]]), "text": pa.array([str(t) for t in texts]),
                         "vector": vectors})


def resolve_checkpoint(cfg: SKRConfig) -> Path:
    from skr_ray.models.checkpoint import find_checkpoint

    raw = Path(cfg.index.checkpoint).expanduser() if cfg.index.checkpoint else Artifacts(cfg.output_dir).checkpoint_dir
    try:
        return find_checkpoint(raw.resolve())
    except FileNotFoundError as exc:
        raise StageInputError(f"index.checkpoint: {exc} (train first, or point index.checkpoint at one)") from None


def finished_shards(folder: Path) -> tuple[Any, int]:
    """Ids already in readable shards under ``folder`` (distinct, as one Arrow array: a resume at a million rows
    holds no Python list of them), and how many unreadable shards were removed (a run killed mid-write leaves at
    most the shards it was writing)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    done = []
    removed = 0
    for shard in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        try:
            done.append(pq.read_table(shard, columns=["id"]).column("id").combine_chunks().cast(pa.string()))
        except Exception as exc:  # a shard cut off mid-write: its rows are encoded again
            log.warning("index: removing unreadable shard %s (%s); its rows will be encoded again", shard.name, exc)
            shard.unlink()
            removed += 1
    return pc.unique(pa.chunked_array(done, pa.string()).combine_chunks()), removed


def run_index(cfg: SKRConfig) -> dict[str, Any]:
    """The ``index`` stage (resumable; skipped when finished): encode, then build and check the faiss index."""
    import ray
    import ray.data

    from skr_ray.config import load_config
    from skr_ray.corpus import done_keys, drop_done, read_corpus
    from skr_ray.models.checkpoint import HEAD_CONFIG, RUN_CONFIG
    from skr_ray.models.prefix_cache import prefix_cache_root
    from skr_ray.ray_utils import actor_pool, ensure_ray, replica_pool

    art = Artifacts(cfg.output_dir)
    finished = art.finished("index")
    if finished is not None:
        log.info("index: finished already (%s); skipped", art.index_dir)
        return finished
    if cfg.task != "ir":
        raise StageInputError(f"skr index searches IR embeddings; task is {cfg.task!r}")
    corpus = cfg.index.corpus or cfg.data.unlabeled
    if not corpus:
        raise StageInputError("skr index needs a corpus: set index.corpus or data.unlabeled")
    ckpt = resolve_checkpoint(cfg)
    head_info = json.loads((ckpt / HEAD_CONFIG).read_text())
    if head_info.get("task") != "ir":
        raise StageInputError(f"{ckpt} is {head_info.get('task')!r} checkpoint; skr index needs an IR one")
    trained = load_config(ckpt / RUN_CONFIG)  # the model and length the checkpoint was evaluated with
    enc_cfg = trained.to_dict()
    enc_cfg["evaluate"].update(batch_size=cfg.evaluate.batch_size, num_actors=cfg.evaluate.num_actors)
    spec = EncoderSpec("skr", checkpoint=str(ckpt), prompt=head_info.get("prompt", "plain"),
                       pooling=head_info.get("pooling", "last_token"))

    ensure_ray(cfg.ray)
    vectors_dir = art.index_dir / VECTORS
    vectors_dir.mkdir(parents=True, exist_ok=True)
    Artifacts.write_config(art.index_dir, cfg)
    start = time.perf_counter()
    done, removed = finished_shards(vectors_dir)
    images = cfg.data.modality == "image"
    if images:  # page images (a folder of images or PDFs, or a corpus.jsonl of {"_id", "image"} rows)
        from skr_ray.models.backbone import require_vision_model
        from skr_ray.pages import list_pages, ref_to_text

        require_vision_model(trained.model, "skr index over image documents")
        pages, problems = list_pages(corpus, cfg.data.max_docs)
        for problem in problems:
            log.warning("index: %s", problem)
        ds, rows = ray.data.from_items([{DOC_ID: p.page_id, TEXT: ref_to_text(p)} for p in pages]), len(pages)
    else:
        ds, rows = read_corpus(corpus, cfg.data.max_chars, cfg.data.max_docs)
    if len(done):
        log.info("index: resuming: %d of %d rows already in %s", len(done), rows, vectors_dir)
        ds = ds.map_batches(drop_done, fn_kwargs={"done": done_keys(done)})
    todo = rows - len(done)
    if todo > 0:
        gpus = 1 if _has_gpu() else 0
        actors = replica_pool(cfg.evaluate.num_actors, 1, gpus, trained.model)
        if not gpus:  # the corpus streams in while the encoders run: a CPU stays free for the read and write tasks
            actors = max(1, min(actors, int(ray.cluster_resources().get("CPU", 2)) - 1))
        ds = ds.select_columns([DOC_ID, TEXT]).map_batches(
            IndexEncoder,
            fn_constructor_kwargs={"cfg_dict": enc_cfg, "spec": {"name": spec.name, "checkpoint": spec.checkpoint,
                                                                  "prompt": spec.prompt, "pooling": spec.pooling},
                                   "replicas": actors, "images": images,
                                   # passages the checkpoint's training saw: their stored lower-layer states
                                   "prefix_cache_dir": None if images else prefix_cache_root(trained)},
            batch_size=cfg.evaluate.batch_size, compute=actor_pool(actors), num_cpus=1, num_gpus=gpus,
            batch_format="numpy",
        )
        ds.write_parquet(str(vectors_dir), max_rows_per_file=cfg.index.shard_rows)
    encode_s = time.perf_counter() - start

    start = time.perf_counter()
    # the build runs in a Ray task, not here: it holds every vector (the index) and every id (the duplicate
    # check), and the driver's memory does not grow with the corpus
    build = ray.remote(num_cpus=1)(build_from_shards)
    info = ray.get(build.remote(str(vectors_dir), str(art.index_dir), cfg.index.exact_max, cfg.index.min_recall,
                                cfg.index.recall_sample, cfg.index.nlist, cfg.seed))
    summary = {"vectors": info.pop("vectors"), "dim": info.pop("dim"), "checkpoint": str(ckpt), "corpus": corpus,
               **info, "encoded_this_run": todo, "resumed_rows": len(done), "removed_shards": removed,
               "encode_s": round(encode_s, 1), "build_s": round(time.perf_counter() - start, 1)}
    write_json(art.index_dir / SUMMARY, summary)
    Artifacts.mark_done(art.index_dir, summary)
    log.info("index: %d vectors (%s, recall@10 %.3f) in %s", summary["vectors"], info["kind"],
             info["recall_at_10"], art.index_dir)
    return summary


def _shards(folder: Path) -> list[Path]:
    shards = sorted(folder.glob("*.parquet"))
    if not shards:
        raise StageInputError(f"{folder}: no vectors were written (an empty corpus?)")
    return shards


def build_from_shards(vectors_dir: str, index_dir: str, exact_max: int, min_recall: float, sample: int,
                      nlist: int = 0, seed: int = 0) -> dict[str, Any]:
    """The faiss index over the vector shards in ``vectors_dir``, written to ``index_dir`` with the (id, text)
    of each position (``ids.arrow``, which a server memory-maps). Reads one shard at a time: what it holds is
    the index and the ids, never a second copy of the vectors."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = _shards(Path(vectors_dir))
    out = Path(index_dir)
    rows = [pq.read_metadata(s).num_rows for s in shards]
    seen: set[str] = set()
    twice = 0
    tmp_ids = out / (IDS_FILE + ".tmp")
    with pa.OSFile(str(tmp_ids), "wb") as sink:
        writer = None
        for shard in shards:
            table = pq.read_table(shard, columns=["id", "text"])
            ids = table.column("id").to_pylist()
            twice += sum(1 for i in ids if i in seen)
            seen.update(ids)
            table = table.cast(pa.schema([("id", pa.string()), ("text", pa.large_string())]))
            if writer is None:
                writer = pa.ipc.new_file(sink, table.schema)
            writer.write_table(table)
        writer.close()
    if twice:
        tmp_ids.unlink()
        raise RuntimeError(f"{vectors_dir}: {twice} ids stored twice; remove the folder and index again")
    del seen

    def chunks():
        for shard in shards:
            yield _as_matrix(pq.read_table(shard, columns=["vector"]).column("vector"))

    index, info = build_index_chunked(chunks, sum(rows), exact_max, min_recall, sample, nlist, seed)
    faiss.write_index(index, str(out / (INDEX_FILE + ".tmp")))
    (out / (INDEX_FILE + ".tmp")).replace(out / INDEX_FILE)
    tmp_ids.replace(out / IDS_FILE)
    return {"vectors": int(index.ntotal), "dim": int(index.d), **info}


def _as_matrix(column: Any) -> np.ndarray:
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = arr.type.list_size
    return np.ascontiguousarray(arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim), dtype=np.float32)


def build_index(vectors: np.ndarray, exact_max: int, min_recall: float, sample: int, nlist: int = 0,
                seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """:func:`build_index_chunked` over vectors in memory."""
    return build_index_chunked(lambda: iter([vectors]), len(vectors), exact_max, min_recall, sample, nlist, seed)


def build_index_chunked(chunks: Callable[[], Iterator[np.ndarray]], n: int, exact_max: int, min_recall: float,
                        sample: int, nlist: int = 0, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """A faiss inner-product index over the ``n`` vectors that ``chunks()`` yields (in order, a block at a time;
    called once or twice), and what was measured of it: exact (IndexFlatIP) up to ``exact_max`` vectors; above,
    IVF with ``nlist`` lists (0: 4 x sqrt(n)) and the fewest probes (doubling) whose recall@10 against exact
    search, for ``sample`` corpus vectors as queries, reaches ``min_recall``. Exact search for that check runs
    block by block, so no second copy of the vectors is held."""
    import faiss

    if n <= exact_max:
        index = None
        for block in chunks():
            if index is None:
                index = faiss.IndexFlatIP(block.shape[1])
            index.add(block)
        return index, {"kind": "exact", "recall_at_10": 1.0}
    rng = np.random.default_rng(seed)
    lists = nlist or max(1, int(4 * math.sqrt(n)))
    train_at = rng.choice(n, size=min(n, 64 * lists), replace=False)
    query_at = rng.choice(n, size=min(n, sample), replace=False)
    picked = _gather(chunks(), n, np.concatenate([train_at, query_at]))  # one pass for both samples
    train, queries = picked[: len(train_at)], picked[len(train_at):]
    dim = train.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.train(train)
    del train
    k = min(10, n)
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    offset = 0
    for block in chunks():  # the IVF index fills, and exact search runs over the same block
        index.add(block)
        exact = faiss.IndexFlatIP(dim)
        exact.add(block)
        s, i = exact.search(queries, min(k, len(block)))
        both_s, both_i = np.hstack([best_s, s]), np.hstack([best_i, i + offset])
        top = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(both_s, top, 1), np.take_along_axis(both_i, top, 1)
        offset += len(block)
    nprobe, recall = 1, 0.0
    while True:
        index.nprobe = nprobe
        _, got = index.search(queries, k)
        recall = float(np.mean([len(set(g) & set(t)) / k for g, t in zip(got, best_i)]))
        if recall >= min_recall or nprobe >= lists:
            break
        nprobe = min(2 * nprobe, lists)
    return index, {"kind": "ivf", "nlist": lists, "nprobe": nprobe, "recall_at_10": round(recall, 4),
                   "recall_sample": len(queries)}


def _gather(blocks: Iterator[np.ndarray], n: int, positions: np.ndarray) -> np.ndarray:
    """The rows at ``positions`` (in that order) of the ``n`` rows that ``blocks`` yields in order."""
    out: np.ndarray | None = None
    offset = 0
    for block in blocks:
        if out is None:
            out = np.empty((len(positions), block.shape[1]), dtype=np.float32)
        here = (positions >= offset) & (positions < offset + len(block))
        out[here] = block[positions[here] - offset]
        offset += len(block)
    if out is None or offset != n:
        raise RuntimeError(f"index: expected {n} vectors, the shards hold {offset}")
    return out


class VectorIndex:
    """A built index, loaded for search: ``search(vectors, top_k, ids)`` answers, per query vector, the best
    ``top_k`` (id, score, text), optionally among ``ids`` only."""

    def __init__(self, folder: str | Path) -> None:
        import faiss
        import pyarrow as pa

        folder = Path(folder)
        self.summary = json.loads((folder / SUMMARY).read_text())
        self.index = faiss.read_index(str(folder / INDEX_FILE))
        if self.summary.get("kind") == "ivf":
            self.index.nprobe = int(self.summary["nprobe"])
        if (folder / IDS_FILE).is_file():
            table = pa.ipc.open_file(pa.memory_map(str(folder / IDS_FILE))).read_all()  # zero-copy: pages, not heap
        else:  # an index built before ids.arrow: its ids and texts in parquet, read into memory
            import pyarrow.parquet as pq

            table = pq.read_table(folder / LEGACY_IDS_FILE)
        self.ids = table.column("id")
        self.texts = table.column("text")
        self._position: dict[str, int] | None = None

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def positions(self, ids: list[str]) -> tuple[np.ndarray, list[str]]:
        """Index positions of ``ids`` and the ids it does not hold."""
        if self._position is None:  # built on the first filtered search
            self._position = {i: n for n, i in enumerate(self.ids.to_pylist())}
        found = [self._position.get(i) for i in ids]
        return (np.asarray([p for p in found if p is not None], dtype=np.int64),
                [i for i, p in zip(ids, found) if p is None])

    def search(self, vectors: np.ndarray, top_k: int, ids: list[str] | None = None) -> list[list[dict[str, Any]]]:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        params = None
        k = min(top_k, len(self.ids))
        if ids is not None:
            positions, _ = self.positions(ids)
            k = min(k, len(positions))
            if k == 0:
                return [[] for _ in vectors]
            selector = faiss.IDSelectorBatch(positions)
            params = (faiss.SearchParametersIVF(sel=selector, nprobe=self.index.nprobe)
                      if self.summary.get("kind") == "ivf" else faiss.SearchParameters(sel=selector))
        scores, found = self.index.search(vectors, k, params=params)
        return [[{"id": self.ids[int(p)].as_py(), "score": float(s), "text": self.texts[int(p)].as_py()}
                 for s, p in zip(row_s, row_p) if p >= 0] for row_s, row_p in zip(scores, found)]


def _has_gpu() -> bool:
    from skr_ray.ray_utils import cluster_gpus

    return cluster_gpus() > 0
