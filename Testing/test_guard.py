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


def evidence(new: float, active: float, against: str = BASE) -> dict:
    return {"source": "validation images", "compared_with": against, "slices": 4, "images": ["brain2"],
            "modes": {"interactive": {"new": new, "active": active}}}


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
    assert decision["checks"] == [{"source": "validation images", "mode": "interactive", "against": "interactive",
                                   "new": 0.79, "active": 0.80, "passed": False,
                                   "summary": decision["checks"][0]["summary"]}]
    assert registry.store.active() == good
    assert registry.listing()["adapters"][1]["decision"]["activated"] is False


def auto_evidence(box_new: float, box_active: float, auto_new: float) -> dict:
    """Validation of a version with a prompt-free head, against the base FM (which has no automatic mode)."""
    return {**evidence(box_new, box_active), "modes": {"interactive": {"new": box_new, "active": box_active},
                                                       "automatic": {"new": auto_new, "active": None}}}


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


def held_out(registry: Registry, tmp_path: Path, version: str, mode: str, dice: dict[str, dict[str, float]]) -> list:
    """Record `version`'s held-out `mode` Dice per image and label, as `Registry.evaluate` stores them, and return
    the cases, so the guard decides on these figures without running the FM."""
    cases = []
    for image_id in dice:
        image, label = tmp_path / f"{image_id}.nii.gz", tmp_path / f"{image_id}_label.nii.gz"
        image.write_bytes(image_id.encode())
        label.write_bytes(image_id.encode() * 2)
        cases.append(HeldOutCase(image_id, str(image), str(label)))
    images = {i: {n: {"dice": d, "hd95_mm": None} for n, d in labels.items()} for i, labels in dice.items()}
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
    assert click["passed"] is None and click["not_judged"] == ["gm", "wm"]
    assert (click["new"], click["active"]) == (0.04, 0.06)  # the figures reported are still every label's mean
    assert "gm, wm not judged: both versions below Dice 0.2" in decision["reason"]


def test_with_no_floor_every_label_is_judged(registry, tmp_path):
    version = register(registry, None)
    decision = registry.guard(version, slab_site(registry, tmp_path, version), margin=0.0, floor=0.0)
    assert decision["activated"] is False and registry.store.active() == BASE
    assert [c["passed"] for c in decision["checks"]] == [True, False]


def test_a_label_one_version_serves_is_still_judged(registry, tmp_path):
    """Clicks work on the lesion (base 0.70) and not on grey matter: losing the lesion's clicks keeps it out."""
    version = register(registry, None)
    held_out(registry, tmp_path, BASE, "interactive", {"brain1": {"lesion": 0.60, "gm": 0.40}})
    held_out(registry, tmp_path, version, "interactive", {"brain1": {"lesion": 0.65, "gm": 0.45}})
    held_out(registry, tmp_path, BASE, "click", {"brain1": {"lesion": 0.70, "gm": 0.02}})
    cases = held_out(registry, tmp_path, version, "click", {"brain1": {"lesion": 0.60, "gm": 0.19}})
    decision = registry.guard(version, cases, margin=0.0)
    click = decision["checks"][1]
    assert click["not_judged"] == ["gm"] and (click["judged_new"], click["judged_active"]) == (0.60, 0.70)
    assert click["passed"] is False and decision["activated"] is False and registry.store.active() == BASE
    # A version that keeps the lesion's clicks goes live though its mean click Dice (0.355) is below base's (0.36):
    # what it lost on grey matter is noise under the floor.
    better = register(registry, None)
    held_out(registry, tmp_path, better, "interactive", {"brain1": {"lesion": 0.65, "gm": 0.45}})
    cases = held_out(registry, tmp_path, better, "click", {"brain1": {"lesion": 0.71, "gm": 0.0}})
    decision = registry.guard(better, cases, margin=0.0)
    assert decision["checks"][1]["new"] < decision["checks"][1]["active"] and decision["activated"]


def test_no_mode_left_to_judge_is_no_evidence(registry, tmp_path):
    version = register(registry, None)
    held_out(registry, tmp_path, BASE, "interactive", {"slab1": {"gm": 0.10}})
    held_out(registry, tmp_path, BASE, "click", {"slab1": {"gm": 0.05}})
    held_out(registry, tmp_path, version, "interactive", {"slab1": {"gm": 0.15}})
    cases = held_out(registry, tmp_path, version, "click", {"slab1": {"gm": 0.06}})
    decision = registry.guard(version, cases, margin=0.0)
    assert decision["activated"] is False and registry.store.active() == BASE
    assert "no mode could be judged" in decision["reason"]
