"""Re-expression training throughput: Ray Train + DeepSpeed against the same training run by hand.

Both sides train the same model on the same self-labelled examples, batches (the loop's seeded permutation),
LoRA, head, loss, optimizer (AdamW, gradient clipping) and engine (``ReexpressionModel`` with the configured
frozen-prefix cache and ``train.group_by_length``): the plain side is that loop as one writes it at its best, in
one process with every core's threads; the Ray side is ``skr train`` (one worker).

Each side runs in a fresh process and its clock covers everything it does: Ray's start, the worker group,
DeepSpeed's set-up and the checkpoint for Ray; the model load for both. The sides alternate ``--repeats`` times;
the script prints each side's median and spread, end to end and in steady state (steps after the first), the
ratios, and checks that both sides' step losses agree to 1e-4 (a faster side that trained differently would not
count).

    python benchmarks/train_throughput.py --labels RUN_DIR [--steps 50] [--repeats 3] [key=value overrides]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIDES = ("plain", "ray")


def _config(out: Path, steps: int, overrides: list[str]):
    import skr_ray.tasks  # noqa: F401  (registers the built-in tasks, as the CLI does)
    from skr_ray.config import load_config

    return load_config(None, [f"output_dir={out}", "train.epochs=1", f"train.max_steps_per_epoch={steps}",
                              "train.val_fraction=0.0", "train.num_workers=1", *overrides])


def plain_side(cfg) -> dict:
    """``train_loop_per_worker``'s computation for one worker, without Ray or DeepSpeed."""
    import torch

    from skr_ray.artifacts import Artifacts
    from skr_ray.models.backbone import set_threads
    from skr_ray.registry import get_task
    from skr_ray.train.deepspeed_config import GRADIENT_CLIPPING, torch_optimizer
    from skr_ray.train.loop import build_model

    task = get_task(cfg.task)
    hooks = task.training_hooks()
    train, val = hooks.load_examples(cfg, Artifacts(cfg.output_dir))
    head_info = {"task": cfg.task, "objective": "head", **hooks.head_info(cfg, train)}
    if hasattr(hooks, "initial_head_state") or hasattr(hooks, "build_head"):
        raise SystemExit(f"the plain side mirrors the IR loop; task {cfg.task!r} fits or builds its head otherwise")
    set_threads(cfg.model, replicas=1)
    torch.manual_seed(cfg.train.seed)
    model, tok = build_model(cfg, task, head_info, "cpu")  # the worker's own builder
    if hasattr(hooks, "fit_start_head"):
        state = hooks.fit_start_head(model, tok, train, cfg, "cpu", head_info)
        if state is not None:
            model.head.load_state_dict(state)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch_optimizer(cfg.train, False, trainable)
    order = list(range(len(train)))
    random.Random(cfg.train.seed * 1000).shuffle(order)  # epoch 0's permutation in the loop
    bs, steps = cfg.train.batch_size, min(len(train) // cfg.train.batch_size, cfg.train.max_steps_per_epoch)
    if steps < 1:  # as the loop refuses it
        raise SystemExit(f"{len(train)} training pairs are fewer than one batch ({bs}): lower train.batch_size")
    model.train()
    losses, t0, first = [], time.perf_counter(), 0.0
    for step in range(steps):
        loss = hooks.batch_loss(model, tok, [train[i] for i in order[step * bs : (step + 1) * bs]], cfg, "cpu",
                                head_info)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, GRADIENT_CLIPPING)
        opt.step()
        losses.append(loss.item())
        if step == 0:
            first = time.perf_counter() - t0
    steady = (steps - 1) * bs / max(time.perf_counter() - t0 - first, 1e-9) if steps > 1 else float("nan")
    return {"samples": steps * bs, "steady_samples_per_s": steady, "step_losses": losses}


def ray_side(cfg) -> dict:
    from skr_ray.artifacts import Artifacts
    from skr_ray.train.trainer import run_training

    info = run_training(cfg)
    history = json.loads(Artifacts(cfg.output_dir).train_history.read_text())
    final = info["final"]
    return {"samples": len(history[0]["step_losses"]) * cfg.train.batch_size,
            "steady_samples_per_s": final.get("steady_samples_per_s", final["samples_per_s"]),
            "step_losses": history[0]["step_losses"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", required=True, help="a run dir with a finished annotate/ stage")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one side, in a child process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.side:
        start = time.perf_counter()
        cfg = _config(Path(args.out), args.steps, args.overrides)
        result = (plain_side if args.side == "plain" else ray_side)(cfg)
        result["seconds"] = time.perf_counter() - start
        print("RESULT " + json.dumps(result), flush=True)
        return

    root = Path(tempfile.mkdtemp(prefix="skr-bench-train-"))
    probe = _config(root / "probe", args.steps, args.overrides)
    rates: dict[str, list[float]] = {s: [] for s in SIDES}
    steady: dict[str, list[float]] = {s: [] for s in SIDES}
    reference, worst = None, 0.0
    for rep in range(args.repeats):
        for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
            out = root / f"{side}-{rep}"
            shutil.copytree(Path(args.labels) / "annotate", out / "annotate")
            proc = subprocess.run([sys.executable, __file__, "--labels", args.labels, "--steps", str(args.steps),
                                   "--side", side, "--out", str(out), *args.overrides], capture_output=True,
                                  text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.exit(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            r = json.loads(line[len("RESULT "):])
            rates[side].append(r["samples"] / r["seconds"])
            steady[side].append(r["steady_samples_per_s"])
            if reference is None:
                reference = r["step_losses"]
            if len(r["step_losses"]) != len(reference):
                sys.exit(f"{side} ran {len(r['step_losses'])} steps, the first side {len(reference)}")
            diff = max((abs(a - b) for a, b in zip(reference, r["step_losses"])), default=0.0)
            worst = max(worst, diff)
            print(f"repeat {rep + 1} {side:5s}: {r['samples']} samples in {r['seconds']:.1f} s = "
                  f"{rates[side][-1]:.3f} samples/s end to end, {steady[side][-1]:.3f} steady; step losses "
                  f"differ from the first side's by at most {diff:.2e}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)

    t = probe.train
    print(f"\ncores={os.cpu_count()} steps={args.steps} batch_size={t.batch_size} repeats={args.repeats} "
          f"lora_layers={t.lora_layers or 'all'} cache_frozen_prefix={t.cache_frozen_prefix} "
          f"group_by_length={t.group_by_length} zero_stage={t.zero_stage} max_length={t.max_length}")
    for name, table in (("end to end", rates), ("steady", steady)):
        med = {s: statistics.median(v) for s, v in table.items()}
        spread = ", ".join(f"{s} {med[s]:.3f} (min {min(v):.3f}, max {max(v):.3f})" for s, v in table.items())
        print(f"{name:10s}: samples/s median {spread}; ratio ray / plain {med['ray'] / med['plain']:.2f}")
    print(f"step losses: largest difference between any two runs {worst:.2e} (limit 1e-4)")
    if worst > 1e-4:
        sys.exit("the sides trained differently: their speeds are not comparable")


if __name__ == "__main__":
    main()
