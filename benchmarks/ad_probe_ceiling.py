"""How far can the base model's states separate answerable from on-topic unanswerable pairs at all?

A diagnostic, never a system: it fits logistic probes on the **evaluation labels themselves**, cross-validated
by article (``GroupKFold``: a probe never sees the article it scores), and reports the out-of-fold AUROC and
AUPRC per layer and pooling. That is the ceiling a linear head on frozen states reaches with as many human
labels as the evaluation set has; a self-labelled head (head-only, or the probe SKR starts from) cannot expect
more from the same states. Nothing here writes a checkpoint or reaches training.

    python benchmarks/ad_probe_ceiling.py -c configs/squad_adv_ad.yaml --layers 6,10,14,18,22,30 [key=value ...]

With ``--lora`` it instead trains the SKR model itself (LoRA on the top ``train.lora_layers`` of the
``ad.head_layer`` kept layers, plus the AD head; ``train.*`` settings) on the evaluation labels of all but one
group of articles and scores the held-out group after every epoch (``--lora-folds``, default 2): the ceiling of
re-expression with human labels instead of self-labels. In-process, one CPU run per fold; nothing is saved.

Rows: the final token and the question-token mean at each layer (the states of
``benchmarks/ad_ontopic_ablation.py``, cached under ``--cache``), and a lexical row (a probe on the question's
unigram/bigram coverage by the passage, no model) for scale.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ad_ontopic_ablation import bigram_overlap, layer_states  # noqa: E402


def lexical_features(question: str, passage: str) -> list[float]:
    """Label-free overlap features: unigram and bigram coverage of the question by the passage, length."""
    from skr_ray.tasks.ad.ontopic import words

    q, d = words(question), set(words(passage))
    unigram = sum(w in d for w in q) / max(1, len(q))
    missing = sum(w not in d for w in q)
    return [unigram, bigram_overlap(question, passage), float(missing), float(len(q))]


def cv_scores(x, y, groups, folds: int, c: float):
    """Out-of-fold decision values of a standardized, class-balanced logistic probe (GroupKFold)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.zeros(len(y))
    for tr, te in GroupKFold(n_splits=folds).split(x, y, groups):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced"))
        probe.fit(x[tr], y[tr])
        out[te] = probe.decision_function(x[te])
    return out


def lora_ceiling(cfg, pairs, y, groups, folds: int) -> dict:
    """Out-of-fold scores of LoRA + head trained on the evaluation labels, after each epoch (see the docstring)."""
    import random

    import numpy as np
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import GroupKFold
    from tqdm.auto import tqdm

    from skr_ray.models.backbone import load_backbone, set_threads
    from skr_ray.models.checkpoint import add_lora
    from skr_ray.models.heads import make_classifier_head
    from skr_ray.tasks.ad.training import _forward, batch_loss, resolve_pos_weight
    from skr_ray.train.loop import ReexpressionModel

    examples = [{"query": p.query, "passage": p.passage, "label": int(p.label)} for p in pairs]
    epochs, bs = cfg.train.epochs, cfg.train.batch_size
    scores = np.zeros((epochs, len(y)))
    set_threads(cfg.model, 1)
    for fold, (tr, te) in enumerate(GroupKFold(n_splits=folds).split(np.zeros(len(y)), y, groups)):
        torch.manual_seed(cfg.seed + fold)
        backbone, tok = load_backbone(cfg.model, layers=cfg.ad.head_layer)
        backbone = add_lora(backbone, cfg.train)
        head = make_classifier_head(backbone.config.get_text_config().hidden_size,
                         {"hidden": cfg.ad.head_hidden, "input_norm": cfg.ad.head_input_norm})
        model = ReexpressionModel(backbone, head, group_by_length=True)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        train = [examples[i] for i in tr]
        info = {"pos_weight": resolve_pos_weight(cfg, train)}  # the recipe's: ad.pos_weight, or negatives/positives
        held = sorted(te, key=lambda i: len(examples[i]["passage"]))  # similar lengths per pass
        rng = random.Random(cfg.seed + fold)
        for epoch in range(epochs):
            model.train()
            rng.shuffle(train)
            losses = []
            for b in tqdm(range(0, len(train) - bs + 1, bs), desc=f"fold {fold} epoch {epoch}", mininterval=30):
                loss = batch_loss(model, tok, train[b : b + bs], cfg, "cpu", info)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            model.eval()
            with torch.no_grad():
                for b in range(0, len(held), bs):
                    idx = held[b : b + bs]
                    out = _forward(model, tok, [examples[i] for i in idx], cfg, "cpu")
                    scores[epoch, idx] = out.float().reshape(-1).numpy()
            m = (roc_auc_score(y[te], scores[epoch, te]), average_precision_score(y[te], scores[epoch, te]))
            print(f"fold {fold} epoch {epoch}: train loss {np.mean(losses):.3f}; held-out fold "
                  f"({len(te)} pairs, {int(y[te].sum())} positive) AUROC {m[0]:.3f} AUPRC {m[1]:.3f}", flush=True)
    out = {}
    print("| LoRA + head on the evaluation labels | layers | epoch | out-of-fold AUROC | out-of-fold AUPRC |")
    print("|---|---|---|---|---|")
    for epoch in range(epochs):
        row = {"auroc": float(roc_auc_score(y, scores[epoch])), "auprc": float(average_precision_score(y, scores[epoch]))}
        out[f"lora@{cfg.ad.head_layer}@epoch{epoch + 1}"] = row
        print(f"| {folds}-fold by article | {cfg.ad.head_layer or 'all'} | {epoch + 1} | {row['auroc']:.3f} "
              f"| {row['auprc']:.3f} |", flush=True)
    return out


