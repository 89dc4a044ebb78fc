"""On-topic negatives: questions about a passage that the passage does not answer, made without any human label.

Source self-labels (a question is answerable from the passage it was written for, not from others) only ever
show the head *other* passages as negatives, so it learns topic match. What a RAG guard needs is the other case:
the right passage, a question it does not answer. Two label-free sources make such pairs from each self-written
question and its own passage:

* **model rewrites** (``rewrite``): the annotator rewrites the question so that its passage no longer answers it
  (a changed name, number, date or attribute). A rewrite is kept only when a label-free check holds: it differs
  from the original, it is still a question, and what it changed (its new names, numbers and words) does not
  occur in the passage. Every dropped rewrite keeps its status.
* **rule perturbations**: ``number`` swaps a number or year of the question for one from other passages that
  this passage does not contain; ``name`` swaps a capitalised name likewise; ``negation`` negates the question's
  auxiliary ("was" -> "was not"); ``entity`` asks the question about another passage's entity in place of the
  passage's own subject; ``swap`` puts another name or number *of the same passage* in place of one the
  question has (a year for a year), so every word of the question is still the passage's while the relation
  it asks about is one the passage does not state -- the kind of negative crowd workers write (an entity swap).
  Unlike the other rules its label can be wrong (when the passage says the same of both), so it is a setting.

Each pair records which source made it (its ``kind``); the label of every on-topic pair is 0.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from skr_ray.config import AD_RULES

REWRITE_PROMPT_VERSION = "ad-ontopic-rewrite-v1"
REWRITE_FEWSHOT_PROMPT_VERSION = "ad-ontopic-rewrite-v1-fewshot"
ONTOPIC_KINDS = ("rewrite", *(f"rule_{r}" for r in AD_RULES))

STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or but is are was were be been being do does did has have had "
    "what which who whom whose when where why how that this these those it its as than then there their they he she "
    "his her him them we you your our i not no yes can could will would shall should may might must about into "
    "over under after before during between per each any all some more most many much one two three".split())
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w.])")
NAME = re.compile(r"\b[A-Z][a-zA-Z'\-]+(?:\s+[A-Z][a-zA-Z'\-]+)*")
AUXILIARY = re.compile(r"\b(is|are|was|were|does|do|did|has|have|had|can|could|will|would|should|may|might)\b",
                       re.IGNORECASE)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:[.,][0-9]+)*", text.lower())


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOPWORDS}


def is_question(text: str) -> bool:
    text = text.strip()
    return text.endswith("?") and 3 <= len(text.split()) <= 40


def _names(text: str) -> list[str]:
    """Capitalised names, the question's first word left out unless it continues into a longer name."""
    out = []
    for m in NAME.finditer(text):
        name = m.group(0)
        if m.start() == 0 and " " not in name:
            continue
        if m.start() == 0:  # "What" / "When" ... opens the question: drop the first word
            name = name.split(" ", 1)[1]
        if name.lower() not in STOPWORDS:
            out.append(name)
    return out


def check_rewrite(original: str, rewrite: str, passage: str) -> str:
    """'ok', or why a model rewrite is dropped (label-free: only the question, the rewrite and the passage)."""
    rewrite = rewrite.strip()
    if not rewrite:
        return "empty"
    if not is_question(rewrite):
        return "not_a_question"
    if content_words(rewrite) == content_words(original):
        return "unchanged"
    new = content_words(rewrite) - content_words(original)
    if not new:
        return "nothing_new"  # only dropped words: the passage may still answer it
    in_passage = content_words(passage)
    new_specifics = {w for w in new if any(c.isdigit() for c in w)} | {
        w for name in _names(rewrite) for w in content_words(name) if w not in content_words(original)}
    if new_specifics & in_passage or not (new - in_passage):
        return "change_in_passage"  # the changed detail is one the passage has: it may answer the rewrite
    kept = content_words(original) & content_words(rewrite)
    if len(kept) < max(1, len(content_words(original)) // 3):
        return "off_topic"  # a different question altogether, not an on-topic edit
    return "ok"


@dataclass
class Pools:
    """Numbers and names of the whole corpus, to draw replacements from."""

    numbers: list[str]
    years: list[str]
    names: list[str]

    @classmethod
    def of(cls, passages: dict[str, str]) -> "Pools":
        numbers: Counter = Counter()
        names: Counter = Counter()
        for text in passages.values():
            numbers.update(NUMBER.findall(text))
            names.update(n for n in _names(text) if len(n) > 2)
        years = sorted(n for n in numbers if _is_year(n))
        return cls(sorted(n for n in numbers if n not in years), years, sorted(names))


def _is_year(number: str) -> bool:
    return re.fullmatch(r"1[5-9]\d\d|20\d\d", number) is not None


def _replace_number(question: str, old: str, new: str) -> str:
    return re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w.])", new, question, count=1)


