"""Kill a real annotation job midway and resume it; bad inputs fail with clear messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from skr_ray.artifacts import Artifacts

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "skr_ray.cli", *args]


def test_killed_annotation_resumes_without_redoing_work(ray_local, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    args = [
        "annotate", f"model.name_or_path={tiny_model_dir}", f"output_dir={out}", "data.max_docs=48",
        "annotate.batch_size=2", "annotate.rows_per_file_batches=1", "annotate.max_new_tokens=200",
        "annotate.require_question_mark=false", "annotate.min_words=1", "annotate.max_words=1000",
        "annotate.max_copy_ratio=1.0",
    ]
    # Both runs are drivers on the session's cluster (as jobs on a real one): the SIGKILLed driver's actors
    # go with it, and no run pays for starting a cluster of its own on 2 cores.
    env = dict(os.environ, RAY_ADDRESS=ray_local.get_runtime_context().gcs_address, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(_cli(*args), cwd=REPO, start_new_session=True, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    labels = Artifacts(out).labels_dir
    deadline = time.time() + 240
    while time.time() < deadline and len(list(labels.glob("*.parquet"))) < 3:
        assert proc.poll() is None, "annotation finished before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name for p in labels.glob("*.parquet")}
    assert len(before) >= 3
    assert not Artifacts.is_done(Artifacts(out).annotate_dir)

    done = subprocess.run(_cli(*args), cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    summary = json.loads((Artifacts(out).annotate_summary).read_text())
    assert summary["resumed_from_documents"] > 0
    assert summary["documents_labelled"] == 48
    rows = [pq.read_table(p)["doc_id"].to_pylist() for p in labels.glob("*.parquet")]
    flat = [d for r in rows for d in r]
    redone = len(flat) - len(set(flat))
    assert len(set(flat)) == 48
    assert redone <= 2, f"{redone} rows were labelled twice"  # at most the batch in flight


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d: d / "missing.jsonl", "corpus not found"),
        (lambda d: (d / "corpus.jsonl").write_text("") and None or d, "corpus is empty"),
        (lambda d: (d / "corpus.jsonl").write_text('{"_id": "a", "body": "x"}\n') and None or d,
         "corpus.jsonl:1: missing field 'text'"),
    ],
    ids=["missing-file", "empty-corpus", "wrong-schema"],
)
def test_bad_input_fails_with_a_clear_message(tmp_path, setup, message):
    corpus = setup(tmp_path)
    res = subprocess.run(_cli("annotate", f"data.unlabeled={corpus}", f"output_dir={tmp_path / 'out'}"),
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_config_key_exit_code(tmp_path):
    res = subprocess.run(_cli("annotate", "train.epoch=3"), cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and "unknown config key 'train.epoch'" in res.stderr
