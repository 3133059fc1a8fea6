"""The extension against the real server's adapter registry, held-out evaluation, uncertainty maps and active learning.

The shared `monailabel_server` (Testing/conftest.py) serves the sample datastore: every image labelled, no adapter
trained. Nothing on the server is mocked. Cost is kept small: the comparison evaluates base on breast1 alone (the
server caches it, so base vs base costs one evaluation), and the uncertainty map comes from a 3-slice ROI. What a
test changes on the shared server it undoes (held-out flag, uploaded image).
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from MedFMAdapt.MedFMAdaptLib import scene as scene_lib
from MedFMAdapt.MedFMAdaptLib.client import MedFMClient
from MedFMAdapt.MedFMAdaptLib.errors import HTTPFailure
from MedFMAdapt.MedFMAdaptLib.logic import MedFMAdaptLogic, run_now
from MedFMAdapt.MedFMAdaptLib.presenter import Action, Presenter, describe_error
from MedFMAdapt.MedFMAdaptLib.prompt_nodes import PromptNodes
from Testing.slicer.helpers import volume_aligned_roi

pytestmark = pytest.mark.server


@pytest.fixture
def client(monailabel_server, tmp_path) -> MedFMClient:
    return MedFMClient(monailabel_server, timeout=30, download_dir=tmp_path / "client")


@pytest.fixture
def logic(monailabel_server, tmp_path) -> MedFMAdaptLogic:
    logic = MedFMAdaptLogic(slicer.vtkMRMLScene(), work_dir=tmp_path)
    run_now(logic.connect_job(monailabel_server))
    return logic


def call(url: str, method: str = "GET") -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as reply:
        return json.loads(reply.read() or b"{}")


def unlabelled(url: str) -> list[str]:
    objects = call(f"{url}/datastore/?output=all")["objects"]
    return sorted(i for i, o in objects.items() if "final" not in (o.get("labels") or {}))


def test_registry_of_a_server_with_no_adapter_shows_base_active(client, logic, monailabel_server):
    registry = client.registry()
    assert registry["active"] == "base" and registry["adapters"] == []
    assert {"name", "sha256"} <= set(registry["fm"])
    assert client.list_adapters() == []

    presenter = Presenter()
    presenter.apply(Action.CONNECT, run_now(logic.connect_job(monailabel_server)))
    assert presenter.state.held_out == [] and presenter.state.session.active == "base"
    assert [a.label for a in presenter.state.adapters] == ["base, not evaluated [active]"]
    assert presenter.state.selected_adapter == "base"
    live = presenter.enabled_actions()
    assert Action.COMPARE in live and Action.ACTIVATE not in live and Action.ROLLBACK not in live


def test_next_sample_on_a_fully_labelled_datastore_then_the_annotation_record(
    client, logic, monailabel_server, tmp_path
):
    assert unlabelled(monailabel_server) == [], "another test left an unlabelled image on the shared server"
    assert client.next_sample("random", seed=0) == {}
    outcome = run_now(logic.fetch_job(strategy="hybrid"))
    assert outcome.message == "Nothing to label: every image on the server has a label (hybrid has no candidate)."
    assert outcome.volume is None and outcome.sample == {}
    presenter = Presenter()
    presenter.apply(Action.CONNECT, run_now(logic.connect_job(monailabel_server)))  # knows this panel's session
    presenter.apply(Action.NEXT_SAMPLE, outcome)
    assert presenter.state.status.startswith("Nothing to label")

    # One small unlabelled image: the strategy proposes it, and Submit sends time, strategy and session with it.
    image = sitk.GetImageFromArray(np.zeros((3, 16, 16), dtype=np.int16))
    image.SetSpacing((0.8, 0.8, 3.0))
    image.SetOrigin((10.0, -5.0, 2.0))
    (tmp_path / "up").mkdir()
    sitk.WriteImage(image, str(tmp_path / "up" / "slicer_al_case.nii.gz"))
    image_id = client.upload_image(tmp_path / "up" / "slicer_al_case.nii.gz", "slicer_al_case")
    try:
        now = [1000.0]
        logic.clock = lambda: now[0]
        loaded = run_now(logic.fetch_job(strategy="random", seed=3))
        volume = loaded.volume
        assert logic.image_id(volume) == image_id == loaded.image_id
        sample = loaded.sample
        assert sample["chosen_by"] == "random" and sample["id"] == image_id and sample["reason"]
        presenter.apply(Action.NEXT_SAMPLE, loaded)
        assert presenter.state.status == f"random chose {image_id}: {sample['reason']}"

        mask = sitk.GetImageFromArray(np.pad(np.ones((1, 4, 4), np.uint8), ((1, 1), (6, 6), (6, 6))))
        mask.CopyInformation(image)
        sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))
        fresh = scene_lib.label_file_to_segmentation(
            logic.scene, tmp_path / "mask.nii.gz", volume, "mask", logic._label_names()
        )
        scene_lib.merge_segments(scene_lib.working_segmentation(logic.scene, volume), fresh)
        now[0] += 42.0
        submitted = run_now(logic.submit_job(volume, scene_lib.working_segmentation(logic.scene, volume)))
        assert submitted.message == f"Saved the label of {image_id} on the server after 42 s."
        presenter.apply(Action.SUBMIT, submitted)  # the session panel counts it, from the server's own log
        assert presenter.state.session.labels == 1 and presenter.state.session.annotation_seconds == 42.0

        query = urllib.parse.urlencode({"label": image_id, "tag": "final"})
        info = call(f"{monailabel_server}/datastore/label/info?{query}")
        assert info["annotation_seconds"] == 42.0 and info["strategy"] == "random"
        assert info["session"] == logic.session_id
        (ours,) = [s for s in client.sessions()["sessions"] if s["session"] == logic.session_id]
        assert ours["labels"] == 1 and ours["annotation_seconds"] == 42.0
    finally:
        call(f"{monailabel_server}/datastore/image?{urllib.parse.urlencode({'id': image_id})}", "DELETE")
    assert unlabelled(monailabel_server) == []


def test_compare_base_with_base_on_breast1_held_out(client, logic):
    assert client.heldout() == [], "another test left held-out images on the shared server"
    with pytest.raises(HTTPFailure) as caught:
        client.compare_adapters("base", "base")
    assert caught.value.status == 400
    assert describe_error(caught.value, Action.COMPARE) == (
        "The server refused to compare the adapters: there are no held-out images: "
        "mark labelled images as held-out first"
    )

    assert client.set_heldout(["breast1"]) == ["breast1"]
    try:
        compared = run_now(logic.compare_job("base"))
        evaluation = client.evaluate_adapter("base")  # cached by the comparison: no second evaluation
    finally:
        assert client.set_heldout(["breast1"], held_out=False) == []
    result, status = compared.comparison, compared.message
    assert result["a"] == result["b"] == "base" and result["better"] == "tie"
    assert status == result["summary"]
    assert [r["image"] for r in result["per_image"]] == ["breast1"] * len(result["per_image"]) != []
    assert all(r["dice_a"] == r["dice_b"] and r["diff"] == 0 for r in result["per_image"])
    assert set(evaluation["images"]) == {"breast1"}
    (row,) = result["per_image"]
    assert evaluation["images"]["breast1"][row["label"]]["dice"] == row["dice_a"]

    presenter = Presenter()
    presenter.compared(result)
    (cells,) = [r.cells for r in presenter.state.comparison]
    dice = f"{row['dice_a']:.3f}"
    assert cells == (f"breast1 / {row['label']}", dice, dice, "+0.000")
    assert presenter.state.status.startswith("base vs base on held-out images: no difference over 1 image-label")


def test_uncertainty_map_of_a_3_slice_roi_on_breast1_lands_on_the_volume_grid(logic, tmp_path):
    volume = run_now(logic.fetch_job(image_id="breast1")).volume
    dims = scene_lib.dimensions(volume)
    roi = volume_aligned_roi(logic.scene, volume, half_voxels=(max(1, dims[0] // 8), max(1, dims[1] // 8), 1))
    box = scene_lib.roi_to_box(volume, roi)
    assert box[5] - box[4] + 1 == 3

    segmented = run_now(logic.segment_job(volume, PromptNodes(box=roi), uncertainty=True))
    status = segmented.message
    described = segmented.params["uncertainty"]
    assert described["url"].startswith("/medfm/results/uncertainty-") and described["measure"].startswith("binary")
    assert f"uncertainty up to {described['max']:.2f} nats" in status

    overlay = segmented.overlay
    assert overlay is scene_lib.overlay_of(volume) and logic.scene.IsNodePresent(overlay)
    assert scene_lib.dimensions(overlay) == dims
    assert np.array_equal(scene_lib.ijk_to_ras(overlay), scene_lib.ijk_to_ras(volume))  # identical geometry
    values = scene_lib.voxel_array(overlay)
    assert values.dtype.kind == "f"
    assert values.min() >= 0 and math.isclose(values.max(), described["max"], abs_tol=1e-3) and values.max() > 0
    assert values.max() <= math.log(2) + 1e-6
    server_file = sitk.GetArrayFromImage(sitk.ReadImage(str(segmented.extra_files["uncertainty"])))
    assert np.array_equal(values, server_file)  # voxel for voxel what the server wrote, same [k, j, i] order
    outside = np.ones(values.shape, dtype=bool)
    outside[box[4] : box[5] + 1] = False
    assert not values[outside].any()  # only the segmented slices carry uncertainty

    display = overlay.GetDisplayNode()
    assert display.GetColorNode().GetName() == scene_lib.OVERLAY_COLORS
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0, math.log(2)))
    assert display.GetApplyThreshold()
