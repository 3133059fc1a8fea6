"""Which slice edits the correction loop carries to the neighbouring slices (Segmenter.refine), on a real lesion
volume with the real FM: the edit of the clicked slice is fixed, so only the walk that follows is checked."""

from __future__ import annotations

import numpy as np
import pytest

from lib.medfm import segmenter as segmenter_mod
from lib.medfm.adapter_store import AdapterStore
from lib.medfm.backends import get_backend
from lib.medfm.embedding_cache import EmbeddingCache
from lib.medfm.prompts import resolve
from lib.medfm.refine import SliceEdit
from lib.medfm.segmenter import Segmenter
from lib.medfm.volume import load_label, load_volume


@pytest.fixture(scope="module")
def case(sample_datastore, tmp_path_factory):
    volume = load_volume(sample_datastore / "breast1.nii.gz")
    truth = load_label(sample_datastore / "labels" / "final" / "breast1.nii.gz", volume) > 0
    backend = get_backend("litemedsam")
    store = AdapterStore(tmp_path_factory.mktemp("models"), backend.name)
    return volume, truth, Segmenter(backend, store, EmbeddingCache(), precision="fp32")


@pytest.mark.parametrize("how, carried", [("grown", False), ("box 0", True)])
def test_a_grown_addition_stays_on_its_slice_and_a_decoders_is_carried(case, monkeypatch, how, carried):
    """brain2_crop: 65 grown pixels were carried onto two slices past the lesion (+329, Dice 0.62 -> 0.49)."""
    volume, truth, segmenter = case
    k = int(np.argmax(truth.sum(axis=volume.in_plane_axes)))
    voxel = next(v for v in np.argwhere(truth).tolist() if v[volume.slice_axis] == k)  # a lesion voxel on slice k
    x, y = (voxel[axis] for axis in volume.in_plane_axes)
    previous = np.zeros(volume.shape, np.uint8)
    for j in (k - 1, k, k + 1):
        volume.put_slice(previous, j, np.take(truth, j, volume.slice_axis).T.astype(np.uint8))
    old = np.take(previous, k, volume.slice_axis).T.astype(bool)
    added = np.zeros_like(old)
    rows, cols = np.nonzero(old)
    added[rows.min():rows.max() + 1, cols.max() + 1:cols.max() + 4] = True  # three columns past its edge
    monkeypatch.setattr(segmenter_mod, "edit_slice", lambda *a, **kw: SliceEdit(old | added, how))
    walked = []
    monkeypatch.setattr(Segmenter, "_walk_edit", lambda self, *a, **kw: walked.append(a[5:7]))
    prompts = resolve(volume, foreground=[voxel])
    result = segmenter.refine(volume, prompts, [(k, (float(x), float(y), 1))], previous)
    assert np.array_equal(np.take(result.label, k, volume.slice_axis).T.astype(bool), old | added)
    others = [j for j in range(volume.n_slices) if j != k]
    assert all(np.array_equal(np.take(result.label, j, volume.slice_axis), np.take(previous, j, volume.slice_axis))
               for j in others)
    assert bool(walked) == carried
