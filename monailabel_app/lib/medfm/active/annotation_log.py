"""What annotation costs and what it buys: each submitted label with its time and the strategy that proposed it."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

from filelock import FileLock

from ..files import read_json, write_json_atomic


class AnnotationLog:
    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / "annotations.json"
        self.lock = FileLock(str(Path(folder) / ".annotations.lock"))

    def entries(self) -> list[dict]:
        labels = read_json(self.path).get("labels")
        return labels if isinstance(labels, list) else []

    def record(self, image_id: str, session: str, strategy: str | None, seconds: float | None,
               adapter: str, user: str | None = None) -> dict:
        entry = {"image": image_id, "session": session or "default", "strategy": strategy,
                 "annotation_seconds": seconds, "adapter": adapter, "user": user, "ts": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            labels = self.entries()
            labels.append(entry)
            write_json_atomic(self.path, {"labels": labels})
        return entry

    def sessions(self) -> list[dict]:
        """Per session: labels, annotation time, labels per hour of annotation, and which strategies proposed them."""
        grouped: dict[str, list[dict]] = defaultdict(list)
        for entry in self.entries():
            grouped[entry["session"]].append(entry)
        out = []
        for session, rows in grouped.items():
            timed = [r["annotation_seconds"] for r in rows if isinstance(r.get("annotation_seconds"), int | float)]
            seconds = float(sum(timed))
            strategies: dict[str, int] = defaultdict(int)
            for r in rows:
                strategies[r.get("strategy") or "none"] += 1
            out.append({"session": session, "labels": len(rows), "timed_labels": len(timed),
                        "annotation_seconds": round(seconds, 1),
                        "labels_per_hour": round(3600 * len(timed) / seconds, 2) if seconds > 0 else None,
                        "strategies": dict(strategies), "first": min(r["ts"] for r in rows),
                        "last": max(r["ts"] for r in rows)})
        return sorted(out, key=lambda s: s["first"])
