"""The one place that knows artifact folders and file names.

Stages talk only through these files; each stage folder also carries the resolved config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skr_ray.config import SKRConfig

SUCCESS = "_SUCCESS"


class StageInputError(ValueError):
    """A stage's input artifact exists but cannot feed it (e.g. too few usable self-labels)."""


class StageError(RuntimeError):
    """A stage could not finish; the message says why and what to do (e.g. re-run to resume). The CLI prints it
    as one line, not a traceback."""


class Artifacts:
    def __init__(self, output_dir: str | Path) -> None:
        self.root = Path(output_dir).expanduser().resolve()

    # annotate -----------------------------------------------------------------------------
    @property
    def annotate_dir(self) -> Path:
        return self.root / "annotate"

    @property
    def labels_dir(self) -> Path:
        return self.annotate_dir / "labels"

    @property
    def annotate_journal(self) -> Path:
        """One append-only file per annotation actor: the doc ids whose generation it started."""
        return self.annotate_dir / "journal"

    @property
    def annotate_summary(self) -> Path:
        return self.annotate_dir / "summary.json"

    # train --------------------------------------------------------------------------------
    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def checkpoint_dir(self) -> Path:
        """Final SKR checkpoint: adapter/, head.safetensors, head.json, config.yaml."""
        return self.train_dir / "checkpoint"

    @property
    def ray_train_storage(self) -> Path:
        """Ray Train run storage (per-epoch checkpoints used for resume)."""
        return self.train_dir / "ray"

    @property
    def train_history(self) -> Path:
        return self.train_dir / "history.json"

    @property
    def sft_dir(self) -> Path:
        """SFT baseline (LoRA through the LM head on the same self-labels), for generative-answer tasks."""
        return self.root / "train_sft"

    @property
    def sft_checkpoint_dir(self) -> Path:
        return self.sft_dir / "checkpoint"

    # evaluate -----------------------------------------------------------------------------
    @property
    def evaluate_dir(self) -> Path:
        return self.root / "evaluate"

    @property
    def metrics(self) -> Path:
        return self.evaluate_dir / "metrics.json"

    @property
    def report(self) -> Path:
        return self.evaluate_dir / "report.md"

    @property
    def embedding_cache(self) -> Path:
        return self.evaluate_dir / "cache"

    def run_file(self, system: str) -> Path:
        """IR: one system's ranking as a TREC run file, to recompute the report with trec_eval or ranx."""
        return self.evaluate_dir / "runs" / f"{system}.trec"

    @property
    def qrels_file(self) -> Path:
        """IR: the relevance judgements the report used, as TREC qrels (``.txt``: ranx reads it as TREC)."""
        return self.evaluate_dir / "qrels.txt"

    def pair_scores_file(self, system: str) -> Path:
        """AD: one system's score for every labelled pair (pair_id, query_id, doc_id, label, score)."""
        return self.evaluate_dir / "scores" / f"{system}.tsv"

    # helpers ------------------------------------------------------------------------------
    @staticmethod
    def is_done(stage_dir: Path) -> bool:
        return (stage_dir / SUCCESS).is_file()

    @staticmethod
    def mark_done(stage_dir: Path, info: dict[str, Any] | None = None) -> None:
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / SUCCESS).write_text(json.dumps(info or {}, indent=2) + "\n")

    @staticmethod
    def write_config(stage_dir: Path, cfg: SKRConfig) -> None:
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / "config.yaml").write_text(cfg.to_yaml())


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Whole file or nothing (temp name, then rename): a killed stage leaves no half-written artifact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
