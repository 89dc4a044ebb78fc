"""IR recipe ablation in one process: where does SKR's margin over head-only come from?

A diagnostic for choosing training settings, not a system: it trains SKR variants on one run's self-labels
(the same examples, loss, batches, optimizer and gradient clipping as ``skr train``, without Ray and DeepSpeed so
a row takes minutes) and scores each on a *dev* evaluation set (the demo, or ``../shared/data/tatqa/dev``; never
a test split) next to head-only on the same frozen states. Every row prints its wall time. The chosen setting is
then confirmed through the real pipeline (``skr run``).

    python benchmarks/ir_recipe_ablation.py -c configs/demo.yaml --labels runs/demo \
        --row "top6 lr5e-4 4ep=" --row "lpft=train.head_init=probe" --row "12 layers=train.lora_layers=12"

Each ``--row NAME=OVERRIDES`` (space-separated dotted overrides on top of ``-c`` and the trailing overrides)
is one variant. Rows with the same ``train.lora_layers`` share the frozen-prefix cache on disk.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("ir_recipe_ablation")


def _encode(model, tokenizer, texts: list[str], max_length: int, cfg, batch: int = 32) -> np.ndarray:
    """(N, D) head outputs of ``model`` (a ReexpressionModel) for texts, longest first to cut padding."""
    from skr_ray.tasks.ir.training import embed

    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), model.head.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(order), batch):
            rows = order[i : i + batch]
            vecs = embed(model, tokenizer, [texts[r] for r in rows], max_length, "cpu", cfg.train.embed_prompt,
                         cfg.train.pooling)
            out[rows] = vecs.float().numpy()
    return out


def _dev_mrr(model, tokenizer, cfg, evalset) -> tuple[float, np.ndarray]:
    """(dev MRR, (Q, N) scores) of the model's embeddings."""
    from skr_ray.evaluate.metrics import first_relevant_ranks

    q_ids, d_ids = list(evalset.queries), list(evalset.corpus)
    q = _encode(model, tokenizer, [evalset.queries[i] for i in q_ids], cfg.train.max_query_length, cfg)
    d = _encode(model, tokenizer, [evalset.corpus[i] for i in d_ids], cfg.evaluate.max_length, cfg)
    ranks = first_relevant_ranks(q @ d.T, d_ids, q_ids, evalset.qrels)
    return float(np.mean(1.0 / ranks)), q @ d.T


def _selfval_choices(model, tokenizer, cfg, labels_run: Path) -> dict:
    """The fusion rules a label-free choice would take with this model: on the self-labelled validation split's
    questions against its own passages (what ``evaluate.fusion=selfval`` does), and against the whole unlabeled
    corpus (a harder, more search-like pool)."""
    from skr_ray.artifacts import Artifacts
    from skr_ray.evaluate.baselines import bm25_scores
    from skr_ray.tasks.ir.fusion import choose_rule, validation_texts
    from skr_ray.tasks.ir.pairs import label_corpus, load_pairs, split_pairs

    art = Artifacts(str(labels_run))
    out = {}
    val = validation_texts(cfg, art)
    if val is not None:
        queries, docs, gold = val
        q = _encode(model, tokenizer, queries, cfg.train.max_query_length, cfg)
        d = _encode(model, tokenizer, docs, cfg.evaluate.max_length, cfg)
        out["validation_passages"] = choose_rule("selfval", q @ d.T, bm25_scores(queries, docs), np.asarray(gold))
        _, pairs = split_pairs(load_pairs(art.labels_dir, cfg.annotate.drop_duplicates), cfg.train.val_fraction,
                               cfg.train.seed)
        corpus = label_corpus(art.labels_dir)
        ids = sorted(corpus)
        column = {x: i for i, x in enumerate(ids)}
        asked = [p for p in pairs if p.kind == "question"] or pairs
        dc = _encode(model, tokenizer, [corpus[i] for i in ids], cfg.evaluate.max_length, cfg)
        qc = _encode(model, tokenizer, [p.query for p in asked], cfg.train.max_query_length, cfg)
        out["whole_corpus"] = choose_rule("selfval", qc @ dc.T, bm25_scores([p.query for p in asked],
                                                                           [corpus[i] for i in ids]),
                                          np.asarray([column[p.doc_id] for p in asked]))
    for v in out.values():
        v.pop("validation_curve", None)
    return out


