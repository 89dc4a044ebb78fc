"""Page images: what self-annotation reads (images only), what OD evaluation reads (images + boxes), and
tesseract's words on a page (OD's OCR anchors, the OCR text of image documents).

``data.unlabeled`` for OD may be a folder of page images (PNG/JPEG/WebP, searched recursively), a folder
with ``images/`` (a docpages-style set: its ``annotations.json`` is never opened here), a ``corpus.jsonl``
whose rows carry ``{"_id", "image"}`` (the charts' layout), a PDF file, or a folder that holds PDFs (one
row per page, ``<stem>#<page>``). Files that cannot be decoded are counted with their path and skipped;
the job goes on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skr_ray.corpus import CorpusError, pdf_page_count

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
PDF_RENDER_SCALE = 1.5  # PDF points (1/72 in) -> pixels: 108 dpi, ~900 x 1200 px for a letter page


@dataclass(frozen=True)
class PageRef:
    """One page: an image file, or page ``page`` (0-based) of a PDF."""

    page_id: str
    path: str
    page: int = -1  # >= 0 for a PDF page

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_page(ref: PageRef | dict[str, Any] | str) -> Any:
    """The page as an RGB PIL image; raises ValueError naming the file when it cannot be decoded.

    ``ref`` may also be the text form that corpus rows of image documents carry (``ref_to_text``).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(ref, dict):
        ref = PageRef(**ref)
    elif isinstance(ref, str):
        ref = ref_from_text("", ref)
    if ref.page >= 0:
        import pypdfium2 as pdfium

        try:
            pdf = pdfium.PdfDocument(ref.path)
            try:
                return pdf[ref.page].render(scale=PDF_RENDER_SCALE).to_pil().convert("RGB")
            finally:
                pdf.close()
        except Exception as exc:  # noqa: BLE001 - pdfium raises its own error types
            raise ValueError(f"{ref.path} page {ref.page + 1}: cannot render ({exc})") from None
    try:
        with Image.open(ref.path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{ref.path}: cannot decode image ({exc})") from None


def _pdf_pages(path: Path, root: Path) -> tuple[list[PageRef], list[str]]:
    try:
        n = pdf_page_count(path)
    except CorpusError as exc:
        return [], [str(exc)]
    stem = str(path.relative_to(root).with_suffix("")) if path != root else path.stem
    return [PageRef(f"{stem}#{i + 1}", str(path), i) for i in range(n)], []


def list_pages(spec: str | Path, max_pages: int = 0) -> tuple[list[PageRef], list[str]]:
    """(pages in a stable order, problems): every page image under ``spec``; unreadable PDFs are problems.

    Image files are only listed here (cheap); a corrupt image is found, counted and skipped by the stage
    that decodes it.
    """
    root = Path(spec).expanduser().resolve()  # workers of other processes read these paths: absolute
    if not root.exists():
        raise CorpusError(f"page images not found: {root}")
    pages: list[PageRef] = []
    problems: list[str] = []
    if root.is_file() and root.suffix.lower() == ".pdf":
        pages, problems = _pdf_pages(root, root)
    elif root.is_file() and root.name == "corpus.jsonl" or (root / "corpus.jsonl").is_file() and not (root / "images").is_dir():
        corpus = root if root.is_file() else root / "corpus.jsonl"
        for line_no, line in enumerate(corpus.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pages.append(PageRef(str(row["_id"]), str(corpus.parent / row["image"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise CorpusError(f"{corpus}:{line_no}: needs fields '_id' and 'image' ({exc})") from None
    elif root.is_dir():
        base = root / "images" if (root / "images").is_dir() else root
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                pages.append(PageRef(str(path.relative_to(base).with_suffix("")), str(path)))
            elif suffix == ".pdf":
                found, bad = _pdf_pages(path, base)
                pages += found
                problems += bad
    else:
        raise CorpusError(f"{root}: expected a folder of page images or PDFs, a corpus.jsonl or a PDF file")
    seen: set[str] = set()
    for ref in pages:
        if ref.page_id in seen:
            raise CorpusError(f"{root}: two pages share the id {ref.page_id!r}")
        seen.add(ref.page_id)
    if not pages and not problems:
        raise CorpusError(f"{root} holds no page images (PNG/JPEG/WebP) or PDFs")
    for problem in problems:
        log.warning("skipped: %s", problem)
    if max_pages:
        pages = pages[:max_pages]
    return pages, problems


@dataclass(frozen=True)
class TruthPage:
    """An evaluation page: its image, the composite boxes (pixels) of its objects and their annotation records."""

    ref: PageRef
    width: int
    height: int
    boxes: list[list[float]]
    objects: list[dict[str, Any]]


def read_truth(spec: str | Path, max_pages: int = 0) -> list[TruthPage]:
    """A docpages-style set: ``annotations.json`` + ``images/``; the truth is each object's composite_bbox.

    Read by evaluation only: self-annotation never opens this file.
    """
    root = Path(spec).expanduser().resolve()
    path = root / "annotations.json" if root.is_dir() else root
    if not path.is_file():
        raise CorpusError(f"OD evaluation set needs annotations.json: not found at {path}")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise CorpusError(f"{path}: not valid JSON ({exc})") from None
    out = []
    for i, page in enumerate(data.get("pages", [])):
        try:
            objects = page["objects"]
            boxes = [[float(v) for v in o["composite_bbox"]] for o in objects]
            file = page["file"]
            ref = PageRef(str(Path(file).relative_to("images").with_suffix("")) if file.startswith("images/")
                          else Path(file).stem, str(path.parent / file))
            out.append(TruthPage(ref, int(page["width"]), int(page["height"]), boxes, objects))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorpusError(f"{path}: pages[{i}]: missing or bad field ({exc})") from None
        if not boxes:
            raise CorpusError(f"{path}: pages[{i}] ({page.get('file')}) has no objects")
    if not out:
        raise CorpusError(f"{path}: no pages")
    return out[:max_pages] if max_pages else out


def ref_to_text(ref: PageRef) -> str:
    """A page as one string (for corpus rows whose text column names the image): ``path`` or ``path#page=N``."""
    return ref.path if ref.page < 0 else f"{ref.path}#page={ref.page}"


def ref_from_text(page_id: str, text: str) -> PageRef:
    path, _, page = text.rpartition("#page=")
    return PageRef(page_id, path, int(page)) if path and page.isdigit() else PageRef(page_id, text)


@dataclass(frozen=True)
class Word:
    text: str
    box: tuple[int, int, int, int]  # pixels


class TesseractMissing(RuntimeError):
    pass


def ocr_words(image: Any, lang: str = "eng") -> list[Word]:
    """Tesseract's words in reading order with their pixel boxes."""
    import os

    import pytesseract

    # tesseract's own OpenMP threads slow it down when actors already share the cores (2.5x here)
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    try:
        data = pytesseract.image_to_data(image, lang=lang, output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractNotFoundError:
        raise TesseractMissing(
            "the OCR strategy needs the tesseract program: apt-get install -y tesseract-ocr (make install does it)"
        ) from None
    words = []
    for text, conf, x, y, w, h in zip(data["text"], data["conf"], data["left"], data["top"], data["width"],
                                      data["height"]):
        if text.strip() and float(conf) >= 0:
            words.append(Word(text.strip(), (int(x), int(y), int(x + w), int(y + h))))
    return words
