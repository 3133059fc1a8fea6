"""The guard's decision from recorded scores: which modes a new version may serve, judged by non-inferiority.

"Never worse than what is live", decided on evidence and not on noise: per mode, the paired units (slices of the
training set it did not train on, held-out images, each labelled by source) are pooled and judged by
`noninferiority.judge`. Pure: no model runs here, so the registry, the site benchmark and the tests judge the same
recorded evaluations the same way.
"""

from __future__ import annotations

import math

import numpy as np

from .noninferiority import ACCEPTED, BETTER, CANNOT_TELL, CONFIDENCE, MIN_UNITS, NOT_WORSE, WORSE, Unit, judge

HELD_OUT_IMAGES, HELD_OUT_SLICES = "held-out images", "held-out slices"


def decide(current: str, evidence: dict | None, held_out: dict[str, tuple[dict, dict]], margin: float,
           floor: float) -> dict:
    """The decision's fields (no timestamps, nothing written): `held_out` maps a mode to (new, active) evaluations
    as `Registry.evaluate` returns them; the active one's mode is the evaluation's own (automatic is held against
    box prompts when nothing live serves automatic)."""
    notes = []
    usable = evidence if evidence and evidence.get("compared_with") == current else None
    if evidence and not usable:
        notes.append(f"its validation compared it with {evidence.get('compared_with')}, but {current} is active "
                     "now, so that evidence does not count")
    modes = list(dict.fromkeys([*((usable or {}).get("modes") or {}), *held_out]))
    checks = []
    for mode in sorted(modes, key=["interactive", "click", "automatic"].index):
        units, against, parts = [], mode, {}
        if usable and mode in usable["modes"]:
            rec = usable["modes"][mode]
            if mode == "automatic" and rec.get("active") is None:
                against = "interactive"
            units += validation_units(usable["source"], rec)
            parts[usable["source"]] = {"new": rec.get("new"), "active": rec.get("active")
                                       if rec.get("active") is not None else
                                       usable["modes"]["interactive"].get("active")}
        unjudged: list[str] = []
        if mode in held_out:
            new_eval, old_eval = held_out[mode]
            against = old_eval["mode"]
            held, unjudged = held_out_units(new_eval, old_eval, floor)
            units += held
            parts[HELD_OUT_IMAGES] = {"new": new_eval["mean"]["dice"], "active": old_eval["mean"]["dice"],
                                      "images": len(new_eval["images"])}
        checks.append(_check(mode, against, units, parts, unjudged, margin, floor))
    deciding = [c for c in checks if c["mode"] == c["against"] and c["state"] is not None]
    activated = bool(deciding) and all(c["state"] in ACCEPTED for c in deciding)
    automatic = [c for c in checks if c["mode"] == "automatic" and c["state"] is not None]
    serves = ["interactive"] + (["automatic"] if automatic and all(c["state"] in ACCEPTED for c in automatic) else [])
    verdict = _verdict([c["state"] for c in deciding])
    reason = _reason(checks, deciding, activated, verdict, current, margin, serves, automatic)
    first = checks[0] if checks else {}
    return {"activated": activated, "verdict": verdict, "compared_with": current, "margin": margin, "floor": floor,
            "confidence": CONFIDENCE, "min_units": MIN_UNITS, "checks": checks,
            "serves": serves if activated else [], "mode": first.get("mode"), "new_dice": first.get("new"),
            "active_dice": first.get("active"), "reason": "; ".join([reason, *notes])}


def validation_units(source: str, rec: dict) -> list[Unit]:
    """The validation's paired slice x label scores (evidence.py). Evidence recorded before units were gives its two
    means as one unit: too few to decide on, never nothing."""
    if rec.get("units"):
        return [Unit(source, unit, new, active) for unit, (new, active) in sorted(rec["units"].items())]
    return [Unit(source, "mean", rec["new"], rec["active"])] if None not in (rec.get("new"), rec.get("active")) else []


def held_out_units(new_eval: dict, old_eval: dict, floor: float) -> tuple[list[Unit], list[str]]:
    """Paired held-out units on the labels at least one version serves (mean Dice >= `floor` in this mode): one per
    image x label when there are MIN_UNITS of them, else one per slice x label (where either version predicted or
    the structure is), which evaluations recorded before slice scores fall back from. Also the labels left out."""
    new_by, old_by = new_eval["mean"]["dice_by_label"], old_eval["mean"]["dice_by_label"]
    unjudged = sorted(n for n in new_by.keys() & old_by.keys() if max(new_by[n], old_by[n]) < floor)
    pairs = [(image, label, scores, old_eval["images"][image][label])
             for image, labels in sorted(new_eval["images"].items()) for label, scores in sorted(labels.items())
             if label not in unjudged and label in old_eval["images"].get(image, {})]
    images = [Unit(HELD_OUT_IMAGES, f"{i}:{n}", a["dice"], b["dice"]) for i, n, a, b in pairs]
    if len(images) >= MIN_UNITS or not all("slices" in a and "slices" in b for *_, a, b in pairs):
        return images, unjudged
    slices = []
    for image, label, a, b in pairs:
        for k in sorted(a["slices"].keys() | b["slices"].keys(), key=int):
            # A slice missing from one version's record has neither its prediction nor the structure: perfect.
            slices.append(Unit(HELD_OUT_SLICES, f"{image}:{k}:{label}", a["slices"].get(k, 1.0),
                               b["slices"].get(k, 1.0)))
    return slices, unjudged


