"""The activation guard with no server: a version goes live only on evidence from data it did not train on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.medfm.adaptation.data import LabelledImage, hold_apart
from lib.medfm.adapter_store import BASE
from lib.medfm.errors import ConflictError
from lib.medfm.evaluation import HeldOutCase
from lib.medfm.manifest import Manifest
from lib.medfm.registry import Registry
from lib.medfm.service import MedFMService
from lib.medfm.settings import Settings


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(MedFMService(Settings(models_dir=tmp_path)))


def register(registry: Registry, evidence: dict | None) -> str:
    """A version as the training job leaves it: committed, inactive, with what its validation showed."""
    staging = registry.store.staging()
    return registry.store.commit(staging, Manifest(fm="litemedsam", method="lora", auto_head=False,
                                                   labels={"lesion": {"value": 1, "token": 0}}, evidence=evidence))


def units(new: float, active: float, n: int = 8, spread: float = 0.0) -> dict:
    """`n` paired slice x label scores whose new-minus-active differences average `new - active`, spread by +-`spread`
    (alternating), as evidence.py records them."""
    return {f"brain2:{k}:1": [round(new + (spread if k % 2 else -spread), 4), active] for k in range(n)}


def evidence(new: float, active: float, against: str = BASE, n: int = 8, spread: float = 0.0) -> dict:
    return {"source": "validation images", "compared_with": against, "slices": n, "images": ["brain2"],
            "modes": {"interactive": {"new": new, "active": active, "units": units(new, active, n, spread)}}}


def test_no_evidence_registers_inactive_and_an_admin_may_still_activate(registry):
    version = register(registry, None)
    decision = registry.guard(version, [], margin=0.0)
    assert decision["activated"] is False and "no evidence" in decision["reason"]
    assert registry.store.active() == BASE
    registry.activate(version, user="admin")
    assert registry.store.active() == version
    manual = registry.get(version)["decision"]["manual"]
    assert manual[0]["by"] == "admin" and manual[0]["at"]
    assert registry.get(version)["decision"]["activated"] is False  # the guard's verdict is not rewritten


def test_at_least_as_good_goes_live_and_worse_does_not(registry):
    good = register(registry, evidence(0.80, 0.80))
    assert registry.guard(good, [], margin=0.0)["activated"] and registry.store.active() == good
    worse = register(registry, evidence(0.79, 0.80, against=good))
    decision = registry.guard(worse, [], margin=0.0)
    assert decision["activated"] is False and "not activated" in decision["reason"]
    (check,) = decision["checks"]
    assert {k: check[k] for k in ("source", "mode", "against", "new", "active", "passed", "state", "interval",
                                  "n_units")} == {
        "source": "validation images", "mode": "interactive", "against": "interactive", "new": 0.79, "active": 0.80,
        "passed": False, "state": "worse", "interval": [-0.01, -0.01], "n_units": 8}
    assert decision["verdict"] == "worse" and len(check["units"]) == 8
    assert registry.store.active() == good
    assert registry.listing()["adapters"][1]["decision"]["activated"] is False


# ---- the four answers, on recorded scores (no model runs) -------------------------------------------------------
@pytest.mark.parametrize(("new", "spread", "margin", "state", "activated"), [
    (0.85, 0.02, 0.01, "better", True),  # +0.05, tight: the lower bound is above 0
    (0.797, 0.002, 0.01, "not worse", True),  # -0.003: the lower bound (-0.005) clears -margin
    (0.70, 0.01, 0.01, "worse", False),  # -0.10: the upper bound is far below -margin
    (0.791, 0.20, 0.01, "cannot tell yet", False),  # -0.009 in +-0.2 of noise: the coin flip
])
def test_the_four_answers(registry, new, spread, margin, state, activated):
    version = register(registry, evidence(new, 0.80, spread=spread))
    decision = registry.guard(version, [], margin=margin)
    (check,) = decision["checks"]
    assert check["state"] == decision["verdict"] == state and decision["activated"] is activated
    assert registry.store.active() == (version if activated else BASE)
    low, high = check["interval"]
    assert low <= check["diff"] <= high and decision["margin"] == margin and decision["confidence"] == 0.9
    if state == "cannot tell yet":
        assert "not enough evidence" in decision["reason"] and "worse" not in decision["reason"]
        assert check["more_units"] > 0 and "more paired unit" in decision["reason"]
    if state == "worse":
        assert "worse than base beyond the margin" in decision["reason"]


def test_too_few_units_cannot_tell_and_say_how_many_more(registry):
    version = register(registry, evidence(0.95, 0.50, n=2))  # a big gain, but on two slices
    decision = registry.guard(version, [], margin=0.01)
    (check,) = decision["checks"]
    assert check["state"] == "cannot tell yet" and check["interval"] is None and check["more_units"] == 3
    assert decision["activated"] is False and "fewer than 5 units" in decision["reason"]


def test_the_same_scores_give_the_same_interval(registry):
    first = registry.guard(register(registry, evidence(0.79, 0.80, spread=0.2)), [], margin=0.01)
    second = registry.guard(register(registry, evidence(0.79, 0.80, spread=0.2)), [], margin=0.01)
    assert first["checks"][0]["interval"] == second["checks"][0]["interval"]


def test_evidence_recorded_before_units_cannot_tell(registry):
    old = {"source": "validation images", "compared_with": BASE, "slices": 4, "images": ["brain2"],
           "modes": {"interactive": {"new": 0.9, "active": 0.5}}}
    decision = registry.guard(register(registry, old), [], margin=0.01)
    assert decision["verdict"] == "cannot tell yet" and decision["checks"][0]["n_units"] == 1
    assert decision["activated"] is False


def auto_evidence(box_new: float, box_active: float, auto_new: float) -> dict:
    """Validation of a version with a prompt-free head, against the base FM (which has no automatic mode)."""
    return {**evidence(box_new, box_active), "modes": {
        "interactive": {"new": box_new, "active": box_active, "units": units(box_new, box_active)},
        "automatic": {"new": auto_new, "active": None, "units": units(auto_new, box_active)}}}


@pytest.mark.parametrize(("auto_new", "serves"), [(0.30, ["interactive"]), (0.55, ["interactive", "automatic"])])
def test_automatic_mode_is_served_only_if_it_beats_a_box_on_the_live_version(registry, auto_new, serves):
    staging = registry.store.staging()
    version = registry.store.commit(staging, Manifest(fm="litemedsam", method="lora", auto_head=True,
                                                      labels={"lesion": {"value": 1, "token": 0}},
                                                      evidence=auto_evidence(0.56, 0.50, auto_new)))
    decision = registry.guard(version, [], margin=0.0)
    assert decision["activated"] and registry.store.active() == version  # box prompts got better: live
    assert decision["serves"] == serves
    assert [c["against"] for c in decision["checks"]] == ["interactive", "interactive"]
    assert registry.store.serves(version, "automatic") == (auto_new >= 0.50)
    if auto_new < 0.50:
        assert "automatic mode stays off" in decision["reason"]
        with pytest.raises(ConflictError, match="serves box and click prompts only"):
            registry.service.automatic("unused.nii.gz", {})
        registry.activate(version, user="admin")  # by hand, the admin answers for automatic mode too
        assert registry.store.serves(version, "automatic")


def test_evidence_against_a_version_no_longer_active_does_not_count(registry):
    first = register(registry, evidence(0.9, 0.5))
    second = register(registry, evidence(0.9, 0.5))  # both validated against base
    assert registry.guard(first, [], margin=0.0)["activated"]
    decision = registry.guard(second, [], margin=0.0)
    assert decision["activated"] is False and f"{first} is active now" in decision["reason"]
    assert registry.store.active() == first


@pytest.mark.parametrize(("case", "gap"), [("breast1", 1), ("brain1", 2)])
def test_one_image_validates_on_slices_kept_apart(sample_datastore: Path, case: str, gap: int):
    item = LabelledImage(case, str(sample_datastore / f"{case}.nii.gz"),
                         str(sample_datastore / "labels" / "final" / f"{case}.nii.gz"))
    train, val, used = hold_apart(item, {"lesion": 1}, val_fraction=0.25, gap=2)
    assert used == gap  # breast1's lesion spans 3 slices: the gap shrinks to 1 rather than leave nothing
    assert train.slices[1] + used < val.slices[0]
    assert hold_apart(item, {"lesion": 1}, val_fraction=0.9, gap=2) is None  # nothing would be left to train on


def test_a_label_no_training_image_carries_is_not_learned(sample_datastore: Path, registry):
    """breast1 is labelled for lesions only: its version must not claim grey or white matter in automatic mode."""
    from lib.medfm.adaptation.config import AdaptConfig
    from lib.medfm.adaptation.job import run_adaptation

    service = registry.service
    item = LabelledImage("breast1", str(sample_datastore / "breast1.nii.gz"),
                         str(sample_datastore / "labels" / "final" / "breast1.nii.gz"))
    summary = run_adaptation(service.backend, service.backend.build_model("cpu"), service.store, [item],
                             AdaptConfig(method="decoder", max_epochs=1, slices_per_image=2),
                             service.settings, log=lambda _line: None)
    assert set(service.store.manifest(summary["version"]).labels) == {"lesion"}
    assert summary["evidence"]["source"].startswith("slices of breast1")


def test_click_mode_scores_one_click_at_the_structure_centre(sample_datastore: Path, registry):
    """The guard's click check: one foreground click where an annotator would put it, followed through the slices."""
    case = HeldOutCase("lung2", str(sample_datastore / "lung2.nii.gz"),
                       str(sample_datastore / "labels" / "final" / "lung2.nii.gz"))
    result = registry.evaluate(BASE, [case], "click")
    assert result["mode"] == "click"
    assert result["images"]["lung2"]["lesion"]["dice"] >= 0.8  # a click near the lesion's centre: 0.92 measured


