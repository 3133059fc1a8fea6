"""What a new version shows against the active one on validation slices it did not train on.

Both models see the same slices and the same boxes (from the label, no jitter). The interactive (box) mode is
always compared; the automatic mode on the labels both models learned. When the active model has no prompt-free
head (the base FM answers 409 in automatic mode), the new version's automatic Dice is recorded with nothing to
compare it with: a mode that did not exist cannot get worse. Each mode also keeps its paired scores per slice x label
(`units`), so the guard can pool them with held-out images and judge the difference against its own spread.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import precision as precision_mod
from ..adapter_store import BASE, AdapterStore
from ..backends import FMBackend
from .config import AdaptConfig
from .data import SliceSample
from .peft_setup import encoder_is_frozen
from .trainer import evaluate


def validation_evidence(backend: FMBackend, base_model: nn.Module, store: AdapterStore, model: nn.Module,
                        tokens: dict[int, int], val: list[SliceSample], cfg: AdaptConfig, device: str,
                        precision: str, source: str) -> dict | None:
    """Box and prompt-free Dice of `model` and of the active version on `val`; None without validation slices."""
    if not any(s.present for s in val):
        return None
    active = store.active()
    active_tokens = store.manifest(active).label_tokens()
    shared = {v: t for v, t in active_tokens.items() if v in tokens}
    dev = torch.device(device)
    active_model = store.apply(base_model, active).to(dev)
    with precision_mod.autocast(dev, precision_mod.resolve(precision, dev)):
        new = evaluate(backend, model, val, cfg, {v: tokens[v] for v in shared} if shared else tokens, dev,
                       auto=bool(tokens), base_embedded=encoder_is_frozen(model), units=True)
        old = evaluate(backend, active_model, val, cfg, shared, dev, auto=bool(shared), base_embedded=active == BASE,
                       units=True)
    modes = {"interactive": {"new": new.get("val_dice_box"), "active": old.get("val_dice_box"),
                             "units": _paired(new.get("box_units", {}), old.get("box_units", {}))}}
    if tokens:
        modes["automatic"] = {"new": new.get("val_dice_auto"), "active": old.get("val_dice_auto") if shared else None,
                              # paired with the active version's boxes when it has no automatic mode, as the
                              # guard judges it
                              "units": _paired(new.get("auto_units", {}),
                                               old.get("auto_units", {}) if shared else old.get("box_units", {}))}
    return {"source": source, "compared_with": active, "slices": len(val),
            "images": sorted({s.image_id for s in val}), "modes": modes}


def _paired(new: dict[str, float], old: dict[str, float]) -> dict[str, list[float]]:
    """Slice x label -> [new Dice, active Dice] where both scored it: the guard's paired validation units."""
    return {unit: [new[unit], old[unit]] for unit in sorted(new.keys() & old.keys())}
