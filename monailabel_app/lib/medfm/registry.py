"""The adapter registry: versions with their manifests, held-out evaluations and activation decisions.

What the REST router and the training job call. Version folders are immutable; what is learned about a version
later (held-out scores, why it was or was not activated) is kept beside it in `evaluations/` and `decisions/`.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from .adapter_archive import export_version, import_archive
from .adapter_store import BASE
from .digest import sha256_file
from .evaluation import HeldOutCase, compare, evaluate
from .files import read_json, write_json_atomic
from .service import MedFMService

DEFAULT_MARGIN = 0.02  # a new adapter may be this much below the active one's held-out Dice and still go live


class Registry:
    def __init__(self, service: MedFMService):
        self.service = service
        self.store = service.store
        self.evaluations = self.store.root / "evaluations"
        self.decisions = self.store.root / "decisions"

    # ---- reading ------------------------------------------------------------------------------------------
    def listing(self) -> dict:
        active = self.store.active()
        rows = []
        for version in self.store.versions():
            m = self.store.manifest(version)
            best = m.get("metrics", {}).get("best", {})
            rows.append({"version": version, "method": m.get("method"), "created": m.get("created"),
                         "note": m.get("note", ""), "labels": sorted(m.get("labels", {})),
                         "val_dice": best.get("val_dice"), "val_dice_box": best.get("val_dice_box"),
                         "base_val_dice_box": m.get("metrics", {}).get("base", {}).get("val_dice_box"),
                         "heldout_dice": self.heldout_dice(version),
                         "adapter_bytes": m.get("adapter_bytes"), "active": version == active,
                         "decision": self.decision(version), "imported_from": m.get("imported_from")})
        return {"fm": self.service.fm_info(), "active": active, "history": self.store.history(), "adapters": rows}

    def progress(self) -> list[dict]:
        """Held-out Dice of each version against the number of labelled images it was trained on."""
        rows = []
        for version in self.store.versions():
            m = self.store.manifest(version)
            decision = self.decision(version) or {}
            rows.append({"version": version, "created": m.get("created"),
                         "labelled_images": len(m.get("train_images", [])) + len(m.get("val_images", [])),
                         "heldout_dice": self.heldout_dice(version), "heldout_mode": decision.get("mode")})
        return rows

    def get(self, version: str) -> dict:
        version = self.store.check_id(version)
        return {"manifest": self.store.manifest(version), "active": version == self.store.active(),
                "decision": self.decision(version), "evaluations": read_json(self.evaluations / f"{version}.json")}

    def heldout_dice(self, version: str) -> float | None:
        """The newest held-out mean Dice known for a version: from any evaluation, else its activation check."""
        records = sorted(read_json(self.evaluations / f"{version}.json").values(),
                         key=lambda r: r.get("evaluated_at", 0))
        if records:
            return records[-1]["mean"]["dice"]
        return (self.decision(version) or {}).get("new_dice")

    def decision(self, version: str) -> dict | None:
        return read_json(self.decisions / f"{version}.json") or None

    # ---- changing -----------------------------------------------------------------------------------------
    def activate(self, version: str) -> dict:
        self.store.set_active(version)
        return {"active": self.store.active()}

    def rollback(self) -> dict:
        return {"active": self.store.rollback()}

    def delete(self, version: str) -> dict:
        self.store.delete(version)
        return {"deleted": version}

    def export(self, version: str) -> Path:
        return export_version(self.store, self.store.check_id(version))

    def import_(self, archive: str | Path, note: str = "") -> dict:
        backend = self.service.backend
        base = self.service.segmenter.base
        version = import_archive(self.store, backend, base, archive, note)
        return {"version": version, "active": self.store.active()}

    # ---- evaluating ---------------------------------------------------------------------------------------
    def evaluate(self, version: str, cases: list[HeldOutCase], mode: str = "interactive", jitter: int = 3) -> dict:
        version = self.store.resolve(version)
        key = self._cases_key(cases, mode, jitter)
        path = self.evaluations / f"{version}.json"
        cached = read_json(path).get(key)
        if cached:
            return cached
        result = evaluate(self.service.segmenter, version, cases, self.service.settings.labels, mode, jitter,
                          self.service.settings.ct_window)
        result["heldout_key"] = key
        result["evaluated_at"] = time.time()
        with self.store.lock:
            records = read_json(path)
            records[key] = result
            self.evaluations.mkdir(exist_ok=True)
            write_json_atomic(path, records)
        return result

    def compare(self, a: str, b: str, cases: list[HeldOutCase], mode: str = "interactive", jitter: int = 3) -> dict:
        return compare(self.evaluate(a, cases, mode, jitter), self.evaluate(b, cases, mode, jitter))

    def guard(self, version: str, cases: list[HeldOutCase], margin: float = DEFAULT_MARGIN) -> dict:
        """Activate a new version only if its held-out Dice is at most `margin` below the active one's."""
        current = self.store.active()
        if not cases:
            decision = {"activated": True, "reason": "no held-out images: activated without a regression check",
                        "compared_with": current}
        else:
            manifest = self.store.manifest(version)
            mode = "automatic" if manifest.get("auto_head") and current != BASE and \
                self.store.manifest(current).get("auto_head") else "interactive"
            new = self.evaluate(version, cases, mode)["mean"]["dice"]
            old = self.evaluate(current, cases, mode)["mean"]["dice"]
            ok = new is not None and (old is None or new >= old - margin)
            verdict = "within" if ok else "more than"
            decision = {"activated": ok, "compared_with": current, "mode": mode, "new_dice": new, "active_dice": old,
                        "margin": margin,
                        "reason": f"held-out {mode} Dice {new} vs active {current}'s {old}: {verdict} the margin "
                                  f"of {margin}" + ("" if ok else "; registered but not activated")}
        if decision["activated"]:
            self.store.set_active(version)
        self.decisions.mkdir(exist_ok=True)
        write_json_atomic(self.decisions / f"{version}.json", decision)
        return decision

    # ---- helpers ------------------------------------------------------------------------------------------
    @staticmethod
    def _cases_key(cases: list[HeldOutCase], mode: str, jitter: int) -> str:
        digest = hashlib.sha256()
        for case in sorted(cases, key=lambda c: c.image_id):
            digest.update(case.image_id.encode())
            digest.update(sha256_file(Path(case.image_path)).encode())
            digest.update(sha256_file(Path(case.label_path)).encode())
        return f"{mode}:{jitter}:{digest.hexdigest()[:16]}"
