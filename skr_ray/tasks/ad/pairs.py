"""(question, passage) pairs: built from IR self-annotations for training, read from labelled files for evaluation.

Training pairs carry no human label: each self-written question is paired with its own passage
and with other passages (hard: nearest by BM25; easy: random); the base model then judges them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from skr_ray.config import DEMO_DATA
from skr_ray.corpus import CorpusError, demo_dir, iter_jsonl


@dataclass(frozen=True)
class QAPair:
    pair_id: str
    query_id: str
    query: str
    doc_id: str
    passage: str
    kind: str  # own | hard | easy | rewrite | rule_* (training pairs); test (evaluation pairs)
    label: int = -1  # evaluation label; -1 for unlabelled training pairs


def _pair_id(query_id: str, doc_id: str) -> str:
    return hashlib.sha1(f"{query_id}\x1f{doc_id}".encode()).hexdigest()[:16]


def build_pairs(
    questions: list[tuple[str, str]],
    corpus: dict[str, str],
    hard: int,
    easy: int,
    seed: int,
    search: dict[str, str] | None = None,
    ontopic: list[tuple[int, str, str]] | None = None,
    ontopic_per_question: int = 0,
) -> list[QAPair]:
    """questions: (source doc id, question) -> own pair + ``hard`` BM25 neighbours + ``easy`` random docs.

    BM25 ranks the question against every passage except its source (against ``search[doc]`` instead of the
    passage when given: image documents are searched by their OCR text); random negatives are drawn
    from what is left, so a passage appears at most once per question. ``ontopic`` (question index, kind,
    text) adds up to ``ontopic_per_question`` of each question's on-topic variants, paired with its own passage.
    """
    import numpy as np

    from skr_ray.evaluate.baselines import bm25_scores

    doc_ids = sorted(corpus)
    index = {d: i for i, d in enumerate(doc_ids)}
    missing = [d for d, _ in questions if d not in index]
    if missing:
        raise CorpusError(f"self-labelled question points to doc id {missing[0]!r}, which is not in the corpus")
    texts = search if search is not None else corpus
    scores = bm25_scores([q for _, q in questions], [texts[d] for d in doc_ids]) if hard else None
    rng = random.Random(seed)
    by_question: dict[int, list[tuple[str, str]]] = {}
    for index, kind, text in ontopic or []:
        by_question.setdefault(index, []).append((kind, text))
    pairs: list[QAPair] = []
    for row, (doc_id, question) in enumerate(questions):
        qid = f"{doc_id}#{row}"
        chosen = [(doc_id, "own")]
        taken = {doc_id}
        if scores is not None:
            for j in np.argsort(-scores[row], kind="stable"):
                if len([c for c in chosen if c[1] == "hard"]) >= hard:
                    break
                if doc_ids[j] not in taken:
                    chosen.append((doc_ids[j], "hard"))
                    taken.add(doc_ids[j])
        pool = [d for d in doc_ids if d not in taken]
        for d in rng.sample(pool, min(easy, len(pool))):
            chosen.append((d, "easy"))
        for d, kind in chosen:
            pairs.append(QAPair(_pair_id(qid, d), qid, question, d, corpus[d], kind))
        variants = by_question.get(row, [])
        for k, (kind, text) in enumerate(rng.sample(variants, min(ontopic_per_question, len(variants)))):
            vid = f"{qid}~{kind}{k}"
            pairs.append(QAPair(_pair_id(vid, doc_id), vid, text, doc_id, corpus[doc_id], kind))
    return pairs


def read_questions(labels_dir: Path, drop_duplicates: bool = True) -> list[tuple[str, str]]:
    """Usable IR self-labels of kind question as (doc id, question)."""
    from skr_ray.tasks.ir.pairs import load_pairs

    return [(p.doc_id, p.query) for p in load_pairs(labels_dir, drop_duplicates) if p.kind == "question"]


def read_eval_pairs(spec: str, max_chars: int, max_pairs: int = 0, seed: int = 0, images: bool = False) -> list[QAPair]:
    """Labelled pairs from ``answerability.jsonl`` in a BEIR dir; doc ids must exist in corpus.jsonl.

    ``images``: the documents are images (``matching.jsonl`` when present, corpus rows ``{"_id", "image"}``);
    each pair's passage is then the image's path.

    ``max_pairs`` keeps a seeded subsample with the same class ratio.
    """
    root = demo_dir() if spec == DEMO_DATA else Path(spec).expanduser().resolve()
    if images:  # (question, image) pairs: matching.jsonl rows name their image (the charts' layout)
        path = root / "matching.jsonl" if (root / "matching.jsonl").is_file() else root / "answerability.jsonl"
    else:
        path = root / "answerability.jsonl"
    if not path.is_file():
        raise CorpusError(f"evaluation file not found: {path} (AD needs labelled query-passage pairs)")
    corpus_path = root / "corpus.jsonl"
    if not corpus_path.is_file():
        raise CorpusError(f"evaluation file not found: {corpus_path}")
    if images:
        corpus = {str(r["_id"]): str(root / str(r["image"])) for _, r in iter_jsonl(corpus_path, ("_id", "image"))}
    else:
        corpus = {str(r["_id"]): str(r["text"])[:max_chars] for _, r in iter_jsonl(corpus_path)}
    pairs = []
    for line_no, row in iter_jsonl(path, fields=("query_id", "query", "doc_id", "label")):
        doc_id = str(row["doc_id"])
        if images and doc_id not in corpus and "image" in row:
            corpus[doc_id] = str(root / str(row["image"]))
        if doc_id not in corpus:
            raise CorpusError(f"{path}:{line_no}: doc_id {doc_id!r} is not in {corpus_path}")
        if row["label"] not in (0, 1, True, False):
            raise CorpusError(f"{path}:{line_no}: field 'label' must be 0 or 1, got {row['label']!r}")
        qid = str(row["query_id"])
        pairs.append(QAPair(_pair_id(qid, doc_id), qid, str(row["query"]), doc_id, corpus[doc_id], "test",
                            int(row["label"])))
    if not pairs:
        raise CorpusError(f"{path} is empty")
    if max_pairs and max_pairs < len(pairs):
        rng = random.Random(seed)
        pos = [p for p in pairs if p.label == 1]
        neg = [p for p in pairs if p.label == 0]
        n_pos = max(1, round(max_pairs * len(pos) / len(pairs))) if pos else 0
        pairs = rng.sample(pos, min(n_pos, len(pos))) + rng.sample(neg, min(max_pairs - n_pos, len(neg)))
        pairs.sort(key=lambda p: p.pair_id)
    return pairs
