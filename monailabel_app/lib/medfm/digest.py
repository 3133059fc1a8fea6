"""SHA-256 of files and folders, read in blocks: the one way the core fingerprints weights, images and labels."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
    return sha256_tree(path)


def sha256_tree(path: str | os.PathLike) -> str:
    """A file's SHA-256; for a folder (a DICOM series), one digest over its files in name order."""
    digest = hashlib.sha256()
    root = Path(path)
    for p in (sorted(root.rglob("*")) if root.is_dir() else [root]):
        if p.is_file():
            with open(p, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()