def _check(mode: str, against: str, units: list[Unit], parts: dict, unjudged: list[str], margin: float,
           floor: float) -> dict:
    judged = judge(units, margin)
    state = judged["state"]
    new = round(float(np.mean([u.new for u in units])), 4) if units else None
    active = round(float(np.mean([u.active for u in units])), 4) if units else None
    source = " + ".join(dict.fromkeys(u.source for u in units)) or " + ".join(parts) or "nothing"
    counts = f"{len(units)} units (" + ", ".join(f"{s} {n}" for s, n in judged["units_by_source"].items()) + ")"
    if state is None:
        said = "nothing to judge"
    elif judged["interval"] is None:
        said = f"difference {judged['diff']:+.3f} over {counts}: {state} (fewer than {MIN_UNITS} units)"
    else:
        low, high = judged["interval"]
        said = (f"difference {judged['diff']:+.3f}, {round(CONFIDENCE * 100)}% interval [{low:+.3f}, {high:+.3f}] "
                f"over {counts}: {state}")
    summary = f"{mode} Dice {new} vs active {against} {active} ({said})"
    if unjudged:
        summary += f" ({', '.join(unjudged)} not judged: both versions below Dice {floor})"
    check = {"source": source, "mode": mode, "against": against, "new": new, "active": active,
             "passed": True if state in ACCEPTED else False if state == WORSE else None, "summary": summary,
             **judged, "by_source": parts,
             "units": [[u.source, u.id, u.new, u.active] for u in units]}
    if unjudged:
        check["not_judged"] = unjudged
    return check


def _verdict(states: list[str]) -> str:
    """One word for the version: worse if any deciding mode is worse, cannot tell yet if any cannot tell (or none
    decides), better only when every deciding mode is better."""
    if WORSE in states:
        return WORSE
    if not states or CANNOT_TELL in states:
        return CANNOT_TELL
    return BETTER if all(s == BETTER for s in states) else NOT_WORSE


def _reason(checks: list[dict], deciding: list[dict], activated: bool, verdict: str, current: str,
            margin: float, serves: list[str], automatic: list[dict]) -> str:
    if not checks:
        return ("no evidence from data it did not train on (no held-out images, no second labelled image, and too "
                "few labelled slices to hold some apart): registered but not activated; an admin can activate it "
                "by hand")
    said = "; ".join(c["summary"] for c in checks)
    if not deciding:
        return said + ": no mode could be judged, registered but not activated; an admin can activate it by hand"
    if activated:
        reason = f"{said}: {verdict} than {current}" if verdict == BETTER else f"{said}: not worse than {current}"
        reason += f" (margin {margin}), activated"
        if automatic and "automatic" not in serves:
            reason += ("; automatic mode stays off: its masks were worse than box prompts on the live version, so a "
                       "radiologist is better served drawing a box")
        return reason
    if verdict == WORSE:
        return f"{said}: worse than {current} beyond the margin of {margin}; registered but not activated"
    return (f"{said}: not enough evidence to tell it from {current} (margin {margin}); registered but not "
            f"activated; {_advice(deciding)}")


def _advice(deciding: list[dict]) -> str:
    """What more data would let the guard decide, in held-out images where it can say so."""
    more = [c.get("more_units") for c in deciding if c["state"] == CANNOT_TELL]
    if any(m is None for m in more):
        return ("the difference sits on the margin: more data of this kind would not decide it; an admin can "
                "activate it by hand after comparing it on held-out images")
    units = max(more)
    per_image = [(c["units_by_source"].get(HELD_OUT_IMAGES, 0) + c["units_by_source"].get(HELD_OUT_SLICES, 0))
                 / c["by_source"][HELD_OUT_IMAGES]["images"] for c in deciding
                 if HELD_OUT_IMAGES in c["by_source"] and c["by_source"][HELD_OUT_IMAGES]["images"]]
    images = math.ceil(units / max(1.0, min(per_image))) if per_image else 1
    return (f"about {units} more paired unit(s) would let it decide: {images} more held-out image(s) with these "
            "labels (mark labelled images as held out) and train again")
