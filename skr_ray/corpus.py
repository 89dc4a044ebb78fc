"""Read corpora (BEIR jsonl, parquet, folders of .txt, PDFs) and BEIR evaluation sets.

Inputs are checked before any model is loaded; a bad file fails with its path, line and field.
Rows keep their ids end to end: ``doc_id`` is the corpus ``_id`` (or the .txt file stem, or ``<pdf stem>#<page>``
for a PDF's pages, whose text layer is extracted with pypdfium2).
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from skr_ray.config import DEMO_DATA
from skr_ray.schema import DOC_ID, TEXT

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)


class CorpusError(ValueError):
    """The input data is missing or malformed; the message names the file, row and field."""


def demo_dir() -> Path:
    return Path(str(resources.files("skr_ray") / "demo_data"))


@dataclass(frozen=True)
class CorpusSource:
    kind: str  # jsonl | parquet | txt | pdf
    paths: list[Path]
    problems: list[str] = field(default_factory=list)
    """Files left out, each with its path and why (pdf: unreadable documents)."""


def resolve_corpus(spec: str) -> CorpusSource:
    """Map ``data.unlabeled`` to concrete files."""
    path = demo_dir() if spec == DEMO_DATA else Path(spec).expanduser()
    if not path.exists():
        raise CorpusError(f"corpus not found: {path}")
    if path.is_file():
        if path.suffix == ".jsonl":
            return CorpusSource("jsonl", [path])
        if path.suffix == ".parquet":
            return CorpusSource("parquet", [path])
        if path.suffix.lower() == ".pdf":
            return _pdf_source([path])
        raise CorpusError(f"unsupported corpus file {path}: expected .jsonl, .parquet or .pdf")
    if (path / "corpus.jsonl").is_file():
        return CorpusSource("jsonl", [path / "corpus.jsonl"])
    parquet = sorted(path.glob("*.parquet"))
    if parquet:
        return CorpusSource("parquet", parquet)
    txt = sorted(path.glob("*.txt"))
    if txt:
        return CorpusSource("txt", txt)
    pdfs = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".pdf")
    if pdfs:
        return _pdf_source(pdfs, path)
    raise CorpusError(f"{path} holds no corpus.jsonl, *.parquet, *.txt or *.pdf files")


def pdf_page_count(path: Path) -> int:
    """Pages of one PDF; a file pdfium cannot open is a CorpusError naming it (the one place PDFs are counted:
    text corpora, page-image corpora and image evaluation sets all ask here)."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except Exception as exc:  # noqa: BLE001 - pdfium raises its own error types
        raise CorpusError(f"{path}: not a readable PDF ({exc})") from None
    try:
        return len(pdf)
    finally:
        pdf.close()


def _pdf_source(paths: list[Path], root: Path | None = None) -> CorpusSource:
    """PDFs as text corpora: one row per page, ``doc_id`` = ``<file stem>#<page>`` (1-based; the same ids the
    page-image path gives). Unreadable PDFs are left out, each counted with its path."""
    good, problems = [], []
    for path in paths:
        try:
            pdf_page_count(path)
            good.append(path)
        except CorpusError as exc:
            problems.append(str(exc))
    for problem in problems:
        log.warning("corpus: skipped %s", problem)
    if not good:
        raise CorpusError(f"no readable PDF among {len(paths)}: {problems[0]}")
    return CorpusSource("pdf", good, problems)


def pdf_page_texts(path: Path, stem: str) -> list[dict[str, str]]:
    """The text layer of every page of one PDF (a scanned page without one gives an empty row)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        rows = []
        for i in range(len(pdf)):
            page = pdf[i]
            text = page.get_textpage().get_text_range()
            rows.append({DOC_ID: f"{stem}#{i + 1}", TEXT: text.replace("\r\n", "\n").strip()})
        return rows
    finally:
        pdf.close()


def iter_jsonl(path: Path, fields: tuple[str, ...] = ("_id", "text")) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for each non-empty line; a bad line raises CorpusError naming file:line:field."""
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{path}:{line_no}: expected a JSON object")
            for name in fields:
                if name not in row:
                    raise CorpusError(f"{path}:{line_no}: missing field '{name}'")
            if "text" in fields and not isinstance(row["text"], str):
                raise CorpusError(f"{path}:{line_no}: field 'text' must be a string")
            yield line_no, row


