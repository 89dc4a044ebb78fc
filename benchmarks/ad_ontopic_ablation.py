"""Which self-labelled negatives teach answerability: head-only probes fitted on subsets of one run's pairs.

One AD run annotated with every on-topic source (e.g. ``ad.ontopic_sources=[rewrite,rules]``, all rules and a
high ``ad.ontopic_negatives``) holds every kind of pair. Its frozen base states are computed once (and cached
in the run, as the head-only system caches them); then a head is fitted on the states of each subset of pair
kinds and scored on the labelled evaluation pairs (AUROC, AUPRC) and on the run's self-labelled validation
split. Fitting a head takes seconds, so every row of the ablation comes from the same questions, the same
states and the same evaluation pairs.

    python benchmarks/ad_ontopic_ablation.py RUN_DIR [--per-question 2] [--out ablation.json] [key=value ...]

With ``--layers 6,14,18,30`` it also fits a logistic probe on other states of the same prompts, per layer: the
final token's (what the AD head reads at the top layer) and the mean over the question's tokens (from
"Question:" on). Those states come from one in-process forward pass over every pair, cached in the run
(``evaluate/cache/layer_states-*.npz``). A lexical reference row needs no model: the share of the question's
word bigrams that occur in the passage.

Subsets: source labels only (own, hard, easy), + model rewrites, + rule perturbations (without swap),
+ swap, both, and on-topic negatives only (no other passages). ``--per-question`` caps the on-topic pairs
per question, drawn at random as ``ad.ontopic_negatives`` draws them.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

SOURCE = ("own", "hard", "easy")
RULES_NO_SWAP = ("rule_number", "rule_name", "rule_negation", "rule_entity")
SUBSETS = {
    "source labels only": SOURCE,
    "+ model rewrites": SOURCE + ("rewrite",),
    "+ rule perturbations": SOURCE + RULES_NO_SWAP,
    "+ rules and swap": SOURCE + RULES_NO_SWAP + ("rule_swap",),
    "both (rewrites, rules)": SOURCE + ("rewrite",) + RULES_NO_SWAP,
    "both and swap": SOURCE + ("rewrite",) + RULES_NO_SWAP + ("rule_swap",),
    "on-topic only (own, rewrites, rules, swap)": ("own", "rewrite") + RULES_NO_SWAP + ("rule_swap",),
}


def cap(examples: list[dict], kinds: tuple[str, ...], per_question: int, seed: int) -> list[dict]:
    """The examples of ``kinds``; at most ``per_question`` on-topic ones per question (0 = all)."""
    keep = [e for e in examples if e["kind"] in kinds]
    if not per_question:
        return keep
    rng = random.Random(seed)
    by_question: dict[str, list[int]] = {}
    for i, e in enumerate(keep):
        if e["kind"] not in SOURCE:
            by_question.setdefault(e["query_id"], []).append(i)
    drop = set()
    for idx in by_question.values():
        if len(idx) > per_question:
            drop.update(set(idx) - set(rng.sample(idx, per_question)))
    return [e for i, e in enumerate(keep) if i not in drop]


def bigram_overlap(question: str, passage: str) -> float:
    """Share of the question's word bigrams found in the passage (a label-free lexical reference)."""
    from skr_ray.tasks.ad.ontopic import words

    q, d = words(question), words(passage)  # the tokenization the on-topic rules use
    have = set(zip(d, d[1:]))
    grams = list(zip(q, q[1:]))
    return sum(g in have for g in grams) / max(1, len(grams))


