"""`skr_bm25`: SKR's and BM25's rankings fused per query by a rule no human label chooses.

The fusing is ranx's (its normalizations, weighted sum and reciprocal-rank fusion) on each system's top
``FUSION_DEPTH`` candidates per query, as hybrid search engines do, computed on arrays (:class:`Fuser`). Rules (``evaluate.fusion``):

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


def _top_mask(scores: np.ndarray, depth: int) -> np.ndarray:
    """(Q, N) bool: each row's top ``depth`` columns (the candidates a system brings to the fusion)."""
    depth = min(depth, scores.shape[1])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask


def _normalized(scores: np.ndarray, mask: np.ndarray, norm: str) -> np.ndarray:
    """Per query, ``norm`` of the scores in ``mask`` (0 elsewhere: a candidate a system did not bring adds
    nothing), as ranx's ``min-max`` and ``zmuv`` normalizations compute it (denominators floored at 1e-9)."""
    x = np.where(mask, scores.astype(np.float64), np.nan)
    if norm == "min-max":
        low, high = np.nanmin(x, axis=1, keepdims=True), np.nanmax(x, axis=1, keepdims=True)
        out = (x - low) / np.maximum(high - low, 1e-9)
    elif norm == "zmuv":
        out = (x - np.nanmean(x, axis=1, keepdims=True)) / np.maximum(np.nanstd(x, axis=1, keepdims=True), 1e-9)
    else:
        raise ValueError(f"unknown normalization {norm!r}; known: {NORMALIZATIONS}")
    return np.nan_to_num(out, nan=0.0)


def _rrf_terms(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """1 / (k + rank) of each candidate in ``mask`` (rank 1 = the row's best; ties by column), 0 elsewhere."""
    order = np.argsort(np.where(mask, -scores.astype(np.float64), np.inf), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None, :].repeat(len(scores), 0), axis=1)
    return np.where(mask, 1.0 / (k + ranks), 0.0)


def _finish(fused: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Candidates outside both top lists share one finite score below every fused one (ranked after them, tied
    among themselves; finite, so run files and metrics stay plain numbers)."""
    floor = (fused[union].min() if union.any() else 0.0) - 1.0
    return np.where(union, fused, floor)


class Fuser:
    """SKR's and BM25's (Q, N) scores, prepared once (each system's top ``depth`` candidates per query, their
    normalizations and reciprocal ranks), then fused under any rule in a few array operations: the weight curve
    and the self-labelled choice fuse the same scores dozens of times.

    The arithmetic is ranx's ``fuse`` (``wsum`` after ``min-max`` or ``zmuv``, and ``rrf``) on the two systems'
    top lists; tests/unit/test_ir_levers.py checks it against ranx itself. It is written out on arrays because
    ranx compiles its numba functions in every new process (10-25 s on 2 cores, half of the demo's evaluation)
    and converts every run to typed dictionaries (about a minute for one weight curve over TAT-QA's test set)."""

    def __init__(self, dense: np.ndarray, bm25: np.ndarray, depth: int = FUSION_DEPTH) -> None:
        self.dense, self.bm25 = dense.astype(np.float64), bm25.astype(np.float64)
        self.masks = _top_mask(dense, depth), _top_mask(bm25, depth)
        self.union = self.masks[0] | self.masks[1]
        self._norm: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, rule: dict[str, Any]) -> np.ndarray:
        if rule["method"] == "rrf":
            k = int(rule.get("k", RRF_K))
            fused = _rrf_terms(self.dense, self.masks[0], k) + _rrf_terms(self.bm25, self.masks[1], k)
            return _finish(fused, self.union)
        w = float(rule["weight"])
        if w in (0.0, 1.0):  # one system alone: its own ranking
            return self.dense if w == 1.0 else self.bm25
        norm = rule["norm"]
        if norm not in self._norm:
            self._norm[norm] = (_normalized(self.dense, self.masks[0], norm), _normalized(self.bm25, self.masks[1], norm))
        a, b = self._norm[norm]
        return _finish(w * a + (1.0 - w) * b, self.union)


def fused_scores(dense: np.ndarray, bm25: np.ndarray, rule: dict[str, Any], depth: int = FUSION_DEPTH) -> np.ndarray:
    """(Q, N) SKR and BM25 scores -> (Q, N) fused scores under ``rule`` ({'method': 'rrf'} or {'method': 'wsum',
    'norm', 'weight'}; see :class:`Fuser`)."""
    return Fuser(dense, bm25, depth)(rule)


def compile_ranx() -> None:
    """Run ranx's numba functions that the report checks use (tests, and users recomputing a report from its run
    files or comparing a fusion with ranx's) once on a toy run, so that numba compiles them into its on-disk cache
    now (``make install``) rather than in a user's first check."""
    from ranx import Qrels, Run, evaluate, fuse

    from skr_ray.evaluate.report import write_qrels, write_run

    dense = np.array([[0.9, 0.5, 0.1], [0.2, 0.4, 0.3]])
    metrics = ["mrr", "hit_rate@1", "hit_rate@10"]
    run = Run.from_dict({f"q{i}": {f"d{j}": float(dense[i, j]) for j in range(3)} for i in range(2)}, name="skr")
    evaluate(Qrels({"q0": {"d0": 1}, "q1": {"d1": 1}}), run, metrics, make_comparable=True)
    # and ranx's fusion, which a user (and the test of Fuser) compares the array fusion with
    other = Run.from_dict({f"q{i}": {f"d{j}": float(1 - dense[i, j]) for j in range(3)} for i in range(2)}, name="bm25")
    fuse([run, other], method="rrf", params={"k": 60})
    for norm in ("min-max", "zmuv"):
        fuse([run, other], norm=norm, method="wsum", params={"weights": [0.5, 0.5]})
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

    The scores are prepared once (:class:`Fuser`); only the fusion is repeated."""
    fuse = Fuser(dense, bm25, depth)
    curve: dict[str, Any] = {"weights": list(WEIGHTS)}
    for norm in NORMALIZATIONS:
        curve[norm] = [mrr(fuse({"method": "wsum", "norm": norm, "weight": w})) for w in WEIGHTS]
    curve["rrf"] = mrr(fuse({"method": "rrf"}))
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
