"""The CVPR 2025 interactive challenge's simulated annotator, in any number of dimensions.

Shared by the interactive benchmark (3D, as CVPR25_iter_eval.py clicks) and interactive adaptation (2D, one
training slice): training clicks land where the benchmark's do, so what is learned is what is scored. Read from
JunMa11/CVPR-MedSegFMCompetition (not copied): a click goes to the largest connected component of the error
(prediction != truth, misses and over-segmentation together, full connectivity: 26 in 3D, 8 in 2D), at the voxel
farthest from that component's border (Euclidean distance in voxel units; the array's edge counts as border; ties
broken by one seeded draw, as the script's `np.random.seed(42)` does); foreground when the truth there is the
structure, background otherwise. With no error at all there is no click.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """The bounding box of `mask` grown by `margin` voxels, clipped to the array."""
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(a.min()) - margin), min(n, int(a.max()) + 1 + margin))
                 for a, n in zip(idx, mask.shape, strict=True))


def centre_of(region: np.ndarray) -> list[int]:
    """The voxel of `region` farthest from its border (voxel units; outside the array counts as border)."""
    box = bbox(region)
    inner = (slice(1, -1),) * region.ndim
    distance = ndimage.distance_transform_edt(np.pad(region[box], 1))[inner]
    ties = np.argwhere(distance == distance.max())
    pick = ties[np.random.RandomState(42).choice(len(ties))]
    return [int(p + b.start) for p, b in zip(pick, box, strict=True)]


def challenge_click(pred: np.ndarray, truth: np.ndarray) -> tuple[list[int], bool] | None:
    """`(index, foreground)` at the centre of the largest fully connected error component, or None when `pred`
    equals `truth` (the challenge then adds no click)."""
    error = pred != truth
    if not error.any():
        return None
    components, _ = ndimage.label(error, structure=np.ones((3,) * error.ndim, dtype=bool))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    centre = centre_of(components == int(np.argmax(sizes)))
    return centre, bool(truth[tuple(centre)])


def structure_centre(truth: np.ndarray) -> list[int]:
    """Where a clicks-only session starts: the challenge's first click on an empty prediction (the centre of the
    structure's largest connected part)."""
    click = challenge_click(np.zeros_like(truth), truth)
    if click is None:
        raise ValueError("the structure is empty")
    return click[0]
