"""The prompt tools in a real MRML scene (slicer-core): the module's own markups nodes, the request a placed prompt
makes (IJK, the clicked slice), and the slice-by-slice merge that keeps the radiologist's edits and can be undone."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer  # noqa: F401 -- first, before the modules under test import it (see conftest)

from lib.medfm.volume import acquisition_axis as server_axis
from MedFMAdapt.MedFMAdaptLib import prompt_nodes as prompts
from MedFMAdapt.MedFMAdaptLib import scene as scene_lib
from MedFMAdapt.MedFMAdaptLib.prompt_nodes import BACKGROUND, BOX, FOREGROUND, Placed, PromptNodes
from Testing.slicer.helpers import volume_aligned_roi


def place(volume, node, ijk) -> str:
    """A control point at the centre of voxel `ijk`, placed as a click places it; returns its id."""
    ras = scene_lib.ijk_to_ras(volume) @ np.array([*ijk, 1.0])
    node.AddControlPointWorld(*ras[:3])
    return node.GetNthControlPointID(node.GetNumberOfControlPoints() - 1)


def test_module_owns_one_node_per_tool(scene):
    nodes = PromptNodes.owned(scene)
    again = PromptNodes.owned(scene)
    for role in prompts.ROLES:
        assert nodes.by_role(role) is again.by_role(role)
        assert nodes.by_role(role).GetAttribute(prompts.ROLE_ATTRIBUTE) == role
    assert nodes.box.IsA("vtkMRMLMarkupsROINode") and nodes.foreground.IsA("vtkMRMLMarkupsFiducialNode")
    assert nodes.background.GetDisplayNode().GetSelectedColor() == pytest.approx(prompts.COLORS[BACKGROUND])
    prompts.remove_owned(scene)
    assert scene.GetNodesByClass("vtkMRMLMarkupsNode").GetNumberOfItems() == 0


def test_the_clicked_slice_axis_is_the_servers(scene, lps_case):
    _name, image, _path, volume = lps_case
    assert scene_lib.acquisition_axis(volume) == server_axis(image) == 2  # spacing (0.7, 0.9, 2.5)
    for spacing, axis in (((3.0, 1.0, 1.0), 0), ((1.0, 1.0, 1.02), 2), ((1.0, 4.0, 1.0), 1)):
        volume.SetSpacing(*spacing)
        shifted = sitk.Image(image)
        shifted.SetSpacing(spacing)
        assert scene_lib.acquisition_axis(volume) == server_axis(shifted) == axis


def test_a_placed_point_asks_for_its_slice_only(scene, lps_case):
    """Every direction case: the point's voxel, in the file's IJK, with only the prompts on its slice."""
    _name, _image, _path, volume = lps_case
    nodes = PromptNodes.owned(scene)
    place(volume, nodes.foreground, (3, 4, 2))  # on another slice: left out
    place(volume, nodes.background, (9, 2, 5))
    place(volume, nodes.foreground, (5, 6, 5))
    placed = prompts.newest(nodes, FOREGROUND)
    assert placed == Placed(FOREGROUND, nodes.foreground.GetNthControlPointID(1))

    assert prompts.placed_slice(volume, nodes, placed, 2) == 5
    request = prompts.slice_request(volume, nodes, 2, 5)
    assert request == {"max_propagation": 0, "foreground": [[5, 6, 5]], "background": [[9, 2, 5]]}


def test_a_point_not_placed_yet_is_not_sent(scene, lps_case):
    _name, _image, _path, volume = lps_case
    nodes = PromptNodes.owned(scene)
    place(volume, nodes.foreground, (5, 6, 5))
    place(volume, nodes.foreground, (6, 6, 5))
    nodes.foreground.UnsetNthControlPointPosition(1)
    assert prompts.slice_request(volume, nodes, 2, 5)["foreground"] == [[5, 6, 5]]
    assert prompts.newest(nodes, FOREGROUND).point_id == nodes.foreground.GetNthControlPointID(0)


def test_the_box_is_cut_to_the_clicked_slice_and_stretched_to_propagate(scene, lps_case):
    _name, _image, _path, volume = lps_case
    nodes = PromptNodes(box=volume_aligned_roi(scene, volume, half_voxels=(2, 3, 1), center=(5, 5, 4)))
    placed = prompts.newest(nodes, BOX)
    assert placed == Placed(BOX, "")
    assert prompts.placed_slice(volume, nodes, placed, 2) == 4
    assert prompts.slice_request(volume, nodes, 2, 5) == {"max_propagation": 0, "roi": [3, 7, 2, 8, 5, 5]}
    assert prompts.structure_request(volume, nodes, 2) == {"roi": [3, 7, 2, 8, 3, 5]}  # spans 3 slices: as drawn

    thin = PromptNodes(box=volume_aligned_roi(scene, volume, half_voxels=(2, 3, 0), center=(5, 5, 3)))
    last = scene_lib.dimensions(volume)[2] - 1
    assert prompts.structure_request(volume, thin, 2)["roi"] == [3, 7, 2, 8, 0, last]  # +-32 slices, clipped


def test_a_click_beside_the_box_uses_the_masks_box_on_that_slice(scene, lps_case):
    """A background click on a slice the box does not reach (a propagated slice) corrects that slice's mask."""
    _name, _image, _path, volume = lps_case
    nodes = PromptNodes.owned(scene)
    place(volume, nodes.background, (6, 5, 4))
    with pytest.raises(ValueError, match="Nothing to segment on slice 4"):
        prompts.slice_request(volume, nodes, 2, 4)  # no mask there, no foreground point, no box
    mask = np.zeros(scene_lib.dimensions(volume)[::-1], dtype=bool)  # [k, j, i]
    mask[4, 4:7, 3:9] = True  # rows j 4..6, columns i 3..8
    mask[3, 0:2, 0:2] = True  # another slice: not part of the box
    assert prompts.slice_request(volume, nodes, 2, 4, mask) == {
        "max_propagation": 0, "roi": [1, 10, 2, 8, 4, 4], "background": [[6, 5, 4]]}


