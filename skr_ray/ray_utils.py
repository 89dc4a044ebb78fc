"""Connecting to Ray (local or a cluster) the same way from every stage."""

from __future__ import annotations

import logging
import os

from skr_ray.config import RayConfig

log = logging.getLogger(__name__)


def ensure_ray(cfg: RayConfig) -> None:
    """Start or join Ray once per process."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"ignore_reinit_error": True, "log_to_driver": True}
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        kwargs["address"] = address
    elif cfg.num_cpus:
        kwargs["num_cpus"] = cfg.num_cpus
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:  # a submitted job already carries its runtime_env
        kwargs["runtime_env"] = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    ray.init(**kwargs)
    log.info("Ray resources: %s", ray.cluster_resources())


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def actor_pool(size: int) -> object:
    """A fixed-size Ray Data actor pool for a class UDF (``map_batches(..., compute=actor_pool(n))``)."""
    import ray.data

    return ray.data.ActorPoolStrategy(size=max(1, int(size)))
