"""Peak tensor memory of a block of PyTorch code on any device, CPU included.

``torch.cuda.max_memory_allocated`` exists only for CUDA; on CPU the process RSS mixes in the allocator and
everything else. ``PeakMemory`` counts the bytes of every tensor storage that code creates while it runs,
until the storage is freed, and reports the peak per device: what the memory plan (``skr plan``) estimates.
Tensors that exist before the block (weights, optimizer states) are added with ``count``.
"""

from __future__ import annotations

import weakref
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakMemory(TorchDispatchMode):
    """``with PeakMemory() as m: ...``; then ``m.peak`` (bytes, all devices) and ``m.peak_by_device``."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[str, int]] = {}  # id(storage) -> (device, bytes)
        self._refs: dict[int, weakref.ref] = {}
        self.current: dict[str, int] = defaultdict(int)
        self.peak_by_device: dict[str, int] = defaultdict(int)

    @property
    def peak(self) -> int:
        return sum(self.peak_by_device.values())

    def count(self, *tensors: torch.Tensor) -> None:
        """Count tensors created before the block (e.g. a model's parameters) as live."""
        for t in tensors:
            self._track(t)

    def _track(self, t: torch.Tensor) -> None:
        if t.device.type == "meta":
            return
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._live:
            return
        device, size = str(t.device), storage.nbytes()
        self._live[key] = (device, size)
        self._refs[key] = weakref.ref(storage, lambda _ref, k=key: self._free(k))
        self.current[device] += size
        self.peak_by_device[device] = max(self.peak_by_device[device], self.current[device])

    def _free(self, key: int) -> None:
        device, size = self._live.pop(key, ("", 0))
        self._refs.pop(key, None)
        if device:
            self.current[device] -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out
