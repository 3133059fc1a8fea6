"""The CVPR 2025 interactive 3D challenge's simulated annotator and scores, as its CVPR25_iter_eval.py defines them.

The annotator (`challenge_click`, `centre_of`, `structure_centre`) lives in the domain core, lib/medfm/annotator.py,
because interactive adaptation clicks with it too (on 2D slices); it is re-exported here. Read from
JunMa11/CVPR-MedSegFMCompetition (not copied): a click goes to the largest 3D connected component of the error
(prediction != truth, misses and over-segmentation together, 26-connectivity), at the voxel farthest from that
component's border (Euclidean distance transform in voxel units, not mm; the volume's edge counts as border; ties
broken by one seeded draw, as the script's `np.random.seed(42)` draw does); the click is foreground when the
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
from scipy.integrate import trapezoid

from lib.medfm.annotator import bbox, centre_of, challenge_click, structure_centre  # noqa: F401  (re-exported)

NSD_TOLERANCE_MM = 2.0


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
    box = bbox(pred | truth, margin=2)

    def onehot(mask: np.ndarray) -> torch.Tensor:
        m = torch.from_numpy(np.ascontiguousarray(mask[box]))
        return torch.stack([~m, m]).unsqueeze(0).float()

    value = compute_surface_dice(onehot(pred), onehot(truth), class_thresholds=[tolerance_mm],
                                 spacing=[float(s) for s in spacing], use_subvoxels=True)
    return float(value.item())
