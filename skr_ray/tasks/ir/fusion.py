"""`skr_bm25`: SKR's and BM25's rankings fused per query by a rule no human label chooses.

ranx does the fusing (its normalizations, weighted sum and reciprocal-rank fusion) on each system's top
``FUSION_DEPTH`` candidates per query, as hybrid search engines do. Rules (``evaluate.fusion``):

- ``rrf``: reciprocal-rank fusion (Cormack et al. 2009, k = 60), equal weights: no parameter at all; it only reads
  ranks, so neither system's score scale matters, but it gives a much weaker system an equal say.
- ``selfval`` (the default): the weighted sum (min-max or z-score normalized) or RRF that ranks best for the
  self-labelled validation split's questions searched among the whole unlabeled corpus. On the demo and TAT-QA's
  dev split it never fell below the better of its two parts, where RRF lost to BM25 on the demo and choosing among
  the held-out passages only left the choice to ties (docs/results.md has the curves).

The system needs the corpus' BM25 index, so it lives on the search side (evaluation), not in an embedding.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FUSION_RULES = ("rrf", "selfval")
NORMALIZATIONS = ("min-max", "zmuv")
WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))
FUSION_DEPTH = 100
"""Candidates per query and system that enter the fusion (the rest of the corpus ranks after them)."""
RRF_K = 60


def to_run(scores: np.ndarray, name: str, depth: int = FUSION_DEPTH) -> Any:
    """(Q, N) scores -> ranx Run of each row's top ``depth`` columns (query ids 'q<row>', doc ids 'd<col>')."""
    from ranx import Run

    depth = min(depth, scores.shape[1])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]  # (Q, depth), unordered
    run = {f"q{i}": {f"d{j}": float(scores[i, j]) for j in row} for i, row in enumerate(top)}
    return Run.from_dict(run, name=name)


def _to_matrix(run: Any, shape: tuple[int, int]) -> np.ndarray:
    """ranx Run -> (Q, N) scores; candidates outside the fused lists share one finite score below every fused one
    (ranked after them, tied among themselves; finite, so run files and metrics stay plain numbers)."""
    fused = run.to_dict()
    floor = min((s for docs in fused.values() for s in docs.values()), default=0.0) - 1.0
    out = np.full(shape, floor)
    for q, docs in fused.items():
        row = int(q[1:])
        for d, s in docs.items():
            out[row, int(d[1:])] = s
    return out


def fuse_runs(dense: Any, bm25: Any, rule: dict[str, Any]) -> Any:
    """Two ranx Runs -> the fused Run under ``rule`` ({'method': 'rrf'} or {'method': 'wsum', 'norm', 'weight'})."""
    from ranx import fuse

    if rule["method"] == "rrf":
        return fuse([dense, bm25], method="rrf", params={"k": int(rule.get("k", RRF_K))})
    w = float(rule["weight"])
    return fuse([dense, bm25], norm=rule["norm"], method="wsum", params={"weights": [w, 1.0 - w]})


def fused_scores(dense: np.ndarray, bm25: np.ndarray, rule: dict[str, Any], depth: int = FUSION_DEPTH,
                 runs: tuple[Any, Any] | None = None) -> np.ndarray:
    """(Q, N) SKR and BM25 scores -> (Q, N) fused scores under ``rule``. ``runs``: their ranx Runs, when the
    caller fuses the same scores under several rules and builds them once."""
    if rule["method"] == "wsum" and float(rule["weight"]) in (0.0, 1.0):  # one system alone: its own ranking
        return (dense if float(rule["weight"]) == 1.0 else bm25).astype(np.float64)
    runs = runs or (to_run(dense, "skr", depth), to_run(bm25, "bm25", depth))
    return _to_matrix(fuse_runs(*runs, rule), dense.shape)


def compile_ranx() -> None:
    """Run ranx's numba functions that fusion and report checks use once on a toy run, so that numba compiles
    them into its on-disk cache now (``make install``) rather than in a user's first evaluation: about a minute
    on 2 cores, then a few seconds per process."""
    from ranx import Qrels, Run, evaluate

    from skr_ray.evaluate.report import write_qrels, write_run

    dense, bm25 = np.array([[0.9, 0.5, 0.1], [0.2, 0.4, 0.3]]), np.array([[0.0, 2.0, 1.0], [1.0, 3.0, 2.0]])
    runs = to_run(dense, "skr", 3), to_run(bm25, "bm25", 3)
    fused_scores(dense, bm25, {"method": "rrf"}, runs=runs)
    for norm in NORMALIZATIONS:
        fused_scores(dense, bm25, {"method": "wsum", "norm": norm, "weight": 0.5}, runs=runs)
    metrics = ["mrr", "hit_rate@1", "hit_rate@10"]
    evaluate(Qrels({"q0": {"d0": 1}, "q1": {"d1": 1}}), runs[0], metrics, make_comparable=True)
    with tempfile.TemporaryDirectory() as tmp:  # and the TREC files evaluation writes, read back
        qrels = {"q0": {"d0"}, "q1": {"d1", "d2"}}
        write_run(Path(tmp) / "run.trec", dense, ["q0", "q1"], ["d0", "d1", "d2"], qrels, "skr")
        write_qrels(Path(tmp) / "qrels.txt", qrels, ["q0", "q1"])
        evaluate(Qrels.from_file(f"{tmp}/qrels.txt"), Run.from_file(f"{tmp}/run.trec"), metrics, make_comparable=True)


