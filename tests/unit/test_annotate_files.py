"""Label files written by the actors, the generation journal and reading both back."""

import pyarrow.parquet as pq

from skr_ray.annotate.labelstore import journal_counts, journal_totals, read_labels, write_label_file
from skr_ray.schema import LABEL_SCHEMA


def _rows(ids):
    rows = {name: [] for name in LABEL_SCHEMA.names}
    for d in ids:
        for name in LABEL_SCHEMA.names:
            rows[name].append(0 if name == "label_index" else (d if name == "doc_id" else "x"))
    return rows


def test_label_files_land_atomically_and_duplicates_collapse(tmp_path):
    a = write_label_file(tmp_path, _rows(["d1", "d2"]))
    write_label_file(tmp_path, _rows(["d2", "d3"]))  # d2 redone after a lost actor
    (tmp_path / "half.parquet.tmp").write_bytes(b"PAR1")  # a write cut by a kill: never read
    assert a.suffix == ".parquet" and pq.read_table(a).schema.equals(LABEL_SCHEMA)
    table = read_labels(tmp_path)
    assert sorted(table["doc_id"].to_pylist()) == ["d1", "d2", "d3"]


def test_journal_counts_generation_starts_over_runs(tmp_path):
    (tmp_path / "node-1.txt").write_text("d1\nd2\n")
    (tmp_path / "node-2.txt").write_text("d2\nd3\n\n")
    counts = journal_counts(tmp_path)
    assert counts == {"d1": 1, "d2": 2, "d3": 1}
    assert sum(c - 1 for c in counts.values() if c > 1) == 1
    assert journal_counts(tmp_path / "missing") == {}
    assert journal_totals(tmp_path) == (4, 1) and journal_totals(tmp_path / "missing") == (0, 0)


def test_journal_totals_count_ids_as_written_with_commas_quotes_and_a_cut_last_line(tmp_path):
    """The summary's counts, in Arrow: ids are whole lines, whatever they hold; a line cut by a kill counts."""
    (tmp_path / "a.txt").write_text('x,1\n"q"\nx,1\n\n' + "\n".join(f"p{i}" for i in range(1000)) + "\np3")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "b.txt").write_text("p3\n")
    counts = journal_counts(tmp_path)
    assert journal_totals(tmp_path) == (sum(counts.values()), sum(c - 1 for c in counts.values() if c > 1)) == (
        1005, 3)


def test_a_block_written_again_replaces_its_first_file(tmp_path):
    """A Ray task retried after its actor died between writing the block and returning writes the same block
    again: it replaces the first file, so the rows on disk are there once."""
    import time

    first = write_label_file(tmp_path, _rows(["d1", "d2"]))
    time.sleep(1.1)  # another second: another file name prefix
    again = write_label_file(tmp_path, _rows(["d1", "d2"]))
    other = write_label_file(tmp_path, _rows(["d3", "d4"]))
    assert again != first and not first.exists()
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == sorted([again.name, other.name])
    ids = [d for p in tmp_path.glob("*.parquet") for d in pq.read_table(p)["doc_id"].to_pylist()]
    assert sorted(ids) == ["d1", "d2", "d3", "d4"]
