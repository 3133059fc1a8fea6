"""Geometry first: volume -> upload file, label file -> segmentation, markups RAS -> server IJK.

SimpleITK reads every file independently of Slicer and is the reference for LPS geometry and
point-to-index conversion; Slicer's RAS is LPS with the first two axes negated.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

from MedFMAdapt.MedFMAdaptLib import prompt_nodes
from MedFMAdapt.MedFMAdaptLib import scene as scene_lib
from Testing.slicer.helpers import DIRECTIONS, make_image

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def assert_same_geometry(actual: sitk.Image, expected: sitk.Image) -> None:
    assert actual.GetSize() == expected.GetSize()
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), atol=1e-5)


def sitk_index(image: sitk.Image, ras) -> list[int]:
    """SimpleITK's nearest index of a RAS point (after the RAS->LPS flip)."""
    lps = RAS_TO_LPS @ np.asarray(ras, dtype=float)
    return list(image.TransformPhysicalPointToIndex(tuple(float(v) for v in lps)))


def voxel_center_ras(image: sitk.Image, index) -> np.ndarray:
    return RAS_TO_LPS @ np.array(image.TransformIndexToPhysicalPoint(tuple(int(v) for v in index)))


# ---- volume -> upload file --------------------------------------------------------------------------------------


def test_upload_file_keeps_voxels_and_geometry(lps_case, tmp_path):
    name, image, _, volume = lps_case
    written = scene_lib.write_volume(volume, tmp_path / f"{name}_upload.nii.gz")
    back = sitk.ReadImage(str(written))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert back.GetPixelID() == image.GetPixelID()
    assert_same_geometry(back, image)


def test_left_handed_file_through_slicers_default_loader_keeps_anatomy(tmp_path, scene):
    """Slicer's default loader flips k of a left-handed file; the upload is then that flipped grid, the same
    voxels at the same physical places (SimpleITK's Flip, which keeps physical positions, gives the same image)."""
    image = make_image(DIRECTIONS["left_handed"])
    sitk.WriteImage(image, str(tmp_path / "lh.nrrd"))
    volume = scene_lib.read_volume(scene, tmp_path / "lh.nrrd", "lh", native_ijk=False)
    back = sitk.ReadImage(str(scene_lib.write_volume(volume, tmp_path / "lh.nii.gz")))
    expected = sitk.Flip(image, (False, False, True))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(expected))
    assert_same_geometry(back, expected)
    assert np.linalg.det(np.reshape(back.GetDirection(), (3, 3))) > 0


def test_volume_built_in_ras_uploads_with_lps_geometry(scene, tmp_path):
    """A volume made in Slicer (RAS directions, no file behind it) lands in the file as the LPS equivalent."""
    directions_ras = DIRECTIONS["oblique"]
    volume = slicer.vtkMRMLScalarVolumeNode()
    scene.AddNode(volume)
    volume.SetSpacing(1.1, 0.6, 3.0)
    volume.SetOrigin(5.0, -7.0, 11.0)
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, directions_ras[r, c])
    volume.SetIJKToRASDirectionMatrix(matrix)
    voxels = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    image = vtk.vtkImageData()
    image.SetDimensions(7, 6, 5)
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = voxels.ravel()
    volume.SetAndObserveImageData(image)

    back = sitk.ReadImage(str(scene_lib.write_volume(volume, tmp_path / "made.nii.gz")))
    assert np.array_equal(sitk.GetArrayFromImage(back), voxels)
    np.testing.assert_allclose(back.GetSpacing(), (1.1, 0.6, 3.0), atol=1e-5)
    np.testing.assert_allclose(back.GetOrigin(), RAS_TO_LPS @ np.array([5.0, -7.0, 11.0]), atol=1e-4)
    np.testing.assert_allclose(np.reshape(back.GetDirection(), (3, 3)), RAS_TO_LPS @ directions_ras, atol=1e-5)


def test_volume_under_transform_is_refused(scene, tmp_path):
    _, volume = _loaded(scene, tmp_path, "identity")
    transform = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(transform)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="harden"):
        scene_lib.write_volume(volume, tmp_path / "x.nii.gz")


# ---- server label file -> segmentation node ---------------------------------------------------------------------


def _loaded(scene, tmp_path, case: str):
    image = make_image(DIRECTIONS[case])
    path = tmp_path / f"{case}.nrrd"
    sitk.WriteImage(image, str(path))
    return image, scene_lib.read_volume(scene, path, case)