SLICE_OFFSETS = (-0.02, -0.01, 0.0, 0.0, 0.01, 0.02)  # six slices per structure, averaging its 3D Dice


def held_out(registry: Registry, tmp_path: Path, version: str, mode: str, dice: dict[str, dict[str, float]],
             slices: dict[str, dict[str, dict[str, float]]] | None = None) -> list:
    """Record `version`'s held-out `mode` Dice per image and label (and per slice: `slices`, else six slices
    around the image's Dice), as `Registry.evaluate` stores them, and return the cases, so the guard decides on
    these figures without running the FM."""
    cases = []
    for image_id in dice:
        image, label = tmp_path / f"{image_id}.nii.gz", tmp_path / f"{image_id}_label.nii.gz"
        image.write_bytes(image_id.encode())
        label.write_bytes(image_id.encode() * 2)
        cases.append(HeldOutCase(image_id, str(image), str(label)))
    slices = slices or {}
    images = {i: {n: {"dice": d, "hd95_mm": None, "slices": slices.get(i, {}).get(n) or {
        str(k): round(min(1.0, max(0.0, d + o)), 4) for k, o in enumerate(SLICE_OFFSETS)}}
        for n, d in labels.items()} for i, labels in dice.items()}
    every = [d for labels in dice.values() for d in labels.values()]
    names = {n for labels in dice.values() for n in labels}
    mean = {"dice": round(sum(every) / len(every), 4), "hd95_mm": None,
            "dice_by_label": {n: round(sum(ls[n] for ls in dice.values() if n in ls)
                                       / sum(n in ls for ls in dice.values()), 4) for n in names}}
    key = registry._cases_key(cases, mode, 3)
    path = registry.evaluations / f"{registry.store.resolve(version)}.json"
    registry.evaluations.mkdir(exist_ok=True)
    path.write_text(json.dumps({**(json.loads(path.read_text()) if path.exists() else {}),
                                key: {"version": version, "mode": mode, "images": images, "mean": mean}}))
    return cases