def mrr_of(scores: np.ndarray, gold: np.ndarray) -> float:
    """MRR of ``gold`` (each row's one relevant column); ties rank pessimistically."""
    own = scores[np.arange(len(gold)), gold]
    ranks = (scores >= own[:, None]).sum(axis=1)
    return float(np.mean(1.0 / ranks))


def fusion_curve(dense: np.ndarray, bm25: np.ndarray, mrr: Any, depth: int = FUSION_DEPTH) -> dict[str, Any]:
    """``mrr(fused scores)`` for every weight of each normalization and for RRF: how much the weight matters.

    Both runs are built once; only the fusion is repeated."""
    runs = (to_run(dense, "skr", depth), to_run(bm25, "bm25", depth))
    curve: dict[str, Any] = {"weights": list(WEIGHTS)}
    for norm in NORMALIZATIONS:
        curve[norm] = [mrr(fused_scores(dense, bm25, {"method": "wsum", "norm": norm, "weight": w}, runs=runs))
                       for w in WEIGHTS]
    curve["rrf"] = mrr(fused_scores(dense, bm25, {"method": "rrf"}, runs=runs))
    return curve


def choose_rule(how: str, dense: np.ndarray | None = None, bm25: np.ndarray | None = None,
                gold: np.ndarray | None = None) -> dict[str, Any]:
    """The fusion rule for ``evaluate.fusion``; ``selfval`` picks it on the self-labelled validation scores
    (``dense``/``bm25`` of its questions against its passages, ``gold`` the column of each question's own).
    Ties go to RRF (no parameter), then to the larger SKR weight."""
    if how == "rrf" or dense is None or len(dense) < 2:
        return {"method": "rrf", "k": RRF_K, "chosen_by": "fixed rule (no parameter)"}
    if how != "selfval":
        raise ValueError(f"unknown fusion rule {how!r}; known: {FUSION_RULES}")
    curve = fusion_curve(dense, bm25, lambda s: mrr_of(s, gold))
    candidates = [(curve["rrf"], 2, 0.0, {"method": "rrf", "k": RRF_K})]
    for norm in NORMALIZATIONS:
        candidates += [(v, 1, w, {"method": "wsum", "norm": norm, "weight": w}) for w, v in zip(WEIGHTS, curve[norm])]
    best = max(candidates, key=lambda c: c[:3])
    return {**best[3], "chosen_by": "self-labelled validation", "validation_mrr": best[0],
            "validation_mrr_dense": curve[NORMALIZATIONS[0]][-1], "validation_mrr_bm25": curve[NORMALIZATIONS[0]][0],
            "validation_curve": curve}


def describe(rule: dict[str, Any]) -> str:
    """One line for the report."""
    if rule["method"] == "rrf":
        return f"reciprocal-rank fusion (k = {rule.get('k', RRF_K)}, equal weights)"
    w = float(rule["weight"])
    return f"{w:.2f} x SKR + {1 - w:.2f} x BM25, {rule['norm']}-normalized per query"


def validation_texts(cfg: Any, art: Any) -> tuple[list[str], list[str], list[int]] | None:
    """(queries, passages, gold column per query) for choosing the rule: the self-labelled validation split's
    questions (the form users search with; every kind when no question was kept) against the whole unlabeled
    corpus. Searched among every passage, as a user's question is, rather than among the handful of held-out
    ones (where both systems find nearly everything and the choice is left to ties)."""
    from skr_ray.tasks.ir.pairs import label_corpus, load_pairs, split_pairs

    _, val = split_pairs(load_pairs(art.labels_dir, cfg.annotate.drop_duplicates), cfg.train.val_fraction,
                         cfg.train.seed)
    questions = [p for p in val if p.kind == "question"]
    questions = questions if len(questions) >= 2 else val
    docs = sorted(label_corpus(art.labels_dir).items())
    if len(questions) < 2 or len(docs) < 2:
        return None
    column = {d: i for i, (d, _) in enumerate(docs)}
    return [p.query for p in questions], [t for _, t in docs], [column[p.doc_id] for p in questions]
