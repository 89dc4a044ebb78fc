"""Two Ray nodes on one machine (`ray start --head` + `ray start --address`), an annotation job
submitted through the Jobs API (`skr submit`), rows processed by actors on both nodes, each once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_nodes():
    """Head (2 CPUs, Jobs API) and a second node (2 CPUs), each its own `ray start --block` process."""
    from skr_ray.local_cluster import LocalCluster

    with LocalCluster(workers=1, cpus_per_node=2) as cluster:
        yield {"address": cluster.address, "jobs": cluster.jobs_url, "nodes": cluster.node_ids}


def test_annotation_job_spreads_over_two_nodes(two_nodes, tiny_model_dir, tmp_path):
    from skr_ray.jobs_client import logs, submit

    out = tmp_path / "run"
    job_id, final = submit(
        two_nodes["jobs"], "annotate", None,
        # enough blocks that the second node's actor, which starts later, still finds work
        [f"model.name_or_path={tiny_model_dir}", f"output_dir={out}", "data.max_docs=96",
         "annotate.num_actors=2", "annotate.batch_size=4", "annotate.rows_per_file_batches=1",
         "annotate.max_new_tokens=12"],
        wait=False,
    )
    from skr_ray.jobs_client import wait_until_done

    final = wait_until_done(two_nodes["jobs"], job_id, timeout_s=600)
    assert final.endswith("SUCCEEDED"), logs(two_nodes["jobs"], job_id)[-3000:]
    rows = pq.read_table(out / "annotate" / "labels").to_pylist()
    ids = [r["doc_id"] for r in rows]
    assert len(ids) == 96 and len(set(ids)) == 96  # every input row exactly once
    used = {r["node_id"] for r in rows}
    assert used == set(two_nodes["nodes"]), f"rows written by {used}, nodes {two_nodes['nodes']}"
    summary = json.loads((out / "annotate" / "summary.json").read_text())
    assert summary["documents_labelled"] == 96


def test_skr_cli_status_and_logs(two_nodes, tmp_path):
    """`skr submit --no-wait` returns a job id; `skr status` / `skr logs` read it back."""
    env = {**os.environ}
    sub = subprocess.run(
        [sys.executable, "-m", "skr_ray.cli", "submit", "--no-wait", "--address", two_nodes["jobs"], "config",
         "train.epochs=4"], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().splitlines()[-1]
    from skr_ray.jobs_client import wait_until_done

    assert wait_until_done(two_nodes["jobs"], job_id, 300).endswith("SUCCEEDED")
    st = subprocess.run([sys.executable, "-m", "skr_ray.cli", "status", "--address", two_nodes["jobs"], job_id],
                        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert f"{job_id}: SUCCEEDED" in st.stdout
    lg = subprocess.run([sys.executable, "-m", "skr_ray.cli", "logs", "--address", two_nodes["jobs"], job_id],
                        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "epochs: 4" in lg.stdout  # the job printed the resolved config


def _synthetic_corpus(path: Path, n: int) -> Path:
    """n short distinct paragraphs built from the demo corpus' sentences."""
    from skr_ray.corpus import demo_dir, iter_jsonl

    texts = [row["text"] for _, row in iter_jsonl(demo_dir() / "corpus.jsonl")]
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"_id": f"s{i:04d}", "text": f"Note {i}. {texts[i % len(texts)]}"}) + "\n")
    return path


@pytest.mark.long  # a killed annotation resumes in test_resume_and_bad_input and test_faults (one node)
def test_killed_annotation_job_resubmitted_redoes_at_most_one_percent(two_nodes, tiny_model_dir, tmp_path):
    """Stop a running annotation job through the Jobs API, resubmit the same job: it resumes, every
    row lands exactly once, and at most 1% of the rows went through generation twice."""
    from skr_ray.jobs_client import submit, wait_until_done

    n = 400
    corpus = _synthetic_corpus(tmp_path / "corpus.jsonl", n)
    out = tmp_path / "run"
    args = [f"model.name_or_path={tiny_model_dir}", f"data.unlabeled={corpus}", f"output_dir={out}",
            "annotate.num_actors=2", "annotate.batch_size=1", "annotate.rows_per_file_batches=1",
            "annotate.max_new_tokens=12", "annotate.require_question_mark=false", "annotate.min_words=1",
            "annotate.max_words=1000", "annotate.max_copy_ratio=1.0"]
    job_id, _ = submit(two_nodes["jobs"], "annotate", None, args, wait=False)
    labels = out / "annotate" / "labels"
    deadline = time.time() + 600
    while time.time() < deadline and len(list(labels.glob("*.parquet"))) < n // 5:
        time.sleep(0.2)
    res = subprocess.run([sys.executable, "-m", "skr_ray.cli", "stop", "--address", two_nodes["jobs"], job_id],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "stopped", res.stderr
    assert wait_until_done(two_nodes["jobs"], job_id, 300).endswith("STOPPED")
    first = {d for p in labels.glob("*.parquet") for d in pq.read_table(p)["doc_id"].to_pylist()}
    assert 0 < len(first) < n and not (out / "annotate" / "_SUCCESS").exists()

    job_id, _ = submit(two_nodes["jobs"], "annotate", None, args, wait=False)
    assert wait_until_done(two_nodes["jobs"], job_id, 600).endswith("SUCCEEDED")
    ids = [d for p in labels.glob("*.parquet") for d in pq.read_table(p)["doc_id"].to_pylist()]
    assert len(ids) == n and len(set(ids)) == n  # every row exactly once
    summary = json.loads((out / "annotate" / "summary.json").read_text())
    assert summary["resumed_from_documents"] >= len(first)
    assert summary["documents_redone"] <= n // 100, summary  # work lost to the kill: <= 1% of rows
