"""Interactive segmentation through the Logic against the real server, as the panel's prompt tools send it.

Fetch "breast1" into a real MRML scene, put a 3-slice markups box in RAS, send it as the server's IJK prompt,
and check the answer lands in one segment on exactly the volume's grid; segment again around the lesion and check
the new answer replaces the first one. Then the one-click loop on brain1: a foreground point placed with the
module's own tool asks for its slice only, Propagate follows the structure, and a slice painted by hand survives.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from scipy import ndimage

from MedFMAdapt.MedFMAdaptLib import prompt_nodes
from MedFMAdapt.MedFMAdaptLib import scene as scene_lib
from MedFMAdapt.MedFMAdaptLib.logic import MedFMAdaptLogic, run_now
from MedFMAdapt.MedFMAdaptLib.presenter import Action, Presenter
from MedFMAdapt.MedFMAdaptLib.prompt_nodes import PromptNodes
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
    volume = run_now(logic.fetch_job(image_id="breast1")).volume
    assert logic.image_id(volume) == "breast1"

    roi = volume_aligned_roi(scene, volume, half_voxels=(dims_quarter(volume)), center=None)
    box = scene_lib.roi_to_box(volume, roi)
    assert box[5] - box[4] + 1 == 3

    first = run_now(logic.segment_job(volume, PromptNodes(box=roi)), lambda message, _f: progress.append(message))
    assert first.message.startswith("Segment (3 slices): lesion")
    took = first.params["timing"]["total_s"]
    assert first.message.endswith(f" in {took:.1f} s.")  # the server's own timing reaches the status line
    assert progress == ["Asking the server what it offers", "Running medsam_interactive on the server"]
    assert {"fm", "adapter", "timing", "slices", "slice_axis"} <= set(first.params)

    segmentation = first.segmentation
    server = assert_matches_server(first, volume)
    assert_only_in_slices(server, box)

    # Segment again with a tighter box around breast1's lesion: the "lesion" segment's prediction is replaced.
    truth = sitk.ReadImage(str(sample_datastore / "labels" / "final" / "breast1.nii.gz"))
    lesion = np.argwhere(sitk.GetArrayFromImage(truth) > 0)  # [k, j, i] rows
    low, high = lesion.min(axis=0)[::-1], lesion.max(axis=0)[::-1]  # i, j, k
    roi = volume_aligned_roi(scene, volume, half_voxels=(high - low + 1) // 2 + (1, 1, 0), center=(low + high) // 2)
    box = scene_lib.roi_to_box(volume, roi)
    assert box[5] - box[4] + 1 == 3
    again = run_now(logic.segment_job(volume, PromptNodes(box=roi), first.segment_id))
    assert again.message.startswith("Segment (")
    replaced = assert_matches_server(again, volume)
    assert_only_in_slices(replaced, box)
    assert not np.array_equal(replaced > 0, server > 0)  # a different answer, so the check above saw the replacement
    assert again.segment_id == first.segment_id and segmentation.GetSegmentation().GetNumberOfSegments() == 1


def assert_matches_server(outcome, volume) -> np.ndarray:
    """The outcome's segment holds exactly the server's (non-empty) label voxels, and it is the only segment."""
    server = sitk.GetArrayFromImage(sitk.ReadImage(str(outcome.label_path)))
    assert server.any(), "the server's label is empty, so the comparison would prove nothing"
    assert outcome.segmentation.GetSegmentation().GetNumberOfSegments() == 1
    result = scene_lib.segment_array(outcome.segmentation, outcome.segment_id, volume)
    assert np.array_equal(result, server > 0)  # same voxels, so the same grid
    return server


def assert_only_in_slices(array: np.ndarray, box: list[int]) -> None:
    outside = np.ones(array.shape, dtype=bool)
    outside[box[4] : box[5] + 1] = False
    assert not array[outside].any()  # nothing outside the prompted slices


def brain1_in_a_new_scene(server_url, datastore):
    """A new scene whose panel is connected and shows brain1: (scene, logic, presenter, volume, label [k, j, i])."""
    scene = slicer.vtkMRMLScene()
    logic = MedFMAdaptLogic(scene)
    presenter = Presenter()
    presenter.apply(Action.CONNECT, run_now(logic.connect_job(server_url)))
    volume = run_now(logic.fetch_job(image_id="brain1")).volume
    presenter.volume_changed(True, "brain1")
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(datastore / "labels" / "final" / "brain1.nii.gz")))
    return scene, logic, presenter, volume, truth


def test_a_placed_point_segments_its_slice_then_propagate_keeps_a_hand_edit(monailabel_server, sample_datastore):
    """The loop with the module's own point tool, no node selector: one clicked-slice request, then Propagate."""
    # brain1 (a 7-slice lesion), not the lung cases: test_server_infer times their first, cold calls on this server.
    scene, logic, presenter, volume, truth = brain1_in_a_new_scene(monailabel_server, sample_datastore)
    assert scene_lib.acquisition_axis(volume) == 2  # brain1's slices are along k: the point's k is its slice
    k = int(np.argmax((truth > 0).sum(axis=(1, 2))))
    rows, cols = np.nonzero(truth[k])
    nearest = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    ras = scene_lib.ijk_to_ras(volume) @ np.array([int(cols[nearest]), int(rows[nearest]), k, 1.0])
    nodes = logic.prompt_nodes()
    nodes.foreground.AddControlPointWorld(*ras[:3])  # what a click with the place widget adds

    placed = prompt_nodes.newest(nodes, prompt_nodes.FOREGROUND)
    assert presenter.prompt_placed(placed)
    clicked = run_now(logic.segment_job(volume, placed=placed, propagate=False))
    presenter.apply(Action.SEGMENT, clicked)
    assert clicked.params["slices"] == [k] and clicked.message.startswith(f"Segment (slice {k}): lesion")
    server = assert_matches_server(clicked, volume)
    assert server[k].any() and not np.delete(server, k, axis=0).any()

    # A hand edit far from the lesion, then Propagate: the structure is followed, the edited slice is kept.
    mask = scene_lib.segment_array(clicked.segmentation, clicked.segment_id, volume)
    far = 0 if k > mask.shape[0] // 2 else mask.shape[0] - 1
    mask[far, :3, :3] = True
    scene_lib.set_segment_array(clicked.segmentation, clicked.segment_id, volume, mask)
    propagated = run_now(logic.segment_job(volume, segment_id=clicked.segment_id))
    presenter.apply(Action.PROPAGATE, propagated)
    after = scene_lib.segment_array(clicked.segmentation, clicked.segment_id, volume)
    assert len(propagated.params["slices"]) > 1 and k in propagated.params["slices"]
    assert np.array_equal(after[far], mask[far])  # the hand edit is kept
    assert after[propagated.params["slices"]].any(axis=(1, 2)).all()

    # Undo twice: Propagate's slices come back, then the click's slice goes with its point; the edit stays.
    presenter.apply(Action.UNDO_PROMPT, run_now(logic.undo_prompt_job(volume, presenter.last_prompt_step())))
    assert np.array_equal(scene_lib.segment_array(clicked.segmentation, clicked.segment_id, volume), mask)
    presenter.apply(Action.UNDO_PROMPT, run_now(logic.undo_prompt_job(volume, presenter.last_prompt_step())))
    only_edit = np.zeros_like(mask)
    only_edit[far, :3, :3] = True
    assert np.array_equal(scene_lib.segment_array(clicked.segmentation, clicked.segment_id, volume), only_edit)
    assert nodes.foreground.GetNumberOfControlPoints() == 0 and presenter.last_prompt_step() is None


