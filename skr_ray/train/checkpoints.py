"""Ray Train's per-epoch checkpoints of a training run: the newest complete one (to resume from), the kept
lowest-validation-loss one (``BEST``), and the export of a checkpoint's loadable parts into ``<stage>/checkpoint/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from skr_ray.config import SKRConfig
from skr_ray.models.checkpoint import ADAPTER, HEAD_CONFIG, HEAD_WEIGHTS, RUN_CONFIG

BEST = "best"  # under a run's Ray storage: the loadable parts of the lowest-validation-loss epoch


def latest_ray_checkpoint(storage: Path) -> Path | None:
    """Newest complete checkpoint of an earlier (possibly killed) run of this stage."""
    candidates = []
    for state in storage.glob("**/checkpoint_*/state.json"):
        try:
            epoch = json.loads(state.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            continue
        if (state.parent / "deepspeed" / "latest").is_file():
            candidates.append((epoch, state.stat().st_mtime, state.parent))
    return max(candidates)[2] if candidates else None


def export_checkpoint(ray_checkpoint: Path, target: Path, cfg: SKRConfig) -> None:
    """Copy the loadable parts (adapter, head, state) out of Ray's storage into <stage>/checkpoint/."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(ray_checkpoint / ADAPTER, tmp / ADAPTER)
    for name in (HEAD_CONFIG, HEAD_WEIGHTS, "state.json"):
        if (ray_checkpoint / name).is_file():
            shutil.copy2(ray_checkpoint / name, tmp / name)
    (tmp / RUN_CONFIG).write_text(cfg.to_yaml())
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