def slab_site(registry: Registry, tmp_path: Path, version: str) -> list:
    """The site benchmark's slabs: box Dice up after adapting, one click useless on grey/white matter for both."""
    held_out(registry, tmp_path, BASE, "interactive", {"slab1": {"gm": 0.45, "wm": 0.55}})
    held_out(registry, tmp_path, version, "interactive", {"slab1": {"gm": 0.58, "wm": 0.62}})
    held_out(registry, tmp_path, BASE, "click", {"slab1": {"gm": 0.04, "wm": 0.08}})
    return held_out(registry, tmp_path, version, "click", {"slab1": {"gm": 0.03, "wm": 0.05}})


def test_a_mode_neither_version_serves_on_a_label_is_not_judged(registry, tmp_path):
    version = register(registry, None)
    cases = slab_site(registry, tmp_path, version)
    decision = registry.guard(version, cases, margin=0.0)
    assert decision["activated"] and registry.store.active() == version and decision["floor"] == 0.2
    box, click = decision["checks"]
    assert box["passed"] and "not_judged" not in box
    assert click["passed"] is None and click["state"] is None and click["not_judged"] == ["gm", "wm"]
    # the held-out means reported are still every label's
    assert click["by_source"]["held-out images"] == {"new": 0.04, "active": 0.06, "images": 1}
    assert box["units_by_source"] == {"held-out slices": 12}  # one image x two labels: judged by its slices
    assert "gm, wm not judged: both versions below Dice 0.2" in decision["reason"]


