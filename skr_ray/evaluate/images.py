"""Image retrieval sets (BEIR layout whose corpus rows name images) and the OCR text the reference
systems (BM25, MiniLM) read, as a user would try them on charts and pages."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from collections import defaultdict

from skr_ray.corpus import CorpusError, EvalSet, _read_jsonl_map, iter_jsonl

log = logging.getLogger(__name__)


def read_image_eval_set(spec: str, max_queries: int = 0) -> EvalSet:
    """``corpus.jsonl`` rows ``{"_id", "image"}`` (paths relative to the set), ``queries.jsonl``, ``qrels/test.tsv``.

    The returned corpus maps each id to its image path (the encoders load it).
    """
    root = Path(spec).expanduser().resolve()
    corpus_path = root / "corpus.jsonl"
    if not corpus_path.is_file():
        raise CorpusError(f"image evaluation set needs {corpus_path}")
    corpus: dict[str, str] = {}
    for line_no, row in iter_jsonl(corpus_path, fields=("_id", "image")):
        path = root / str(row["image"])
        if not path.is_file():
            raise CorpusError(f"{corpus_path}:{line_no}: image {row['image']!r} not found")
        corpus[str(row["_id"])] = str(path)
    queries = _read_jsonl_map(root / "queries.jsonl", 10_000)
    qrels: dict[str, set[str]] = defaultdict(set)
    qrels_path = root / "qrels" / "test.tsv"
    if not qrels_path.is_file():
        raise CorpusError(f"evaluation file not found: {qrels_path}")
    with qrels_path.open(encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle, delimiter="\t"), 1):
            if line_no == 1 and row and row[0] == "query-id":
                continue
            if len(row) < 3:
                raise CorpusError(f"{qrels_path}:{line_no}: expected query-id, corpus-id, score")
            if row[1] not in corpus:
                raise CorpusError(f"{qrels_path}:{line_no}: corpus-id {row[1]!r} is not in corpus.jsonl")
            if float(row[2]) > 0:
                qrels[row[0]].add(row[1])
    kept = {q: queries[q] for q in sorted(queries) if q in qrels}
    if not kept:
        raise CorpusError(f"no query in {root / 'queries.jsonl'} has a relevant image in {qrels_path}")
    if max_queries:
        kept = dict(list(kept.items())[:max_queries])
    return EvalSet(corpus=corpus, queries=kept, qrels={q: qrels[q] for q in kept})


def ocr_texts(corpus: dict[str, str], cache: Path) -> dict[str, str]:
    """Tesseract's text of every image (cached: OCR is the slow part of these references)."""
    from tqdm.auto import tqdm

    from skr_ray.tasks.od.pages import load_page, ref_from_text
    from skr_ray.tasks.od.strategies.ocr import ocr_words

    done = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = [d for d in corpus if d not in done]
    for d in tqdm(todo, desc="OCR of image documents", unit="image", mininterval=10, disable=not todo):
        try:
            done[d] = " ".join(w.text for w in ocr_words(load_page(ref_from_text(d, corpus[d]))))
        except ValueError as exc:  # an unreadable image has no text; counted in the log
            log.warning("OCR: %s", exc)
            done[d] = ""
    if todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(done))
    return {d: done[d] for d in corpus}
