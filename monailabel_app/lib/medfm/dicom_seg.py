"""DICOM image series <-> volumes and label maps <-> DICOM SEG, with slice order made explicit.

A label drawn on the volume of a series must land on the right instances when written back to the PACS, so the
order of slices is computed once here (along the slice normal, as SimpleITK/GDCM read it) and used both ways.
SEG objects are written and read with highdicom; segments are matched to the site's labels by name, since other
tools number their segments as they like.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from lib.medfm.errors import InputError

logger = logging.getLogger(__name__)

SOFTWARE = "MedFMAdapt 0.1.0"


def sorted_instances(folder: str | os.PathLike) -> list[tuple[Path, Dataset]]:
    """The series' image instances (headers only), ordered along the slice normal as the volume's k axis is."""
    items = []
    for path in sorted(Path(folder).iterdir()):
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            items.append((path, ds))
    if len(items) < 2:
        raise InputError(f"series folder {Path(folder).name} holds {len(items)} positioned image instances; a 3D "
                         "series needs at least 2")
    orientation = np.asarray(items[0][1].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    items.sort(key=lambda item: float(np.dot(normal, np.asarray(item[1].ImagePositionPatient, dtype=float))))
    return items


def series_to_volume(folder: str | os.PathLike) -> tuple[sitk.Image, list[Dataset]]:
    """The series as one 3D image whose slice k is instance k of the returned (sorted) headers."""
    items = sorted_instances(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(path) for path, _ in items])
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"the series in {Path(folder).name} cannot be read as one volume: "
                         f"{str(err).strip().splitlines()[-1][:200]}") from err
    return image, [ds for _, ds in items]


def label_to_seg(label: sitk.Image, sources: Sequence[Dataset], names: dict[int, str],
                 series_number: int = 300, description: str = "MedFMAdapt label") -> Dataset:
    """A binary DICOM SEG of `label` (on the grid of the series `sources`, in slice order), one segment per label
    value present, named after the site's label; label values with no name are refused."""
    array = sitk.GetArrayFromImage(label)  # [k, j, i]: frame k is source k
    if array.shape[0] != len(sources):
        raise InputError(f"the label has {array.shape[0]} slices but its series has {len(sources)} instances",
                         status=422)
    values = [int(v) for v in np.unique(array) if v != 0]
    if not values:
        raise InputError("the label is empty: a DICOM SEG needs at least one labelled voxel", status=422)
    unknown = [v for v in values if v not in names]
    if unknown:
        raise InputError(f"label values {unknown} have no name in this server's labels {names}", status=422)
    segmented = np.zeros(array.shape, dtype=np.uint8)
    descriptions = []
    for number, value in enumerate(values, start=1):
        segmented[array == value] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=names[value],
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="MedFMAdapt", version="0.1.0", family=codes.cid7162.ArtificialIntelligence)))
    return hd.seg.Segmentation(
        source_images=list(sources), pixel_array=segmented,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="MedFMAdapt", manufacturer_model_name="MedFMAdapt", software_versions=SOFTWARE,
        device_serial_number="0", series_description=description, omit_empty_frames=True)


def seg_to_label(seg: Dataset, sources: Sequence[Dataset], values: dict[str, int], like: sitk.Image) -> sitk.Image:
    """The label map a SEG holds, on the grid of `like` (the volume of `sources`); segments are matched to label
    values by name, case-insensitively, and segments with no matching label are left out (and logged)."""
    segmentation = hd.seg.Segmentation.from_dataset(seg)
    by_name = {name.lower(): value for name, value in values.items()}
    numbers, targets = [], []
    for number in segmentation.get_segment_numbers():
        name = segmentation.get_segment_description(number).segment_label
        if name.lower() in by_name:
            numbers.append(number)
            targets.append(by_name[name.lower()])
        else:
            logger.warning("SEG %s: segment %d '%s' matches no label of this server; left out",
                           seg.SeriesInstanceUID, number, name)
    array = np.zeros(sitk.GetArrayFromImage(like).shape, dtype=np.uint8)
    if numbers:
        uids = [str(ds.SOPInstanceUID) for ds in sources]
        referenced = {uid for _, _, uid in segmentation.get_source_image_uids()}
        present = [i for i, uid in enumerate(uids) if uid in referenced]
        if not present:
            raise InputError(f"SEG {seg.SeriesInstanceUID} references none of its image series' instances")
        masks = segmentation.get_pixels_by_source_instance(
            source_sop_instance_uids=[uids[i] for i in present], segment_numbers=numbers,
            combine_segments=False, assert_missing_frames_are_empty=True)  # [n, rows, cols, segments]
        for s, value in enumerate(targets):
            array[present] = np.where(masks[..., s] > 0, value, array[present])
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(like)
    return out