def main() -> None:
    import numpy as np

    from skr_ray.config import load_config
    from skr_ray.tasks.ad.pairs import read_eval_pairs

    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--layers", default="6,10,14,18,22,30")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--c", default="0.01,0.05,0.2", help="probe strengths; each is reported")
    parser.add_argument("--cache", type=Path, default=Path("runs/ceiling_cache"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--lora", action="store_true", help="train LoRA + head per fold instead of probes")
    parser.add_argument("--lora-folds", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config, args.overrides)
    layers = [int(v) for v in args.layers.split(",")]
    pairs = read_eval_pairs(cfg.data.eval, cfg.data.max_chars, cfg.evaluate.max_pairs, cfg.seed)
    y = np.asarray([p.label for p in pairs])
    groups = np.asarray([p.doc_id.rsplit("-", 1)[0] for p in pairs])  # the article: no leak across paragraphs
    folds = args.lora_folds if args.lora else args.folds
    what = "LoRA + head trained" if args.lora else "probes fitted"
    print(f"{cfg.data.eval}: {len(pairs)} pairs ({int(y.sum())} positive), {len(set(groups))} articles, "
          f"{folds}-fold by article; {what} on the evaluation labels (a ceiling, not a system)")
    out = lora_ceiling(cfg, pairs, y, groups, folds) if args.lora else probe_ceiling(args, cfg, pairs, y, groups, layers)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))


def probe_ceiling(args, cfg, pairs, y, groups, layers: list[int]) -> dict:
    """Out-of-fold AUROC/AUPRC of logistic probes: the lexical row, then each pooling and layer."""
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    print("| features | layer | C | out-of-fold AUROC | out-of-fold AUPRC |")
    print("|---|---|---|---|---|")
    out = {}

    def report(name: str, layer, x) -> None:
        for c in [float(v) for v in args.c.split(",")]:
            s = cv_scores(x, y, groups, args.folds, c)
            row = {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s))}
            out[f"{name}@{layer}@C={c}"] = row
            print(f"| {name} | {layer} | {c} | {row['auroc']:.3f} | {row['auprc']:.3f} |", flush=True)

    lex = np.asarray([lexical_features(p.query, p.passage) for p in pairs])
    report("lexical overlap (no model)", "–", lex)
    states = layer_states(cfg, [p.query for p in pairs], [p.passage for p in pairs], layers, args.cache)
    for pooling in ("last", "question_mean"):
        for j, layer in enumerate(layers):
            report(pooling, layer, states[pooling][:, j])
    return out


if __name__ == "__main__":
    main()
