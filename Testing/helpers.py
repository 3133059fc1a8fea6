"""Small shared helpers for the server tests: read results, compute Dice, expect a 4xx from the stock client."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]


def read_ijk(path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)), image


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def label_roi(label: np.ndarray, value: int = 1) -> list[int]:
    """The inclusive IJK box of a label, in the interactive task's roi format [i0, i1, j0, j1, k0, k1]."""
    i, j, k = np.nonzero(label == value)
    return [int(i.min()), int(i.max()), int(j.min()), int(j.max()), int(k.min()), int(k.max())]


def expect_status(call, status: int, words: str = ""):
    """Run a stock-client call that must fail with `status`; return the server's message."""
    from monailabel.client.client import MONAILabelClientException

    with pytest.raises(MONAILabelClientException) as caught:
        call()
    message = str(caught.value.msg)
    found = re.search(r"Status: (\d+)", message)
    assert found and int(found.group(1)) == status, message
    assert words.lower() in message.lower(), message
    return message


def lesion_slice(studies: Path, case: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The windowed slice with the most of a sample lesion, and the lesion's box on it (x0, y0, x1, y1)."""
    from lib.medfm.volume import load_label, load_volume  # the domain core, on the path the server tests set

    volume = load_volume(studies / f"{case}.nii.gz")
    label = load_label(studies / "labels" / "final" / f"{case}.nii.gz", volume) > 0
    axes = tuple(a for a in range(3) if a != volume.slice_axis)
    k = int(np.argmax(label.sum(axis=axes)))  # the slice with the most lesion
    mask = np.take(label, k, axis=volume.slice_axis).T  # the slice's own frame, as the segmenter reads it
    rows, cols = np.nonzero(mask)
    return volume.slice_windowed(k), (float(cols.min()), float(rows.min()), float(cols.max() + 1),
                                      float(rows.max() + 1))
