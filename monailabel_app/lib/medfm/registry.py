"""The adapter registry: versions with their manifests, held-out evaluations and activation decisions.

What the REST router and the training job call. Version folders are immutable; what is learned about a version
later (held-out scores, why it was or was not activated) is kept beside it in `evaluations/` and `decisions/`.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from .adaptation.config import REGRESSION_MARGIN, SERVING_FLOOR
from .adapter_archive import export_version, import_archive
from .adapter_store import BASE, DECISIONS
from .digest import sha256_file
from .evaluation import HeldOutCase, compare, evaluate
from .files import read_json, write_json_atomic
from .guard import HELD_OUT_IMAGES, decide
from .manifest import utc_now
from .service import MedFMService

AUDIT = "audit.json"  # beside active.json: who activated, rolled back, deleted or imported which version
MOST_AUDIT_EVENTS = 10_000


class Registry:
    def __init__(self, service: MedFMService):
        self.service = service
        self.store = service.store
        self.evaluations = self.store.root / "evaluations"
        self.decisions = self.store.root / DECISIONS

    # ---- reading ------------------------------------------------------------------------------------------
    def listing(self) -> dict:
        active = self.store.active()
        rows = []
        for version in self.store.versions():
            m = self.store.manifest(version)
            best = m.metrics.get("best", {})
            rows.append({"version": version, "method": m.method, "created": m.created,
                         "note": m.note, "labels": sorted(m.labels),
                         "val_dice": best.get("val_dice"), "val_dice_box": best.get("val_dice_box"),
                         "base_val_dice_box": m.metrics.get("base", {}).get("val_dice_box"),
                         "heldout_dice": self.heldout_dice(version),
                         "adapter_bytes": m.adapter_bytes, "active": version == active,
                         "decision": self.decision(version), "imported_from": m.imported_from,
                         "continued_from": (m.config or {}).get("parent")})
        return {"fm": self.service.fm_info(), "active": active, "history": self.store.history(), "adapters": rows}

    def progress(self) -> list[dict]:
        """Held-out Dice of each version against the number of labelled images it was trained on."""
        rows = []
        for version in self.store.versions():
            m = self.store.manifest(version)
            decision = self.decision(version) or {}
            rows.append({"version": version, "created": m.created,
                         "labelled_images": len(m.train_images) + len(m.val_images),
                         "heldout_dice": self.heldout_dice(version), "heldout_mode": decision.get("mode")})
        return rows

    def get(self, version: str) -> dict:
        version = self.store.check_id(version)
        return {"manifest": self.store.manifest(version).to_json(), "active": version == self.store.active(),
                "decision": self.decision(version), "evaluations": read_json(self.evaluations / f"{version}.json")}

    def heldout_dice(self, version: str) -> float | None:
        """The newest held-out mean Dice known for a version: from any evaluation, else its activation check
        on held-out images (a check on validation slices is not a held-out figure)."""
        records = sorted(read_json(self.evaluations / f"{version}.json").values(),
                         key=lambda r: r.get("evaluated_at", 0))
        if records:
            return records[-1]["mean"]["dice"]
        decision = self.decision(version) or {}
        for check in decision.get("checks", []):
            held = (check.get("by_source") or {}).get(HELD_OUT_IMAGES)
            if held:
                return held["new"]
            if check["source"] == HELD_OUT_IMAGES:  # a decision taken before checks pooled their sources
                return check["new"]
        return None

    def decision(self, version: str) -> dict | None:
        return read_json(self.decisions / f"{version}.json") or None

    # ---- changing -----------------------------------------------------------------------------------------
    def activate(self, version: str, user: str | None = None) -> dict:
        """Activation by hand (an admin's call): allowed whatever the guard said, and recorded as manual."""
        with self.store.lock:
            self.store.set_active(version)
            if version != BASE:
                decision = self.decision(version) or {"activated": False, "reason": "never checked by the guard"}
                manual = [*decision.get("manual", []), {"by": user, "at": utc_now()}]
                # By hand, the admin answers for every mode the version has.
                self._write_decision(version, {**decision, "manual": manual, "serves": ["interactive", "automatic"]})
            self._audit("activate", version, user)
        return {"active": self.store.active()}

    def rollback(self, user: str | None = None) -> dict:
        """Re-activate the previous version; who did it is kept in its decision, as for activate, and the audit."""
        with self.store.lock:
            replaced = self.store.active()
            active = self.store.rollback()
            if active != BASE:
                decision = self.decision(active) or {"activated": False, "reason": "never checked by the guard"}
                manual = [*decision.get("manual", []), {"by": user, "at": utc_now(), "rollback_from": replaced}]
                self._write_decision(active, {**decision, "manual": manual})
            self._audit("rollback", active, user, replaced=replaced)
        return {"active": active}

    def delete(self, version: str, user: str | None = None) -> dict:
        """Remove a version; its folder is gone, so who removed it is kept in the registry's audit log."""
        with self.store.lock:
            self.store.delete(version)
            self._audit("delete", version, user)
        return {"deleted": version}

    def export(self, version: str) -> Path:
        return export_version(self.store, self.store.check_id(version))

    def import_(self, archive: str | Path, note: str = "", user: str | None = None) -> dict:
        """Import another site's version; who brought it in is kept in its manifest's `imported_from.by`."""
        backend = self.service.backend
        base = self.service.segmenter.base
        version = import_archive(self.store, backend, base, archive, note, by=user)
        with self.store.lock:
            self._audit("import", version, user)
        return {"version": version, "active": self.store.active()}

    def audit(self) -> list[dict]:
        """Every change to which adapter exists or is live, oldest first: what, which version, by whom, when."""
        return read_json(self.store.root / AUDIT).get("events", [])

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

    def guard(self, version: str, cases: list[HeldOutCase], margin: float = REGRESSION_MARGIN,
              floor: float = SERVING_FLOOR) -> dict:
        """Activate `version` only on evidence, from data it did not train on, that it is not worse than the active
        one in every mode it serves, judged by non-inferiority (guard.py): per mode the paired scores of validation
        slices and held-out images, pooled, must give an interval whose lower bound clears -`margin`. Worse, or too
        little evidence to tell, keeps it registered and inactive, and the decision says which.

        Where the active version has no automatic mode, the new one's automatic Dice is held against the active
        version's box-prompted Dice on the same data: automatic mode is served only if it is not worse than drawing
        a box with what is live; otherwise the version may go live for box and click prompts alone. On held-out
        images a label where both versions score below `floor` in a mode is not judged in that mode (neither serves
        it there); a mode with no unit left to judge does not decide.
        """
        current = self.store.active()
        manifest = self.store.manifest(version)
        held_out = {}
        if cases:
            current_auto = bool(self.store.manifest(current).label_tokens())
            # A click is judged apart from a box: adapting can keep boxes and still lose clicks (site benchmark,
            # lesion pairs: Dice after 3 clicks 0.54-0.62 adapted vs 0.66 base, with box Dice up).
            modes = ("interactive", "click") + (("automatic",) if manifest.auto_head else ())
            for mode in modes:
                against = mode if mode != "automatic" or current_auto else "interactive"
                held_out[mode] = (self.evaluate(version, cases, mode), self.evaluate(current, cases, against))
        decision = {**decide(current, manifest.evidence, held_out, margin, floor), "decided_at": utc_now(),
                    "manual": []}
        if decision["activated"]:
            self.store.set_active(version)
        self._write_decision(version, decision)
        return decision

    def _audit(self, action: str, version: str, user: str | None, **details: str) -> None:
        """Append to the audit log (the caller holds the store lock); the newest MOST_AUDIT_EVENTS are kept."""
        events = [*self.audit(), {"action": action, "version": version, "by": user, "at": utc_now(), **details}]
        write_json_atomic(self.store.root / AUDIT, {"events": events[-MOST_AUDIT_EVENTS:]})

    def _write_decision(self, version: str, decision: dict) -> None:
        self.decisions.mkdir(exist_ok=True)
        write_json_atomic(self.decisions / f"{version}.json", decision)

    # ---- helpers ------------------------------------------------------------------------------------------
    @staticmethod
    def _cases_key(cases: list[HeldOutCase], mode: str, jitter: int) -> str:
        digest = hashlib.sha256()
        for case in sorted(cases, key=lambda c: c.image_id):
            digest.update(case.image_id.encode())
            digest.update(sha256_file(Path(case.image_path)).encode())
            digest.update(sha256_file(Path(case.label_path)).encode())
        return f"{mode}:{jitter}:{digest.hexdigest()[:16]}"