def _fusion_on_dev(scores: np.ndarray, evalset, choices: dict[str, dict]) -> dict:
    """BM25 alone, RRF and the best weighted sum (in hindsight: a ceiling, not a choice) on the dev set, and the
    dev MRR of each label-free choice (``choices``: where it was chosen -> rule; each gains ``dev_mrr``)."""
    from skr_ray.evaluate.baselines import bm25_scores
    from skr_ray.evaluate.metrics import first_relevant_ranks
    from skr_ray.tasks.ir.fusion import fused_scores, fusion_curve

    q_ids, d_ids = list(evalset.queries), list(evalset.corpus)
    bm25 = bm25_scores([evalset.queries[i] for i in q_ids], [evalset.corpus[i] for i in d_ids])

    def mrr(s: np.ndarray) -> float:
        return float(np.mean(1.0 / first_relevant_ranks(s, d_ids, q_ids, evalset.qrels)))

    curve = fusion_curve(scores, bm25, mrr)
    for rule in choices.values():
        rule["dev_mrr"] = mrr(fused_scores(scores, bm25, rule))
    return {"bm25": curve["min-max"][0], "rrf": curve["rrf"],
            "best_wsum": max(max(curve["min-max"]), max(curve["zmuv"])), "curve": curve, "selfval": choices}


def run_row(name: str, cfg, labels_run: Path, evalset, cache_root: Path) -> dict:
    from skr_ray.artifacts import Artifacts
    from skr_ray.models.backbone import load_backbone, model_id
    from skr_ray.models.checkpoint import add_lora
    from skr_ray.models.heads import EmbeddingHead
    from skr_ray.models.prefix_cache import FrozenPrefixCache, cache_directory
    from skr_ray.tasks.ir import training as hooks
    from skr_ray.train.deepspeed_config import GRADIENT_CLIPPING, torch_optimizer
    from skr_ray.train.loop import ReexpressionModel

    t0 = time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    art = Artifacts(str(labels_run))
    train, val = hooks.load_examples(cfg, art)
    backbone, tokenizer = load_backbone(cfg.model)
    backbone = add_lora(backbone, cfg.train)
    hidden = backbone.config.get_text_config().hidden_size
    info = hooks.head_info(cfg, train)
    head = EmbeddingHead(hidden, projection=bool(info["options"].get("projection")))
    split = backbone.config.num_hidden_layers - cfg.train.lora_layers
    cache = FrozenPrefixCache(split, cache_directory(cache_root, model_id(cfg.model), split, cfg.model.dtype))
    model = ReexpressionModel(backbone, head, cache, group_by_length=True)
    state = hooks.fit_start_head(model, tokenizer, train, cfg, "cpu", info)
    if state is not None:
        head.load_state_dict(state)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch_optimizer(cfg.train, False, trainable)
    bs = cfg.train.batch_size
    steps = len(train) // bs
    history = []
    model.eval()
    start_mrr, scores = _dev_mrr(model, tokenizer, cfg, evalset)
    v = hooks.validate(model, tokenizer, val, cfg, "cpu", info)
    history.append({"epoch": -1, **v, "dev_mrr": start_mrr})
    log.info("%s start: %s", name, history[-1])
    for epoch in range(cfg.train.epochs):
        order = list(range(len(train)))
        random.Random(cfg.train.seed * 1000 + epoch).shuffle(order)
        model.train()
        losses = []
        for step in range(steps):
            chunk = [train[i] for i in order[step * bs : (step + 1) * bs]]
            loss = hooks.batch_loss(model, tokenizer, chunk, cfg, "cpu", info)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, GRADIENT_CLIPPING)
            opt.step()
            losses.append(loss.item())
        model.eval()
        v = hooks.validate(model, tokenizer, val, cfg, "cpu", info)
        mrr, scores = _dev_mrr(model, tokenizer, cfg, evalset)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), **v, "dev_mrr": mrr})
        log.info("%s epoch %d: %s", name, epoch + 1, history[-1])
    kept = min(history[1:], key=lambda h: h["val_loss"]) if cfg.train.keep == "best_val_loss" else history[-1]
    # the last epoch's model
    fusion = _fusion_on_dev(scores, evalset, _selfval_choices(model, tokenizer, cfg, labels_run))
    for where, rule in fusion["selfval"].items():
        log.info("%s: fusion chosen on self-labelled validation (%s): %s -> dev MRR %.3f", name, where,
                 {k: rule.get(k) for k in ("method", "norm", "weight")}, rule["dev_mrr"])
    log.info("%s fusion on dev: BM25 %.3f, RRF %.3f, best weighted sum in hindsight %.3f", name, fusion["bm25"],
             fusion["rrf"], fusion["best_wsum"])
    return {"row": name, "train_pairs": len(train), "steps": steps * cfg.train.epochs, "fusion": fusion,
            "minutes": round((time.perf_counter() - t0) / 60, 2), "start_dev_mrr": start_mrr,
            "last_dev_mrr": history[-1]["dev_mrr"], "kept_epoch": kept["epoch"], "kept_dev_mrr": kept["dev_mrr"],
            "history": history}