def _swap_in_passage(question: str, passage: str, rng: random.Random) -> tuple[str, str]:
    """Another name or number of this passage in place of one of the question's (which the passage has)."""
    passage_lower = passage.lower()
    found = [("name", n) for n in _names(question) if n.lower() in passage_lower]
    found += [("number", n) for n in NUMBER.findall(question) if n in passage]
    if not found:
        return "", "no_name"
    kind, old = rng.choice(found)
    if kind == "name":
        options = sorted({n for n in _names(passage) if len(n) > 2 and n not in question
                          and n.lower() not in old.lower() and old.lower() not in n.lower()})
    else:
        options = sorted({n for n in NUMBER.findall(passage) if n != old and n not in question
                          and _is_year(n) == _is_year(old)})
    if not options:
        return "", "no_replacement"
    new = rng.choice(options)
    return (question.replace(old, new, 1) if kind == "name" else _replace_number(question, old, new)), "ok"


def perturb(rule: str, question: str, passage: str, pools: Pools, rng: random.Random) -> tuple[str, str]:
    """(perturbed question, 'ok') or ('', why not) for one rule."""
    passage_lower = passage.lower()
    if rule == "swap":
        return _swap_in_passage(question, passage, rng)
    if rule == "number":
        found = NUMBER.findall(question)
        if not found:
            return "", "no_number"
        old = rng.choice(found)
        pool = pools.years if _is_year(old) else pools.numbers
        options = [n for n in pool if n != old and n not in passage]
        if not options:
            return "", "no_replacement"
        return _replace_number(question, old, rng.choice(options)), "ok"
    if rule in ("name", "entity"):
        found = _names(question)
        if rule == "entity":  # the passage's own subject: its most frequent name that the question mentions
            subject = Counter(n for n in _names(passage) if n in question).most_common(1)
            found = [subject[0][0]] if subject else []
        if not found:
            return "", "no_name"
        old = rng.choice(found)
        options = [n for n in pools.names if n.lower() not in passage_lower and n != old]
        if not options:
            return "", "no_replacement"
        return question.replace(old, rng.choice(options), 1), "ok"
    if rule == "negation":
        m = AUXILIARY.search(question)
        if not m or re.search(r"\bnot\b|n't\b", question):
            return "", "no_auxiliary"
        return question[: m.end()] + " not" + question[m.end():], "ok"
    raise ValueError(f"unknown rule {rule!r}; known: {AD_RULES}")


def rule_negatives(questions: list[tuple[str, str]], passages: dict[str, str], rules: list[str], seed: int
                   ) -> tuple[list[tuple[int, str, str]], Counter]:
    """(question index, kind, text) of every rule perturbation that applies, and the statuses per rule."""
    pools = Pools.of(passages)
    rng = random.Random(seed)
    out: list[tuple[int, str, str]] = []
    statuses: Counter = Counter()
    for i, (doc_id, question) in enumerate(questions):
        for rule in rules:
            text, status = perturb(rule, question, passages[doc_id], pools, rng)
            statuses[f"rule_{rule}:{status}"] += 1
            if status == "ok" and text != question:
                out.append((i, f"rule_{rule}", text))
    return out, statuses


def rewrite_messages(question: str, passage: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You edit questions. Answer with the new question only."},
        {"role": "user", "content": (
            "Passage:\nThe company opened its Berlin office in 2015 and hired 40 engineers there.\n\n"
            "Question: How many engineers did the company hire in Berlin?\n\n"
            "Rewrite the question so that the passage no longer answers it: change one name, number, date or "
            "detail to one the passage does not mention.")},
        {"role": "assistant", "content": "How many engineers did the company hire in Madrid?"},
        {"role": "user", "content": (
            f"Passage:\n{passage}\n\nQuestion: {question}\n\nRewrite the question so that the passage no longer "
            "answers it: change one name, number, date or detail to one the passage does not mention.")},
    ]


# A base model (no chat template) rewrites by few-shot completion: worked records of (passage, question, rewrite),
# hand-written on other topics than each other (no evaluation data), then the row's record with its rewrite's field
# open; the rewrite is the rest of that line.
REWRITE_STOP = "\n"
_REWRITE_FIELD = "A question the passage does not answer"
_REWRITE_EXAMPLES = (
    ("The company opened its Berlin office in 2015 and hired 40 engineers there.",
     "How many engineers did the company hire in Berlin?",
     "How many engineers did the company hire in Madrid?"),
    ("Net sales rose 8% to $3.1 billion in 2020, led by the packaging segment.",
     "How much did net sales rise in 2020?",
     "How much did net sales rise in 2016?"),
    ("The board approved a quarterly dividend of $0.42 per share, payable on March 15.",
     "What quarterly dividend per share did the board approve?",
     "What special dividend per share did the board approve?"),
)


def rewrite_fewshot_opening() -> str:
    return "".join(f"Passage: {p}\nQuestion: {q}\n{_REWRITE_FIELD}: {r}\n\n" for p, q, r in _REWRITE_EXAMPLES)


