"""Helpers for the Slicer-extension tests: images with known geometry and ROIs on a volume's voxel axes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def rotation(axis: tuple[float, float, float], angle: float) -> np.ndarray:
    """3x3 rotation about `axis` by `angle` radians (Rodrigues)."""
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


# LPS direction matrices (as ITK/DICOM store them) for the cases that break naive tools.
DIRECTIONS = {
    "identity": np.eye(3),
    "oblique": rotation((1.0, 0.4, 0.2), 0.5),
    "flipped": np.diag([1.0, -1.0, -1.0]) @ rotation((0, 0, 1), 0.2),
    "left_handed": np.diag([1.0, 1.0, -1.0]),
}


def make_image(direction: np.ndarray, shape=(7, 11, 13), seed: int = 0):
    """A SimpleITK image (array [k, j, i]) with anisotropic spacing, an offset origin and the given direction."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(-1000, 2000, size=shape).astype(np.int16))
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((-31.5, 12.25, 40.0))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def volume_aligned_roi(scene, volume, half_voxels=(2, 2, 1), center=None, roi=None):
    """A markups ROI whose axes follow the volume's voxel axes, centred on voxel `center` (default: the middle),
    reaching `half_voxels` voxels each way, so it covers exactly 2*h+1 voxels along each axis (a new node, or `roi`
    moved there)."""
    import slicer
    import vtk

    from MedFMAdapt.MedFMAdaptLib import scene as scene_lib

    dims = np.array(scene_lib.dimensions(volume))
    center_ijk = np.array(center if center is not None else dims // 2, dtype=float)
    ijk_to_ras = scene_lib.ijk_to_ras(volume)
    spacing = np.array(volume.GetSpacing())
    center_ras = (ijk_to_ras @ np.append(center_ijk, 1.0))[:3]
    object_to_node = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            object_to_node.SetElement(r, c, ijk_to_ras[r, c] / spacing[c])
        object_to_node.SetElement(r, 3, center_ras[r])
    if roi is None:
        roi = slicer.vtkMRMLMarkupsROINode()
        scene.AddNode(roi)
    roi.SetAndObserveObjectToNodeMatrix(object_to_node)
    roi.SetSize(*(2.0 * np.array(half_voxels) * spacing))
    return roi
