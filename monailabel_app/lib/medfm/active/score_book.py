"""Per-image scores and pooled embeddings, persisted per adapter version so they survive a restart.

An image's entry remembers the file's size and modification time; scoring skips images whose file has not changed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from filelock import FileLock

from ..files import read_json, write_json_atomic


def file_stamp(path: str) -> str:
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class ScoreBook:
    def __init__(self, folder: str | os.PathLike, version: str):
        self.folder = Path(folder)
        self.version = version
        self.path = self.folder / f"{version}.json"
        self.lock = FileLock(str(self.folder / ".lock"))

    def load(self) -> dict[str, dict]:
        images = read_json(self.path).get("images")
        return images if isinstance(images, dict) else {}

    def is_current(self, image_id: str, image_path: str, entries: dict | None = None) -> bool:
        entry = (self.load() if entries is None else entries).get(image_id)
        return bool(entry) and entry.get("stamp") == file_stamp(image_path)

    def record(self, image_id: str, image_path: str, uncertainty: float, embedding: list[float]) -> None:
        """Add one image's entry; read-modify-write under a lock so concurrent scorers never lose entries."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.lock:
            images = self.load()
            images[image_id] = {"stamp": file_stamp(image_path), "uncertainty": round(uncertainty, 6),
                                "embedding": [round(float(v), 5) for v in embedding], "scored_at": time.time()}
            write_json_atomic(self.path, {"version": self.version, "images": images})
