"""Overlap and distance metrics on label maps, per label, in physical units where it matters."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; two empty masks agree perfectly (1.0)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    denom = pred.sum() + truth.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(pred, truth).sum() / denom)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    return (1 - (2 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)).mean()


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> float:
    """95th-percentile Hausdorff distance in mm; NaN when either mask is empty (undefined, not zero)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    if not pred.any() or not truth.any():
        return float("nan")
    p = torch.from_numpy(pred)[None, None].float()
    t = torch.from_numpy(truth)[None, None].float()
    return float(compute_hausdorff_distance(p, t, percentile=95, spacing=list(spacing))[0, 0])


def per_label(pred: np.ndarray, truth: np.ndarray, values: dict[str, int], spacing) -> dict[str, dict]:
    return {name: {"dice": dice(pred == v, truth == v), "hd95_mm": hd95(pred == v, truth == v, spacing)}
            for name, v in values.items() if (truth == v).any() or (pred == v).any()}
