"""Column names and pyarrow schemas of the artifacts stages exchange."""

from __future__ import annotations

import pyarrow as pa

# Corpus rows after reading (any input format).
DOC_ID = "doc_id"
TEXT = "text"
CORPUS_SCHEMA = pa.schema([(DOC_ID, pa.string()), (TEXT, pa.string())])

# Self-annotation label rows (annotate/labels/*.parquet).
LABEL_SCHEMA = pa.schema(
    [
        (DOC_ID, pa.string()),
        ("label_index", pa.int32()),  # k-th label of the document (label_kinds x questions_per_doc)
        (TEXT, pa.string()),  # the passage as the model saw it
        ("raw_output", pa.string()),  # the model's untouched generation
        ("label", pa.string()),  # parsed label (the question for IR)
        ("status", pa.string()),  # ok | empty | too_short | ... | empty_input | error
        ("task", pa.string()),
        ("prompt_version", pa.string()),
        ("model_id", pa.string()),
        ("generation", pa.string()),  # JSON of generation parameters
        ("annotated_at", pa.string()),
        ("node_id", pa.string()),  # Ray node of the actor that wrote the row (multi-node provenance)
        ("label_kind", pa.string()),  # IR: question | keywords | statement (annotate.label_kinds)
        ("learner_model_id", pa.string()),  # the model trained on the labels (model_id: the one that wrote them)
    ]
)
