"""The README's front door, run as written: `make run`'s command (the demo config, at a tiny size: the tiny random
model and a few rows instead of SmolLM2 and the whole demo) and the serve quick start, whose `export`, `skr serve`
and `curl` lines are read out of README.md and executed as processes against real HTTP. Only the model, the
sizes and the port are changed; the README's config file, CLI and curl command are the ones a user types.

Both processes join the test session's Ray cluster (RAY_ADDRESS) instead of starting one each on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from skr_ray.artifacts import Artifacts
from skr_ray.local_cluster import free_port
from tests.checks import ranx_metrics
from tests.tiny import LOOSE_FILTERS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def readme_block(marker: str) -> list[str]:
    """The shell lines (continuations joined) of the README code block that contains ``marker``."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    block = next(b for b in blocks if marker in b)
    return [line.strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines() if line.strip()]


def make_run_command() -> list[str]:
    """The `run` target's recipe in the Makefile, as argv (the venv's skr replaced by this interpreter's)."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(.+)$", text, flags=re.M).group(1)
    argv = shlex.split(recipe.replace("$(ARGS)", ""))
    assert argv[0] == "$(VENV)/bin/skr", recipe
    return [sys.executable, "-m", "skr_ray.cli", *argv[1:]]


@pytest.fixture(scope="module")
def cluster_env(ray_local):
    env = dict(os.environ, RAY_ADDRESS=ray_local.get_runtime_context().gcs_address, PYTHONPATH=str(REPO),
               TOKENIZERS_PARALLELISM="false")
    return env


@pytest.fixture(scope="module")
def demo_run(cluster_env, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("front") / "runs" / "demo"
    tiny = [f"model.name_or_path={tiny_model_dir}", f"output_dir={out}", "data.max_docs=16", "data.max_queries=8",
            "annotate.batch_size=8", "annotate.max_new_tokens=8", "train.epochs=1", "train.batch_size=4",
            "train.max_length=48", "train.lora_layers=1", "evaluate.max_length=48", "evaluate.systems=[bm25,skr]", *LOOSE_FILTERS]
    proc = subprocess.run([*make_run_command(), *tiny], cwd=REPO, env=cluster_env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_make_run_writes_the_demo_report(demo_run):
    metrics = json.loads((demo_run / "evaluate" / "metrics.json").read_text())
    assert set(metrics) >= {"bm25", "skr"}
    assert metrics["bm25"]["mrr"] > 0.5  # BM25 on the demo's questions: far above chance over 16 passages
    art = Artifacts(demo_run)
    for name, row in metrics.items():  # the report's figures, recomputed by ranx from the TREC run files
        got = ranx_metrics(art, name, [1, 3, 5, 10])
        assert {k: row[k] for k in got} == pytest.approx(got, abs=1e-9), name
    lo, hi = metrics["skr"]["mrr_ci95"]
    assert lo <= metrics["skr"]["mrr"] <= hi and hi > lo
    assert "| SKR" in (demo_run / "evaluate" / "report.md").read_text()


def test_the_serve_quick_start_as_written(demo_run, cluster_env):
    lines = readme_block("skr serve")
    export = next(line for line in lines if line.startswith("export SKR_API_KEYS="))
    key = export.split("=", 1)[1]
    serve_line = next(line for line in lines if line.startswith("skr serve"))
    curl_line = next(line for line in lines if line.startswith("curl"))
    port = free_port()
    argv = shlex.split(serve_line)[1:]
    argv = [a.replace("runs/demo", str(demo_run)) for a in argv]  # the run above stands in for make run's
    env = dict(cluster_env, SKR_API_KEYS=key)
    server = subprocess.Popen([sys.executable, "-m", "skr_ray.cli", *argv, "--port", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=10,
                                headers={"Authorization": f"Bearer {key}"}).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # the proxy is up before the app is
                pass
            time.sleep(0.5)
        else:
            pytest.fail("skr serve did not come up in 240 s")
        curl = curl_line.replace("localhost:8000", f"localhost:{port}")
        done = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        vector = np.array(body["data"][0]["embedding"])
        assert body["model"] == "demo-ir" and vector.ndim == 1 and vector.size > 8
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-3  # the IR head's unit-norm embedding
        no_key = subprocess.run(["bash", "-c", curl.replace("$SKR_API_KEYS", "wrong-key")], env=env,
                                capture_output=True, text=True, timeout=60)
        assert "error" in json.loads(no_key.stdout)  # a wrong key is refused, in the documented error shape
    finally:
        server.terminate()
        server.wait(timeout=60)
        from ray import serve

        serve.shutdown()
