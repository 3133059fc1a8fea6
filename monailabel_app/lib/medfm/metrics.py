"""The one Dice (metric and loss) of product and benchmark code, from MONAI, and HD95 in physical units.

Empty against empty: a mask with no structure where the truth has none is a perfect answer and scores 1.0
(MONAI's `ignore_empty=False`). A prediction on an empty truth scores 0.0. Callers that only score structures
present in the truth never meet the first case; the prompt-free benchmark, which asks "is it here?", does.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.metrics import compute_dice, compute_hausdorff_distance

# Dice + binary cross-entropy on mask logits, per mask then averaged; smoothing 1 keeps empty targets finite.
mask_loss = DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)


def dice_batch(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Dice of each pair of binary masks in a batch (B x ...), as a float tensor of B values."""
    pred = torch.as_tensor(pred).bool().reshape(len(pred), 1, -1).float()
    truth = torch.as_tensor(truth).bool().reshape(len(truth), 1, -1).float()
    return compute_dice(pred, truth, include_background=True, ignore_empty=False)[:, 0]


def dice(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> float:
    """Dice of two binary masks of any shape; two empty masks agree perfectly (1.0)."""
    pred, truth = torch.as_tensor(pred).cpu(), torch.as_tensor(truth).cpu()
    return float(dice_batch(pred[None], truth[None])[0])


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> float:
    """95th-percentile Hausdorff distance in mm; NaN when either mask is empty (undefined, not zero)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    if not pred.any() or not truth.any():
        return float("nan")
    p = torch.from_numpy(pred)[None, None].float()
    t = torch.from_numpy(truth)[None, None].float()
    return float(compute_hausdorff_distance(p, t, percentile=95, spacing=list(spacing))[0, 0])

