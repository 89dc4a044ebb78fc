"""On a GPU: a random-initialised 4B backbone trains with the settings `skr plan` picks, inside the memory the plan
estimated, and HF generation runs; `benchmarks/gpu_train.py` measures the same for 12B and 27B."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("deepspeed") is None, reason="needs CUDA and DeepSpeed")]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_4b_trains_within_the_planned_memory():
    from gpu_train import generation, run_size

    result = run_size("4b", steps=3, seq=256, device="cuda")
    assert "error" not in result, result
    assert result["samples_per_s"] > 0 and result["peak_memory_gib"] <= result["planned_gib"], result
    assert generation("4b", 4, 64, 8, "cuda")["new_tokens_per_s"] > 0

