"""The adapter registry: versions with their manifests, held-out evaluations and activation decisions.

What the REST router and the training job call. Version folders are immutable; what is learned about a version
later (held-out scores, why it was or was not activated) is kept beside it in `evaluations/` and `decisions/`.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from .adaptation.config import SERVING_FLOOR
from .adapter_archive import export_version, import_archive
from .adapter_store import BASE, DECISIONS
from .digest import sha256_file
from .evaluation import HeldOutCase, compare, evaluate, means
from .files import read_json, write_json_atomic
from .manifest import utc_now
from .service import MedFMService


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
        held = [c["new"] for c in decision.get("checks", []) if c["source"] == "held-out images"]
        return held[0] if held else None

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

    def guard(self, version: str, cases: list[HeldOutCase], margin: float = 0.0,
              floor: float = SERVING_FLOOR) -> dict:
        """Activate `version` only on evidence, from data it did not train on, that it is at least as good as the
        active one (less `margin`) in every mode it serves; with no evidence it stays registered and inactive.

        Where the active version has no automatic mode, the new one's automatic Dice is held against the active
        version's box-prompted Dice on the same data: automatic mode is served only if it is at least as good as
        drawing a box with what is live; otherwise the version may go live for box and click prompts alone.
        On held-out images a label where both versions score below `floor` in a mode is not judged in that mode
        (neither serves it there); a mode with no label left to judge does not decide.
        """
        current = self.store.active()
        manifest = self.store.manifest(version)
        checks, notes = [], []
        evidence = manifest.evidence
        if evidence and evidence.get("compared_with") == current:
            modes = evidence["modes"]
            for mode in (m for m in ("interactive", "automatic") if m in modes):
                active, against = modes[mode]["active"], mode
                if mode == "automatic" and active is None:
                    active, against = modes["interactive"]["active"], "interactive"
                checks.append(_check(evidence["source"], mode, modes[mode]["new"], active, margin, against))
        elif evidence:
            notes.append(f"its validation compared it with {evidence.get('compared_with')}, but {current} is "
                         "active now, so that evidence does not count")
        if cases:
            current_auto = bool(self.store.manifest(current).label_tokens())
            # A click is judged apart from a box: adapting can keep boxes and still lose clicks (site benchmark,
            # lesion pairs: Dice after 3 clicks 0.54-0.62 adapted vs 0.66 base, with box Dice up).
            modes = ("interactive", "click") + (("automatic",) if manifest.auto_head else ())
            for mode in modes:
                against = mode if mode != "automatic" or current_auto else "interactive"
                checks.append(_held_out_check(mode, self.evaluate(version, cases, mode),
                                              self.evaluate(current, cases, against), margin, floor))
        # A check of a mode against the same mode of the active version decides activation; automatic checks
        # against box prompts (nothing live serves automatic) decide only whether automatic mode is served.
        # A check left with nothing to judge (passed None) decides nothing and serves nothing.
        deciding = [c for c in checks if c["mode"] == c["against"] and c["passed"] is not None]
        activated = bool(deciding) and all(c["passed"] for c in deciding)
        automatic = [c for c in checks if c["mode"] == "automatic"]
        serves = ["interactive"] + (["automatic"] if automatic and all(c["passed"] for c in automatic) else [])
        if not checks:
            reason = ("no evidence from data it did not train on (no held-out images, no second labelled image, "
                      "and too few labelled slices to hold some apart): registered but not activated; an admin "
                      "can activate it by hand")
        elif not deciding:
            reason = "; ".join(c["summary"] for c in checks) + (
                ": no mode could be judged, registered but not activated; an admin can activate it by hand")
        else:
            reason = "; ".join(c["summary"] for c in checks) + (
                f": at least as good as {current} (margin {margin}), activated" if activated
                else f": worse than {current} beyond the margin of {margin}; registered but not activated")
            if activated and automatic and "automatic" not in serves:
                reason += ("; automatic mode stays off: its masks were worse than box prompts on the live version, "
                           "so a radiologist is better served drawing a box")
        first = checks[0] if checks else {}
        decision = {"activated": activated, "compared_with": current, "margin": margin, "floor": floor,
                    "checks": checks,
                    "serves": serves if activated else [],
                    "mode": first.get("mode"), "new_dice": first.get("new"), "active_dice": first.get("active"),
                    "reason": "; ".join([reason, *notes]), "decided_at": utc_now(), "manual": []}
        if activated:
            self.store.set_active(version)
        self._write_decision(version, decision)
        return decision

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


def _check(source: str, mode: str, new: float | None, active: float | None, margin: float,
           against: str | None = None) -> dict:
    """One comparison of the new version's `mode` with the active version's `against` mode (the same by default):
    passed when the new version scored and is not below the active one by more than `margin`."""
    against = against or mode
    passed = new is not None and (active is None or new >= active - margin)
    versus = "nothing to compare with" if active is None else f"active {against} {active}"
    return {"source": source, "mode": mode, "against": against, "new": new, "active": active, "passed": passed,
            "summary": f"{mode} Dice {new} vs {versus} on {source}"}


def _held_out_check(mode: str, new_eval: dict, old_eval: dict, margin: float, floor: float) -> dict:
    """`_check` of two held-out evaluations, judged only on the labels where at least one version reaches `floor`.

    `new` and `active` stay the means over every label (the figures reported); the labels left out are listed under
    `not_judged`, and `passed` is None when none is left.
    """
    check = _check("held-out images", mode, new_eval["mean"]["dice"], old_eval["mean"]["dice"], margin,
                   old_eval["mode"])
    new_by, old_by = new_eval["mean"]["dice_by_label"], old_eval["mean"]["dice_by_label"]
    unjudged = sorted(n for n in new_by.keys() & old_by.keys() if max(new_by[n], old_by[n]) < floor)
    if not unjudged:
        return check
    new, old = _mean_dice_without(new_eval, unjudged), _mean_dice_without(old_eval, unjudged)
    below = f"{', '.join(unjudged)} not judged: both versions below Dice {floor}"
    if new is None or old is None:
        return {**check, "passed": None, "not_judged": unjudged, "summary": f"{check['summary']} ({below})"}
    passed = new >= old - margin
    return {**check, "passed": passed, "not_judged": unjudged, "judged_new": new, "judged_active": old,
            "summary": f"{check['summary']} ({below}; on the others {new} vs {old})"}


def _mean_dice_without(result: dict, labels: list[str]) -> float | None:
    return means({image: {name: s for name, s in scores.items() if name not in labels}
                  for image, scores in result["images"].items()})["dice"]