def _server_label(image: sitk.Image, path) -> np.ndarray:
    """A label file as the server writes it: uint8 values 0..2 on the image's grid, NIfTI."""
    rng = np.random.default_rng(3)
    array = np.zeros(image.GetSize()[::-1], dtype=np.uint8)
    array[2:5, 3:8, 4:10] = 1
    array[rng.random(array.shape) > 0.97] = 2
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(image)
    sitk.WriteImage(label, str(path))
    return array


def test_label_file_becomes_segmentation_on_same_grid(lps_case, tmp_path, scene):
    name, image, _, volume = lps_case
    label_path = tmp_path / f"{name}_label.nii.gz"
    expected = _server_label(image, label_path)

    segmentation = scene_lib.label_file_to_segmentation(
        scene, label_path, volume, "Adapted", names={1: "tumour", 2: "other"}, color=(1.0, 0.5, 0.0)
    )
    seg = segmentation.GetSegmentation()
    assert sorted(seg.GetNthSegment(n).GetName() for n in range(seg.GetNumberOfSegments())) == ["other", "tumour"]
    assert np.array_equal(scene_lib.segmentation_to_array(segmentation, volume, {"tumour": 1, "other": 2}), expected)
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0  # temporary node removed

    # Submitting it back writes the same voxels on the same LPS geometry the server gave.
    values = {"tumour": 1, "other": 2}
    out = scene_lib.segmentation_to_label_file(segmentation, volume, tmp_path / "submit.nii.gz", values)
    back = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(back), expected)
    assert_same_geometry(back, image)


@pytest.fixture
def bare_converter_factory():
    """The segmentation converter factory as slicer-core starts (no rules: the Segmentations module's setup,
    which registers them in the Slicer application, never runs here); the rules are put back afterwards."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    rules = list(factory.GetConverterRules())
    for rule in rules:
        factory.UnregisterConverterRule(rule)
    yield factory
    for rule in factory.GetConverterRules():
        factory.UnregisterConverterRule(rule)
    for rule in rules:
        factory.RegisterConverterRule(rule)


def _label_file(image: sitk.Image, path, boxes: dict[int, tuple[slice, slice, slice]]) -> np.ndarray:
    array = np.zeros(image.GetSize()[::-1], dtype=np.uint8)
    for value, box in boxes.items():
        array[box] = value
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(image)
    sitk.WriteImage(label, str(path))
    return array


def test_result_merges_into_working_segmentation_and_replaces_by_name(bare_converter_factory, scene, tmp_path):
    image, volume = _loaded(scene, tmp_path, "oblique")
    names = {1: "tumour", 2: "other"}
    first = _label_file(image, tmp_path / "first.nii.gz", {1: np.s_[1:3, 2:5, 1:4], 2: np.s_[4:6, 6:9, 3:6]})
    second = _label_file(image, tmp_path / "second.nii.gz", {1: np.s_[3:6, 1:4, 4:7]})
    working = scene_lib.working_segmentation(scene, volume)

    def merge(path):
        fresh = scene_lib.label_file_to_segmentation(scene, path, volume, "Segment", names)
        try:
            return scene_lib.merge_segments(working, fresh)
        finally:
            scene.RemoveNode(fresh)

    assert sorted(merge(tmp_path / "first.nii.gz")) == ["other", "tumour"]
    seg = working.GetSegmentation()
    order = [seg.GetNthSegment(n).GetName() for n in range(seg.GetNumberOfSegments())]
    assert sorted(order) == ["other", "tumour"]
    values = {"tumour": 1, "other": 2}
    assert np.array_equal(scene_lib.segmentation_to_array(working, volume, values), first)

    # Segmenting again replaces "tumour" in place and leaves "other" alone.
    assert merge(tmp_path / "second.nii.gz") == ["tumour"]
    assert [seg.GetNthSegment(n).GetName() for n in range(seg.GetNumberOfSegments())] == order
    expected = np.where(first == 2, 2, second)
    assert np.array_equal(scene_lib.segmentation_to_array(working, volume, values), expected)
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 1  # the fresh nodes are gone


def test_label_on_another_grid_changes_nothing(scene, tmp_path):
    image, volume = _loaded(scene, tmp_path, "oblique")
    shifted = make_image(DIRECTIONS["oblique"])
    shifted.SetOrigin((0.0, 0.0, 0.0))
    _server_label(shifted, tmp_path / "bad.nii.gz")
    before = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="voxel grid"):
        scene_lib.label_file_to_segmentation(scene, tmp_path / "bad.nii.gz", volume, "Bad")
    assert scene.GetNumberOfNodes() == before


# ---- server uncertainty map -> overlay volume -------------------------------------------------------------------


def _server_map(image: sitk.Image, path, seed: int = 5) -> np.ndarray:
    """A float map as the server writes an uncertainty map: binary entropy in nats on the image's grid."""
    rng = np.random.default_rng(seed)
    array = np.zeros(image.GetSize()[::-1], dtype=np.float32)
    array[2:5] = rng.uniform(0.0, np.log(2.0), size=array[2:5].shape).astype(np.float32)
    uncertainty = sitk.GetImageFromArray(array)
    uncertainty.CopyInformation(image)
    sitk.WriteImage(uncertainty, str(path))
    return array


