"""Every task has the same shape: the same role modules, a Task that declares only what shared code calls, one
split helper and one skip-if-done wrapper used by every stage."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from skr_ray.artifacts import Artifacts, skip_if_done
from skr_ray.config import load_config
from skr_ray.registry import Task
from skr_ray.splits import split_by, val_bucket

PACKAGE = Path(__file__).resolve().parents[2] / "skr_ray"
ROLES = ("annotate", "training", "evaluate", "head", "loss", "prompts", "probe")


@pytest.mark.parametrize("task", ["ir", "ad", "od"])
def test_each_task_folder_holds_the_same_roles(task):
    missing = [r for r in ROLES if not (PACKAGE / "tasks" / task / f"{r}.py").is_file()]
    assert not missing, f"tasks/{task}/ lacks {missing}"


def test_task_declares_only_what_shared_code_calls():
    from skr_ray.tasks import get_task

    assert {f.name for f in dataclasses.fields(Task)} == {"name", "make_head", "head_options", "route",
                                                          "image_inputs", "training", "stages", "checks"}
    from skr_ray.tasks import task_for_route

    assert [task_for_route(r).name for r in ("/v1/embeddings", "/v1/classify", "/v1/detect")] == ["ir", "ad", "od"]
    for name in ("ir", "ad", "od"):
        task = get_task(name)
        # every task has the three stages; IR also indexes a corpus for /v1/search
        assert set(task.stages) == {"annotate", "train", "evaluate"} | ({"index"} if name == "ir" else set())
        assert task.stages["train"] == "skr_ray.train.trainer:run_training_stage"  # one trainer for all
        assert all(callable(task.stage(s)) for s in task.stages)
        for hook in ("load_examples", "head_info", "batch_loss", "validate"):  # the loop's required hooks
            assert callable(getattr(task.training_hooks(), hook, None)), (name, hook)
        cfg = load_config(None, [f"task={name}"])
        head = task.make_head(16, task.head_options(cfg))
        assert sum(p.numel() for p in head.parameters()) >= 0


def test_the_shared_runners_name_no_task():
    pattern = re.compile(r"""["'](ir|ad|od)["']|\.task\s*(==|in)\b""")
    for folder in ("annotate", "train", "evaluate"):
        for path in (PACKAGE / folder).rglob("*.py"):
            hits = [line for line in path.read_text().splitlines() if pattern.search(line)]
            assert not hits, f"{path.relative_to(PACKAGE.parent)} names a task: {hits}"


def test_one_split_helper_and_one_skip_guard():
    sources = {p: p.read_text() for p in PACKAGE.rglob("*.py")}
    splits = [p for p, s in sources.items() if "2**64" in s]
    assert [p.name for p in splits] == ["splits.py"]
    guards = [p for p, s in sources.items() if "already complete" in s]
    assert [p.name for p in guards] == ["artifacts.py"]
    entry_points = {"tasks/ir/annotate.py", "tasks/ad/annotate.py", "tasks/od/annotate.py", "tasks/ir/evaluate.py",
                    "tasks/ad/evaluate.py", "tasks/od/evaluate.py", "train/trainer.py"}
    for rel in entry_points:
        assert "@skip_if_done(" in sources[PACKAGE / rel], rel


def test_the_split_keeps_a_group_on_one_side_and_is_stable():
    items = [(f"doc{i // 3}", i) for i in range(3000)]  # three items per group
    train, val = split_by(items, lambda x: x[0], 0.1, seed=7)
    assert len(train) + len(val) == 3000 and 0.07 < len(val) / 3000 < 0.13
    assert not {g for g, _ in train} & {g for g, _ in val}
    assert split_by(items, lambda x: x[0], 0.1, seed=7) == (train, val)
    assert split_by(items, lambda x: x[0], 0.1, seed=8) != (train, val)
    assert val_bucket("doc1", 7) == val_bucket("doc1", 7) and 0 <= val_bucket("doc1", 7) < 1


def test_a_finished_stage_returns_its_stored_result_without_running(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}"])
    calls = []

    @skip_if_done("evaluate")
    def evaluate(c):
        calls.append(c)
        art = Artifacts(c.output_dir)
        art.evaluate_dir.mkdir(parents=True, exist_ok=True)
        art.metrics.write_text(json.dumps({"skr": {"mrr": 0.5}}))
        art.mark_done(art.evaluate_dir)
        return {"skr": {"mrr": 0.5}}

    assert evaluate(cfg) == {"skr": {"mrr": 0.5}} and len(calls) == 1
    assert evaluate(cfg) == {"skr": {"mrr": 0.5}} and len(calls) == 1  # read back, not run again
    (Artifacts(tmp_path).evaluate_dir / "_SUCCESS").unlink()
    evaluate(cfg)
    assert len(calls) == 2  # no marker: it runs (or resumes)

    @skip_if_done(lambda objective="head": "train" if objective == "head" else "sft")
    def train(c, objective="head"):
        calls.append(objective)
        return {"objective": objective}

    art = Artifacts(tmp_path)
    (art.sft_dir / "checkpoint" / "adapter").mkdir(parents=True)
    art.mark_done(art.sft_dir, {"epochs": 2})
    assert train(cfg, objective="sft") == {"epochs": 2} and train(cfg) == {"objective": "head"}