def test_structure_request_needs_a_foreground_prompt(scene, lps_case):
    _name, _image, _path, volume = lps_case
    nodes = PromptNodes.owned(scene)
    place(volume, nodes.background, (6, 5, 4))
    with pytest.raises(ValueError, match="Place a foreground point or a box first"):
        prompts.structure_request(volume, nodes, 2)
    place(volume, nodes.foreground, (6, 6, 4))
    assert prompts.structure_request(volume, nodes, 2) == {"foreground": [[6, 6, 4]], "background": [[6, 5, 4]]}


def test_remove_takes_back_one_prompt(scene, lps_case):
    _name, _image, _path, volume = lps_case
    nodes = PromptNodes.owned(scene)
    first = place(volume, nodes.foreground, (5, 6, 5))
    second = place(volume, nodes.foreground, (5, 7, 5))
    nodes.remove(Placed(FOREGROUND, second))
    assert nodes.foreground.GetNumberOfControlPoints() == 1 and nodes.foreground.GetNthControlPointID(0) == first
    nodes.remove(Placed(FOREGROUND, second))  # already gone: nothing happens
    nodes.clear()
    assert nodes.foreground.GetNumberOfControlPoints() == 0


# ---- the slice-by-slice merge ------------------------------------------------------------------------------------


@pytest.fixture
def painted(scene, lps_case):
    """A working segmentation with one empty segment on a 13 x 11 x 7 volume."""
    _name, _image, _path, volume = lps_case
    segmentation = scene_lib.working_segmentation(scene, volume)
    segment_id = scene_lib.target_segment(segmentation, None, "lesion", (1, 1, 0))
    return volume, segmentation, segment_id