def _file_ids(kind: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line number or row, doc id) of one corpus file, its rows checked as they are read."""
    if kind == "jsonl":
        for line_no, row in iter_jsonl(path):
            yield line_no, str(row["_id"])
        return
    try:
        meta = pq.read_metadata(path)
    except Exception as exc:  # noqa: BLE001
        raise CorpusError(f"{path}: not a readable parquet file ({exc})") from None
    names = set(meta.schema.names)
    id_field = "_id" if "_id" in names else DOC_ID
    for column in (id_field, TEXT):
        if column not in names:
            raise CorpusError(f"{path}: missing column '{column}' (has {sorted(names)})")
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=[id_field], batch_size=65536):
        for doc_id in batch.column(0).to_pylist():
            yield row, str(doc_id)
            row += 1


def _duplicate_message(kind: str, path: Path, at: int, doc_id: str, first: Path) -> str:
    if kind == "jsonl":
        return f"{path}:{at}: duplicate _id {doc_id!r}" + ("" if first == path else f" (also in {first})")
    id_field = "_id" if "_id" in pq.read_schema(path).names else DOC_ID
    where = "earlier in this file" if first == path else f"also in {first}"
    return f"{path}: row {at}: duplicate {id_field} {doc_id!r} ({where})"


def _check_unique(kind: str, paths: list[Path]) -> int:
    """Count the rows of every file and refuse an id used twice, in one file or across files.

    The ids are kept as 64-bit hashes (8 bytes an id, in numpy) rather than a Python set of strings (over
    100 MB for a million ids in the driver); equal hashes are confirmed, and named, by a second pass that keeps
    only the ids with those hashes."""
    import numpy as np

    hashes: list[np.ndarray] = []
    for path in paths:
        chunk: list[int] = []
        for _, doc_id in _file_ids(kind, path):
            chunk.append(hash(doc_id))
            if len(chunk) == 65536:
                hashes.append(np.array(chunk, dtype=np.int64))
                chunk = []
        hashes.append(np.array(chunk, dtype=np.int64))
    every = np.sort(np.concatenate(hashes)) if hashes else np.empty(0, np.int64)
    del hashes
    suspects = set(every[1:][every[1:] == every[:-1]].tolist())
    if suspects:  # ids that may repeat: read again, keeping only those, to name the first real repeat
        first: dict[str, Path] = {}
        for path in paths:
            for at, doc_id in _file_ids(kind, path):
                if hash(doc_id) in suspects:
                    if doc_id in first:
                        raise CorpusError(_duplicate_message(kind, path, at, doc_id, first[doc_id]))
                    first[doc_id] = path
    return len(every)


def validate_corpus(source: CorpusSource) -> int:
    """Check schema and count rows; raise CorpusError on anything that would lose or mix rows."""
    if source.kind in ("jsonl", "parquet"):
        total = _check_unique(source.kind, list(source.paths))
    elif source.kind == "pdf":
        total = sum(pdf_page_count(path) for path in source.paths)
    else:
        total = len(source.paths)
    if total == 0:
        raise CorpusError(f"corpus is empty: {', '.join(str(p) for p in source.paths)}")
    return total


def _normalize_batch(batch: dict[str, Any], max_chars: int) -> dict[str, list[str]]:
    ids = batch["_id"] if "_id" in batch else batch[DOC_ID]
    titles = batch.get("title")
    texts = []
    for i, text in enumerate(batch[TEXT]):
        text = "" if text is None else str(text)
        title = "" if titles is None or titles[i] is None else str(titles[i]).strip()
        if title:
            text = f"{title}\n{text}"
        texts.append(text[:max_chars])
    return {DOC_ID: [str(x) for x in ids], TEXT: texts}


def _txt_rows(row: dict[str, Any]) -> dict[str, str]:
    path = Path(row["path"])
    return {DOC_ID: path.stem, TEXT: row["bytes"].decode("utf-8", errors="replace")}


ROWS_PER_READ_BLOCK = 2000
READ_BLOCK_BYTES = 16 * 2**20
"""A read block holds at most about this many bytes of corpus file: long passages make few rows a large block,
and a block larger than the object store's share for the stream is spilled to disk instead of streamed."""