def test_with_no_floor_every_label_is_judged(registry, tmp_path):
    version = register(registry, None)
    decision = registry.guard(version, slab_site(registry, tmp_path, version), margin=0.0, floor=0.0)
    assert decision["activated"] is False and registry.store.active() == BASE
    assert [c["passed"] for c in decision["checks"]] == [True, False]
    assert [c["state"] for c in decision["checks"]] == ["better", "worse"] and decision["verdict"] == "worse"


def test_a_label_one_version_serves_is_still_judged(registry, tmp_path):
    """Clicks work on the lesion (base 0.70) and not on grey matter: losing the lesion's clicks keeps it out."""
    version = register(registry, None)
    held_out(registry, tmp_path, BASE, "interactive", {"brain1": {"lesion": 0.60, "gm": 0.40}})
    held_out(registry, tmp_path, version, "interactive", {"brain1": {"lesion": 0.65, "gm": 0.45}})
    held_out(registry, tmp_path, BASE, "click", {"brain1": {"lesion": 0.70, "gm": 0.02}})
    cases = held_out(registry, tmp_path, version, "click", {"brain1": {"lesion": 0.60, "gm": 0.19}})
    decision = registry.guard(version, cases, margin=0.0)
    click = decision["checks"][1]
    assert click["not_judged"] == ["gm"] and (click["new"], click["active"]) == (0.60, 0.70)  # judged units only
    assert click["passed"] is False and decision["activated"] is False and registry.store.active() == BASE
    # A version that keeps the lesion's clicks goes live though its mean click Dice (0.355) is below base's (0.36):
    # what it lost on grey matter is noise under the floor.
    better = register(registry, None)
    held_out(registry, tmp_path, better, "interactive", {"brain1": {"lesion": 0.65, "gm": 0.45}})
    cases = held_out(registry, tmp_path, better, "click", {"brain1": {"lesion": 0.71, "gm": 0.0}})
    decision = registry.guard(better, cases, margin=0.0)
    held = decision["checks"][1]["by_source"]["held-out images"]
    assert held["new"] < held["active"] and decision["activated"]


def test_no_mode_left_to_judge_is_no_evidence(registry, tmp_path):
    version = register(registry, None)
    held_out(registry, tmp_path, BASE, "interactive", {"slab1": {"gm": 0.10}})
    held_out(registry, tmp_path, BASE, "click", {"slab1": {"gm": 0.05}})
    held_out(registry, tmp_path, version, "interactive", {"slab1": {"gm": 0.15}})
    cases = held_out(registry, tmp_path, version, "click", {"slab1": {"gm": 0.06}})
    decision = registry.guard(version, cases, margin=0.0)
    assert decision["activated"] is False and registry.store.active() == BASE
    assert "no mode could be judged" in decision["reason"]


def test_validation_and_held_out_units_are_pooled_by_source(registry, tmp_path):
    """The issue's site: box gains on validation slices and held-out slabs; one click a hair lower on one held-out
    slab, in noise: not 'worse', and the decision says what would let it decide."""
    version = register(registry, evidence(0.689, 0.585, n=4, spread=0.05))
    held_out(registry, tmp_path, BASE, "interactive", {"slab1": {"hippocampus": 0.50}})
    held_out(registry, tmp_path, version, "interactive", {"slab1": {"hippocampus": 0.57}})
    noisy_new = {"slab1": {"hippocampus": {"0": 0.20, "1": 0.55, "2": 0.30, "3": 0.45, "4": 0.25, "5": 0.45}}}
    noisy_old = {"slab1": {"hippocampus": {"0": 0.35, "1": 0.40, "2": 0.40, "3": 0.35, "4": 0.35, "5": 0.40}}}
    held_out(registry, tmp_path, BASE, "click", {"slab1": {"hippocampus": 0.3757}}, noisy_old)
    cases = held_out(registry, tmp_path, version, "click", {"slab1": {"hippocampus": 0.3667}}, noisy_new)
    decision = registry.guard(version, cases)  # the default margin
    box, click = decision["checks"]
    assert box["units_by_source"] == {"validation images": 4, "held-out slices": 6} and box["state"] == "better"
    assert {u[0] for u in box["units"]} == {"validation images", "held-out slices"}
    assert click["state"] == "cannot tell yet" and click["passed"] is None
    assert decision["verdict"] == "cannot tell yet" and decision["activated"] is False
    assert "held-out image" in decision["reason"] and "worse than" not in decision["reason"]
    assert decision["margin"] == 0.01
