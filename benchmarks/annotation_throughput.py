"""Self-annotation throughput: Ray Data actor pool vs a plain single-process HF generate loop.

Same rows, same model, same prompt, same batch size; prints rows/s of each and their ratio.

    python benchmarks/annotation_throughput.py [--rows 32] [--actors 1] [key=value overrides]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time

import torch


def plain_loop(cfg, texts: list[str]) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skr_ray.models.backbone import materialize
    from skr_ray.tasks import get_task

    task = get_task(cfg.task)
    path = materialize(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    tok = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    start = time.perf_counter()
    bs = cfg.annotate.batch_size
    for i in range(0, len(texts), bs):
        prompts = [tok.apply_chat_template(task.build_messages(t), tokenize=False, add_generation_prompt=True)
                   for t in texts[i : i + bs]]
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                    truncation=True, max_length=cfg.annotate.max_input_tokens + 200)
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=cfg.annotate.max_new_tokens, do_sample=False,
                           pad_token_id=tok.pad_token_id or tok.eos_token_id)
    return len(texts) / (time.perf_counter() - start)


def ray_path(cfg) -> float:
    from skr_ray.tasks.ir.annotate import run_annotation

    summary = run_annotation(cfg)
    return summary["documents_labelled"] / summary["seconds"]


def main() -> None:
    from skr_ray.config import load_config
    from skr_ray.corpus import iter_jsonl, resolve_corpus

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = tempfile.mkdtemp(prefix="skr-bench-")
    cfg = load_config(None, [f"output_dir={out}", f"data.max_docs={args.rows}",
                             f"annotate.num_actors={args.actors}", *args.overrides])
    source = resolve_corpus(cfg.data.unlabeled)
    texts = [row["text"] for _, row in iter_jsonl(source.paths[0])][: args.rows]
    plain = plain_loop(cfg, texts)
    ray_rps = ray_path(cfg)  # includes Ray start-up, actor start and model load: the honest end-to-end cost
    shutil.rmtree(out, ignore_errors=True)
    import os

    print(f"cores={os.cpu_count()} rows={len(texts)} corpus={cfg.data.unlabeled} batch_size={cfg.annotate.batch_size} "
          f"actors={args.actors} max_input_tokens={cfg.annotate.max_input_tokens} "
          f"reuse_opening={cfg.annotate.reuse_opening}")
    print(f"plain HF generate loop : {plain:.3f} rows/s (model already loaded)")
    print(f"Ray Data actor pool    : {ray_rps:.3f} rows/s (incl. Ray start, actor start, model load)")
    print(f"ratio ray/plain        : {ray_rps / plain:.2f}")


if __name__ == "__main__":
    main()
