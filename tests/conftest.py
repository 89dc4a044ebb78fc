from __future__ import annotations

import os
from pathlib import Path

import pytest

import skr_ray.tasks  # noqa: F401  (registers the built-in tasks, as the CLI does, for tests that call stages directly)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma-3 vision-language model with its processor."""
    from tests.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-gemma3"))


@pytest.fixture(scope="session")
def tiny_judge_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, rigged so that its greedy answers are 'yes' or 'no' (input-dependent)."""
    from tests.tiny import make_yes_no_judge

    return make_yes_no_judge(tiny_model_dir, tmp_path_factory.mktemp("tiny-judge"))


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray instance (2 CPUs) shared by the integration tests."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()