def rewrite_fewshot_prompt(question: str, passage: str) -> str:
    """The worked records, then the row's passage and question (one line each) and the rewrite's field."""
    return (f"{rewrite_fewshot_opening()}Passage: {' '.join(passage.split())}\nQuestion: {' '.join(question.split())}"
            f"\n{_REWRITE_FIELD}:")


def rewrite_avoid(question: str, passage: str) -> tuple[set[str], set[str]]:
    """(words the rewrite must not use, words it may): the examples' content words, unless the row's own
    question or passage has them (a small base model copies its examples); stopwords stay free."""
    example = {w for record in _REWRITE_EXAMPLES for w in re.findall(r"[^\W\d_]+", " ".join(record))}
    free = set(re.findall(r"[^\W\d_]+", question + " " + passage)) | STOPWORDS | {w.capitalize() for w in STOPWORDS}
    lowered = {w.lower() for w in free}
    return {w for w in example if w.lower() not in lowered}, free


def echoes_rewrite_example(rewrite: str) -> bool:
    flat = " ".join(rewrite.lower().split()).rstrip("?")
    return any(flat == " ".join(r.lower().split()).rstrip("?") for _, _, r in _REWRITE_EXAMPLES)


class Rewriter:
    """Ray Data UDF: the annotator's rewrite of each (question, passage), greedy, with the check's status. An
    instruction model is asked in its chat template; a base model (``annotate.prompt_style``, auto: by the
    tokenizer) by few-shot completion, stopped at the line's end, where a copy of an example counts as
    ``echoes_example``."""

    def __init__(self, cfg_dict: dict[str, Any], replicas: int) -> None:
        import torch

        from skr_ray.annotate.generation import GenerationEngine
        from skr_ray.config import annotator_model, from_dict
        from skr_ray.models.backbone import load_backbone, set_threads

        self.cfg = from_dict(cfg_dict)
        annotator = annotator_model(self.cfg)
        set_threads(annotator, replicas)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, tokenizer = load_backbone(annotator, device=device)
        self.engine = GenerationEngine(model, tokenizer, self.cfg.ad.max_passage_tokens, 40, device)
        from skr_ray.tasks.ir.prompts import resolve_style

        self.style = resolve_style(self.cfg.annotate.prompt_style, tokenizer)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        questions = [str(q) for q in batch["question"]]
        passages = [self.engine.truncate(str(p)) for p in batch["passage"]]
        if self.style == "fewshot":
            prompts = [rewrite_fewshot_prompt(q, p) for q, p in zip(questions, passages)]
            outputs = [o[0] if o else "" for o in self.engine.generate(
                prompts, opening=rewrite_fewshot_opening(), stop=REWRITE_STOP,
                avoid=[rewrite_avoid(q, p) for q, p in zip(questions, passages)])]
        else:
            messages = [rewrite_messages(q, p) for q, p in zip(questions, passages)]
            prompts = [self.engine.render(m) for m in messages]
            opening = self.engine.render_opening(messages[0]) if messages else None
            outputs = [o[0] if o else "" for o in self.engine.generate(prompts, opening=opening)]
        texts = [o.strip().split("\n")[0].strip().strip('"') for o in outputs]
        status = [check_rewrite(q, t, p) for q, t, p in zip(questions, texts, passages)]
        if self.style == "fewshot":
            status = ["echoes_example" if echoes_rewrite_example(t) else s for t, s in zip(texts, status)]
        version = REWRITE_FEWSHOT_PROMPT_VERSION if self.style == "fewshot" else REWRITE_PROMPT_VERSION
        return {**batch, "raw_output": outputs, "rewrite": texts, "status": status, "prompt": [version] * len(texts)}


def model_rewrites(cfg: Any, questions: list[tuple[str, str]], passages: dict[str, str], cache: Any
                   ) -> tuple[list[tuple[int, str, str]], Counter]:
    """(question index, 'rewrite', text) of every kept rewrite, and the statuses; written once to ``cache``
    (a parquet file) and read back on a re-run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if cache.is_file():
        rows = pq.read_table(cache).to_pylist()
    else:
        import ray.data

        a = cfg.annotate
        items = [{"index": i, "question": q, "passage": passages[d]} for i, (d, q) in enumerate(questions)]
        items.sort(key=lambda r: len(r["passage"]), reverse=True)
        from skr_ray.ray_utils import actor_pool, annotation_pool

        actors, gpus = annotation_pool(cfg)
        ds = ray.data.from_items(items).map_batches(
            Rewriter, fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "replicas": actors},
            batch_size=a.batch_size, compute=actor_pool(actors), num_cpus=a.num_cpus_per_actor, num_gpus=gpus)
        rows = sorted(ds.take_all(), key=lambda r: r["index"])
        rows = [{k: r[k] for k in ("index", "question", "raw_output", "rewrite", "status", "prompt")} for r in rows]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        tmp.replace(cache)
    statuses = Counter(f"rewrite:{r['status']}" for r in rows)
    return [(int(r["index"]), "rewrite", r["rewrite"]) for r in rows if r["status"] == "ok"], statuses