READ_CPUS = 0.25
"""CPUs each read or row-preparation task of a corpus reserves: a light task, so that it always fits beside the
model actors of a streaming pipeline (``skr_ray.ray_utils.actor_cpus`` leaves ``STREAM_CPUS`` for them)."""


# Row functions of the annotation plan live here, not in skr_ray.annotate: a Ray worker that runs them imports
# only this light module (pyarrow, numpy), not torch.
def done_keys(ids: Any) -> Any:
    """Doc ids a resumed run skips, as the sorted array :func:`drop_done` looks rows up in (built once in the
    driver, not once per block)."""
    import numpy as np
    import pyarrow as pa

    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        return np.unique(ids.to_numpy(zero_copy_only=False).astype(str))
    return np.unique(np.asarray(list(ids), dtype=str))


def drop_done(batch: dict[str, Any], done: Any) -> dict[str, Any]:
    """The rows whose doc id is not in ``done`` (a resumed run; best given as :func:`done_keys`)."""
    import numpy as np

    keys = done if isinstance(done, np.ndarray) else done_keys(done)
    ids = batch[DOC_ID].astype(str)
    if not len(keys):
        return batch
    at = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    keep = keys[at] != ids
    return {k: v[keep] for k, v in batch.items()}


def longest_first(batch: dict[str, Any]) -> dict[str, Any]:
    """The rows of a block, longest text first (batches cut from it in order pad little)."""
    import numpy as np

    order = np.argsort([-len(str(t)) for t in batch[TEXT]], kind="stable")
    return {k: v[order] for k, v in batch.items()}


