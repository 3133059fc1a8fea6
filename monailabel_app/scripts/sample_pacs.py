"""Sample DICOM series for a PACS, made from the sample datastore's real scans (registry data only).

Each chosen case becomes a CT or MR image series with its geometry kept (positions and orientation from the
volume's direction, spacing exact, CT in Hounsfield units); `lung1` also gets its lesion label as a DICOM SEG of
the same study, so a PACS holds a labelled series as a site's would. Uploaded with STOW-RS.
"""

from __future__ import annotations

import datetime
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.medfm.dicom_seg import label_to_seg, series_to_volume  # noqa: E402

SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
CASES = {"lung1": ("CT", True), "lung2": ("CT", False), "brain1": ("MR", False)}
LABEL_NAMES = {1: "lesion", 2: "gray_matter", 3: "white_matter"}


def _stored_values(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 pixels and the rescale slope/intercept that give back the volume's values."""
    lo, hi = float(array.min()), float(array.max())
    if np.allclose(array, np.rint(array)) and lo >= -32768 and hi <= 32767:
        return np.rint(array).astype(np.int16), 1.0, 0.0
    slope = max(hi - lo, 1e-6) / 65000.0
    return np.rint((array - lo) / slope - 32500).astype(np.int16), slope, lo + 32500 * slope


def volume_to_series(image: sitk.Image, out: Path, modality: str, patient: str, study_uid: str) -> None:
    """Write `image` as one instance per k slice; slice k sits at the volume's own position for k."""
    out.mkdir(parents=True, exist_ok=True)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    pixels, slope, intercept = _stored_values(sitk.GetArrayFromImage(image).astype(np.float64))
    series_uid, frame_uid = generate_uid(), generate_uid()
    today = datetime.date(2026, 11, 28).strftime("%Y%m%d")
    for k in range(pixels.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out / f"{k:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"Sample^{patient}", patient, "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, k + 1
        ds.SeriesDescription = f"{patient} sample {modality} (pyradiomics 3.0.1 data)"
        ds.Manufacturer, ds.PositionReferenceIndicator = "MedFMAdapt sample", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        if modality == "CT":
            ds.RescaleType, ds.KVP = "HU", 120
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "3D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 500.0, 10.0, 1, 1.5
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        ds.save_as(str(out / f"{k:04d}.dcm"), write_like_original=False)


def build_sample_series(studies: Path, out: Path) -> list[Path]:
    """Folders of .dcm files, one per series (a SEG is its own one-file folder); rebuilt only when missing."""
    folders = [out / case for case in CASES] + [out / f"{case}-seg" for case, (_, seg) in CASES.items() if seg]
    if all((folder / ".complete").exists() for folder in folders):
        return folders
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out.parent))
    for case, (modality, with_seg) in CASES.items():
        image = sitk.ReadImage(str(studies / f"{case}.nii.gz"))
        volume_to_series(image, staging / case, modality, case, generate_uid())
        (staging / case / ".complete").touch()
        if with_seg:
            read_back, sources = series_to_volume(staging / case)
            label = sitk.ReadImage(str(studies / "labels" / "final" / f"{case}.nii.gz"))
            label = sitk.Resample(label, read_back, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            seg = label_to_seg(label, sources, LABEL_NAMES, description=f"{case} lesion (pyradiomics 3.0.1)")
            (staging / f"{case}-seg").mkdir()
            seg.save_as(str(staging / f"{case}-seg" / "seg.dcm"))
            (staging / f"{case}-seg" / ".complete").touch()
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return folders


def upload(folders: list[Path], dicomweb_url: str) -> int:
    """STOW-RS every instance in `folders`; returns how many were stored."""
    from dicomweb_client import DICOMwebClient

    client = DICOMwebClient(url=dicomweb_url)
    count = 0
    for folder in folders:
        datasets = [pydicom.dcmread(str(f)) for f in sorted(folder.glob("*.dcm"))]
        client.store_instances(datasets)
        count += len(datasets)
    return count
