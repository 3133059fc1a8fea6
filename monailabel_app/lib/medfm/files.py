"""Atomic files: what the registry, score book, annotation log, training stats, federation records, written images
and cached embeddings write."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for the caller to write; when the block ends it is synced and renamed over
    `path`, so readers see the old file or the new one, never half of either."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex}-{path.name}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an error mid-write leaves the old file, and no debris
        raise


def write_json_atomic(path: str | Path, data: dict | list) -> None:
    """`data` as JSON at `path`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)


def read_json(path: Path) -> dict:
    """The file's object, or {} when it is missing or unreadable (a record not yet written)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