def layer_states(cfg, queries: list[str], passages: list[str], layers: list[int], cache: Path) -> dict:
    """{'last': (N, layers, D), 'question_mean': (N, layers, D)} of the base model on the AD prompts (cached)."""
    import hashlib

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from skr_ray.models.backbone import load_backbone, set_threads
    from skr_ray.models.encoding import pad_left
    from skr_ray.tasks.ad.prompts import render_prompts

    key = hashlib.sha256(repr((cfg.model.name_or_path, cfg.ad.max_passage_tokens, layers, queries, passages))
                         .encode()).hexdigest()[:16]
    path = cache / f"layer_states-{key}.npz"
    if path.is_file():
        return dict(np.load(path))
    set_threads(cfg.model, 1)
    model, tok = load_backbone(cfg.model)
    model.eval()
    prompts = render_prompts(tok, queries, passages, cfg.ad.max_passage_tokens)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    starts = [len(tok(p[: p.rindex("\n\nQuestion: ")], add_special_tokens=False)["input_ids"]) for p in prompts]
    hidden = model.config.get_text_config().hidden_size
    last = np.zeros((len(ids), len(layers), hidden), np.float32)
    question_mean = np.zeros_like(last)
    order = np.argsort([len(i) for i in ids], kind="stable")  # similar lengths per pass: less padding
    for b in tqdm(range(0, len(ids), 16), desc="layer states", mininterval=10):
        idx = order[b : b + 16]
        batch = pad_left([ids[i] for i in idx], tok.pad_token_id)
        width = batch["input_ids"].shape[1]
        with torch.inference_mode():
            hs = model(**batch, output_hidden_states=True).hidden_states
        for r, i in enumerate(idx):
            first = width - len(ids[i]) + starts[i]
            for j, layer in enumerate(layers):
                last[i, j] = hs[layer][r, -1].float().numpy()
                question_mean[i, j] = hs[layer][r, first:].float().mean(0).numpy()
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, last=last, question_mean=question_mean)
    return {"last": last, "question_mean": question_mean}


