"""One end-to-end interactive segmentation through the Logic against the real server (the only inference here).

Fetch "breast1" into a real MRML scene, put a 3-slice markups ROI in RAS, send it as the server's IJK prompt,
and check the answer lands as segments on exactly the volume's grid; then segment again around the lesion and
check the new answer replaces the first one.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from MedFMAdapt.MedFMAdaptLib import scene as scene_lib
from MedFMAdapt.MedFMAdaptLib.logic import MedFMAdaptLogic, run_now
from Testing.slicer.helpers import volume_aligned_roi

pytestmark = pytest.mark.server


def dims_quarter(volume) -> tuple[int, int, int]:
    dims = scene_lib.dimensions(volume)
    return (max(1, dims[0] // 8), max(1, dims[1] // 8), 1)


def test_fetch_and_segment_breast1_with_a_small_roi(monailabel_server, sample_datastore, tmp_path):
    scene = slicer.vtkMRMLScene()
    logic = MedFMAdaptLogic(scene, work_dir=tmp_path)
    progress: list[str] = []
    run_now(logic.connect_job(monailabel_server), lambda message, _f: progress.append(message))
    run_now(logic.fetch_job(image_id="breast1"))
    volume = logic.last_fetched
    assert logic.image_id(volume) == "breast1"

    roi = volume_aligned_roi(scene, volume, half_voxels=(dims_quarter(volume)), center=None)
    box = scene_lib.roi_to_box(volume, roi)
    assert box[5] - box[4] + 1 == 3

    status = run_now(logic.segment_job(volume, roi=roi), lambda message, _f: progress.append(message))
    assert status.startswith("Segment:")
    took = logic.last_result.params["timing"]["total_s"]
    assert status.endswith(f" in {took:.1f} s.")  # the server's own timing reaches the status line
    assert progress == ["Asking the server what it offers", "Running medsam_interactive on the server"]
    params = logic.last_result.params
    assert {"fm", "adapter", "timing"} <= set(params)

    segmentation = scene_lib.working_segmentation(scene, volume)
    server = assert_matches_server(logic, segmentation, volume)
    assert_only_in_slices(server, box)

    # Segment again with a tighter ROI around breast1's lesion: the "lesion" segment is replaced, not added.
    truth = sitk.ReadImage(str(sample_datastore / "labels" / "final" / "breast1.nii.gz"))
    lesion = np.argwhere(sitk.GetArrayFromImage(truth) > 0)  # [k, j, i] rows
    low, high = lesion.min(axis=0)[::-1], lesion.max(axis=0)[::-1]  # i, j, k
    roi = volume_aligned_roi(scene, volume, half_voxels=(high - low + 1) // 2 + (1, 1, 0), center=(low + high) // 2)
    box = scene_lib.roi_to_box(volume, roi)
    assert box[5] - box[4] + 1 == 3
    first_ids = segmentation.GetSegmentation().GetSegmentIDs()
    status = run_now(logic.segment_job(volume, roi=roi))
    assert status.startswith("Segment:")
    again = assert_matches_server(logic, segmentation, volume)
    assert_only_in_slices(again, box)
    assert not np.array_equal(again > 0, server > 0)  # a different answer, so the check above saw the replacement
    assert segmentation.GetSegmentation().GetSegmentIDs() != first_ids


def assert_matches_server(logic, segmentation, volume) -> np.ndarray:
    """The working segmentation holds one segment with exactly the server's (non-empty) label voxels."""
    server = sitk.GetArrayFromImage(sitk.ReadImage(str(logic.last_result.label_path)))
    assert server.any(), "the server's label is empty, so the comparison would prove nothing"
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    result = scene_lib.segmentation_to_array(segmentation, volume)
    assert np.array_equal(result > 0, server > 0)  # same voxels, so the same grid
    return server


def assert_only_in_slices(array: np.ndarray, box: list[int]) -> None:
    outside = np.ones(array.shape, dtype=bool)
    outside[box[4] : box[5] + 1] = False
    assert not array[outside].any()  # nothing outside the prompted slices


def test_points_can_segment_the_clicked_slice_only(monailabel_server, sample_datastore):
    """A foreground point with 'clicked slices only' asks the server not to propagate: one slice comes back."""
    scene = slicer.vtkMRMLScene()
    logic = MedFMAdaptLogic(scene)
    run_now(logic.connect_job(monailabel_server))
    run_now(logic.fetch_job(image_id="lung2"))
    volume = logic.last_fetched
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_datastore / "labels" / "final" / "lung2.nii.gz")))
    k = int(np.argmax((truth > 0).sum(axis=(1, 2))))
    rows, cols = np.nonzero(truth[k])
    nearest = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    ijk = (int(cols[nearest]), int(rows[nearest]), k)
    ras = scene_lib.ijk_to_ras(volume) @ np.array([*ijk, 1.0])
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.AddControlPointWorld(*ras[:3])

    status = run_now(logic.segment_job(volume, foreground=points, slice_only=True))
    assert status.startswith("Segment:")
    assert logic.last_result.params["slices"] == [k]
    server = assert_matches_server(logic, scene_lib.working_segmentation(scene, volume), volume)
    assert server[k].any() and not np.delete(server, k, axis=0).any()