def test_uncertainty_map_becomes_overlay_on_same_grid(lps_case, tmp_path, scene):
    name, image, _, volume = lps_case
    expected = _server_map(image, tmp_path / f"{name}_uncertainty.nii.gz")

    overlay = scene_lib.load_overlay(scene, tmp_path / f"{name}_uncertainty.nii.gz", volume)
    assert overlay.IsA("vtkMRMLScalarVolumeNode") and not overlay.IsA("vtkMRMLLabelMapVolumeNode")
    assert scene_lib.dimensions(overlay) == scene_lib.dimensions(volume)
    assert np.array_equal(scene_lib.ijk_to_ras(overlay), scene_lib.ijk_to_ras(volume))
    assert np.array_equal(scene_lib.voxel_array(overlay), expected)  # same [k, j, i] voxels as SimpleITK's
    # A voxel's centre is where SimpleITK puts it, so the overlay sits on the anatomy, not just on the same size.
    index = (4, 6, 3)
    ras = (scene_lib.ijk_to_ras(overlay) @ np.array([*index, 1.0]))[:3]
    np.testing.assert_allclose(ras, voxel_center_ras(image, index), atol=1e-4)

    display = overlay.GetDisplayNode()
    assert display.GetColorNode().GetName() == scene_lib.OVERLAY_COLORS
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, np.log(2.0)))
    assert display.GetApplyThreshold() and 0 < display.GetLowerThreshold() < 0.05
    assert scene_lib.overlay_of(volume) is overlay


def test_new_overlay_replaces_the_old_one(scene, tmp_path):
    image, volume = _loaded(scene, tmp_path, "oblique")
    _server_map(image, tmp_path / "first.nii.gz", seed=1)
    first = scene_lib.load_overlay(scene, tmp_path / "first.nii.gz", volume)
    nodes = scene.GetNumberOfNodes()
    expected = _server_map(image, tmp_path / "second.nii.gz", seed=2)
    second = scene_lib.load_overlay(scene, tmp_path / "second.nii.gz", volume)
    assert not scene.IsNodePresent(first) and scene.IsNodePresent(second)
    assert scene.GetNumberOfNodes() == nodes  # its display and storage nodes went too; one colour table shared
    assert np.array_equal(scene_lib.voxel_array(scene_lib.overlay_of(volume)), expected)


def test_uncertainty_map_on_another_grid_changes_nothing(scene, tmp_path):
    _image, volume = _loaded(scene, tmp_path, "flipped")
    shifted = make_image(DIRECTIONS["flipped"])
    shifted.SetOrigin((0.0, 0.0, 0.0))
    _server_map(shifted, tmp_path / "bad.nii.gz")
    before = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="voxel grid"):
        scene_lib.load_overlay(scene, tmp_path / "bad.nii.gz", volume)
    assert scene.GetNumberOfNodes() == before and scene_lib.overlay_of(volume) is None


# ---- markups in RAS -> server IJK prompts -----------------------------------------------------------------------


def _points_node(scene, positions):
    node = slicer.vtkMRMLMarkupsFiducialNode()
    scene.AddNode(node)
    for p in positions:
        node.AddControlPointWorld(vtk.vtkVector3d(*p))
    return node


