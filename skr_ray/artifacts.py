"""The one place that knows artifact folders and file names.

Stages talk only through these files; each stage folder also carries the resolved config.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from skr_ray.config import SKRConfig

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
ADAPTER = "adapter"
"""A checkpoint's LoRA adapter folder (PEFT's save_pretrained layout)."""

STAGES = ("annotate", "train", "sft", "evaluate", "index")
"""Stage folders whose finished result :meth:`Artifacts.finished` reads ('sft': the SFT baseline's training)."""


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

    # index --------------------------------------------------------------------------------
    @property
    def index_dir(self) -> Path:
        """``skr index``: vectors/ (parquet shards of id, text, vector), index.faiss, ids.arrow (id, text per
        position; memory-mapped when served), summary.json."""
        return self.root / "index"

    # helpers ------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        dirs = {"annotate": self.annotate_dir, "train": self.train_dir, "sft": self.sft_dir,
                "evaluate": self.evaluate_dir, "index": self.index_dir}
        if stage not in dirs:
            raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")
        return dirs[stage]

    def finished(self, stage: str) -> dict[str, Any] | None:
        """The stored result of a finished stage, or None when it has to run (or resume).

        Finished means the stage folder's ``_SUCCESS`` marker and its result are both there: the summary
        (annotate), the metrics (evaluate), the final checkpoint's adapter (train, sft; the result is what
        ``_SUCCESS`` recorded)."""
        folder = self.stage_dir(stage)
        if not self.is_done(folder):
            return None
        if stage in ("train", "sft"):
            if not (folder / "checkpoint" / ADAPTER).is_dir():
                return None
            return json.loads((folder / SUCCESS).read_text() or "{}")
        result = {"annotate": self.annotate_summary, "index": self.index_dir / "summary.json"}.get(stage, self.metrics)
        return json.loads(result.read_text()) if result.is_file() else None

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


F = TypeVar("F", bound=Callable[..., Any])


def skip_if_done(stage: str | Callable[..., str]) -> Callable[[F], F]:
    """Decorate a stage entry point ``fn(cfg, ...)``: when its stage already finished in ``cfg.output_dir``,
    return the stored result instead of running it (so ``skr run`` after a finished stage, or a resubmitted job,
    redoes nothing). ``stage`` is the stage's name, or a function of the entry point's other arguments that
    gives it (training: 'train' or 'sft')."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(cfg: SKRConfig, *args: Any, **kwargs: Any) -> Any:
            name = stage(*args, **kwargs) if callable(stage) else stage
            art = Artifacts(cfg.output_dir)
            done = art.finished(name)
            if done is not None:
                log.info("%s already complete in %s; skipping", name, art.stage_dir(name))
                return done
            return fn(cfg, *args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap
