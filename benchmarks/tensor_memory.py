"""Peak live tensor memory of a piece of work on any device: the figure CUDA's max_memory_allocated gives.

On a CPU-only machine this is how a training step's GPU memory need is estimated: every tensor storage that
exists during the work is counted while it lives (parameters and other tensors made before are added up front).
It leaves out what a GPU adds on top: the caching allocator's fragmentation and cuDNN/cuBLAS workspaces.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTensorMemory(TorchDispatchMode):
    def __init__(self, *existing: torch.Tensor):
        super().__init__()
        self._live: dict[int, weakref.ref] = {}
        self.current = 0
        self.peak = 0
        for tensor in existing:
            self._track(tensor)

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self._live:
            return

        def release(_ref, key=key, size=size):
            if self._live.pop(key, None) is not None:
                self.current -= size

        self._live[key] = weakref.ref(storage, release)
        self.current += size
        self.peak = max(self.peak, self.current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and not value.is_meta:
                self._track(value)
        return out
