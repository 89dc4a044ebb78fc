"""`skr annotate|train|evaluate|run|plan [--config FILE ...] [key.sub=value ...]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from skr_ray.config import ConfigError, SKRConfig, load_config

log = logging.getLogger("skr_ray")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _stage(name: str, cfg: SKRConfig) -> dict:
    """Run one stage of the configured task: each task names its stage functions in its registration
    (``skr_ray/tasks/<task>/__init__.py``), so every task's stages are found the same way."""
    from skr_ray.tasks import get_task

    stage = get_task(cfg.task).stage(name)
    if stage is None:
        raise ValueError(f"task {cfg.task!r} has no stage {name!r}")
    result = stage(cfg)
    if cfg.tracking.mlflow_uri:
        from skr_ray.tracking import log_stage

        log_stage(cfg, name, result)
    return result


def preflight(cfg: SKRConfig, stages: tuple[str, ...]) -> None:
    """Check the config against every stage about to run before any of them starts (a task's ``checks``):
    a model that one stage cannot use fails here, not inside a Ray worker an hour in."""
    from skr_ray.tasks import get_task

    get_task(cfg.task).check(cfg, stages)


def run_pipeline(cfg: SKRConfig) -> dict:
    """annotate -> train -> evaluate (-> index with ``index.after_run``); each stage is skipped when its artifact
    already exists."""
    stages = ("annotate", "train", "evaluate") + (("index",) if cfg.index.after_run else ())
    preflight(cfg, stages)
    results = {}
    for stage in stages:
        log.info("=== stage: %s ===", stage)
        results[stage] = _stage(stage, cfg)
    return results


COMMANDS = ["annotate", "train", "evaluate", "index", "run", "config", "plan", "compare", "serve", "submit", "status",
            "logs", "stop", "tiny-vlm"]
CONFIG_COMMANDS = ("annotate", "train", "evaluate", "index", "run", "config", "plan")  # overrides are config keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skr", description=__doc__)
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--config", "-c", action="append", default=None,
                        help="YAML config file; repeat to layer files (a preset, then a cluster overlay)")
    parser.add_argument("--json", action="store_true", help="plan: print the plan as JSON")
    parser.add_argument("--metric", default=None, help="compare: the metric charted (default: MRR, AUPRC or mean IoU)")
    parser.add_argument("--out", default=None, help="compare: folder for compare.md and compare.png (default: .); "
                        "tiny-vlm: the model folder (default: ~/.cache/skr_ray/tiny-gemma3-vlm)")
    parser.add_argument("--log-level", default=os.environ.get("SKR_LOG_LEVEL", "INFO"))
    parser.add_argument("--model", action="append", default=[], metavar="ID=PATH",
                        help="serve: a model id and its checkpoint or run folder (repeatable)")
    parser.add_argument("--port", type=int, default=8000, help="serve: HTTP port")
    parser.add_argument("--host", default="127.0.0.1", help="serve: address to listen on (0.0.0.0 = every interface)")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve: no API keys (local use only; warned about on a non-loopback --host)")
    parser.add_argument("--address", default=os.environ.get("RAY_JOB_ADDRESS", "http://127.0.0.1:8265"),
                        help="submit/status/logs/stop: the cluster's Jobs API (dashboard) address")
    parser.add_argument("--no-wait", action="store_true", help="submit: return the job id without streaming logs")
    parser.add_argument("--pip", action="append", default=[], metavar="REQ",
                        help="submit: a pip requirement the job's runtime_env installs on the nodes (repeatable)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="submit: an environment variable for the job (repeatable)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    _setup_logging(args.log_level)
    if args.command == "tiny-vlm":
        from skr_ray.tiny_vlm import tiny_vlm_main

        return tiny_vlm_main(args.out)
    if args.command == "compare":  # positional arguments are run folders here, not overrides
        from skr_ray.compare import compare_main

        return compare_main(args.overrides, args.metric, args.out)
    configs = args.config or []
    if args.command in ("serve", "submit", "status", "logs", "stop"):
        if len(configs) > 1:
            print(f"skr {args.command}: one --config file (got {len(configs)})", file=sys.stderr)
            return 2
        args.config = configs[0] if configs else None
    if args.command in ("submit", "status", "logs", "stop"):
        from skr_ray.jobs_client import jobs_main

        bad = [e for e in args.env if "=" not in e]
        if bad:
            print(f"skr: --env needs KEY=VALUE, got {bad[0]!r}", file=sys.stderr)
            return 2
        env = dict(e.split("=", 1) for e in args.env)
        return jobs_main(args.command, args.address, args.config, args.overrides, wait=not args.no_wait,
                         pip=args.pip, env=env)
    if args.command == "serve":
        from skr_ray.serve.cli import serve_main

        return serve_main(args.config, args.model, args.port, args.host, args.no_auth)
    try:
        cfg = load_config(args.config or None, args.overrides)
    except ConfigError as exc:
        print(f"skr: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(cfg.to_yaml())
        return 0
    if args.command == "plan":
        from skr_ray.plan import run_plan

        try:
            text, fits = run_plan(cfg, as_json=args.json)
        except ConfigError as exc:
            print(f"skr: plan: {exc}", file=sys.stderr)
            return 2
        print(text)
        return 0 if fits else 1
    from skr_ray.artifacts import StageError, StageInputError
    from skr_ray.corpus import CorpusError
    from skr_ray.models.backbone import ModelLoadError

    try:
        if args.command == "run":
            summary = run_pipeline(cfg).get("evaluate", {})
        else:
            preflight(cfg, (args.command,))
            summary = _stage(args.command, cfg)
    except (CorpusError, ModelLoadError, FileNotFoundError, StageInputError, StageError, NotImplementedError) as exc:
        print(f"skr: error: {exc}", file=sys.stderr)
        return 1
    log.info("result: %s", json.dumps(summary, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
