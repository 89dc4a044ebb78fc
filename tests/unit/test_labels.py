import pyarrow as pa
import pytest

from skr_ray.schema import LABEL_SCHEMA
from skr_ray.tasks.ir.annotate import mark_duplicates, summarize
from skr_ray.tasks.ir.labels import QuestionFilter, clean_question, copy_ratio, parse_question

SRC = "Revenue from the Nordic segment rose 12% to NOK 4.1 billion in 2023, driven by new vessel contracts."


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("What was Nordic revenue in 2023?", "What was Nordic revenue in 2023?"),
        ("Question: What was Nordic revenue in 2023?\nAnswer: 4.1", "What was Nordic revenue in 2023?"),
        ('  "What drove revenue growth?"  ', "What drove revenue growth?"),
        ("1. What drove revenue growth? And why?", "What drove revenue growth?"),
        ("\n\nQ: How much did revenue rise?<|im_end|>junk", "How much did revenue rise?"),
        ("", ""),
    ],
)
def test_clean_question(raw, expected):
    assert clean_question(raw) == expected


@pytest.mark.parametrize(
    "raw,status",
    [
        ("What was the Nordic segment revenue in 2023?", "ok"),
        ("", "empty"),
        ("Revenue rose in 2023.", "not_a_question"),
        ("Revenue?", "too_short"),
        ("What " + "very " * 50 + "big?", "too_long"),
        ("What is the answer to this question?", "generic"),
        ("What is described in the passage above?", "generic"),
        ("Revenue from the Nordic segment rose 12% to NOK 4.1 billion in 2023?", "copies_passage"),
    ],
)
def test_parse_question_statuses(raw, status):
    assert parse_question(raw, SRC, QuestionFilter())[1] == status


def test_copy_ratio_bounds():
    assert copy_ratio("What was it?", SRC) == 0.0  # shorter than one 5-gram
    assert copy_ratio("revenue from the nordic segment rose", SRC) == 1.0


def test_question_mark_optional():
    assert parse_question("Nordic revenue growth in 2023", SRC, QuestionFilter(require_question_mark=False))[1] == "ok"


def _labels(rows):
    cols = {name: [] for name in LABEL_SCHEMA.names}
    for doc_id, label, status in rows:
        for name in LABEL_SCHEMA.names:
            cols[name].append({"doc_id": doc_id, "label": label, "status": status, "label_index": 0}.get(name, ""))
    return pa.table(cols, schema=LABEL_SCHEMA)


def test_duplicates_are_marked_and_counted():
    table = _labels([("d2", "What was revenue?", "ok"), ("d1", "what was  REVENUE?", "ok"),
                     ("d3", "x", "too_short"), ("d4", "What was debt?", "ok")])
    statuses = mark_duplicates(table)
    assert statuses == ["duplicate", "ok", "too_short", "ok"]  # first by doc id wins
    assert mark_duplicates(table, enabled=False)[0] == "ok"
    summary = summarize(table, corpus_rows=4, labels_per_doc=1)
    assert summary["usable"] == 2
    assert summary["status_counts"] == {"duplicate": 1, "ok": 2, "too_short": 1}


def test_echo_of_the_prompt_example_is_filtered():
    flt = QuestionFilter(echo_of=("What were cash and cash equivalents at 31 December 2018?",))
    src = "Deferred revenue increased to $5.2 million in 2019 because of new maintenance contracts."
    assert parse_question("What was cash and cash equivalents at 31 December 2018?", src, flt)[1] == "echoes_example"
    assert parse_question("Why did deferred revenue increase in 2019?", src, flt)[1] == "ok"
