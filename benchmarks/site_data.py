"""The benchmark's "site": labelled volumes written as NIfTI files into a temporary datastore folder.

No registry ships five or more subjects with manual labels of one structure (../shared/FACTS.md), so the site is
built from what there is, and every part says what it is:

- `slab`: the MNI152 template (one averaged subject, 2 mm) with its thresholded grey/white-matter maps, cut into
  axial slabs used as separate volumes. Slabs are separated by unused gap slices and alternate train / test
  from the bottom up, so no training slab touches a test slab. Figures on slabs rest on one template, not on
  several subjects: the slabs differ in anatomy (cerebellum to vertex), not in subject or scanner.
- `pair`: the pyradiomics within-organ lesion pairs (brain1/brain2 MRI, lung1/lung2 CT): train on one case of a
  pair, test on the other. Real, different patients, but only two per organ.
- `*_shift`: a seeded, simulated scanner shift of each test volume (MONAI transforms: bias field and contrast
  gamma on MR, in-plane resolution loss and Gaussian noise on both), labels unchanged. Simulated, never measured
  on a scanner.

Slabs and test crops keep their geometry (SimpleITK slicing moves the origin), so the product reads them as it
reads any site image.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

TISSUE_LABELS = {"gray_matter": 2, "white_matter": 3}
LESION_LABELS = {"lesion": 1}
# A lesion pair's held-out case is cropped to the lesion's slices plus this many on each side: the product embeds
# every slice an automatic request covers, and the CPU cannot afford 48-61 slice CT volumes per adapted version.
LESION_MARGIN_SLICES = 1
IN_PLANE_MARGIN = 4  # voxels kept around the label's in-plane extent when a slab is cropped


@dataclass(frozen=True)
class SiteVolume:
    image_id: str
    image_path: str
    label_path: str
    part: str  # "slab" or "pair"
    role: str  # "train" or "test"
    source: str  # what it was cut from, in words
    slices: int
    shifted: bool = False
    shift: dict | None = None  # the drawn shift parameters, when shifted


@dataclass
class Site:
    folder: Path
    slabs_train: list[SiteVolume]  # bottom to top
    slabs_test: list[SiteVolume]
    pairs: list[tuple[SiteVolume, SiteVolume]]  # (train case, its held-out partner)
    shifted: dict[str, SiteVolume]  # test image id -> its shifted copy

    def describe(self) -> dict:
        return {"folder": str(self.folder),
                "slabs_train": [asdict(v) for v in self.slabs_train],
                "slabs_test": [asdict(v) for v in self.slabs_test],
                "pairs": [[asdict(a), asdict(b)] for a, b in self.pairs],
                "shifted": {k: asdict(v) for k, v in self.shifted.items()}}


def _write(image: sitk.Image, label: sitk.Image, folder: Path, image_id: str) -> tuple[str, str]:
    image_path = folder / f"{image_id}.nii.gz"
    label_path = folder / "labels" / "final" / f"{image_id}.nii.gz"
    sitk.WriteImage(image, str(image_path), useCompression=True)
    sitk.WriteImage(label, str(label_path), useCompression=True)
    return str(image_path), str(label_path)


def _in_plane_crop(label: sitk.Image) -> tuple[slice, slice]:
    """The label's in-plane extent (i, j) over the whole slab, grown by IN_PLANE_MARGIN, as index slices."""
    arr = sitk.GetArrayViewFromImage(label)  # [k, j, i]
    _, js, is_ = np.nonzero(arr)
    size = label.GetSize()
    return (slice(max(0, int(is_.min()) - IN_PLANE_MARGIN), min(size[0], int(is_.max()) + 1 + IN_PLANE_MARGIN)),
            slice(max(0, int(js.min()) - IN_PLANE_MARGIN), min(size[1], int(js.max()) + 1 + IN_PLANE_MARGIN)))


