"""Adapter versions on disk: one immutable folder each, written atomically beside the untouched base FM.

Layout: `<root>/<fm>/<version>/` holds peft's `adapter_config.json` + `adapter_model.safetensors` (LoRA, DoRA) or
`weights.safetensors` (decoder-only and full fine-tuning, a partial state dict), and `manifest.json`;
`<root>/<fm>/active.json` names the active version. A version folder appears only by one atomic rename of a
finished staging folder, so a crash or a stopped training never leaves a half-written version behind.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from filelock import FileLock
from safetensors.torch import load_file
from torch import nn

from .digest import sha256_file
from .errors import ConflictError, InputError, NotFoundError
from .files import read_json, write_json_atomic
from .manifest import Manifest

BASE = "base"
DECISIONS = "decisions"  # the registry's activation decisions, one JSON per version, beside the versions
VERSION_RE = re.compile(r"^v\d{4,}$")
MANIFEST = "manifest.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
STATE_WEIGHTS = "weights.safetensors"


class AdapterStore:
    def __init__(self, root: str | os.PathLike, fm_name: str):
        self.root = Path(root) / fm_name
        self.root.mkdir(parents=True, exist_ok=True)
        # One lock for every change to versions or the active pointer, across threads and processes
        # (the server and MONAI Label's training subprocess both write here).
        self.lock = FileLock(str(self.root / ".lock"))

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

    def manifest(self, version: str) -> Manifest:
        if version == BASE:
            return Manifest(id=BASE)
        return Manifest.read(self.path(version) / MANIFEST)

    # ---- active pointer -----------------------------------------------------------------------------------
    def _pointer(self) -> dict:
        pointer = self.root / "active.json"
        if not pointer.is_file():
            return {"version": BASE, "history": []}
        data = json.loads(pointer.read_text())
        return {"version": data.get("version") or BASE, "history": list(data.get("history", []))}

    def active(self) -> str:
        version = self._pointer()["version"]
        return version if version == BASE or (self.root / version / MANIFEST).is_file() else BASE

    def history(self) -> list[str]:
        """Earlier active versions, oldest first: what rollback walks back through."""
        return self._pointer()["history"]

    def set_active(self, version: str) -> None:
        """Make `version` active; the one it replaces is remembered for rollback."""
        with self.lock:
            self.check_id(version)
            pointer = self._pointer()
            if pointer["version"] != version:
                pointer["history"].append(pointer["version"])
            write_json_atomic(self.root / "active.json", {"version": version, "history": pointer["history"][-100:]})

    def rollback(self) -> str:
        """Re-activate the previous active version (skipping deleted ones); `base` when there is none."""
        with self.lock:
            pointer = self._pointer()
            history = pointer["history"]
            while history:
                previous = history.pop()
                if previous == BASE or (self.root / previous / MANIFEST).is_file():
                    break
            else:
                if pointer["version"] == BASE:
                    raise ConflictError("nothing to roll back to: the base FM is active and there is no history")
                previous = BASE
            write_json_atomic(self.root / "active.json", {"version": previous, "history": history})
            return previous

    def delete(self, version: str) -> None:
        """Remove a version that is not active; it vanishes by one rename before its files are removed."""
        with self.lock:
            if version == BASE:
                raise InputError("the base FM cannot be deleted")
            self.check_id(version)
            if version == self.active():
                raise ConflictError(f"adapter '{version}' is active; activate another version or roll back first")
            trash = self.root / f".deleted-{version}-{uuid.uuid4().hex}"
            os.rename(self.root / version, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def serves(self, version: str, mode: str) -> bool:
        """Whether the guard's decision lets `version` serve `mode` (a version it never judged serves all)."""
        decision = read_json(self.root / DECISIONS / f"{version}.json")
        return version == BASE or not decision or mode in decision.get("serves", (mode,))

    def resolve(self, requested: str | None) -> str:
        """`None` or '' means the active version."""
        return self.check_id(requested) if requested else self.active()

    # ---- writing ------------------------------------------------------------------------------------------
    def staging(self) -> Path:
        """A private folder to write a version into; the writer's pid in its name tells when it is abandoned."""
        path = self.root / f".staging-{os.getpid()}-{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def commit(self, staging: Path, manifest: Manifest) -> str:
        """Give a finished staging folder the next version id by one atomic rename; return that id."""
        with self.lock:
            return self._commit(staging, manifest)

    def _commit(self, staging: Path, manifest: Manifest) -> str:
        counter = self.root / "last_id.json"
        last = json.loads(counter.read_text())["last"] if counter.is_file() else 0
        for _ in range(1000):
            numbers = [int(v[1:]) for v in self.versions()] + [last]
            version = f"v{max(numbers) + 1:04d}"  # never reuses a deleted version's id
            write_json_atomic(staging / MANIFEST, manifest.with_fields(id=version).to_json())
            try:
                os.rename(staging, self.root / version)  # fails if the id exists: try the next one
            except OSError:
                last = max(numbers) + 1
                continue
            write_json_atomic(counter, {"last": int(version[1:])})
            return version
        raise RuntimeError("could not allocate an adapter version id")

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def clean_stale_staging(self) -> None:
        """Leftovers of writers that died: never versions, safe to remove once no writer holds the lock."""
        with self.lock:
            for p in [*self.root.glob(".staging-*"), *self.root.glob(".deleted-*"), *self.root.glob(".tmp-*")]:
                if _writer_alive(p.name):
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def content_sha256(self, version: str) -> str:
        """One digest of the files that hold a version's weights ('' for the base FM): what a derived artefact
        (a runtime export) must match, whatever the version is called."""
        if version == BASE:
            return ""
        folder = self.path(version)
        names = [n for n in (PEFT_CONFIG, PEFT_WEIGHTS, STATE_WEIGHTS) if (folder / n).is_file()]
        return hashlib.sha256("|".join(f"{n}:{sha256_file(folder / n)}" for n in names).encode()).hexdigest()

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
            check_tensor_fit({k: tuple(v.shape) for k, v in state.items()},
                             {k: tuple(v.shape) for k, v in model.state_dict().items()}, partial=True)
            model.load_state_dict(state, strict=False)
        return model.eval()


def _writer_alive(name: str) -> bool:
    """`.staging-<pid>-...` and `.tmp-<pid>-...` name their writer; is that process still running?"""
    parts = name.split("-")
    if len(parts) < 3 or not parts[1].isdigit() or name.startswith(".deleted-"):
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True  # ours: another thread may be writing it right now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_tensor_fit(shapes: dict[str, tuple], expected: dict[str, tuple], partial: bool) -> None:
    """Refuse weights whose tensor names or shapes do not belong to this FM (`partial`: a subset is fine)."""
    unknown = sorted(set(shapes) - set(expected))
    missing = [] if partial else sorted(set(expected) - set(shapes))
    wrong = sorted(k for k in set(shapes) & set(expected) if shapes[k] != expected[k])
    if unknown or missing or wrong:
        raise InputError(f"the adapter's tensors do not fit this FM: {len(unknown)} unknown (e.g. {unknown[:2]}), "
                         f"{len(missing)} missing, {len(wrong)} with wrong shapes (e.g. {wrong[:2]})")
