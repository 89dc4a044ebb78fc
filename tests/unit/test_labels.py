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


def _reference_statuses(table):
    """The rule as first written, in plain Python: the first 'ok' question in (doc id, label index) order
    stays, later equal ones (after normalisation) are duplicates."""
    from skr_ray.tasks.ir.labels import normalize_for_dedup

    statuses = table["status"].to_pylist()
    labels = table["label"].to_pylist()
    keys = list(zip(table["doc_id"].to_pylist(), table["label_index"].to_pylist()))
    seen = set()
    for i in sorted(range(len(table)), key=keys.__getitem__):
        if statuses[i] == "ok":
            key = normalize_for_dedup(labels[i])
            statuses[i] = "duplicate" if key in seen else "ok"
            seen.add(key)
    return statuses


def test_duplicates_in_arrow_match_the_plain_rule_on_random_tables():
    import random

    rng = random.Random(3)
    words = ["What", "was", "revenue", "debt", "Ökonomie", "in", "2023", "?"]
    for _ in range(20):
        n = rng.randint(1, 300)
        rows = {name: [] for name in LABEL_SCHEMA.names}
        for _ in range(n):
            row = {"doc_id": f"d{rng.randint(0, 60)}", "label_index": rng.randint(0, 2),
                   "label": " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))),
                   "status": rng.choice(["ok", "ok", "ok", "too_short"]), "label_kind": rng.choice(["", "query"])}
            for name in LABEL_SCHEMA.names:
                rows[name].append(row.get(name, ""))
        table = pa.table(rows, schema=LABEL_SCHEMA)
        assert mark_duplicates(table) == _reference_statuses(table)
        summary = summarize(table, corpus_rows=61, labels_per_doc=1)
        expected = _reference_statuses(table)
        assert summary["usable"] == expected.count("ok")
        assert summary["documents_labelled"] == len(set(rows["doc_id"]))
        kinds = [k or "question" for k, s in zip(rows["label_kind"], expected) if s == "ok"]
        assert summary["usable_per_kind"] == {k: kinds.count(k) for k in sorted(set(kinds))}


def test_label_store_keeps_the_first_row_per_key_and_lists_labelled_ids(tmp_path):
    from skr_ray.annotate.labelstore import first_per_key, labelled_doc_ids, read_labels, write_label_file

    t = pa.table({"doc_id": ["b", "a", "b", "c", "a"], "label_index": [0, 0, 0, 1, 1], "v": [1, 2, 3, 4, 5]})
    assert first_per_key(t, ["doc_id", "label_index"])["v"].to_pylist() == [1, 2, 4, 5]
    assert labelled_doc_ids(tmp_path / "none").to_pylist() == []
    labels = tmp_path / "labels"
    labels.mkdir()
    rows = lambda ids, text: {name: ([text] * len(ids) if name == "label" else list(ids) if name == "doc_id"
                                     else [0] * len(ids) if name == "label_index" else [""] * len(ids))
                              for name in LABEL_SCHEMA.names}
    write_label_file(labels, rows(["d3", "d1"], "first"))
    write_label_file(labels, rows(["d1", "d2"], "again"))  # d1 written twice: a resume redid it
    (labels / "zz-broken.parquet").write_bytes(b"not parquet")
    assert labelled_doc_ids(labels).to_pylist() == ["d1", "d2", "d3"]
    assert (labels / "zz-broken.corrupt").exists()  # set aside, its rows redone
    assert sorted(read_labels(labels, columns=["label"])["doc_id"].to_pylist()) == ["d1", "d2", "d3"]


def test_the_streamed_summary_is_the_table_summary_on_random_label_files(tmp_path):
    """summarize_labels (one file at a time, hashes per row) against summarize over read_labels' table: label
    files with rows written twice (a killed run and its resume), equal questions across documents and kinds,
    unusable rows, an unreadable file."""
    import random

    import pyarrow.parquet as pq

    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.tasks.ir.annotate import summarize_labels

    rng = random.Random(5)
    words = ["What", "was", "revenue", "debt", "Ökonomie", "in", "2023", "?"]
    for trial in range(12):
        labels = tmp_path / f"t{trial}"
        labels.mkdir()
        for f in range(rng.randint(1, 6)):
            rows = {name: [] for name in LABEL_SCHEMA.names}
            for _ in range(rng.randint(0, 40)):
                row = {"doc_id": f"d{rng.randint(0, 30)}", "label_index": rng.randint(0, 1),
                       "label": " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))),
                       "status": rng.choice(["ok", "ok", "ok", "too_short", "duplicate"]),
                       "label_kind": rng.choice(["", "question", "keywords"])}
                for name in LABEL_SCHEMA.names:
                    rows[name].append(row.get(name, ""))
            pq.write_table(pa.table(rows, schema=LABEL_SCHEMA), labels / f"{f:03d}.parquet")
        if trial % 4 == 3:
            (labels / "zzz.parquet").write_bytes(b"not parquet")  # set aside, rows redone
        for dedup in (True, False):
            streamed = summarize_labels(labels, 31, 2, dedup)  # first: it meets the unreadable file
            table = read_labels(labels, columns=["label", "status", "label_kind"])
            assert streamed == summarize(table, 31, 2, dedup), (trial, dedup)
        assert not (labels / "zzz.parquet").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert summarize_labels(empty, 3, 1)["label_rows"] == 0
