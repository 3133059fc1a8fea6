"""Image-encoder embeddings kept in memory (LRU, bounded in bytes) and optionally on disk.

The encoder costs ~1.4 s per slice on a 2-core CPU and the decoder ~0.1 s, so a second click on a volume is
interactive only if its embeddings are reused. A key names the image content, slice, adapter version and
preprocessing, so a changed image or a new adapter can never be served stale embeddings.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .files import atomic_path


@dataclass(frozen=True)
class EmbeddingKey:
    image: str  # content hash of the image file
    slice_axis: int
    slice_index: int
    adapter: str  # "base" or an adapter version id
    preprocess: str  # backend name + window, so a different windowing is a different entry

    def filename(self) -> str:
        text = f"{self.image}|{self.slice_axis}|{self.slice_index}|{self.adapter}|{self.preprocess}"
        return hashlib.sha256(text.encode()).hexdigest() + ".safetensors"


class EmbeddingCache:
    def __init__(self, max_bytes: int = 2 << 30, disk_dir: str | os.PathLike | None = None):
        self.max_bytes = max_bytes
        self.disk_dir = Path(disk_dir) if disk_dir else None
        if self.disk_dir:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
        self._entries: OrderedDict[EmbeddingKey, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: EmbeddingKey) -> torch.Tensor | None:
        with self._lock:
            tensor = self._entries.get(key)
            if tensor is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return tensor
        tensor = self._read_disk(key)
        with self._lock:
            if tensor is None:
                self.misses += 1
                return None
            self.hits += 1
        self._put_memory(key, tensor)
        return tensor

    def put(self, key: EmbeddingKey, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().to("cpu", copy=True).contiguous()
        self._put_memory(key, tensor)
        self._write_disk(key, tensor)

    def _put_memory(self, key: EmbeddingKey, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.numel() * old.element_size()
            self._entries[key] = tensor
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.numel() * evicted.element_size()

    def _read_disk(self, key: EmbeddingKey) -> torch.Tensor | None:
        if not self.disk_dir:
            return None
        path = self.disk_dir / key.filename()
        if not path.is_file():
            return None
        try:
            return load_file(str(path))["embedding"]
        except Exception:  # a torn or foreign file is a miss, never a crash
            return None

    def _write_disk(self, key: EmbeddingKey, tensor: torch.Tensor) -> None:
        if not self.disk_dir:
            return
        try:
            with atomic_path(self.disk_dir / key.filename()) as tmp:
                save_file({"embedding": tensor}, str(tmp))
        except OSError:  # a full disk only costs the disk copy; the memory cache still has it
            pass

    def stats(self) -> dict:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses}