def layer_study(cfg, art, train: list[dict], val: list[dict], pairs, labels, layers: list[int]) -> dict:
    """Logistic probes (standardized, C=0.05, balanced) per layer and pooling, on the self-labels of ``train``
    (source labels + rewrites + rules), scored on the evaluation pairs and on the own-vs-on-topic yardstick."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.preprocessing import StandardScaler

    examples = train + val
    self_states = layer_states(cfg, [e["query"] for e in examples], [e["passage"] for e in examples], layers,
                               art.embedding_cache)
    eval_states = layer_states(cfg, [p.query for p in pairs], [p.passage for p in pairs], layers,
                               art.embedding_cache)
    kinds = SUBSETS["both (rewrites, rules)"]
    fit = [i for i, e in enumerate(train) if e["kind"] in kinds]
    yard = [len(train) + i for i, e in enumerate(val) if e["kind"] not in ("hard", "easy")]
    y = np.asarray([e["label"] for e in examples])
    print(f"\nlayer study: logistic probe on {len(fit)} self-labelled pairs (source labels, rewrites, rules)")
    print("| pooling | layer | own vs on-topic val AUROC | eval AUROC | eval AUPRC |")
    print("|---|---|---|---|---|")
    out = {}
    for pooling in ("last", "question_mean"):
        for j, layer in enumerate(layers):
            x, x_eval = self_states[pooling][:, j], eval_states[pooling][:, j]
            scale = StandardScaler().fit(x[fit])
            probe = LogisticRegression(C=0.05, max_iter=2000, class_weight="balanced")
            probe.fit(scale.transform(x[fit]), y[fit])
            s_eval = probe.decision_function(scale.transform(x_eval))
            s_yard = probe.decision_function(scale.transform(x[yard]))
            row = {"ontopic_val_auroc": float(roc_auc_score(y[yard], s_yard)),
                   "auroc": float(roc_auc_score(labels, s_eval)), "auprc": float(average_precision_score(labels, s_eval))}
            out[f"{pooling}@{layer}"] = row
            print(f"| {pooling} | {layer} | {row['ontopic_val_auroc']:.3f} | {row['auroc']:.3f} | {row['auprc']:.3f} |")
    return out


def main() -> None:
    import numpy as np
    import torch

    from skr_ray.artifacts import Artifacts
    from skr_ray.config import load_config
    from skr_ray.ray_utils import ensure_ray
    from skr_ray.tasks.ad.metrics import classification_metrics
    from skr_ray.tasks.ad.pairs import read_eval_pairs
    from skr_ray.tasks.ad.probe import fit_head, self_label_states
    from skr_ray.tasks.ad.scoring import cached_score_pairs
    from skr_ray.tasks.ad.training import load_examples, resolve_pos_weight

    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--per-question", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=0, help="head epochs; 0 = evaluate.head_only_epochs")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--layers", default="", help="e.g. 6,14,18,30: the per-layer probe study")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.run / "annotate" / "config.yaml", [f"output_dir={args.run}", *args.overrides])
    art = Artifacts(cfg.output_dir)
    ensure_ray(cfg.ray)
    train, val = load_examples(cfg, art)
    x_tr, y_tr, x_va, y_va = self_label_states(cfg, art, train, val)  # cached: the same file head_only reads
    pairs = read_eval_pairs(cfg.data.eval, cfg.data.max_chars, cfg.evaluate.max_pairs, cfg.seed)
    labels = np.asarray([p.label for p in pairs])
    rows = [{"pair_id": p.pair_id, "query": p.query, "passage": p.passage} for p in pairs]
    dev = cached_score_pairs(rows, cfg, "states", None, art.embedding_cache, "base_states")
    x_dev = torch.tensor(np.asarray([r["state"] for r in dev]), dtype=torch.float32)
    epochs = args.epochs or cfg.evaluate.head_only_epochs
    print(f"{args.run}: {len(train)} train / {len(val)} validation self-labelled pairs; "
          f"{len(pairs)} evaluation pairs ({int(labels.sum())} positive); head {epochs} epochs, "
          f"on-topic per question: {args.per_question or 'all'}")
    print("| negatives | train pairs (on-topic) | self-label val AUROC | own vs on-topic val AUROC | eval AUROC "
          "| eval AUPRC |")
    print("|---|---|---|---|---|---|")
    out = {}
    index = {id(e): i for i, e in enumerate(train + val)}
    x_all, y_all = torch.cat([x_tr, x_va]), torch.cat([y_tr, y_va])

    def pick(examples: list[dict], rows: torch.Tensor) -> torch.Tensor:
        return rows[[index[id(e)] for e in examples]] if examples else rows[:0]

    # one label-free yardstick for every subset: the validation split's own passages (1) against all of its
    # on-topic variants (0), whichever subset the head was fitted on
    on_val = [e for e in val if e["kind"] not in ("hard", "easy")]
    x_ontopic = x_va[[index[id(e)] - len(train) for e in on_val]] if on_val else x_va[:0]
    y_ontopic = np.asarray([e["label"] for e in on_val])
    print(f"on-topic yardstick: {len(on_val)} validation pairs ({int(y_ontopic.sum())} own passages)")
    for name, kinds in SUBSETS.items():
        tr = cap(train, kinds, args.per_question, cfg.seed)
        va = cap(val, kinds, args.per_question, cfg.seed)
        if not tr or len({e["label"] for e in tr}) < 2:
            print(f"| {name} | {len(tr)} | – | – | – | – |")
            continue
        x_t, y_t = pick(tr, x_all), pick(tr, y_all)
        x_v, y_v = pick(va, x_all), pick(va, y_all)
        head, threshold, _ = fit_head(cfg, x_t, y_t, x_v, y_v, resolve_pos_weight(cfg, tr), epochs)
        with torch.no_grad():
            scores = torch.sigmoid(head(x_dev)).numpy()
            val_scores = torch.sigmoid(head(x_v)).numpy() if len(va) else None
            ontopic_scores = torch.sigmoid(head(x_ontopic)).numpy() if len(x_ontopic) else None
        m = classification_metrics(labels, scores, threshold)
        val_auroc = (classification_metrics(y_v.numpy(), val_scores, threshold).get("auroc")
                     if val_scores is not None and len(set(y_v.tolist())) == 2 else None)
        ontopic_auroc = (classification_metrics(y_ontopic, ontopic_scores, threshold).get("auroc")
                         if ontopic_scores is not None else None)
        ontopic = sum(e["kind"] not in SOURCE for e in tr)
        out[name] = {"train_pairs": len(tr), "ontopic": ontopic, "val_auroc": val_auroc,
                     "ontopic_val_auroc": ontopic_auroc, "auroc": m["auroc"], "auprc": m["auprc"]}
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {name} | {len(tr)} ({ontopic}) | {fmt(val_auroc)} | {fmt(ontopic_auroc)} | {fmt(m['auroc'])} "
              f"| {fmt(m['auprc'])} |")
    from sklearn.metrics import average_precision_score, roc_auc_score

    lexical = np.asarray([bigram_overlap(p.query, p.passage) for p in pairs])
    row = out["lexical: question bigrams in the passage"] = {"auroc": float(roc_auc_score(labels, lexical)),
                                                             "auprc": float(average_precision_score(labels, lexical))}
    print(f"| lexical reference: share of the question's bigrams in the passage (no model) | – | – | – | "
          f"{row['auroc']:.3f} | {row['auprc']:.3f} |")
    if args.layers:
        out["layer_study"] = layer_study(cfg, art, train, val, pairs, labels, [int(v) for v in args.layers.split(",")])
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
