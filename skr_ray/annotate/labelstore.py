"""Label files of the annotation stages: one parquet file per labelled block, written by the actor that labelled it
(temp name, then rename), read back for resume, summaries and training input (plain pyarrow, no Ray), and the
journal of doc ids whose generation started."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skr_ray.schema import DOC_ID, LABEL_SCHEMA

log = logging.getLogger(__name__)


def write_label_file(labels_dir: Path, rows: dict[str, list], schema: pa.Schema = LABEL_SCHEMA) -> Path:
    """One parquet file per labelled block, renamed into place only once complete.

    The name ends in a digest of the block's ids (the schema's first column), so a block written twice — a Ray
    task retried after its actor died between writing the file and returning — replaces its first file instead
    of adding its rows again: every row lands once."""
    import hashlib

    ids = rows[schema.names[0]]
    digest = hashlib.sha1("\x1f".join(map(str, ids)).encode()).hexdigest()[:16]
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{digest}.parquet"
    tmp = labels_dir / (name + ".tmp")
    pq.write_table(pa.Table.from_pydict(rows, schema=schema), tmp)
    os.replace(tmp, labels_dir / name)
    for earlier in labels_dir.glob(f"*-{digest}.parquet"):  # the same block from an attempt that died
        if earlier.name != name:
            earlier.unlink(missing_ok=True)
    return labels_dir / name


def node_id() -> str:
    """The Ray node this process runs on ("" outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (plain benchmarks)
        return ""


# ----------------------------------------------------------------------------------------------
# Reading back what exists (resume, summary, training input) — plain pyarrow, no Ray.


def read_labels(labels_dir: Path, quarantine: bool = True, columns: list[str] | None = None) -> pa.Table:
    """All readable label rows; unreadable files (a run killed mid-write) are set aside. ``columns``: only
    these (with the row key, doc id and label index): a summary or a resume of a large corpus then reads a few
    short columns instead of every passage's text."""
    names = label_columns(columns)
    tables = [table for _, table in iter_label_files(labels_dir, names, quarantine)]
    if not tables:
        return LABEL_SCHEMA.empty_table().select(names)
    return first_per_key(pa.concat_tables(tables), [DOC_ID, "label_index"])


def label_columns(columns: list[str] | None = None) -> list[str]:
    """The label schema's columns to read: ``columns`` with the row key (doc id, label index), or all."""
    return LABEL_SCHEMA.names if columns is None else \
        [n for n in LABEL_SCHEMA.names if n in {DOC_ID, "label_index", *columns}]


def iter_label_files(labels_dir: Path, names: list[str], quarantine: bool = True):
    """(path, table of ``names``) for each readable label file, in name order, one file at a time; an unreadable
    one is logged and, with ``quarantine``, renamed to ``.corrupt`` so a resume redoes its rows."""
    for path in sorted(labels_dir.glob("*.parquet")) if labels_dir.is_dir() else []:
        try:
            present = set(pq.read_schema(path).names)
            table = _conform(pq.read_table(path, columns=[n for n in names if n in present]), names)
        except Exception as exc:  # noqa: BLE001
            log.warning("label file %s is unreadable (%s); its rows will be redone", path, exc)
            if quarantine:
                path.rename(path.with_suffix(".corrupt"))
            continue
        yield path, table


def first_per_key(table: pa.Table, keys: list[str]) -> pa.Table:
    """The table with only the first row (in table order) of each ``keys`` value. A label row can exist twice
    only if a killed run wrote it and the resume redid it. Grouped in Arrow: Python sets of a million
    (id, index) tuples cost a driver hundreds of MB."""
    import numpy as np

    if len(table) < 2:
        return table
    rows = pa.array(np.arange(len(table), dtype=np.int64))
    first = table.select(keys).append_column("_row", rows).group_by(keys, use_threads=False).aggregate(
        [("_row", "min")])
    if len(first) == len(table):
        return table
    return table.take(np.sort(first.column("_row_min").to_numpy()))


def labelled_doc_ids(labels_dir: Path) -> pa.Array:
    """The distinct doc ids with a label row, sorted (a resume's skip list), read one file's id column at a
    time: the driver holds one Arrow string array, not the label table or Python strings."""
    import pyarrow.compute as pc

    chunks = []
    for path in sorted(labels_dir.glob("*.parquet")) if labels_dir.is_dir() else []:
        try:
            chunks.append(pc.unique(pq.read_table(path, columns=[DOC_ID]).column(DOC_ID).combine_chunks()))
        except Exception as exc:  # noqa: BLE001
            log.warning("label file %s is unreadable (%s); its rows will be redone", path, exc)
            path.rename(path.with_suffix(".corrupt"))
    if not chunks:
        return pa.array([], pa.string())
    ids = pc.unique(pa.chunked_array(chunks, pa.string()).combine_chunks())
    return ids.take(pc.sort_indices(ids))


def labelled_requests(labels_dir: Path, per_doc: int) -> tuple[pa.Array, pa.Array, set[tuple[str, int]]]:
    """A per-request resume (the vLLM path): the distinct doc ids with a label row and those with all
    ``per_doc`` label indices, both sorted Arrow arrays, and the (doc id, label index) pairs already written for
    the documents in between (a run killed with their requests in flight: few). Only those pairs become Python
    objects; a set of every pair costs a driver hundreds of MB at a million documents."""
    import pyarrow.compute as pc

    table = read_labels(labels_dir, columns=[DOC_ID, "label_index"])
    counts = table.group_by(DOC_ID, use_threads=False).aggregate([("label_index", "count_distinct")])
    ids, n = counts.column(DOC_ID).combine_chunks(), counts.column("label_index_count_distinct")
    full, partial = ids.filter(pc.greater_equal(n, per_doc)), ids.filter(pc.less(n, per_doc))
    rows = table.filter(pc.is_in(table.column(DOC_ID), value_set=partial))
    pairs = set(zip(rows.column(DOC_ID).to_pylist(), rows.column("label_index").to_pylist()))
    return ids.take(pc.sort_indices(ids)), full.take(pc.sort_indices(full)), pairs


def read_rows_by_key(labels_dir: Path, key: str, quarantine: bool = True) -> list[dict[str, Any]]:
    """Every readable label row, one per ``key`` value (the first written wins: a resumed run may have
    redone a row a killed run had written); unreadable files are set aside, their rows redone."""
    rows: dict[str, dict[str, Any]] = {}
    for path in sorted(labels_dir.glob("*.parquet")) if labels_dir.is_dir() else []:
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001
            log.warning("label file %s is unreadable (%s); its rows will be redone", path, exc)
            if quarantine:
                path.rename(path.with_suffix(".corrupt"))
            continue
        for row in table.to_pylist():
            rows.setdefault(row[key], row)
    return [rows[k] for k in sorted(rows)]


def _conform(table: pa.Table, names: list[str] | None = None) -> pa.Table:
    """Label files of older versions lack newer provenance columns: fill them, keep the schema (of ``names``)."""
    names = LABEL_SCHEMA.names if names is None else names
    for name in names:
        if name not in table.column_names:
            table = table.append_column(name, pa.array([""] * len(table), pa.string()))
    return table.select(names).cast(pa.schema([LABEL_SCHEMA.field(n) for n in names]))


def journal_totals(journal_dir: Path) -> tuple[int, int]:
    """(generations, generations beyond each id's first) over every run into this folder. One journal file is
    read at a time and each id kept as a 64-bit hash (8 bytes; two ids with one hash among a million: about
    3e-8): a Python ``Counter`` of a million ids (:func:`journal_counts`) costs the driver over 100 MB, and so
    do the ids as one Arrow column."""
    import numpy as np
    from pyarrow import csv

    hashes = []
    for path in sorted(journal_dir.glob("*.txt")) if journal_dir.is_dir() else []:
        if path.stat().st_size:
            ids = csv.read_csv(path, read_options=csv.ReadOptions(column_names=["id"], use_threads=False),
                               parse_options=csv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False),
                               convert_options=csv.ConvertOptions(column_types={"id": pa.string()})).column("id")
            hashes += [np.fromiter((hash(i) for i in ids.slice(at, 65536).to_pylist()), np.int64)
                       for at in range(0, len(ids), 65536)]
    if not hashes:
        return 0, 0
    every = np.concatenate(hashes)
    return len(every), len(every) - len(np.unique(every))


def journal_counts(journal_dir: Path) -> Counter:
    """How many times each doc id went through generation, over every run into this folder."""
    counts: Counter = Counter()
    for path in sorted(journal_dir.glob("*.txt")) if journal_dir.is_dir() else []:
        counts.update(line for line in path.read_text().splitlines() if line)
    return counts
