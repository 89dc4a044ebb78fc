import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skr_ray.corpus import CorpusError, read_eval_set, resolve_corpus, validate_corpus


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_demo_corpus_ships_with_the_package():
    source = resolve_corpus("demo")
    assert validate_corpus(source) == 100
    ev = read_eval_set("demo", 4000)
    assert len(ev.corpus) == 100 and len(ev.queries) == 40
    assert sum(len(v) > 1 for v in ev.qrels.values()) == 3  # several relevant docs allowed


def test_missing_corpus_names_the_path(tmp_path):
    with pytest.raises(CorpusError, match="corpus not found: .*nope"):
        resolve_corpus(str(tmp_path / "nope"))


def test_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n')
    with pytest.raises(CorpusError, match=r"corpus.jsonl:2: not valid JSON"):
        validate_corpus(resolve_corpus(str(path)))


def test_missing_field_names_file_line_and_field(tmp_path):
    path = _jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "x"}, {"_id": "b", "body": "y"}])
    with pytest.raises(CorpusError, match=r"corpus.jsonl:2: missing field 'text'"):
        validate_corpus(resolve_corpus(str(tmp_path)))


def test_duplicate_ids_are_rejected(tmp_path):
    path = _jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}])
    with pytest.raises(CorpusError, match="duplicate _id 'a'"):
        validate_corpus(resolve_corpus(str(path)))


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "corpus.jsonl").write_text("")
    with pytest.raises(CorpusError, match="corpus is empty"):
        validate_corpus(resolve_corpus(str(tmp_path)))


def test_parquet_schema_is_checked(tmp_path):
    pq.write_table(pa.table({"_id": ["a"], "body": ["x"]}), tmp_path / "c.parquet")
    with pytest.raises(CorpusError, match="missing column 'text'"):
        validate_corpus(resolve_corpus(str(tmp_path)))
    pq.write_table(pa.table({"doc_id": ["a", "b"], "text": ["x", "y"]}), tmp_path / "c.parquet")
    assert validate_corpus(resolve_corpus(str(tmp_path))) == 2


def test_txt_folder(tmp_path):
    (tmp_path / "one.txt").write_text("hello")
    (tmp_path / "two.txt").write_text("world")
    source = resolve_corpus(str(tmp_path))
    assert source.kind == "txt" and validate_corpus(source) == 2


def test_qrels_pointing_to_unknown_doc(tmp_path):
    _jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "x"}])
    _jsonl(tmp_path / "queries.jsonl", [{"_id": "q", "text": "x?"}])
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\tzz\t1\n")
    with pytest.raises(CorpusError, match=r"test.tsv:2: corpus-id 'zz'"):
        read_eval_set(str(tmp_path), 1000)


def test_parquet_duplicate_ids_are_rejected_within_and_across_files(tmp_path):
    pq.write_table(pa.table({"_id": ["a", "b", "a"], "text": ["x", "y", "z"]}), tmp_path / "c1.parquet")
    with pytest.raises(CorpusError, match=r"c1.parquet: row 2: duplicate _id 'a' \(earlier in this file\)"):
        validate_corpus(resolve_corpus(str(tmp_path)))
    pq.write_table(pa.table({"_id": ["a", "b"], "text": ["x", "y"]}), tmp_path / "c1.parquet")
    pq.write_table(pa.table({"_id": ["c", "b"], "text": ["x", "y"]}), tmp_path / "c2.parquet")
    with pytest.raises(CorpusError, match=r"c2.parquet: row 1: duplicate _id 'b' \(also in .*c1.parquet\)"):
        validate_corpus(resolve_corpus(str(tmp_path)))


def test_qrels_score_that_is_not_a_number(tmp_path):
    _jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "x"}])
    _jsonl(tmp_path / "queries.jsonl", [{"_id": "q", "text": "x?"}])
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\trelevant\n")
    with pytest.raises(CorpusError, match=r"test.tsv:2: score 'relevant' is not a number"):
        read_eval_set(str(tmp_path), 1000)


