"""The structures the interactive benchmark segments, and where their labels come from.

- `lesions`: the five pyradiomics lesions of the sample datastore (label value 1; labels drawn by people, shipped
  with pyradiomics 3.0.1).
- `organs`: the 3 mm abdominal CT of the TotalSegmentator 2.18.0 sdist's tests (`example_ct_sm.nii.gz`,
  122x101x30) with `example_seg.nii.gz`, the tool's own multi-organ output for it: **silver** labels (a model's
  answer, not an expert's), used for organs a click can mark at 3 mm. The sdist is downloaded once with pip and
  kept in the cache folder, as build_sample_datastore.py keeps pyradiomics'.
- `smoke`: brain1 cut to three slices through its lesion, so the protocol runs in seconds.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

LESIONS = ("brain1", "brain2", "breast1", "lung1", "lung2")
TOTALSEG = "totalsegmentator==2.18.0"
TOTALSEG_SDIST = "totalsegmentator-2.18.0.tar.gz"
TOTALSEG_FILES = {"image": "example_ct_sm.nii.gz", "label": "example_seg.nii.gz"}
# TotalSegmentator's `total` task class map (totalsegmentator/map_to_binary.py in the same sdist): the organs large
# enough on a 3 mm CT for a box and a few clicks to mean something.
ORGANS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}


@dataclass(frozen=True)
class Case:
    """One structure: an image, its label file and the value that marks the structure there."""

    case: str
    structure: str
    image: str
    label: str
    value: int
    group: str  # "lesions" | "organs" | "smoke"
    labels: str  # "manual" | "silver (TotalSegmentator output)"

    @property
    def session(self) -> str:
        return f"{self.case}:{self.structure}"


def lesion_cases(studies: Path) -> list[Case]:
    label_dir = studies / "labels" / "final"
    return [Case(name, "lesion", str(studies / f"{name}.nii.gz"), str(label_dir / f"{name}.nii.gz"), 1, "lesions",
                 "manual") for name in LESIONS]


def smoke_cases(studies: Path, work: Path, slices: tuple[int, int] = (13, 15)) -> list[Case]:
    """brain1 cut to slices `slices` (inclusive) through its lesion (slices 11-17), image and label alike."""
    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    sources = {"image": studies / "brain1.nii.gz", "label": studies / "labels" / "final" / "brain1.nii.gz"}
    for kind, source in sources.items():
        image = sitk.ReadImage(str(source))
        paths[kind] = str(work / f"brain1-smoke-{kind}.nii.gz")
        sitk.WriteImage(image[:, :, slices[0]:slices[1] + 1], paths[kind])
    return [Case("brain1-smoke", "lesion", paths["image"], paths["label"], 1, "smoke", "manual")]


def fetch_totalsegmentator(cache: Path) -> Path:
    """The sdist's two test files, extracted under `cache` (downloaded with pip on first use)."""
    folder = cache / "totalsegmentator-2.18.0-tests"
    if all((folder / f).is_file() for f in TOTALSEG_FILES.values()):
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / TOTALSEG_SDIST
    if not sdist.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", TOTALSEG, "-d", str(cache)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not sdist.is_file():
            raise RuntimeError(f"could not download the {TOTALSEG} sdist ({' '.join(cmd)}): {proc.stderr[-1000:]}")
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        for name in TOTALSEG_FILES.values():
            member = tar.getmember(f"totalsegmentator-2.18.0/tests/reference_files/{name}")
            (folder / name).write_bytes(tar.extractfile(member).read())
    return folder


def organ_cases(cache: Path) -> list[Case]:
    folder = fetch_totalsegmentator(cache)
    image, label = (str(folder / TOTALSEG_FILES[k]) for k in ("image", "label"))
    return [Case("totalseg_ct_sm", organ, image, label, value, "organs", "silver (TotalSegmentator output)")
            for organ, value in ORGANS.items()]
