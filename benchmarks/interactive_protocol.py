"""The CVPR 2025 interactive 3D challenge's simulated annotator and scores, as its CVPR25_iter_eval.py defines them.

Read from JunMa11/CVPR-MedSegFMCompetition (not copied): a click goes to the largest 3D connected component of the
error (prediction != truth, misses and over-segmentation together, 26-connectivity), at the voxel farthest from
that component's border (Euclidean distance transform in voxel units, not mm; the volume's edge counts as border;
ties broken by one seeded draw, as the script's `np.random.seed(42)` draw does); the click is foreground when the
truth there is the structure, background otherwise. With no error at all, no click is added. DSC_AUC is the
trapezoid (unit step) over the Dice after clicks 1..n only, not the box ("the bbox prompt is optional"), so its
maximum is n - 1 = 4 for 5 clicks. NSD is the normalised surface Dice at 2 mm (MONAI's `compute_surface_dice`,
DeepMind's surfel areas), computed at every step here (the script sets it to 0 when Dice <= 0.2).

`lib.medfm.evaluation.annotator_click` is a different annotator (misses and false positives as separate
6-connected components, distance in mm) that the site benchmark depends on; it is left as it is.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_surface_dice
from scipy import ndimage
from scipy.integrate import trapezoid

NSD_TOLERANCE_MM = 2.0
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def _bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """The bounding box of `mask` grown by `margin` voxels, clipped to the array."""
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(a.min()) - margin), min(n, int(a.max()) + 1 + margin))
                 for a, n in zip(idx, mask.shape, strict=True))


def centre_of(region: np.ndarray) -> list[int]:
    """The voxel of `region` farthest from its border (voxel units; outside the array counts as border)."""
    box = _bbox(region)
    distance = ndimage.distance_transform_edt(np.pad(region[box], 1))[1:-1, 1:-1, 1:-1]
    ties = np.argwhere(distance == distance.max())
    pick = ties[np.random.RandomState(42).choice(len(ties))]
    return [int(p + b.start) for p, b in zip(pick, box, strict=True)]


def challenge_click(pred: np.ndarray, truth: np.ndarray) -> tuple[list[int], bool] | None:
    """`([i, j, k], foreground)` at the centre of the largest 26-connected error component, or None when
    `pred` equals `truth` (the challenge then adds no click)."""
    error = pred != truth
    if not error.any():
        return None
    components, _ = ndimage.label(error, structure=CONNECTIVITY_26)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    centre = centre_of(components == int(np.argmax(sizes)))
    return centre, bool(truth[tuple(centre)])


def structure_centre(truth: np.ndarray) -> list[int]:
    """Where a clicks-only session starts: the challenge's first click on an empty prediction (the centre of the
    structure's largest 26-connected part)."""
    click = challenge_click(np.zeros_like(truth), truth)
    if click is None:
        raise ValueError("the structure is empty")
    return click[0]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def dsc_auc(dice_per_click: list[float]) -> float:
    """The challenge's DSC_AUC: trapezoid, unit step, over the Dice after each click (box excluded)."""
    return float(trapezoid(dice_per_click)) if len(dice_per_click) > 1 else 0.0


def nsd(pred: np.ndarray, truth: np.ndarray, spacing, tolerance_mm: float = NSD_TOLERANCE_MM) -> float:
    """Normalised surface Dice at `tolerance_mm`; 0 when only one of the two is empty, 1 when both are.

    Computed on the union's bounding box grown by 2 voxels (clipped to the volume): surfaces and their distances
    are the same as on the whole volume, at a fraction of the cost on a 512x512 CT."""
    if not pred.any() and not truth.any():
        return 1.0
    if not pred.any() or not truth.any():
        return 0.0
    box = _bbox(pred | truth, margin=2)

    def onehot(mask: np.ndarray) -> torch.Tensor:
        m = torch.from_numpy(np.ascontiguousarray(mask[box]))
        return torch.stack([~m, m]).unsqueeze(0).float()

    value = compute_surface_dice(onehot(pred), onehot(truth), class_thresholds=[tolerance_mm],
                                 spacing=[float(s) for s in spacing], use_subvoxels=True)
    return float(value.item())
