"""A background click that removes a whole blob carries the removal to the slices propagation filled from it, and
stops at blobs that look like the structure the user marked rather than like what was removed."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lib.medfm.refine import Looks
from lib.medfm.segmenter import _carry_removal
from lib.medfm.volume import Volume


def _volume() -> Volume:
    """Five 32 x 32 slices (slice axis 2): a bright structure (0.8) on every slice, dark tissue (0.3) beside it."""
    array = np.zeros((32, 32, 5), np.float32)
    array[8:16, 8:16, :] = 0.8
    array[16:26, 8:16, :] = 0.3
    reference = sitk.Image([32, 32, 5], sitk.sitkUInt8)
    return Volume(array=array, reference=reference, key="synthetic", modality="MR", slice_axis=2, window=(0.0, 1.0))


def test_removal_goes_on_through_what_was_removed_and_stops_at_the_structure():
    volume = _volume()
    label = np.zeros(volume.shape, np.uint8)
    label[8:16, 8:16, 0:2] = 1  # slices 0-1: the structure
    label[12:26, 8:16, 2:5] = 1  # slices 2-4: mostly the dark tissue (slice 2 is the one the user removed)
    removed = np.take(label, 2, axis=2).T.astype(bool)
    label[:, :, 2] = 0
    structure = Looks.of(volume.slice_windowed(0), np.take(label, 0, axis=2).T.astype(bool))
    for direction, stop in ((1, 4), (-1, 0)):
        _carry_removal(volume, label, 2, removed, direction, stop, clicked={0}, structure=structure)
    assert not label[:, :, 3:].any()  # propagation had put them there from the removed blob: they go with it
    assert label[:, :, 1].sum() == 64  # the structure's slice next to it is kept
    assert label[:, :, 0].sum() == 64
