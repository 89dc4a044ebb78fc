"""Box quality of the self-annotation strategies on real pages, where no vision-language model can run.

- Each strategy answered by the scripted describer (an oracle that sees the truth: it measures the search
  algorithm, not a model), clean and with a share of wrong answers: mean IoU, share with IoU >= 0.5, asks/page.
- The OCR anchors with real tesseract: given each object's true caption text, is it found among tesseract's
  words (hit rate), how well does the anchored box cover the caption box, and the IoU of
  (anchor + the object's own box) with the composite box.

    python benchmarks/od_search_quality.py [--pages DIR] [--noise 0,0.1,0.3]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCPAGES = REPO.parent / "shared" / "data" / "docpages"


def strategy_rows(root: Path, noises: list[float]) -> None:
    from skr_ray.config import ODConfig
    from skr_ray.pages import load_page, read_truth
    from skr_ray.tasks.od.evaluate import page_iou
    from skr_ray.tasks.od.scripted import ScriptedDescriber
    from skr_ray.tasks.od.search import PageInfo, SearchStats, run_searches
    from skr_ray.tasks.od.similarity import load_similarity
    from skr_ray.tasks.od.strategies import strategy

    truth = read_truth(root)
    options = ODConfig()
    similarity = load_similarity(options.similarity)
    infos = [PageInfo(t.ref.page_id, t.width, t.height, load_page(t.ref)) for t in truth]
    print(f"scripted describer on {len(truth)} pages of {root} (similarity: {options.similarity}, threshold "
          f"{options.similarity_threshold}, min step {options.min_step_px} px)")
    print("| strategy | wrong answers | mean IoU | IoU >= 0.5 | usable labels | asks / page | s / 100 pages |")
    print("|---|---|---|---|---|---|---|")
    for name in ("direct", "multi_turn", "fuzzy", "ocr"):
        for noise in noises:
            asker = ScriptedDescriber(root, noise=noise)
            make = strategy(name, options, similarity)
            stats = SearchStats()
            t0 = time.perf_counter()
            labels = run_searches([lambda p=p: make(p) for p in infos], asker, 16, stats)
            seconds = time.perf_counter() - t0
            ious = [page_iou(list(label.box) if label.box else None, t) for label, t in zip(labels, truth)]
            ok = sum(label.status == "ok" for label in labels)
            print(f"| {name} | {noise:.0%} | {sum(ious) / len(ious):.3f} | {sum(i >= 0.5 for i in ious) / len(ious):.3f} "
                  f"| {ok}/{len(labels)} | {stats.asks / len(labels):.1f} | {100 * seconds / len(labels):.1f} |", flush=True)


def anchor_rows(root: Path) -> None:
    from skr_ray.pages import load_page, ocr_words, read_truth
    from skr_ray.tasks.od.boxes import enclosing, iou
    from skr_ray.tasks.od.strategies.ocr import find_anchor

    hits = total = 0
    caption_iou, composite_iou = [], []
    t0 = time.perf_counter()
    pages = 0
    for t in read_truth(root):
        objects = [o for o in t.objects if o.get("caption_text")]
        if not objects:
            continue
        pages += 1
        words = ocr_words(load_page(t.ref))
        for o in objects:
            total += 1
            found = find_anchor(o["caption_text"], words, 80)
            if found:
                hits += 1
                caption_iou.append(iou(found[0], o["caption_bbox"]))
                composite_iou.append(iou(enclosing([found[0], o["bbox"]]), o["composite_bbox"]))
    seconds = time.perf_counter() - t0
    print(f"\nOCR anchors, real tesseract, true caption text ({pages} pages with caption text, {total} captions):")
    print(f"  hit rate {hits}/{total} = {hits / total:.3f}; IoU of the anchored box with the caption box "
          f"{sum(caption_iou) / len(caption_iou):.3f}; IoU of anchor + object box with the composite box "
          f"{sum(composite_iou) / len(composite_iou):.3f}; {seconds / pages:.2f} s per page (OCR + matching)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", default=str(DOCPAGES))
    parser.add_argument("--noise", default="0,0.1,0.3")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.pages)
    strategy_rows(root, [float(x) for x in args.noise.split(",")])
    anchor_rows(root)


if __name__ == "__main__":
    main()
