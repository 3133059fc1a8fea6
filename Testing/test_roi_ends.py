"""A radiologist's 3D box is never tight to the voxel: slices of the roi past the structure's end stay empty.

Measured 2026-12-07 (Intel Xeon, interactive benchmark): the truth's box one slice longer at each end gave each
extra slice a whole box-filling mask (lung2: 4,166 pixels past a 901-pixel last slice), box Dice 0.937 -> 0.852
(lung1 0.894 -> 0.784, breast1 0.564 -> 0.483). The walk now stops where the mask's tissue stops looking like the
previous slice's (Segmenter._propagate).
"""

from __future__ import annotations

import numpy as np
import pytest

from lib.medfm.adapter_store import AdapterStore
from lib.medfm.backends import get_backend
from lib.medfm.embedding_cache import EmbeddingCache
from lib.medfm.prompts import resolve
from lib.medfm.segmenter import Segmenter
from lib.medfm.volume import load_label, load_volume
from Testing.helpers import dice


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    backend = get_backend("litemedsam")
    return Segmenter(backend, AdapterStore(tmp_path_factory.mktemp("models"), backend.name), EmbeddingCache(),
                     precision="fp32")


@pytest.mark.parametrize("case", ["lung1", "breast1"])
def test_roi_slices_past_the_lesion_stay_empty(sample_datastore, segmenter, case):
    volume = load_volume(sample_datastore / f"{case}.nii.gz")
    truth = load_label(sample_datastore / "labels" / "final" / f"{case}.nii.gz", volume) > 0
    ax = volume.slice_axis
    idx = np.nonzero(truth)
    roi = [int(v) for a in idx for v in (a.min(), a.max())]
    tight = segmenter.interactive(volume, resolve(volume, roi=roi)).label > 0
    first, last = roi[2 * ax] - 1, roi[2 * ax + 1] + 1  # one slice more at each end, as a hand-drawn box has
    roi[2 * ax], roi[2 * ax + 1] = first, last
    loose = segmenter.interactive(volume, resolve(volume, roi=roi)).label > 0
    assert not np.take(loose, first, axis=ax).any() and not np.take(loose, last, axis=ax).any()
    assert dice(loose, truth) >= dice(tight, truth) - 0.01 > 0.5  # the lesion's own slices as with the tight box