def test_points_become_simpleitk_indices(lps_case, scene):
    _, image, _, volume = lps_case
    rng = np.random.default_rng(7)
    size = np.array(image.GetSize())
    # Random continuous positions inside the volume, expressed in RAS.
    continuous = rng.uniform(0.2, 1, size=(20, 3)) * (size - 1)
    ras_points = [
        RAS_TO_LPS @ np.array(image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in c)))
        for c in continuous
    ]
    node = _points_node(scene, ras_points)
    assert prompt_nodes.point_indices(volume, node) == [sitk_index(image, p) for p in ras_points]


def test_point_outside_volume_is_refused(lps_case, scene):
    _, image, _, volume = lps_case
    outside = voxel_center_ras(image, (-3, 0, 0))
    with pytest.raises(ValueError, match="outside the volume"):
        prompt_nodes.point_indices(volume, _points_node(scene, [outside]))


def test_points_follow_the_volume_parent_transform(scene, tmp_path):
    """A volume moved by a linear transform: markups (in world RAS) still land on the voxel under them."""
    image, volume = _loaded(scene, tmp_path, "oblique")
    transform = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(transform)
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 25.0)
    shift.SetElement(2, 3, -4.0)
    transform.SetMatrixTransformToParent(shift)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    local = voxel_center_ras(image, (4, 5, 3))
    world = local + np.array([25.0, 0.0, -4.0])
    assert prompt_nodes.point_indices(volume, _points_node(scene, [world])) == [[4, 5, 3]]


def _roi(scene, center, size):
    roi = slicer.vtkMRMLMarkupsROINode()
    scene.AddNode(roi)
    roi.SetCenterWorld(*center)
    roi.SetSizeWorld(*size)
    return roi


def test_roi_becomes_box_that_simpleitk_agrees_with(lps_case, scene):
    _, image, _, volume = lps_case
    size = np.array(image.GetSize())
    center = voxel_center_ras(image, size // 2)
    extent = np.array([6.0, 5.0, 4.0])
    roi = _roi(scene, center, extent)
    box = scene_lib.roi_to_box(volume, roi)

    # Reference: SimpleITK indices of the 8 RAS corners, bounding box, clipped to the image.
    corners = [center + np.array([sx, sy, sz]) * extent / 2 for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    idx = np.array([sitk_index(image, c) for c in corners])
    low = np.clip(idx.min(axis=0), 0, size - 1)
    high = np.clip(idx.max(axis=0), 0, size - 1)
    assert box == [low[0], high[0], low[1], high[1], low[2], high[2]]

    # And every voxel whose centre is inside the ROI is inside the box.
    i0, i1, j0, j1, k0, k1 = box
    for index in np.ndindex(*size):
        if roi.IsPointInROIWorld(list(voxel_center_ras(image, index))):
            assert i0 <= index[0] <= i1 and j0 <= index[1] <= j1 and k0 <= index[2] <= k1


def test_roi_outside_volume_is_refused(scene, tmp_path):
    image, volume = _loaded(scene, tmp_path, "identity")
    far = voxel_center_ras(image, (500, 500, 500))
    with pytest.raises(ValueError, match="does not overlap"):
        scene_lib.roi_to_box(volume, _roi(scene, far, (2.0, 2.0, 2.0)))


def test_points_and_roi_on_a_flipped_volume(scene, tmp_path):
    image, volume = _loaded(scene, tmp_path, "flipped")
    fg = _points_node(scene, [voxel_center_ras(image, (5, 6, 3))])
    bg = _points_node(scene, [voxel_center_ras(image, (1, 2, 0)), voxel_center_ras(image, (12, 10, 6))])
    roi = _roi(scene, voxel_center_ras(image, (6, 5, 3)), (3.0, 3.0, 3.0))
    assert prompt_nodes.point_indices(volume, fg) == [[5, 6, 3]]
    assert prompt_nodes.point_indices(volume, bg) == [[1, 2, 0], [12, 10, 6]]
    i0, i1, j0, j1, k0, k1 = scene_lib.roi_to_box(volume, roi)
    assert i0 <= 6 <= i1 and j0 <= 5 <= j1 and k0 <= 3 <= k1


def test_volume_aligned_roi_covers_exact_slices(lps_case, scene):
    """The helper the server test uses: an ROI on the voxel axes maps to exactly 2h+1 voxels per axis."""
    _, image, _, volume = lps_case
    from Testing.slicer.helpers import volume_aligned_roi

    roi = volume_aligned_roi(scene, volume, half_voxels=(3, 2, 1), center=(6, 5, 3))
    assert scene_lib.roi_to_box(volume, roi) == [3, 9, 3, 7, 2, 4]