def test_pdfs_as_a_text_corpus_one_row_per_page_and_corrupt_files_counted(tmp_path, ray_local):
    from skr_ray.corpus import read_corpus, resolve_corpus, validate_corpus
    from tests.tiny import text_pdf

    (tmp_path / "reports").mkdir()
    (tmp_path / "annual.pdf").write_bytes(text_pdf(["Revenue rose in 2019 to 5.2 million.",
                                                    "The tax rate fell to 21 percent."]))
    (tmp_path / "reports" / "q3.pdf").write_bytes(text_pdf(["Leases run for seven years."]))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 cut off here")
    source = resolve_corpus(str(tmp_path))
    assert source.kind == "pdf" and len(source.paths) == 2
    assert len(source.problems) == 1 and "broken.pdf" in source.problems[0]
    assert validate_corpus(source) == 3  # pages
    ds, rows = read_corpus(str(tmp_path), max_chars=20)
    got = {r["doc_id"]: r["text"] for r in ds.take_all()}
    assert rows == 3 and got == {"annual#1": "Revenue rose in 2019", "annual#2": "The tax rate fell to",
                                 "reports/q3#1": "Leases run for seven"}
    single = resolve_corpus(str(tmp_path / "annual.pdf"))
    assert single.kind == "pdf" and validate_corpus(single) == 2
    (tmp_path / "only-bad").mkdir()
    (tmp_path / "only-bad" / "x.pdf").write_bytes(b"not a pdf")
    with pytest.raises(CorpusError, match="x.pdf"):
        resolve_corpus(str(tmp_path / "only-bad"))


def test_image_eval_sets_may_name_pdf_pages(tmp_path):
    from skr_ray.evaluate.images import read_image_eval_set
    from skr_ray.pages import load_page
    from tests.tiny import text_pdf

    (tmp_path / "qrels").mkdir()
    (tmp_path / "report.pdf").write_bytes(text_pdf(["Revenue rose.", "Tax fell.", "Leases."]))
    (tmp_path / "corpus.jsonl").write_text('{"_id": "r", "image": "report.pdf"}\n'
                                           '{"_id": "second", "image": "report.pdf#2"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "what fell?"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tr#2\t1\n")
    evalset = read_image_eval_set(str(tmp_path))
    assert sorted(evalset.corpus) == ["r#1", "r#2", "r#3", "second"] and evalset.qrels == {"q1": {"r#2"}}
    assert evalset.corpus["second"] == evalset.corpus["r#2"]
    assert load_page(evalset.corpus["r#3"]).size[0] > 100  # rendered with pypdfium2
    (tmp_path / "corpus.jsonl").write_text('{"_id": "x", "image": "report.pdf#9"}\n')
    with pytest.raises(CorpusError, match="pages 1..3"):
        read_image_eval_set(str(tmp_path))


def test_jsonl_duplicate_ids_across_files_are_rejected(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"_id": "x", "text": "1"}, {"_id": "y", "text": "2"}])
    _jsonl(tmp_path / "b.jsonl", [{"_id": "z", "text": "3"}, {"_id": "y", "text": "4"}])
    from skr_ray.corpus import CorpusSource

    with pytest.raises(CorpusError, match=r"b.jsonl:2: duplicate _id 'y' \(also in .*a.jsonl\)"):
        validate_corpus(CorpusSource("jsonl", [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]))


def test_equal_id_hashes_are_not_taken_for_duplicates(tmp_path, monkeypatch):
    """Ids are compared by 64-bit hash first; ids whose hashes collide are compared as strings."""
    import builtins

    import skr_ray.corpus as corpus

    real = builtins.hash
    monkeypatch.setattr(corpus, "hash", lambda s: 7 if s in ("p", "q") else real(s), raising=False)
    path = _jsonl(tmp_path / "corpus.jsonl", [{"_id": "p", "text": "1"}, {"_id": "q", "text": "2"},
                                              {"_id": "r", "text": "3"}])
    assert validate_corpus(resolve_corpus(str(path))) == 3
    _jsonl(path, [{"_id": "p", "text": "1"}, {"_id": "q", "text": "2"}, {"_id": "q", "text": "3"}])
    with pytest.raises(CorpusError, match=r"corpus.jsonl:3: duplicate _id 'q'"):
        validate_corpus(resolve_corpus(str(path)))


def test_local_blocks_are_the_pipelines_blocks(tmp_path):
    """The plain benchmark's blocks: normalized (title + text, cut), longest first, cut into calls of N rows."""
    from skr_ray.corpus import local_blocks

    rows = [{"_id": i, "text": "x" * (i % 7 + 1), "title": "T" if i == 3 else None} for i in range(10)]
    path = _jsonl(tmp_path / "corpus.jsonl", rows)
    blocks = list(local_blocks(str(path), max_chars=5, max_docs=9, rows_per_block=4))
    assert [len(b["doc_id"]) for b in blocks] == [4, 4, 1]
    texts = [t for b in blocks for t in b["text"]]
    assert [len(t) for t in texts] == sorted((len(t) for t in texts), reverse=True)
    ids = [i for b in blocks for i in b["doc_id"]]
    assert sorted(ids, key=int) == [str(i) for i in range(9)]
    assert texts[ids.index("3")] == "T\nxxx"[:5]
