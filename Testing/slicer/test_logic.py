"""The Logic's status lines from inference replies, with no server: the replies are the recorded real ones.

The fake client answers with fixtures/server_replies.json's interactive inference params (see replies.py), and a
label file on the volume's grid, so the status line reads exactly the keys the server sends.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedFMAdapt.MedFMAdaptLib import scene as scene_lib
from MedFMAdapt.MedFMAdaptLib.client import INTERACTIVE_MODEL, InferResult
from MedFMAdapt.MedFMAdaptLib.logic import IMAGE_ID_ATTRIBUTE, MedFMAdaptLogic, run_now
from Testing.slicer.helpers import DIRECTIONS, make_image, volume_aligned_roi
from Testing.slicer.replies import like, reply


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
    params = like(recorded, adapter="v0001", timing=like(recorded["timing"], total_s=4.53))
    logic.client = RecordedClient(params, label, tmp_path)
    roi = volume_aligned_roi(logic.scene, volume)

    status = run_now(logic.segment_job(volume, roi=roi, adapter="v0001"))

    assert status == "Segment: lesion (adapter v0001) in 4.5 s."
    ((model, image_id, sent),) = logic.client.calls
    assert (model, image_id, sent["adapter"]) == (INTERACTIVE_MODEL, "case", "v0001")
    assert logic.last_result.params == params


def test_segment_status_with_uncertainty_reads_the_recorded_map_description(case, tmp_path):
    logic, volume, label, image = case
    recorded = reply("infer_interactive_uncertainty")
    timing = like(recorded["timing"], total_s=0.21)
    params = like(recorded, timing=timing, uncertainty=like(recorded["uncertainty"], max=0.4321))
    entropy = sitk.GetImageFromArray(np.full(sitk.GetArrayFromImage(image).shape, 0.4321, dtype=np.float32))
    entropy.CopyInformation(image)
    logic.client = RecordedClient(params, label, tmp_path, uncertainty=entropy)

    status = run_now(logic.segment_job(volume, roi=volume_aligned_roi(logic.scene, volume), uncertainty=True))

    assert status == (
        f"Segment: lesion (adapter {recorded['adapter']}) in 0.2 s; "
        "uncertainty up to 0.43 nats (0.69 = guessing)."
    )
    assert logic.client.calls[0][2]["uncertainty"] is True
    assert logic.last_overlay is scene_lib.overlay_of(volume)
