"""One forward pass per page on a Ray Data actor pool: the final-token states of the frozen base model
(head-only, the probe) or an SKR checkpoint's boxes. Cached on disk per system, so a killed evaluation
resumes per system.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from skr_ray.config import SKRConfig, from_dict
from skr_ray.ray_utils import actor_pool

log = logging.getLogger(__name__)


class PageReader:
    """Ray Data UDF: ``mode='states'`` -> base final-token states; ``mode='boxes'`` -> the checkpoint's boxes."""

    def __init__(self, cfg_dict: dict[str, Any], mode: str, checkpoint: str | None, replicas: int) -> None:
        import torch

        from skr_ray.models.backbone import set_threads

        self.cfg = from_dict(cfg_dict)
        set_threads(self.cfg.model, replicas)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.mode = mode
        if checkpoint:
            from skr_ray.models.checkpoint import load_skr_model

            skr = load_skr_model(checkpoint, self.device)
            self.model, self.processor, self.head = skr.model, skr.tokenizer, skr.head
            self.target = skr.head_info.get("target", "")
        else:
            from skr_ray.models.backbone import load_backbone

            self.model, self.processor = load_backbone(self.cfg.model, device=self.device)
            self.head, self.target = None, self.cfg.od.target

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        import torch

        from skr_ray.models.vision import image_final_states
        from skr_ray.tasks.od.inputs import page_inputs

        examples = [{"page_id": str(i), "path": str(p), "page": int(n)}
                    for i, p, n in zip(batch["page_id"], batch["path"], batch["page"])]
        t0 = time.perf_counter()
        with torch.inference_mode():
            states = image_final_states(self.model, page_inputs(self.processor, examples, self.target, self.device))
            out = self.head(states) if self.mode == "boxes" else states
        seconds = (time.perf_counter() - t0) / len(examples)
        return {"page_id": [e["page_id"] for e in examples], "value": out.float().cpu().numpy().tolist(),
                "seconds": [seconds] * len(examples)}


def read_pages(cfg: SKRConfig, pages: list[dict[str, Any]], mode: str, checkpoint: str | None,
               cache: Path) -> tuple[dict[str, np.ndarray], float]:
    """page id -> state (D,) or box (4,), and seconds per page; ``cache`` (a .json file) is reused if complete."""
    import ray.data

    from skr_ray.ray_utils import actor_gpus, replica_pool

    if cache.is_file():
        data = json.loads(cache.read_text())
        if set(data["values"]) >= {p["page_id"] for p in pages}:
            return {k: np.asarray(v, dtype=np.float32) for k, v in data["values"].items()}, data["seconds_per_page"]
    a = cfg.annotate
    gpus = actor_gpus(a)
    actors = replica_pool(cfg.evaluate.num_actors, a.num_cpus_per_actor, gpus, cfg.model)
    ds = ray.data.from_items(pages).map_batches(
        PageReader, fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "mode": mode, "checkpoint": checkpoint,
                                           "replicas": actors},
        batch_size=cfg.evaluate.batch_size, compute=actor_pool(actors), num_cpus=a.num_cpus_per_actor,
        num_gpus=gpus)
    values, seconds = {}, []
    for row in ds.iter_rows():
        values[row["page_id"]] = np.asarray(row["value"], dtype=np.float32)
        seconds.append(float(row["seconds"]))
    per_page = float(np.mean(seconds)) if seconds else 0.0
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"values": {k: v.tolist() for k, v in values.items()}, "seconds_per_page": per_page}))
    tmp.replace(cache)
    return values, per_page
