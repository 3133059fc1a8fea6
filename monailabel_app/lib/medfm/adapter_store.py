"""Adapter versions on disk: one immutable folder each, written atomically beside the untouched base FM.

Layout: `<root>/<fm>/<version>/` holds peft's `adapter_config.json` + `adapter_model.safetensors` (LoRA, DoRA) or
`weights.safetensors` (decoder-only and full fine-tuning, a partial state dict), and `manifest.json`;
`<root>/<fm>/active.json` names the active version. A version folder appears only by one atomic rename of a
finished staging folder, so a crash or a stopped training never leaves a half-written version behind.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from .errors import InputError, NotFoundError

BASE = "base"
VERSION_RE = re.compile(r"^v\d{4,}$")
MANIFEST = "manifest.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
STATE_WEIGHTS = "weights.safetensors"


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex}-{path.name}")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class AdapterStore:
    def __init__(self, root: str | os.PathLike, fm_name: str):
        self.root = Path(root) / fm_name
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- naming -------------------------------------------------------------------------------------------
    def check_id(self, version: str) -> str:
        if version == BASE:
            return version
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise InputError(f"adapter id {version!r} is not valid: use 'base' or a version like 'v0001'")
        if not (self.root / version / MANIFEST).is_file():
            known = ", ".join(self.versions()) or "none yet"
            raise NotFoundError(f"adapter '{version}' does not exist (known versions: {known})")
        return version

    def versions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if VERSION_RE.match(p.name) and (p / MANIFEST).is_file())

    def path(self, version: str) -> Path:
        return self.root / self.check_id(version)

    def manifest(self, version: str) -> dict:
        if version == BASE:
            return {"id": BASE}
        return json.loads((self.path(version) / MANIFEST).read_text())

    # ---- active pointer -----------------------------------------------------------------------------------
    def active(self) -> str:
        pointer = self.root / "active.json"
        if not pointer.is_file():
            return BASE
        version = json.loads(pointer.read_text()).get("version") or BASE
        return version if version == BASE or (self.root / version / MANIFEST).is_file() else BASE

    def set_active(self, version: str) -> None:
        self.check_id(version)
        write_json_atomic(self.root / "active.json", {"version": version})

    def resolve(self, requested: str | None) -> str:
        """`None` or '' means the active version."""
        return self.check_id(requested) if requested else self.active()

    # ---- writing ------------------------------------------------------------------------------------------
    def staging(self) -> Path:
        path = self.root / f".staging-{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def commit(self, staging: Path, manifest: dict) -> str:
        """Give a finished staging folder the next version id by one atomic rename; return that id."""
        for _ in range(1000):
            numbers = [int(v[1:]) for v in self.versions()] + [0]
            version = f"v{max(numbers) + 1:04d}"
            manifest = {**manifest, "id": version}
            write_json_atomic(staging / MANIFEST, manifest)
            try:
                os.rename(staging, self.root / version)  # fails if another writer took the id first
                return version
            except OSError:
                continue
        raise RuntimeError("could not allocate an adapter version id")

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def clean_stale_staging(self) -> None:
        for p in self.root.glob(".staging-*"):
            shutil.rmtree(p, ignore_errors=True)

    # ---- loading ------------------------------------------------------------------------------------------
    def apply(self, base_model: nn.Module, version: str) -> nn.Module:
        """A copy of `base_model` with the version's weights in it (LoRA merged), the base left untouched."""
        if version == BASE:
            return base_model
        folder = self.path(version)
        model = copy.deepcopy(base_model)
        if (folder / PEFT_CONFIG).is_file():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(folder), is_trainable=False).merge_and_unload()
        else:
            state = load_file(str(folder / STATE_WEIGHTS))
            check_state_fits(model, state)
            model.load_state_dict(state, strict=False)
        return model.eval()


def check_state_fits(model: nn.Module, state: dict) -> None:
    """Refuse weights whose tensor names or shapes do not belong to this FM."""
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise InputError(f"adapter weights name {len(unknown)} tensors this FM does not have, e.g. {unknown[:3]}")
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise InputError(f"adapter weights have wrong shapes for {len(wrong)} tensors, e.g. {wrong[:3]}")