def test_a_correction_click_refines_the_segment_the_radiologist_sees(monailabel_server, sample_datastore):
    """With 'each prompt follows the structure' on, the panel sends every prompt with its interaction session, so a
    background click edits the answer already in the segment (the server's refine path) instead of segmenting
    afresh; the same segment changes, and undo puts back exactly what was there."""
    scene, logic, presenter, volume, truth = brain1_in_a_new_scene(monailabel_server, sample_datastore)
    truth = truth > 0
    lesion = np.argwhere(truth)  # [k, j, i] rows
    low, high = lesion.min(axis=0)[::-1], lesion.max(axis=0)[::-1]  # i, j, k
    nodes = logic.prompt_nodes()
    volume_aligned_roi(scene, volume, half_voxels=(high - low + 1) // 2 + (2, 2, 0), center=(low + high) // 2,
                       roi=nodes.box)
    boxed = run_now(logic.segment_job(volume, placed=prompt_nodes.newest(nodes, prompt_nodes.BOX), propagate=True))
    presenter.apply(Action.SEGMENT, boxed)
    before = scene_lib.segment_array(boxed.segmentation, boxed.segment_id, volume)
    assert boxed.params["refined_clicks"] == 0 and before.any()

    wrong = before & ~truth  # brain1's box answer leaks (3D Dice 0.30): click the middle of its largest leak
    parts, _ = ndimage.label(wrong, structure=np.ones((3, 3, 3)))
    largest = parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
    k, j, i = np.unravel_index(int(np.argmax(ndimage.distance_transform_edt(largest))), largest.shape)
    nodes.background.AddControlPointWorld(*(scene_lib.ijk_to_ras(volume) @ np.array([i, j, k, 1.0]))[:3])
    placed = prompt_nodes.newest(nodes, prompt_nodes.BACKGROUND)
    assert presenter.prompt_placed(placed)
    refined = run_now(logic.segment_job(volume, segment_id=boxed.segment_id, placed=placed, propagate=True))
    presenter.apply(Action.SEGMENT, refined)
    after = scene_lib.segment_array(refined.segmentation, refined.segment_id, volume)
    assert refined.params["refined_clicks"] == 1 and "refined with your 1 new click" in refined.message
    assert refined.segment_id == boxed.segment_id and refined.segmentation.GetSegmentation().GetNumberOfSegments() == 1
    assert not after[k, j, i] and after[k].any()  # the leak under the click is gone, its slice is not emptied
    assert not (after & ~before).any()  # a background click only removes

    presenter.apply(Action.UNDO_PROMPT, run_now(logic.undo_prompt_job(volume, presenter.last_prompt_step())))
    assert np.array_equal(scene_lib.segment_array(boxed.segmentation, boxed.segment_id, volume), before)
