"""A version's manifest (`manifest.json`): what it is, what it was trained on and how, typed and read in one place.

Training, pretraining and the federation's receive all build it through `Manifest.of_version`; the store commits
it and every reader (segmenter, evidence, registry, service, checked import) gets it back typed. The JSON keeps its
field names, and a field a version was written without stays absent on disk (`to_json` writes only what was set)
and reads back as its default, so versions written before this module load unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict

from . import precision as precision_mod
from .digest import sha256_file

if TYPE_CHECKING:
    from .backends import FMBackend


def utc_now() -> str:
    """The one way a manifest or a decision stamps a time: UTC, ISO 8601, to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_stamp(device: str, precision: str) -> dict:
    """When and on what a version was trained: the `created` and `machine` fields of a trained version."""
    return {"created": utc_now(),
            "machine": {"device": device, "torch": torch.__version__, "host": platform.machine(),
                        "precision": precision_mod.resolve(precision, device)}}


class _Record(BaseModel):
    # Unknown keys (a newer writer's, a foreign site's) are kept, so reading and writing back loses nothing.
    model_config = ConfigDict(extra="allow")


class LearnedLabel(_Record):
    value: int  # voxel value in label maps
    token: int  # index of the label's prompt-free token


class ImageRecord(_Record):
    """An image a version saw: by id, with the hash of its label (supervised) or of its pixels (self-supervised)."""

    id: str
    slices: list[int] = []
    label_sha256: str | None = None
    image_sha256: str | None = None


class Manifest(_Record):
    id: str | None = None  # the store sets it when it commits the version
    fm: str | None = None
    fm_sha256: str | None = None
    method: str | None = None
    config: dict[str, Any] | None = None
    labels: dict[str, LearnedLabel] = {}
    auto_head: bool = False
    parent: str | None = None
    train_images: list[ImageRecord] = []
    val_images: list[ImageRecord] = []
    val_gap_slices: int | None = None
    evidence: dict[str, Any] | None = None  # what validation showed against the active version (evidence.py)
    labelled: bool = True  # False for self-supervised versions
    ssl: dict[str, Any] | None = None
    federation: dict[str, Any] | None = None
    imported_from: dict[str, Any] | None = None
    metrics: dict[str, Any] = {}
    trainable_params: int | None = None
    total_params: int | None = None
    trainable_fraction: float | None = None
    files: dict[str, int] = {}
    files_sha256: dict[str, str] = {}
    adapter_bytes: int | None = None
    peak_memory_mb: float | None = None
    wall_s: float | None = None
    stopped_early: str = ""
    note: str = ""
    created: str | None = None
    machine: dict[str, Any] | None = None

    @classmethod
    def of_version(cls, backend: FMBackend, folder: Path, sizes: dict[str, int], trainable: int, total: int,
                   run: tuple[str, str] | None = None, **fields) -> Manifest:
        """A new version's manifest: the fields every version shares (FM, base-weight hash, adapter files and their
        hashes, size, when made; with `run` = (device, precision), on what), plus the writer's own `fields`."""
        common = {"fm": backend.name, "fm_sha256": backend.weights_sha256(), "trainable_params": trainable,
                  "total_params": total, "trainable_fraction": round(trainable / total, 6), "files": sizes,
                  "files_sha256": {name: sha256_file(folder / name) for name in sorted(sizes)},
                  "adapter_bytes": sum(sizes.values())}
        stamp = run_stamp(*run) if run else {"created": utc_now()}
        return cls(**common, **fields, **stamp)

    @classmethod
    def parse(cls, data: Any) -> Manifest:
        return cls.model_validate(data)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls.parse(json.loads(Path(path).read_text()))

    def to_json(self) -> dict:
        """The JSON object on disk and in replies: only the fields this version was written with."""
        return self.model_dump(mode="json", exclude_unset=True)

    def learned_labels(self) -> dict[str, LearnedLabel]:
        """The labels the version segments without prompts (automatic mode); none without the prompt-free head."""
        return dict(self.labels) if self.auto_head else {}

    def label_tokens(self) -> dict[int, int]:
        """Label value -> prompt-free token; empty for the base FM or a version without the head."""
        return {d.value: d.token for d in self.learned_labels().values()}

    def with_fields(self, **fields) -> Manifest:
        """A copy with `fields` set (and written)."""
        return self.model_copy(update=fields)