def head_only_row(cfg, labels_run: Path, evalset, cache_root: Path) -> dict:
    """The head-only system as evaluation trains it: a projection on frozen states of the training split."""
    from skr_ray.artifacts import Artifacts
    from skr_ray.evaluate.metrics import first_relevant_ranks
    from skr_ray.models.backbone import load_backbone, model_id
    from skr_ray.models.prefix_cache import FrozenPrefixCache, cache_directory
    from skr_ray.tasks.ir.probe import apply_head, train_projection_head
    from skr_ray.tasks.ir.pairs import load_pairs, split_pairs
    from skr_ray.train.loop import ReexpressionModel

    t0 = time.perf_counter()
    art = Artifacts(str(labels_run))
    train, _ = split_pairs(load_pairs(art.labels_dir, cfg.annotate.drop_duplicates), cfg.train.val_fraction,
                           cfg.train.seed)
    backbone, tokenizer = load_backbone(cfg.model)
    hidden = backbone.config.hidden_size
    split = backbone.config.num_hidden_layers - max(cfg.train.lora_layers, 1)
    cache = FrozenPrefixCache(split, cache_directory(cache_root, model_id(cfg.model), split, cfg.model.dtype))
    model = ReexpressionModel(backbone, torch.nn.Identity(), cache, group_by_length=True)
    model.head.hidden_size = hidden
    model.eval()
    q = _encode(model, tokenizer, [p.query for p in train], cfg.train.max_query_length, cfg)
    p = _encode(model, tokenizer, [p.passage for p in train], cfg.train.max_length, cfg)
    head = train_projection_head(q, p, cfg.evaluate.head_only_epochs, cfg.train.batch_size, cfg.train.temperature,
                                 seed=cfg.seed)
    q_ids, d_ids = list(evalset.queries), list(evalset.corpus)
    eq = _encode(model, tokenizer, [evalset.queries[i] for i in q_ids], cfg.train.max_query_length, cfg)
    ed = _encode(model, tokenizer, [evalset.corpus[i] for i in d_ids], cfg.evaluate.max_length, cfg)
    ranks = first_relevant_ranks(apply_head(head, eq) @ apply_head(head, ed).T, d_ids, q_ids, evalset.qrels)
    return {"row": "head_only", "minutes": round((time.perf_counter() - t0) / 60, 2),
            "dev_mrr": float(np.mean(1.0 / ranks))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("--labels", required=True, help="a run folder with a finished annotate/ stage")
    ap.add_argument("--row", action="append", default=[], help="NAME=space-separated overrides")
    ap.add_argument("--head-only", action="store_true", help="also score head-only on the same dev set")
    ap.add_argument("--out", default="", help="append each row as a JSON line here")
    ap.add_argument("--labelled-only", action="store_true",
                    help="score on the dev candidates that were annotated (and the queries with a relevant one among "
                         "them): a smaller dev set over a corpus subsample, cheap to encode")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from skr_ray.config import load_config
    from skr_ray.corpus import read_eval_set
    from skr_ray.models.backbone import set_threads

    base_cfg = load_config(args.config, args.overrides)
    if "test" in Path(base_cfg.data.eval).parts:
        raise SystemExit("choose settings on a dev split, never on test/")
    set_threads(base_cfg.model, replicas=1)
    evalset = read_eval_set(base_cfg.data.eval, base_cfg.data.max_chars, base_cfg.data.max_queries)
    if args.labelled_only:
        from skr_ray.artifacts import Artifacts
        from skr_ray.tasks.ir.pairs import label_corpus

        seen = {" ".join(t.split()) for t in label_corpus(Artifacts(args.labels).labels_dir).values()}
        corpus = {k: v for k, v in evalset.corpus.items() if " ".join(v.split()) in seen}
        qrels = {q: rel & set(corpus) for q, rel in evalset.qrels.items() if rel & set(corpus)}
        evalset = type(evalset)(corpus=corpus, queries={q: evalset.queries[q] for q in qrels}, qrels=qrels)
        log.info("dev subset: %d queries over %d annotated candidates", len(qrels), len(corpus))
    cache_root = Path(args.labels) / "cache" / "ablation_prefix"
    rows = []
    if args.head_only:
        rows.append(head_only_row(base_cfg, Path(args.labels), evalset, cache_root))
        log.info("%s", rows[-1])
    for spec in args.row:
        name, _, extra = spec.partition("=")
        cfg = load_config(args.config, args.overrides + extra.split())
        rows.append(run_row(name, cfg, Path(args.labels), evalset, cache_root))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
    print(f"{'row':40s} {'steps':>5s} {'min':>6s} {'start':>6s} {'last':>6s} {'kept':>6s}")
    for r in rows:
        if r["row"] == "head_only":
            print(f"{'head_only':40s} {'':>5s} {r['minutes']:6.2f} {'':>6s} {r['dev_mrr']:6.3f}")
            continue
        print(f"{r['row']:40s} {r['steps']:5d} {r['minutes']:6.2f} {r['start_dev_mrr']:6.3f} "
              f"{r['last_dev_mrr']:6.3f} {r['kept_dev_mrr']:6.3f} (epoch {r['kept_epoch'] + 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
