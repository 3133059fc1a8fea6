"""Build the sample datastore from real labelled data that registry packages ship; nothing from a model hub.

- pyradiomics 3.0.1's source distribution (PyPI, BSD-3-Clause) carries five image + lesion cases in `data/`:
  brain1/2 (MRI), breast1 (MRI), lung1/2 (CT), as NRRD.
- nilearn (PyPI, BSD-3-Clause) ships the MNI152 2009 T1 template and its grey/white-matter probability maps
  (the template's own licence: see PROVENANCE.json); thresholded they give a two-tissue label map.
Images are stored as NIfTI with their geometry unchanged, labels under labels/final, provenance in PROVENANCE.json
and in each image's MONAI Label info. The build goes to a staging folder that is renamed into place when complete.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

PYRADIOMICS = "pyradiomics==3.0.1"
CASES = {
    "brain1": ("MR", "brain MRI with a lesion"), "brain2": ("MR", "brain MRI with a lesion"),
    "breast1": ("MR", "breast MRI with a lesion"),
    "lung1": ("CT", "chest CT with a lung lesion"), "lung2": ("CT", "chest CT with a lung lesion"),
}
LABELS = {"lesion": 1, "gray_matter": 2, "white_matter": 3}


def fetch_pyradiomics_sdist(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("pyradiomics-3.0.1.tar.gz"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
           PYRADIOMICS, "-d", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob("pyradiomics-3.0.1.tar.gz"))
    if proc.returncode != 0 or not found:
        sys.exit("error: could not download the pyradiomics 3.0.1 source distribution from PyPI, which holds the "
                 f"sample cases (command: {' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    return found[0]


def add_pyradiomics_cases(sdist: Path, out: Path, provenance: dict) -> None:
    with tarfile.open(sdist) as tar, tempfile.TemporaryDirectory() as tmp:
        members = [m for m in tar.getmembers() if m.isfile() and "/data/" in m.name and m.name.endswith(".nrrd")]
        for m in members:
            m.name = Path(m.name).name  # flatten: never trust archive paths
        tar.extractall(tmp, members=members, filter="data")
        for case, (modality, what) in CASES.items():
            image_path, label_path = Path(tmp) / f"{case}_image.nrrd", Path(tmp) / f"{case}_label.nrrd"
            if not image_path.exists() or not label_path.exists():
                sys.exit(f"error: {sdist.name} lacks data/{case}_image.nrrd or data/{case}_label.nrrd")
            image = sitk.ReadImage(str(image_path))
            label = sitk.ReadImage(str(label_path))
            label = sitk.Cast(label > 0, sitk.sitkUInt8) * LABELS["lesion"]
            label.CopyInformation(image)
            sitk.WriteImage(image, str(out / f"{case}.nii.gz"), useCompression=True)
            sitk.WriteImage(label, str(out / "labels" / "final" / f"{case}.nii.gz"), useCompression=True)
            provenance[case] = {"source": f"PyPI {PYRADIOMICS} sdist, data/{case}_image.nrrd + _label.nrrd",
                                "licence": "BSD-3-Clause (pyradiomics)", "modality": modality,
                                "description": what, "labels": {"lesion": LABELS["lesion"]}}


def add_mni152(out: Path, provenance: dict) -> None:
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=2).get_fdata()
    label = np.zeros(gm.shape, dtype=np.uint8)
    label[(gm > 0.5) & (gm >= wm)] = LABELS["gray_matter"]
    label[(wm > 0.5) & (wm > gm)] = LABELS["white_matter"]
    import nibabel as nib

    image = nib.Nifti1Image(template.get_fdata().astype(np.float32), template.affine)
    nib.save(image, str(out / "mni152.nii.gz"))
    nib.save(nib.Nifti1Image(label, template.affine), str(out / "labels" / "final" / "mni152.nii.gz"))
    provenance["mni152"] = {
        "source": "nilearn.datasets.load_mni152_template / _gm_template / _wm_template (resolution 2 mm), "
                  "tissue maps thresholded at 0.5",
        "licence": "MNI ICBM 2009 template: copyright McConnell Brain Imaging Centre, free use with attribution",
        "modality": "MR", "description": "MNI152 T1 template with grey/white matter labels",
        "labels": {"gray_matter": LABELS["gray_matter"], "white_matter": LABELS["white_matter"]}}


def build(out: Path, cache: Path) -> None:
    if (out / ".complete").exists():
        print(f"sample datastore already at {out}")
        return
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "labels" / "final").mkdir(parents=True)
    provenance: dict = {}
    add_pyradiomics_cases(fetch_pyradiomics_sdist(cache), staging, provenance)
    add_mni152(staging, provenance)
    (staging / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2))
    _record_image_info(staging, provenance)
    (staging / ".complete").write_text("ok\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    print(f"sample datastore built at {out}: {sorted(provenance)}")


def _record_image_info(folder: Path, provenance: dict) -> None:
    """Write provenance into MONAI Label's own datastore index so /datastore/image/info shows it."""
    from monailabel.datastore.local import LocalDatastore

    store = LocalDatastore(str(folder), extensions=["*.nii.gz"], auto_reload=False)
    for image_id, info in provenance.items():
        store.update_image_info(image_id, {"provenance": info})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="datastore")
    parser.add_argument("--cache", default="build/cache", help="where the downloaded sdist is kept")
    args = parser.parse_args()
    build(Path(args.out).resolve(), Path(args.cache).resolve())


if __name__ == "__main__":
    main()