def slab_ranges(label: sitk.Image, n_slabs: int, slab_slices: int, gap: int) -> list[tuple[int, int]]:
    """`n_slabs` ranges [k0, k1) of `slab_slices` axial slices with `gap` unused slices between neighbours,
    centred on the slices where both tissues are labelled."""
    arr = sitk.GetArrayViewFromImage(label)
    both = [k for k in range(arr.shape[0]) if (arr[k] == 2).sum() > 100 and (arr[k] == 3).sum() > 100]
    span = n_slabs * slab_slices + (n_slabs - 1) * gap
    if not both or span > both[-1] - both[0] + 1 + 2 * gap:
        raise ValueError(f"{n_slabs} slabs of {slab_slices} slices with gaps of {gap} need {span} slices; the "
                         f"template has {len(both)} with both tissues labelled")
    start = max(0, (both[0] + both[-1] + 1 - span) // 2)
    return [(start + n * (slab_slices + gap), start + n * (slab_slices + gap) + slab_slices) for n in range(n_slabs)]


def build_slabs(studies: Path, folder: Path, n_slabs: int, slab_slices: int, gap: int,
                test_slices: int) -> tuple[list[SiteVolume], list[SiteVolume]]:
    """Even slabs (from the bottom) train, odd slabs test; test slabs keep their `test_slices` central slices."""
    image = sitk.ReadImage(str(studies / "mni152.nii.gz"))
    label = sitk.ReadImage(str(studies / "labels" / "final" / "mni152.nii.gz"))
    label = sitk.Cast(label, sitk.sitkUInt8)
    label.CopyInformation(image)
    train, test = [], []
    for n, (k0, k1) in enumerate(slab_ranges(label, n_slabs, slab_slices, gap)):
        role = "train" if n % 2 == 0 else "test"
        if role == "test" and test_slices < k1 - k0:
            k0 = k0 + (k1 - k0 - test_slices) // 2
            k1 = k0 + test_slices
        si, sj = _in_plane_crop(label[:, :, k0:k1])
        image_id = f"slab{n:02d}"
        paths = _write(image[si, sj, k0:k1], label[si, sj, k0:k1], folder, image_id)
        z0, z1 = (image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in (k0, k1 - 1))
        volume = SiteVolume(image_id, *paths, part="slab", role=role, slices=k1 - k0,
                            source=f"MNI152 2 mm template, axial slices {k0}..{k1 - 1} (z {z0:g}..{z1:g} mm)")
        (train if role == "train" else test).append(volume)
    return train, test


LESION_PAIRS = (("brain1", "brain2"), ("lung1", "lung2"))


def build_pairs(studies: Path, folder: Path, directions: list[tuple[str, str]]) -> list[tuple[SiteVolume, SiteVolume]]:
    """(train, test) lesion cases; the train case as it is, the test case cropped to its lesion's slices +- 1."""
    pairs = []
    for train_id, test_id in directions:
        src_image = studies / f"{train_id}.nii.gz"
        src_label = studies / "labels" / "final" / f"{train_id}.nii.gz"
        n = sitk.ReadImage(str(src_image)).GetSize()[2]
        train = SiteVolume(train_id, str(src_image), str(src_label), part="pair", role="train", slices=n,
                           source=f"pyradiomics {train_id}, whole volume")
        image = sitk.ReadImage(str(studies / f"{test_id}.nii.gz"))
        label = sitk.ReadImage(str(studies / "labels" / "final" / f"{test_id}.nii.gz"))
        ks = np.nonzero(sitk.GetArrayViewFromImage(label).any(axis=(1, 2)))[0]
        k0 = max(0, int(ks.min()) - LESION_MARGIN_SLICES)
        k1 = min(image.GetSize()[2], int(ks.max()) + 1 + LESION_MARGIN_SLICES)
        image_id = f"{test_id}_crop"
        if not (folder / f"{image_id}.nii.gz").exists():
            _write(image[:, :, k0:k1], label[:, :, k0:k1], folder, image_id)
        test = SiteVolume(image_id, str(folder / f"{image_id}.nii.gz"),
                          str(folder / "labels" / "final" / f"{image_id}.nii.gz"), part="pair", role="test",
                          slices=k1 - k0, source=f"pyradiomics {test_id}, slices {k0}..{k1 - 1} (lesion +- "
                                                 f"{LESION_MARGIN_SLICES})")
        pairs.append((train, test))
    return pairs


def seed_of(*parts) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def simulate_scanner(array: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
    """A seeded scanner shift of an [i, j, k] volume with MONAI transforms, in this order: a smooth multiplicative
    bias field and a contrast gamma (MR only: CT numbers are calibrated), in-plane resolution loss (each slice
    down- then up-sampled, as a coarser acquisition matrix), Gaussian noise. Intensities are mapped to [0, 1] by
    their 0.5-99.5 percentiles first and back afterwards, so CT stays in HU and MR in its own units."""
    from monai.transforms import RandAdjustContrast, RandBiasField, RandGaussianNoise, RandSimulateLowResolution

    rng = np.random.default_rng(seed)
    mr = float(np.percentile(array, 1)) >= -500  # the product's own CT/MR guess (volume.guess_modality)
    gamma = float(rng.uniform(0.7, 0.85) if rng.random() < 0.5 else rng.uniform(1.2, 1.4))
    params = {"modality": "MR" if mr else "CT", "bias_coeff": round(float(rng.uniform(0.08, 0.2)), 3) if mr else 0.0,
              "gamma": round(gamma, 3) if mr else 1.0, "in_plane_zoom": round(float(rng.uniform(0.5, 0.7)), 3),
              "noise_std": round(float(rng.uniform(0.015, 0.03)), 3), "seed": seed}
    lo, hi = np.percentile(array, (0.5, 99.5))
    x = np.clip((array.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, None)[None]  # channel first
    steps = []
    if mr:
        steps += [RandBiasField(degree=3, coeff_range=(params["bias_coeff"],) * 2, prob=1.0),
                  RandAdjustContrast(prob=1.0, gamma=(params["gamma"],) * 2)]
    low = RandSimulateLowResolution(prob=1.0, upsample_mode="bilinear", zoom_range=(params["in_plane_zoom"],) * 2)
    noise = RandGaussianNoise(prob=1.0, std=params["noise_std"], sample_std=False)
    for n, t in enumerate((*steps, low, noise)):
        t.set_random_state(seed=(seed + n) % 2**32)
    for t in steps:
        x = np.asarray(t(x))
    x = np.stack([np.asarray(low(x[:, :, :, k]))[0] for k in range(x.shape[-1])], axis=-1)[None]
    x = np.asarray(noise(x))
    return (x[0] * (hi - lo) + lo).astype(np.float32), params


def build_shifted(volume: SiteVolume, folder: Path) -> SiteVolume:
    image = sitk.ReadImage(volume.image_path)
    arr = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    shifted, params = simulate_scanner(arr, seed_of("shift", volume.image_id))
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(shifted, (2, 1, 0))))
    out.CopyInformation(image)
    image_id = f"{volume.image_id}_shift"
    paths = _write(out, sitk.ReadImage(volume.label_path), folder, image_id)
    return SiteVolume(image_id, *paths, part=volume.part, role="test", slices=volume.slices,
                      source=f"{volume.image_id} with a simulated scanner shift", shifted=True, shift=params)


def build_site(studies: Path, folder: Path, slabs: dict, pair_directions: list[tuple[str, str]]) -> Site:
    (folder / "labels" / "final").mkdir(parents=True, exist_ok=True)
    train, test = build_slabs(studies, folder, slabs["n"], slabs["slices"], slabs["gap"], slabs["test_slices"])
    test = test[:slabs["n_test"]]
    pairs = build_pairs(studies, folder, pair_directions)
    to_shift = test + list({b.image_id: b for _, b in pairs}.values())
    shifted = {v.image_id: build_shifted(v, folder) for v in to_shift}
    site = Site(folder, train, test, pairs, shifted)
    (folder / "SITE.json").write_text(json.dumps(site.describe(), indent=2))
    return site