def answer_on(volume, slices, rows=slice(2, 5)) -> np.ndarray:
    out = np.zeros(scene_lib.dimensions(volume)[::-1], dtype=bool)
    for k in slices:
        out[k, rows, 3:6] = True
    return out


def test_target_segment_is_the_selected_one_else_the_first_else_new(painted):
    volume, segmentation, first = painted
    other = segmentation.GetSegmentation().AddEmptySegment("", "tumour")
    assert scene_lib.target_segment(segmentation, other, "lesion", (1, 1, 0)) == other
    assert scene_lib.target_segment(segmentation, "gone", "lesion", (1, 1, 0)) == first
    assert segmentation.GetSegmentation().GetSegment(first).GetName() == "lesion"


def test_a_clicked_slice_answer_replaces_that_slice_only(painted):
    volume, segmentation, segment_id = painted
    scene_lib.replace_slices(segmentation, segment_id, volume, answer_on(volume, [1, 2, 3]), 2, [1, 2, 3])
    manual = scene_lib.segment_array(segmentation, segment_id, volume)
    manual[2, 8:10, 0:2] = True  # the radiologist paints on slice 2
    scene_lib.set_segment_array(segmentation, segment_id, volume, manual)

    change = scene_lib.replace_slices(segmentation, segment_id, volume, answer_on(volume, [3], rows=slice(5, 7)), 2,
                                      [3], forced=[3])
    now = scene_lib.segment_array(segmentation, segment_id, volume)
    assert change.replaced == [3] and change.kept == []
    assert np.array_equal(now[3], answer_on(volume, [3], rows=slice(5, 7))[3])
    assert np.array_equal(now[:3], manual[:3])  # slices 1 and 2 (with the hand edit) untouched


def test_propagation_keeps_hand_edited_slices_and_clears_stale_ones(painted):
    volume, segmentation, segment_id = painted
    scene_lib.replace_slices(segmentation, segment_id, volume, answer_on(volume, [1, 2, 3, 4]), 2, [1, 2, 3, 4],
                             clear_stale=True)
    edited = scene_lib.segment_array(segmentation, segment_id, volume)
    edited[2, 8:10, 0:2] = True  # painted on slice 2
    edited[4] = False  # erased slice 4 by hand
    scene_lib.set_segment_array(segmentation, segment_id, volume, edited)
    before = edited.copy()

    new = answer_on(volume, [2, 3, 4, 5], rows=slice(1, 3))  # the answer no longer reaches slice 1
    change = scene_lib.replace_slices(segmentation, segment_id, volume, new, 2, [2, 3, 4, 5], clear_stale=True)
    now = scene_lib.segment_array(segmentation, segment_id, volume)
    assert sorted(change.kept) == [2, 4]  # both edits kept
    assert np.array_equal(now[2], edited[2]) and not now[4].any()
    assert np.array_equal(now[3], new[3]) and np.array_equal(now[5], new[5])
    assert not now[1].any()  # the model's own stale slice is cleared
    assert change.replaced == [1, 3, 5]

    scene_lib.undo_slices(segmentation, volume, change)
    assert np.array_equal(scene_lib.segment_array(segmentation, segment_id, volume), before)
    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    assert scene_lib.model_slices(segment, 2) == change.written_before  # the record of model slices is back too


def test_a_forced_slice_is_replaced_even_when_edited(painted):
    volume, segmentation, segment_id = painted
    manual = answer_on(volume, [3], rows=slice(7, 9))
    scene_lib.set_segment_array(segmentation, segment_id, volume, manual)  # drawn by hand, never by the model
    change = scene_lib.replace_slices(segmentation, segment_id, volume, answer_on(volume, []), 2, [], forced=[3])
    assert change.replaced == [3]  # the clicked slice answered empty: cleared
    assert not scene_lib.segment_array(segmentation, segment_id, volume).any()
