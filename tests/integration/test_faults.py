"""Faults inside a running stage on a real local Ray cluster: a killed annotation actor, a killed
Ray Train worker. Both processes die by SIGKILL, as on a lost node or an OOM kill."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from skr_ray.artifacts import Artifacts
from skr_ray.config import load_config
from tests.tiny import LOOSE_FILTERS

pytestmark = pytest.mark.integration



def _cfg(tiny_model_dir: Path, out: Path, *extra: str):
    return load_config(None, [f"model.name_or_path={tiny_model_dir}", f"output_dir={out}", *LOOSE_FILTERS, *extra])


def _own_ray_process(marker: str) -> psutil.Process | None:
    """A Ray worker process of *this* test session (descendant of this process) whose title has marker."""
    for proc in psutil.Process().children(recursive=True):
        try:
            if marker in " ".join(proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    return None


class _Background(threading.Thread):
    """Run a stage function in a thread; keep its result or exception."""

    def __init__(self, fn, *args) -> None:
        super().__init__(daemon=True)
        self.fn, self.args, self.result, self.error = fn, args, None, None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _kill_when(predicate, marker: str, job: _Background, timeout: float = 300) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert job.is_alive(), f"stage ended before the fault could be injected: {job.error}"
        if predicate():
            proc = _own_ray_process(marker)
            if proc is not None:
                os.kill(proc.pid, signal.SIGKILL)
                return proc.pid
        time.sleep(0.05)
    raise TimeoutError(f"no {marker} process to kill within {timeout}s")


def test_killed_annotation_actor_is_replaced_and_every_row_lands_once(ray_local, tiny_model_dir, tmp_path):
    from skr_ray.tasks.ir.annotate import run_annotation

    out = tmp_path / "run"
    cfg = _cfg(tiny_model_dir, out, "data.max_docs=48", "annotate.batch_size=2",
               "annotate.rows_per_file_batches=1", "annotate.max_new_tokens=120")
    labels = Artifacts(out).labels_dir
    job = _Background(run_annotation, cfg)
    job.start()
    killed = _kill_when(lambda: len(list(labels.glob("*.parquet"))) >= 2, "MapBatches(SelfAnnotator)", job)
    job.join(timeout=600)
    assert job.error is None, job.error
    # the kill landed: the killed actor's journal is there, and a replacement actor (another pid) labelled the rest
    journals = {p.stem.rsplit("-", 1)[1] for p in Artifacts(out).annotate_journal.glob("*.txt")}
    assert str(killed) in journals and len(journals) >= 2, journals
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    ids = [d for p in labels.glob("*.parquet") for d in pq.read_table(p)["doc_id"].to_pylist()]
    assert len(ids) == 48 and len(set(ids)) == 48  # every row exactly once
    summary = job.result
    assert summary["documents_labelled"] == 48 and summary["label_rows"] == 48
    # the killed actor's batch in flight was generated again by its replacement, nothing else
    assert summary["documents_generated"] >= 48
    assert summary["documents_redone"] <= 2 * cfg.annotate.batch_size


@pytest.mark.long  # a resumed training run is tests/integration/test_pipeline.py and test_zero_families (ZeRO-3)
def test_killed_training_worker_resumes_from_the_last_checkpoint(ray_local, tiny_model_dir, tmp_path):
    from skr_ray.tasks.ir.annotate import run_annotation
    from skr_ray.train.trainer import run_training

    out = tmp_path / "run"
    cfg = _cfg(tiny_model_dir, out, "data.max_docs=48", "annotate.batch_size=8", "annotate.max_new_tokens=8",
               "train.epochs=6", "train.batch_size=4", "train.num_workers=1", "train.max_length=64",
               "train.gradient_checkpointing=false")
    run_annotation(cfg)
    storage = Artifacts(out).train_dir / "ray"
    job = _Background(run_training, cfg)
    job.start()
    _kill_when(lambda: any(storage.glob("**/checkpoint_*/state.json")), "RayTrainWorker", job)
    job.join(timeout=900)
    assert job.error is None, job.error
    state = json.loads((Artifacts(out).checkpoint_dir / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == list(range(6))  # every epoch once, none repeated
    # FailureConfig restarted the worker group, which picked up the newest checkpoint, not epoch 0
    assert state["resumed_at_epochs"] and all(e >= 1 for e in state["resumed_at_epochs"])