def read_corpus(spec: str, max_chars: int, max_docs: int = 0) -> tuple[ray.data.Dataset, int]:
    """Validated corpus as a Ray Dataset with columns doc_id, text; returns (dataset, rows). Its tasks reserve
    ``READ_CPUS`` each, so they run beside model actors that hold most of the cluster's CPUs."""
    import ray.data

    source = resolve_corpus(spec)
    rows = validate_corpus(source)
    paths = [str(p) for p in source.paths]
    # Ray Data splits a read into ~200 blocks by default: for a small corpus that is hundreds of tiny tasks (a
    # 48-row file took 19 s to read and normalize).
    # Blocks of at least ROWS_PER_READ_BLOCK rows, and of at most READ_BLOCK_BYTES of file; big corpora still
    # spread over the cluster.
    size = sum(p.stat().st_size for p in source.paths) if source.kind in ("jsonl", "parquet") else 0
    blocks = max(len(paths), min(200, -(-rows // ROWS_PER_READ_BLOCK)), -(-size // READ_BLOCK_BYTES))
    light = {"num_cpus": READ_CPUS}
    if source.kind == "jsonl":
        ds = ray.data.read_json(paths, lines=True, override_num_blocks=blocks, ray_remote_args=light)
    elif source.kind == "parquet":
        ds = ray.data.read_parquet(paths, override_num_blocks=blocks, ray_remote_args=light)
    elif source.kind == "pdf":
        root = Path(spec).expanduser()
        items = [{"path": str(p), "stem": p.stem if root.is_file() else str(p.relative_to(root).with_suffix(""))}
                 for p in source.paths]
        ds = ray.data.from_items(items).flat_map(
            lambda row: [{DOC_ID: r[DOC_ID], TEXT: r[TEXT][:max_chars]} for r in pdf_page_texts(Path(row["path"]),
                                                                                                row["stem"])],
            num_cpus=READ_CPUS)
    else:
        ds = ray.data.read_binary_files(paths, include_paths=True, ray_remote_args=light).map(_txt_rows,
                                                                                             num_cpus=READ_CPUS)
    if source.kind not in ("txt", "pdf"):
        ds = ds.map_batches(_normalize_batch, fn_kwargs={"max_chars": max_chars}, num_cpus=READ_CPUS)
    if max_docs and max_docs < rows:
        ds = ds.limit(max_docs)
        rows = max_docs
    return ds, rows


def local_blocks(spec: str, max_chars: int, max_docs: int, rows_per_block: int) -> Iterator[dict[str, Any]]:
    """The blocks of one annotation call as the annotation stream makes them from :func:`read_corpus` (the same
    normalization; rows sorted longest first within read blocks, then cut), read in this process without Ray:
    for a plain loop to compare against (benchmarks/annotation_throughput.py). Read blocks here are
    ``ROWS_PER_READ_BLOCK`` rows; Ray's can be larger on a big corpus, so the blocks are the pipeline's exactly
    up to that many rows. JSONL and parquet corpora."""
    import numpy as np

    source = resolve_corpus(spec)
    if source.kind not in ("jsonl", "parquet"):
        raise CorpusError(f"local_blocks reads jsonl or parquet corpora, not {source.kind}")

    def rows() -> Iterator[dict[str, Any]]:
        for path in source.paths:
            if source.kind == "jsonl":
                yield from (row for _, row in iter_jsonl(path))
            else:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=ROWS_PER_READ_BLOCK):
                    yield from batch.to_pylist()

    read: list[dict[str, Any]] = []
    taken = 0

    def cut(chunk: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        ids = [r["_id"] if "_id" in r else r[DOC_ID] for r in chunk]
        norm = _normalize_batch({"_id": ids, TEXT: [r.get(TEXT) for r in chunk],
                                 "title": [r.get("title") for r in chunk]}, max_chars)
        block = longest_first({DOC_ID: np.array(norm[DOC_ID], dtype=object),
                               TEXT: np.array(norm[TEXT], dtype=object)})
        for i in range(0, len(block[DOC_ID]), rows_per_block):
            yield {k: v[i : i + rows_per_block] for k, v in block.items()}

    for row in rows():
        if max_docs and taken >= max_docs:
            break
        read.append(row)
        taken += 1
        if len(read) == ROWS_PER_READ_BLOCK:
            yield from cut(read)
            read = []
    if read:
        yield from cut(read)


# ----------------------------------------------------------------------------------------------
# BEIR evaluation sets (small: read in the driver).


@dataclass
class EvalSet:
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, set[str]]


def _read_jsonl_map(path: Path, max_chars: int) -> dict[str, str]:
    if not path.is_file():
        raise CorpusError(f"evaluation file not found: {path}")
    out: dict[str, str] = {}
    for _, row in iter_jsonl(path):
        title = str(row.get("title") or "").strip()
        text = row["text"]
        out[str(row["_id"])] = (f"{title}\n{text}" if title else text)[:max_chars]
    return out


def read_eval_set(spec: str, max_chars: int, max_queries: int = 0) -> EvalSet:
    """BEIR dir: corpus.jsonl, queries.jsonl, qrels/test.tsv (several relevant docs allowed)."""
    root = demo_dir() if spec == DEMO_DATA else Path(spec).expanduser()
    if not root.is_dir():
        raise CorpusError(f"evaluation set must be a BEIR directory, not found: {root}")
    corpus = _read_jsonl_map(root / "corpus.jsonl", max_chars)
    if not corpus:
        raise CorpusError(f"{root / 'corpus.jsonl'} is empty")
    return with_queries(root, corpus, max_queries)


def with_queries(root: Path, corpus: dict[str, str], max_queries: int = 0) -> EvalSet:
    """The BEIR set at ``root`` over ``corpus`` (id -> text, or image path): its queries and qrels, checked."""
    queries = _read_jsonl_map(root / "queries.jsonl", 10_000)
    qrels_path = root / "qrels" / "test.tsv"
    if not qrels_path.is_file():
        raise CorpusError(f"evaluation file not found: {qrels_path}")
    qrels: dict[str, set[str]] = defaultdict(set)
    with qrels_path.open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for line_no, row in enumerate(reader, 1):
            if line_no == 1 and row and row[0] == "query-id":
                continue
            if len(row) < 3:
                raise CorpusError(f"{qrels_path}:{line_no}: expected query-id, corpus-id, score")
            qid, did, score = row[0], row[1], row[2]
            if did not in corpus:
                raise CorpusError(f"{qrels_path}:{line_no}: corpus-id {did!r} is not in corpus.jsonl")
            try:
                relevant = float(score) > 0
            except ValueError:
                raise CorpusError(f"{qrels_path}:{line_no}: score {score!r} is not a number") from None
            if relevant:
                qrels[qid].add(did)
    kept = {qid: queries[qid] for qid in sorted(queries) if qid in qrels}
    if not kept:
        raise CorpusError(f"no query in {root / 'queries.jsonl'} has a relevant document in {qrels_path}")
    if max_queries:
        kept = dict(list(kept.items())[:max_queries])
    return EvalSet(corpus=corpus, queries=kept, qrels={q: qrels[q] for q in kept})
