"""Image retrieval sets (BEIR layout whose corpus rows name images) and the OCR text the reference
systems (BM25, MiniLM) read, as a user would try them on charts and pages."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from skr_ray.corpus import CorpusError, EvalSet, iter_jsonl, with_queries

log = logging.getLogger(__name__)


def read_image_eval_set(spec: str, max_queries: int = 0) -> EvalSet:
    """``corpus.jsonl`` rows ``{"_id", "image"}`` (paths relative to the set), ``queries.jsonl``, ``qrels/test.tsv``.

    ``image`` may name a PDF: ``report.pdf#3`` is its third page; a whole ``report.pdf`` becomes one document per
    page with ids ``<_id>#<page>`` (1-based, as qrels name them). The returned corpus maps each id to its image
    reference (a path, or ``path#page=N``; the encoders load it).
    """
    from skr_ray.pages import PageRef, ref_to_text

    root = Path(spec).expanduser().resolve()
    corpus_path = root / "corpus.jsonl"
    if not corpus_path.is_file():
        raise CorpusError(f"image evaluation set needs {corpus_path}")
    corpus: dict[str, str] = {}
    for line_no, row in iter_jsonl(corpus_path, fields=("_id", "image")):
        name, _, page = str(row["image"]).partition("#")
        path = root / name
        if not path.is_file():
            raise CorpusError(f"{corpus_path}:{line_no}: image {row['image']!r} not found")
        doc_id = str(row["_id"])
        if path.suffix.lower() != ".pdf":
            corpus[doc_id] = str(path)
            continue
        pages = _pdf_page_count(path, f"{corpus_path}:{line_no}")
        if page:
            if not page.isdigit() or not 1 <= int(page) <= pages:
                raise CorpusError(f"{corpus_path}:{line_no}: {row['image']!r}: {path.name} has pages 1..{pages}")
            corpus[doc_id] = ref_to_text(PageRef(doc_id, str(path), int(page) - 1))
        else:
            for i in range(pages):
                corpus[f"{doc_id}#{i + 1}"] = ref_to_text(PageRef(f"{doc_id}#{i + 1}", str(path), i))
    if not corpus:
        raise CorpusError(f"{corpus_path} is empty")
    return with_queries(root, corpus, max_queries)


def _pdf_page_count(path: Path, where: str) -> int:
    from skr_ray.corpus import pdf_page_count

    try:
        return pdf_page_count(path)
    except CorpusError as exc:
        raise CorpusError(f"{where}: {exc}") from None


def ocr_texts(corpus: dict[str, str], cache: Path) -> dict[str, str]:
    """Tesseract's text of every image (cached: OCR is the slow part of these references)."""
    from tqdm.auto import tqdm

    from skr_ray.pages import load_page, ocr_words

    done = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = [d for d in corpus if d not in done]
    for d in tqdm(todo, desc="OCR of image documents", unit="image", mininterval=10, disable=not todo):
        try:
            done[d] = " ".join(w.text for w in ocr_words(load_page(corpus[d])))
        except ValueError as exc:  # an unreadable image has no text; counted in the log
            log.warning("OCR: %s", exc)
            done[d] = ""
    if todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(done))
    return {d: done[d] for d in corpus}
