"""The Logic's outcomes from inference replies, with no server: the replies are the recorded real ones.

The fake client answers with fixtures/server_replies.json's interactive inference params (see replies.py), and a
label file on the volume's grid, so the status line reads exactly the keys the server sends.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedFMAdapt.MedFMAdaptLib import prompt_nodes
from MedFMAdapt.MedFMAdaptLib import scene as scene_lib
from MedFMAdapt.MedFMAdaptLib.client import INTERACTIVE_MODEL, InferResult
from MedFMAdapt.MedFMAdaptLib.errors import HTTPFailure
from MedFMAdapt.MedFMAdaptLib.logic import IMAGE_ID_ATTRIBUTE, MedFMAdaptLogic, run_now
from MedFMAdapt.MedFMAdaptLib.outcomes import Action, PromptStep, Segmented
from MedFMAdapt.MedFMAdaptLib.presenter import Presenter
from MedFMAdapt.MedFMAdaptLib.prompt_nodes import PromptNodes
from Testing.slicer.helpers import DIRECTIONS, make_image, volume_aligned_roi
from Testing.slicer.replies import like, reply


def test_logic_imports_nothing_from_the_presenter():
    """The Logic does the work, the presenter decides what the panel shows: the Logic must not depend on it."""
    import MedFMAdapt.MedFMAdaptLib.logic as logic

    tree = ast.parse(Path(logic.__file__).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in modules if m and m.split(".")[-1] == "presenter"}


class RecordedClient:
    """Answers infer with a recorded reply's params and a label of the volume's grid; records what it was sent."""

    def __init__(self, params: dict, label: sitk.Image, folder, uncertainty: sitk.Image | None = None) -> None:
        self.params, self.label, self.folder, self.uncertainty = params, label, folder, uncertainty
        self.calls: list[tuple[str, str, dict]] = []

    def infer(self, model: str, image_id: str, params: dict) -> InferResult:
        self.calls.append((model, image_id, params))
        path = self.folder / "label.nii.gz"
        sitk.WriteImage(self.label, str(path))
        return InferResult(dict(self.params), path)

    def download_result(self, url: str):
        assert url == self.params["uncertainty"]["url"]
        path = self.folder / "uncertainty.nii.gz"
        sitk.WriteImage(self.uncertainty, str(path))
        return path


@pytest.fixture
def case(tmp_path, scene):
    """A volume on the server (image id set), a 1-voxel-wide lesion label on its grid, and a connected Logic."""
    image = make_image(DIRECTIONS["oblique"])
    sitk.WriteImage(image, str(tmp_path / "case.nrrd"))
    volume = scene_lib.read_volume(scene, tmp_path / "case.nrrd", "case")
    volume.SetAttribute(IMAGE_ID_ATTRIBUTE, "case")
    array = np.zeros(sitk.GetArrayFromImage(image).shape, dtype=np.uint8)
    array[3, 4:7, 5:8] = 1
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(image)
    logic = MedFMAdaptLogic(scene, work_dir=tmp_path)
    logic.info = reply("info")
    return logic, volume, label, image


def test_segment_status_says_how_long_the_server_took(case, tmp_path):
    logic, volume, label, _image = case
    recorded = reply("infer_interactive")
    params = like(recorded, adapter="v0001", timing=like(recorded["timing"], total_s=4.53), slices=[3])
    logic.client = RecordedClient(params, label, tmp_path)
    nodes = PromptNodes(box=volume_aligned_roi(logic.scene, volume))

    outcome = run_now(logic.segment_job(volume, nodes, adapter="v0001"))

    assert isinstance(outcome, Segmented)
    assert outcome.message == "Segment (1 slice): lesion (adapter v0001) in 4.5 s."
    ((model, image_id, sent),) = logic.client.calls
    assert (model, image_id, sent["adapter"]) == (INTERACTIVE_MODEL, "case", "v0001")
    assert outcome.params == params and outcome.placed is None and outcome.change.replaced == [3]


def test_segment_status_with_uncertainty_reads_the_recorded_map_description(case, tmp_path):
    logic, volume, label, image = case
    recorded = reply("infer_interactive_uncertainty")
    timing = like(recorded["timing"], total_s=0.21)
    params = like(recorded, timing=timing, uncertainty=like(recorded["uncertainty"], max=0.4321), slices=[3])
    entropy = sitk.GetImageFromArray(np.full(sitk.GetArrayFromImage(image).shape, 0.4321, dtype=np.float32))
    entropy.CopyInformation(image)
    logic.client = RecordedClient(params, label, tmp_path, uncertainty=entropy)

    nodes = PromptNodes(box=volume_aligned_roi(logic.scene, volume))
    outcome = run_now(logic.segment_job(volume, nodes, uncertainty=True))

    assert outcome.message == (
        f"Segment (1 slice): lesion (adapter {recorded['adapter']}) in 0.2 s; "
        "uncertainty up to 0.43 nats (0.69 = guessing)."
    )
    assert logic.client.calls[0][2]["uncertainty"] is True
    assert outcome.overlay is scene_lib.overlay_of(volume)


def test_a_placed_point_sends_one_clicked_slice_request_and_keeps_edits(case, tmp_path):
    """The loop without a node selector: a point placed with the module's own tool -> one request for its slice;
    the answer replaces that slice of the selected segment and nothing else; undo puts it back."""
    logic, volume, label, _image = case
    recorded = reply("infer_interactive")
    logic.client = RecordedClient(like(recorded, slices=[3], slice_axis=2), label, tmp_path)
    segmentation = scene_lib.working_segmentation(logic.scene, volume)
    segment_id = scene_lib.target_segment(segmentation, None, "lesion", (1, 1, 0))
    edits = np.zeros(scene_lib.dimensions(volume)[::-1], dtype=bool)
    edits[1, 0:3, 0:3] = True  # the radiologist's own paint on slice 1
    edits[3, 9:11, 9:12] = True  # and on slice 3, which the click will answer
    scene_lib.set_segment_array(segmentation, segment_id, volume, edits)
    nodes = logic.prompt_nodes()
    ras = scene_lib.ijk_to_ras(volume) @ np.array([6, 5, 3, 1.0])
    nodes.foreground.AddControlPointWorld(*ras[:3])

    placed = prompt_nodes.newest(nodes, prompt_nodes.FOREGROUND)
    outcome = run_now(logic.segment_job(volume, segment_id=segment_id, placed=placed, propagate=False))

    ((_model, _image_id, sent),) = logic.client.calls
    # Slice 3 already holds a mask, so the click goes with the box around that mask and the click (grown by 2).
    assert sent == {"max_propagation": 0, "foreground": [[6, 5, 3]], "roi": [4, 12, 3, 10, 3, 3], "adapter": "base",
                    "session": logic.interaction_session("case", segment_id)}
    result = scene_lib.segment_array(segmentation, segment_id, volume)
    answer = sitk.GetArrayFromImage(label) > 0
    assert np.array_equal(result[3], answer[3])  # the clicked slice is the model's answer
    assert np.array_equal(result[1], edits[1])  # another slice keeps the hand edit
    assert outcome.placed == placed and outcome.segment_id == segment_id
    assert outcome.message.startswith("Segment (slice 3): lesion (adapter")

    presenter = Presenter()
    presenter.volume_changed(True, "case")
    presenter.apply(Action.SEGMENT, outcome)
    undone = run_now(logic.undo_prompt_job(volume, presenter.last_prompt_step()))
    assert undone.message == "Undid the last prompt (slices 3)."
    assert np.array_equal(scene_lib.segment_array(segmentation, segment_id, volume), edits)
    assert nodes.foreground.GetNumberOfControlPoints() == 0


def test_nothing_to_undo_and_undo_on_another_case_are_refused(case):
    logic, volume, _label, _image = case
    with pytest.raises(ValueError, match="no prompt to undo"):
        logic.undo_prompt_job(volume, None)
    step = PromptStep("other_case", change=None)
    with pytest.raises(ValueError, match="placed on other_case"):
        logic.undo_prompt_job(volume, step)


class SavingClient:
    """Saves labels but fails to report the session figures (a server error after the label is stored)."""

    def __init__(self) -> None:
        self.saved: list[str] = []

    def save_label(self, image_id: str, path, params=None) -> dict:
        self.saved.append(image_id)
        return {"image": image_id}

    def sessions(self) -> dict:
        raise HTTPFailure(500, "annotation log unreadable", "http://127.0.0.1:8000/medfm/sessions")


def test_a_saved_label_is_reported_saved_even_when_the_figures_fail(case):
    logic, volume, _label, _image = case
    logic.client = SavingClient()
    segmentation = scene_lib.working_segmentation(logic.scene, volume)
    segment_id = scene_lib.target_segment(segmentation, None, "lesion", (1, 1, 0))
    mask = np.zeros(scene_lib.dimensions(volume)[::-1], dtype=bool)
    mask[3, 4:6, 4:6] = True
    scene_lib.set_segment_array(segmentation, segment_id, volume, mask)

    outcome = run_now(logic.submit_job(volume, segmentation))
    assert logic.client.saved == ["case"]
    assert outcome.message.startswith("Saved the label of case on the server") and outcome.sessions is None


def test_placing_with_the_tools_sends_one_clicked_slice_request_each(case, tmp_path):
    """What a click with a place widget does, minus Qt: the watcher sees the new control point, and the panel's
    handler sends one request for its slice. No node selector, no button."""
    logic, volume, label, _image = case
    logic.client = RecordedClient(like(reply("infer_interactive"), slices=[3], slice_axis=2), label, tmp_path)
    outcomes, counts = [], []
    nodes = logic.prompt_nodes()

    def on_placed(placed):  # the Widget's onPromptPlaced, without the worker thread
        outcomes.append(run_now(logic.segment_job(volume, placed=placed, propagate=False)))

    watcher = prompt_nodes.PromptWatcher(nodes, on_placed, counts.append)
    ras = scene_lib.ijk_to_ras(volume) @ np.array([6, 5, 3, 1.0])
    nodes.foreground.AddControlPointWorld(*ras[:3])

    ((_model, _image_id, sent),) = logic.client.calls
    assert sent == {"max_propagation": 0, "foreground": [[6, 5, 3]], "adapter": "base",
                    "session": logic.interaction_session("case", outcomes[0].segment_id)}
    assert counts == [1] and outcomes[0].placed.role == prompt_nodes.FOREGROUND
    assert outcomes[0].change.replaced == [3]

    volume_aligned_roi(logic.scene, volume, half_voxels=(2, 2, 0), center=(6, 5, 3), roi=nodes.box)
    nodes.box.SetCenterWorld(*ras[:3])  # the box's placement defines its control point
    assert len(logic.client.calls) == 2 and logic.client.calls[1][2]["roi"] == [4, 8, 3, 7, 3, 3]
    nodes.box.InvokeEvent(nodes.box.PointEndInteractionEvent)  # placing ends with an interaction event: no resend
    assert len(logic.client.calls) == 2

    watcher.stop()
    nodes.foreground.AddControlPointWorld(*ras[:3])
    assert len(logic.client.calls) == 2
