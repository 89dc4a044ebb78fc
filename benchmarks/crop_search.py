"""Crop search throughput: asks of many pages batched into each model call vs one page at a time.

Same model, same pages, same search path, one run. The answers that steer the search come from the scripted
describer (so both modes walk exactly the same crops), while every model call really runs the
vision-language model's generation on those crops: the cost is real, the path identical. No
vision-language weights can be downloaded here, so the model is a random-weight Gemma-3 with the compute of
a small real VLM (``--size small``: SigLIP-B/16 at 224 px -> 64 image tokens, a SmolLM2-135M-sized text tower).

Prints pages/s and model calls per page of each mode, their ratio, and each strategy's time per 100 pages.

    python benchmarks/crop_search.py [--pages 8] [--batch 16] [--size small|tiny] [--strategies fuzzy,direct,...]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCPAGES = REPO.parent / "shared" / "data" / "docpages"


def _tests():
    sys.path.insert(0, str(REPO))
    import tests.pages
    import tests.tiny

    return tests.tiny, tests.pages


class CostedScripted:
    """The scripted describer's answers, paid for with a real generate() of the model on the same crops."""

    def __init__(self, model_asker, scripted) -> None:
        self.model, self.scripted = model_asker, scripted
        self.model_id = f"{model_asker.model_id} (steered by {scripted.model_id})"
        self.pages = {}

    def __call__(self, asks):
        self.model.pages = self.pages
        self.model(asks)
        return self.scripted(asks)


def run(strategy_name, infos, asker, batch, per_page: bool, options, similarity):
    from skr_ray.tasks.od.search import SearchStats, run_searches
    from skr_ray.tasks.od.strategies import strategy

    make = strategy(strategy_name, options, similarity)
    stats = SearchStats()
    t0 = time.perf_counter()
    groups = [[p] for p in infos] if per_page else [infos]
    labels = []
    for group in groups:
        labels += run_searches([lambda p=p: make(p) for p in group], asker, batch, stats)
    seconds = time.perf_counter() - t0
    return labels, stats, seconds


def main() -> None:
    import torch

    from skr_ray.config import ODConfig
    from skr_ray.config import ModelConfig
    from skr_ray.models.backbone import set_threads
    from skr_ray.models.vision import load_vision_model
    from skr_ray.pages import load_page, read_truth
    from skr_ray.tasks.od.ask import ModelAsker
    from skr_ray.tasks.od.scripted import ScriptedDescriber
    from skr_ray.tasks.od.search import PageInfo
    from skr_ray.tasks.od.similarity import load_similarity

    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16, help="asks per model call")
    parser.add_argument("--size", default="small", choices=["small", "tiny"])
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--strategies", default="fuzzy,direct,multi_turn,ocr")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    set_threads(ModelConfig(), 1)
    tiny, synthetic = _tests()
    root = Path(tempfile.mkdtemp(prefix="skr-crop-bench-"))
    pages_dir = DOCPAGES if DOCPAGES.is_dir() else synthetic.make_pages(root / "pages", n=args.pages)
    truth = read_truth(pages_dir, args.pages)
    vlm = tiny.build_tiny_vlm(root / "vlm", size=args.size)
    model, processor = load_vision_model(vlm, torch.float32, "cpu")
    asker = CostedScripted(ModelAsker(model, processor, f"random Gemma-3 ({args.size})", args.max_new_tokens),
                           ScriptedDescriber(pages_dir))
    infos = [PageInfo(t.ref.page_id, t.width, t.height, load_page(t.ref)) for t in truth]
    asker.pages = {p.page_id: p.image for p in infos}
    options = ODConfig()
    similarity = load_similarity("minilm")
    print(f"{len(infos)} pages from {pages_dir}; model: random Gemma-3 '{args.size}' on {torch.get_num_threads()} "
          f"thread(s); {args.batch} asks per call at most; {args.max_new_tokens} new tokens per answer")

    strategies = args.strategies.split(",")
    if "fuzzy" in strategies:
        _, s_one, t_one = run("fuzzy", infos, asker, args.batch, True, options, similarity)
        labels, s_all, t_all = run("fuzzy", infos, asker, args.batch, False, options, similarity)
        n = len(infos)
        print("fuzzy crop search:")
        print(f"  one page at a time      : {n / t_one:.3f} pages/s, {s_one.model_calls / n:.1f} model calls/page, "
              f"{s_one.asks / n:.1f} asks/page")
        print(f"  batched across pages    : {n / t_all:.3f} pages/s, {s_all.model_calls / n:.1f} model calls/page, "
              f"{s_all.asks / n:.1f} asks/page")
        print(f"  ratio batched / one page: {t_one / t_all:.2f}x")
    print(f"time per 100 pages, batched across pages ({len(infos)} pages):")
    for name in strategies:
        labels, stats, seconds = run(name, infos, asker, args.batch, False, options, similarity)
        ok = sum(label.status == "ok" for label in labels)
        print(f"  {name:<11}: {100 * seconds / len(infos):7.1f} s / 100 pages, {stats.asks / len(infos):5.1f} asks/page, "
              f"{stats.model_calls / len(infos):4.2f} calls/page, {ok}/{len(labels)} ok")


if __name__ == "__main__":
    main()
