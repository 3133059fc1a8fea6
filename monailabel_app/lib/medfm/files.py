"""Atomic JSON files: what the registry, score book, annotation log and training stats all write."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def write_json_atomic(path: Path, data: dict) -> None:
    """Readers see the old file or the new one, never half of either (temp file, fsync, rename)."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an error mid-write leaves the old file, and no debris
        raise


def read_json(path: Path) -> dict:
    """The file's object, or {} when it is missing or unreadable (a record not yet written)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
