"""Connecting to Ray (local or a cluster) the same way from every stage."""

from __future__ import annotations

import logging
import os

from skr_ray.config import AnnotateConfig, ModelConfig, RayConfig, SKRConfig, annotator_model

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


def blocks_for_actors(ds: object, rows_per_block: int) -> object:
    """``ds`` cut into blocks of ``rows_per_block`` rows and materialized, for a model actor pool to read. The
    (small) rows are cut before the actors start: actors that reserve every CPU of the cluster (num_actors x
    num_cpus_per_actor) would otherwise starve the repartition task, and both would wait forever. Small blocks
    also mean each finished block is written at once, so a killed run loses little."""
    return ds.repartition(target_num_rows_per_block=rows_per_block).materialize()


def replica_pool(requested: int, cpus_per_replica: float, gpus_per_replica: float, model: ModelConfig) -> int:
    """Model replicas of an actor pool: ``requested`` when > 0; 0 = one per GPU on a cluster with GPUs, else one
    per ``cpus_per_replica`` CPUs of the cluster (each replica then runs ``cores / replicas`` torch threads: on a
    small model, two one-thread processes do more work than one two-thread process), as many as half the
    cluster's memory holds copies of the model."""
    import ray

    from skr_ray.models.backbone import materialize

    if requested > 0:
        return requested
    resources = ray.cluster_resources()
    if gpus_per_replica > 0:
        return max(1, int(resources.get("GPU", 0.0) // gpus_per_replica))
    by_cpu = int(resources.get("CPU", 1.0) // max(cpus_per_replica, 1e-6))
    weights = sum(f.stat().st_size for f in materialize(model).glob("*.safetensors"))
    by_memory = int(0.5 * resources.get("memory", 0.0) // weights) if weights else by_cpu
    return max(1, min(by_cpu, by_memory))


STREAM_CPUS = 1.0
"""CPUs a streaming pipeline keeps free of its model actors for the tasks that read and cut the blocks those
actors take: one, since Ray Data runs a repartition by rows per block as tasks of one CPU each."""


def actor_cpus(actors: int, per_actor: float, gpus: float = 0.0) -> float:
    """CPUs each of ``actors`` model actors of a streaming pipeline reserves: ``per_actor``, or less where the
    pool would hold every CPU of the cluster, so that ``STREAM_CPUS`` stay free for the reads that feed it (a read
    that cannot be scheduled beside actors holding every CPU would leave them waiting forever). A reservation
    only: the actors' torch threads come from the replica count (:func:`replica_pool`)."""
    import ray

    if gpus > 0:
        return per_actor
    total = float(ray.cluster_resources().get("CPU", 0.0))
    if actors * per_actor + STREAM_CPUS <= total:
        return per_actor
    return max(0.1, (total - STREAM_CPUS) / max(actors, 1))


def actor_gpus(a: AnnotateConfig) -> float:
    """GPUs per model replica: ``annotate.num_gpus_per_actor``, or where it is -1 one when the cluster has GPUs."""
    return a.num_gpus_per_actor if a.num_gpus_per_actor >= 0 else (1.0 if cluster_gpus() else 0.0)


def annotation_pool(cfg: SKRConfig) -> tuple[int, float]:
    """(model replicas, GPUs per replica) of an annotation actor pool, ``annotate.num_actors`` = 0 resolved
    (:func:`replica_pool`; the annotator's weights count for memory)."""
    a = cfg.annotate
    gpus = actor_gpus(a)
    return replica_pool(a.num_actors, a.num_cpus_per_actor, gpus, annotator_model(cfg)), gpus


class PeakRSS:
    """This process's peak resident memory between ``start`` and ``stop`` (sampled every 0.2 s): what a
    driver holds while a stage streams a corpus through the cluster."""

    def __init__(self) -> None:
        import threading

        import psutil

        self.proc, self.peak, self._halt = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._halt.wait(0.2)

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._halt.set()
        self._thread.join()
        return self.peak / 2**20


def spilled_mib() -> float:
    """Object-store MiB spilled to disk so far on the cluster this process is connected to (from Ray's memory
    summary; NaN where it cannot be read)."""
    import re

    try:
        import ray
        from ray._private.internal_api import memory_summary

        summary = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
        found = re.search(r"Spilled (\d+) MiB", summary)
        return float(found.group(1)) if found else 0.0
    except Exception:  # noqa: BLE001 - a figure for the table, not worth failing the run
        return float("nan")
