"""Held-out evaluation of an adapter version (or the base FM), and side-by-side comparison of two.

Both versions see exactly the same prompts: in interactive mode the roi is the label's 3D extent grown by a fixed,
seeded jitter of up to `jitter` voxels per side (a user's box is never exact); in click mode one foreground click at
the centre of the structure (an annotator's first click: the voxel farthest from its border), followed through the
slices as the server follows a click; in automatic mode there are none.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import InputError
from .metrics import dice, hd95
from .prompts import resolve
from .segmenter import Segmenter
from .volume import load_label, load_volume

MODES = ("interactive", "click", "automatic")


@dataclass(frozen=True)
class HeldOutCase:
    image_id: str
    image_path: str
    label_path: str


def jittered_roi(truth: np.ndarray, image_id: str, value: int, jitter: int) -> list[int]:
    i, j, k = np.nonzero(truth == value)
    seed = int(hashlib.sha256(f"{image_id}:{value}".encode()).hexdigest()[:8], 16)
    grow = np.random.default_rng(seed).integers(0, jitter + 1, size=6)
    lows = [int(i.min()) - grow[0], int(j.min()) - grow[1], int(k.min())]  # slices are not grown: the user
    highs = [int(i.max()) + grow[2], int(j.max()) + grow[3], int(k.max())]  # picks the range by scrolling
    shape = truth.shape
    lows = [max(0, v) for v in lows]
    highs = [min(n - 1, v) for v, n in zip(highs, shape, strict=True)]
    return [lows[0], highs[0], lows[1], highs[1], lows[2], highs[2]]  # the roi's per-axis pairs


def annotator_click(pred: np.ndarray, truth: np.ndarray, spacing) -> tuple[list[int], bool] | None:
    """Where an annotator clicks next: `([i, j, k], positive)` at the centre of the largest error region of `pred`
    (a foreground click in a miss, a background click in a false positive), or None when nothing is wrong.

    Regions are 3D connected components; the centre is the voxel farthest from the region's border (Euclidean
    distance in mm, the volume's edge counting as border), so the click lands well inside.
    """
    best = None  # (size, positive, component mask)
    for positive, error in ((True, truth & ~pred), (False, pred & ~truth)):
        if not error.any():
            continue
        components, _ = ndimage.label(error)
        sizes = np.bincount(components.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1
        if best is None or sizes[largest - 1] > best[0]:
            best = (int(sizes[largest - 1]), positive, components == largest)
    if best is None:
        return None
    _, positive, region = best
    distance = ndimage.distance_transform_edt(np.pad(region, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    return [int(v) for v in np.unravel_index(int(np.argmax(distance)), distance.shape)], positive


def evaluate(segmenter: Segmenter, version: str, cases: list[HeldOutCase], labels: dict[str, int],
             mode: str = "interactive", jitter: int = 3, ct_window=None) -> dict:
    """Dice and HD95 per image and label, with means; NaN HD95 (an empty mask) is left out of its mean."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if not cases:
        raise InputError("there are no held-out images: mark labelled images as held-out first")
    per_image: dict[str, dict] = {}
    for case in cases:
        volume = load_volume(case.image_path, **({"ct_window": ct_window} if ct_window else {}))
        truth = load_label(case.label_path, volume)
        present = {n: v for n, v in labels.items() if (truth == v).any()}
        if not present:
            continue
        scores = {}
        auto = segmenter.automatic(volume, version).label if mode == "automatic" else None
        for name, value in present.items():
            if auto is not None:
                pred = auto == value
            elif mode == "click":
                click, _ = annotator_click(np.zeros(truth.shape, bool), truth == value, volume.spacing)
                pred = segmenter.interactive(volume, resolve(volume, foreground=[click]), version).label > 0
            else:
                roi = jittered_roi(truth, case.image_id, value, jitter)
                pred = segmenter.interactive(volume, resolve(volume, roi=roi), version).label > 0
            scores[name] = {"dice": round(dice(pred, truth == value), 4),
                            "hd95_mm": _round(hd95(pred, truth == value, volume.spacing)),
                            "slices": slice_dice(pred, truth == value, volume.slice_axis)}
        per_image[case.image_id] = scores
    return {"version": version, "mode": mode, "jitter_voxels": jitter, "images": per_image,
            "mean": means(per_image)}


def slice_dice(pred: np.ndarray, truth: np.ndarray, axis: int) -> dict[str, float]:
    """Dice on each slice where the structure or the prediction is (slice index -> Dice): the units the guard pairs
    when held-out images are too few to judge a difference by images alone."""
    pred, truth = np.moveaxis(pred, axis, 0), np.moveaxis(truth, axis, 0)
    both = (pred & truth).reshape(len(pred), -1).sum(1)
    total = pred.reshape(len(pred), -1).sum(1) + truth.reshape(len(truth), -1).sum(1)
    return {str(k): round(float(2 * both[k] / total[k]), 4) for k in np.flatnonzero(total)}


def compare(a: dict, b: dict) -> dict:
    """Per-image Dice differences (b - a) on the images both were evaluated on, and which one is better."""
    common = sorted(set(a["images"]) & set(b["images"]))
    rows, diffs = [], []
    for image_id in common:
        for label in sorted(set(a["images"][image_id]) & set(b["images"][image_id])):
            da, db = a["images"][image_id][label]["dice"], b["images"][image_id][label]["dice"]
            rows.append({"image": image_id, "label": label, "dice_a": da, "dice_b": db, "diff": round(db - da, 4)})
            diffs.append(db - da)
    mean_diff = float(np.mean(diffs)) if diffs else 0.0
    better = b["version"] if mean_diff > 0 else a["version"] if mean_diff < 0 else "tie"
    return {"a": a["version"], "b": b["version"], "mode": a["mode"], "per_image": rows,
            "mean_dice_a": a["mean"]["dice"], "mean_dice_b": b["mean"]["dice"], "mean_diff": round(mean_diff, 4),
            "better": better, "by": round(abs(mean_diff), 4),
            "summary": (f"{better} is better by {abs(mean_diff):.3f} mean Dice over {len(rows)} image-label pairs"
                        if better != "tie" else f"no difference over {len(rows)} image-label pairs")}


def means(per_image: dict) -> dict:
    """Mean Dice over every image and label, mean HD95 where defined, and mean Dice per label."""
    dices = [s["dice"] for scores in per_image.values() for s in scores.values()]
    hds = [s["hd95_mm"] for scores in per_image.values() for s in scores.values() if s["hd95_mm"] is not None]
    by_label: dict[str, list[float]] = {}
    for scores in per_image.values():
        for name, s in scores.items():
            by_label.setdefault(name, []).append(s["dice"])
    return {"dice": round(float(np.mean(dices)), 4) if dices else None,
            "hd95_mm": round(float(np.mean(hds)), 3) if hds else None,
            "dice_by_label": {n: round(float(np.mean(v)), 4) for n, v in by_label.items()}}


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)
