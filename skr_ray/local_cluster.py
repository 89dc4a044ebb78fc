"""A real multi-node Ray cluster on one machine: `ray start --head` plus `ray start --address` workers.

For tests and benchmarks of cluster behaviour (job submission, actors spread over nodes) without a
second machine. Each node is its own `ray start --block` process, so stopping it stops that node only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent_ports() -> list[str]:
    """Per-node agent ports: the defaults are fixed and clash with any other Ray on the machine."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]


@dataclass
class LocalCluster:
    """Head (with the Jobs API) + ``workers`` more nodes, ``cpus_per_node`` logical CPUs each.

    A private ``--temp-dir`` keeps the cluster's address file out of /tmp/ray, where every later
    ``ray.init()`` on this machine would otherwise find and join it. Token auth (on by default for
    `ray start` in Ray 2.60) is off for this throwaway cluster; job entry points run `python` from
    PATH, so this interpreter's bin goes first, as a cluster image would have it.
    """

    workers: int = 1
    cpus_per_node: int = 2
    address: str = ""
    jobs_url: str = ""
    node_ids: list[str] = field(default_factory=list)
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _temp: str = ""
    _previous_auth: str | None = None

    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return {**os.environ, "PATH": path, "RAY_DEDUP_LOGS": "0", "RAY_AUTH_MODE": "disabled"}

    def __enter__(self) -> LocalCluster:
        ray = str(Path(sys.executable).with_name("ray"))
        self._temp = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: unix socket paths live under it
        port, dash = free_port(), free_port()
        self._previous_auth = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = "disabled"  # this process's Jobs SDK client talks to that cluster
        common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus_per_node}",
                  f"--temp-dir={self._temp}", "--disable-usage-stats"]
        try:
            self._start([ray, "start", "--head", *common, f"--port={port}", "--include-dashboard=true",
                         f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", *_agent_ports()], "head")
            self.address = f"127.0.0.1:{port}"
            self.jobs_url = f"http://127.0.0.1:{dash}"
            self.wait_for_nodes(1)
            for i in range(self.workers):
                self._start([ray, "start", *common, f"--address={self.address}", *_agent_ports()], f"worker{i}")
            self.node_ids = self.wait_for_nodes(1 + self.workers)
        except BaseException:
            self.__exit__()
            raise
        log.info("local cluster up: %d nodes at %s, jobs API %s", len(self.node_ids), self.address, self.jobs_url)
        return self

    def _start(self, cmd: list[str], name: str) -> None:
        out = open(f"{self._temp}/{name}.log", "w")  # noqa: SIM115 - owned by the node process
        self._procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env))

    def wait_for_nodes(self, n: int, timeout: float = 120) -> list[str]:
        """Node ids once ``n`` are alive (asked from a fresh process: this one stays off the cluster)."""
        code = ("import ray, json; ray.init(address=%r, logging_level='ERROR');"
                "print(json.dumps([x['NodeID'] for x in ray.nodes() if x['Alive']]))" % self.address)
        deadline, last = time.time() + timeout, ""
        while time.time() < deadline:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                                 env=self.env)
            if out.returncode == 0:
                nodes = json.loads(out.stdout.strip().splitlines()[-1])
                if len(nodes) >= n:
                    return nodes
            last = out.stderr[-1500:]
            time.sleep(2)
        raise TimeoutError(f"cluster at {self.address} did not reach {n} nodes: {last}")

    STOP_GRACE_S = 5.0
    """How long the nodes get to stop by themselves (SIGTERM) before what is left of this cluster's process tree
    gets SIGKILL: a throwaway cluster has nothing to save, and a node whose workers still hold jobs' actors can
    take half a minute to wind down."""

    def __exit__(self, *exc: object) -> None:
        import psutil

        tree: list[psutil.Process] = []  # this cluster's processes only (never Ray's by name on the machine)
        for proc in self._procs:
            try:
                tree += psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for proc in reversed(self._procs):
            proc.terminate()
        deadline = time.time() + self.STOP_GRACE_S
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                log.info("node process %d still running after %.0f s: killed", proc.pid, self.STOP_GRACE_S)
                proc.kill()
                proc.wait()
        left = [p for p in tree if p.is_running()]
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=10)
        self._procs.clear()
        if self._previous_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = self._previous_auth
        shutil.rmtree(self._temp, ignore_errors=True)
