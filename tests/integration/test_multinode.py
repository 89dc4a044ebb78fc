"""Two Ray nodes on one machine (`ray start --head` + `ray start --address`), an annotation job
submitted through the Jobs API (`skr submit`), rows processed by actors on both nodes, each once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_nodes(address: str, n: int, timeout: float = 120) -> list[dict]:
    code = ("import ray, json; ray.init(address=%r, logging_level='ERROR');"
            "print(json.dumps([x['NodeID'] for x in ray.nodes() if x['Alive']]))" % address)
    deadline, last = time.time() + timeout, ""
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        if out.returncode == 0:
            nodes = json.loads(out.stdout.strip().splitlines()[-1])
            if len(nodes) >= n:
                return nodes
        last = out.stderr[-1500:]
        time.sleep(2)
    raise TimeoutError(f"cluster at {address} did not reach {n} nodes: {last}")


def _agent_ports() -> list[str]:
    """Per-node agent ports: the defaults are fixed and clash with any other Ray on the machine."""
    return [f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]


@pytest.fixture(scope="module")
def two_nodes():
    """Head (2 CPUs, Jobs API) and a second node (2 CPUs).

    `--block` makes each `ray start` own its node, so terminating it stops only that node; a private
    `--temp-dir` keeps the cluster's address file out of /tmp/ray, where every later `ray.init()`
    on this machine would otherwise find and try to join it.
    """
    import shutil
    import tempfile

    temp = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: unix socket paths live under it
    port, dash = _free_port(), _free_port()
    # A throwaway local cluster: token auth (on by default for `ray start` in Ray 2.60) is switched off
    # for it; production clusters keep it and `skr submit` picks the token up through the Ray SDK.
    # Job entry points run `python ...` from the nodes' PATH: put this interpreter's bin first, as a
    # cluster image would (CI calls .venv/bin/python without activating the venv).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "RAY_DEDUP_LOGS": "0", "RAY_AUTH_MODE": "disabled"}
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process's Jobs SDK client talks to that cluster
    procs: list[subprocess.Popen] = []
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"]
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", *common, f"--port={port}", "--include-dashboard=true",
             f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", *_agent_ports()],
            stdout=open(f"{temp}/head.log", "w"), stderr=subprocess.STDOUT, env=env))
        address = f"127.0.0.1:{port}"
        _wait_for_nodes(address, 1)
        procs.append(subprocess.Popen(
            [RAY, "start", *common, f"--address={address}", *_agent_ports()],
            stdout=open(f"{temp}/worker.log", "w"), stderr=subprocess.STDOUT, env=env))
        nodes = _wait_for_nodes(address, 2)
        yield {"address": address, "jobs": f"http://127.0.0.1:{dash}", "nodes": nodes}
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous
        shutil.rmtree(temp, ignore_errors=True)


def test_annotation_job_spreads_over_two_nodes(two_nodes, tiny_model_dir, tmp_path):
    from skr_ray.jobs_client import logs, submit

    out = tmp_path / "run"
    job_id, final = submit(
        two_nodes["jobs"], "annotate", None,
        [f"model.name_or_path={tiny_model_dir}", f"output_dir={out}", "data.max_docs=32",
         "annotate.num_actors=2", "annotate.batch_size=4", "annotate.rows_per_file_batches=1",
         "annotate.max_new_tokens=6"],
        wait=False,
    )
    from skr_ray.jobs_client import wait_until_done

    final = wait_until_done(two_nodes["jobs"], job_id, timeout_s=600)
    assert final.endswith("SUCCEEDED"), logs(two_nodes["jobs"], job_id)[-3000:]
    rows = pq.read_table(out / "annotate" / "labels").to_pylist()
    ids = [r["doc_id"] for r in rows]
    assert len(ids) == 32 and len(set(ids)) == 32  # every input row exactly once
    used = {r["node_id"] for r in rows}
    assert used == set(two_nodes["nodes"]), f"rows written by {used}, nodes {two_nodes['nodes']}"
    summary = json.loads((out / "annotate" / "summary.json").read_text())
    assert summary["documents_labelled"] == 32


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
