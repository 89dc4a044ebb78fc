"""`skr submit|status|logs|stop`: run stages on a Ray cluster you already operate, via the Ray Jobs SDK."""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STAGES = ("annotate", "train", "evaluate", "index", "run", "serve", "config")
REPO = Path(__file__).resolve().parents[1]
EXCLUDES = [".venv", ".git", "runs", "**/__pycache__", ".pytest_cache"]


def runtime_env(working_dir: Path = REPO, pip: list[str] | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The job's runtime_env: this checkout as working_dir (code travels with the job), extra pip deps, env."""
    out: dict[str, Any] = {
        "working_dir": str(working_dir),
        "excludes": list(EXCLUDES),
        "env_vars": {"TOKENIZERS_PARALLELISM": "false", **(env or {})},
    }
    if pip:
        out["pip"] = list(pip)
    return out


def entrypoint(stage: str, config: str | None, overrides: list[str]) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
    parts = ["python", f"jobs/{stage}.py"]
    if config:
        parts += ["--config", config]
    return " ".join(shlex.quote(p) for p in parts + list(overrides))


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def submit(address: str, stage: str, config: str | None, overrides: list[str], wait: bool = True,
           pip: list[str] | None = None, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Submit a stage; with ``wait`` stream its logs until it ends. Returns (job id, final status)."""
    client = _client(address)
    deadline = time.time() + 120
    while True:
        try:
            job_id = client.submit_job(entrypoint=entrypoint(stage, config, overrides),
                                       runtime_env=runtime_env(pip=pip, env=env), metadata={"skr_stage": stage})
            break
        except RuntimeError as exc:  # a freshly started head has no job agent for a few seconds
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)
    print(f"submitted {stage} as job {job_id}", file=sys.stderr, flush=True)
    if not wait:
        return job_id, str(client.get_job_status(job_id))
    return job_id, follow(address, job_id)


def follow(address: str, job_id: str) -> str:
    """Stream a job's logs to stdout until it ends; return its final status."""
    client = _client(address)

    async def stream() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(stream())
    return wait_until_done(address, job_id)


def wait_until_done(address: str, job_id: str, timeout_s: float = 86400) -> str:
    from ray.job_submission import JobStatus

    client = _client(address)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status)
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still running after {timeout_s} s")


def status(address: str, job_id: str) -> str:
    info = _client(address).get_job_info(job_id)
    return f"{job_id}: {info.status} {info.message or ''}".strip()


def logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    return _client(address).stop_job(job_id)


def jobs_main(command: str, address: str, config: str | None, rest: list[str], wait: bool,
              pip: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    if command == "submit":
        if not rest:
            print(f"skr: submit needs a stage: one of {STAGES}", file=sys.stderr)
            return 2
        job_id, final = submit(address, rest[0], config, rest[1:], wait=wait, pip=pip, env=env)
        print(job_id)
        return 0 if (not wait or final.endswith("SUCCEEDED")) else 1
    if not rest:
        print(f"skr: {command} needs a job id", file=sys.stderr)
        return 2
    if command == "status":
        print(status(address, rest[0]))
    elif command == "logs":
        sys.stdout.write(logs(address, rest[0]))
    elif command == "stop":
        print("stopped" if stop(address, rest[0]) else "not running")
    return 0
