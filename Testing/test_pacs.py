"""The server on a real PACS: Orthanc (Debian's packages, a non-root process on localhost) over DICOMweb.

Sample series are the sample datastore's real scans written as DICOM (lung1 and lung2 CT, brain1 MR); lung1 comes
with its lesion as a DICOM SEG, as a site's PACS would hold an earlier annotation. The server is started the one way
a site starts it, with `--studies http://127.0.0.1:<port>/dicom-web`.
"""

from __future__ import annotations

import os
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import requests
import SimpleITK as sitk
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset
from scripts.local_orthanc import OrthancProcess
from scripts.sample_pacs import build_sample_series, upload

from Testing.conftest import ROOT, SAMPLE, RunningServer
from Testing.helpers import dice, expect_status, label_roi, read_ijk
from Testing.test_server_adapt import wait_for_training

TRAIN = {"method": "decoder", "max_epochs": 2, "slices_per_image": 2, "batch_size": 2, "labels": ["lesion"]}


@pytest.fixture(scope="module")
def pacs(sample_datastore, tmp_path_factory):
    series = build_sample_series(sample_datastore, ROOT / "build" / "sample_dicom")
    with OrthancProcess() as orthanc:
        upload(series, orthanc.dicomweb)
        dicomweb = DICOMwebClient(url=orthanc.dicomweb)
        orthanc.ids = {}
        for item in dicomweb.search_for_series():
            ds = Dataset.from_json(item)
            if ds.Modality != "SEG":
                orthanc.ids[str(ds.PatientID)] = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        orthanc.client = dicomweb
        yield orthanc


@pytest.fixture(scope="module")
def pacs_server(pacs, tmp_path_factory):
    base = tmp_path_factory.mktemp("pacs")
    running = RunningServer(pacs.dicomweb, base / "models", base / "server.log")
    yield running
    running.stop()


@pytest.fixture
def pacs_client(pacs_server, tmp_path):
    from monailabel.client import MONAILabelClient

    return MONAILabelClient(pacs_server.url, tmpdir=str(tmp_path))


def segs_in_study(pacs, study: str) -> list[Dataset]:
    return [Dataset.from_json(s) for s in pacs.client.search_for_series(
        search_filters={"Modality": "SEG", "StudyInstanceUID": study})]


def test_orthanc_runs_unprivileged(pacs):
    status = Path(f"/proc/{pacs.process.pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert uid != 0 or os.geteuid() != 0


def test_series_are_images_and_segs_are_labels(pacs, pacs_server, pacs_client, tmp_path):
    sample = SAMPLE
    lung1, lung2, brain1 = (pacs.ids[p][1] for p in ("lung1", "lung2", "brain1"))
    stats = requests.get(f"{pacs_server.url}/datastore/?output=stats", timeout=60).json()
    assert stats["total"] == 3 and stats["completed"] == 1
    assert pacs_client.next_sample("first", {})["id"] in (lung2, brain1)  # lung1 is labelled in the PACS

    # The image a client downloads is the series as one volume, with the scan's geometry.
    image_file = tmp_path / "lung2.nii.gz"
    image_file.write_bytes(requests.get(f"{pacs_server.url}/datastore/image", params={"image": lung2},
                                        timeout=120).content)
    image = sitk.ReadImage(str(image_file))
    original = sitk.ReadImage(str(sample / "lung2.nii.gz"))
    assert image.GetSize() == original.GetSize()
    assert np.allclose(image.GetOrigin(), original.GetOrigin()) and np.allclose(image.GetSpacing(),
                                                                                original.GetSpacing())
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(original))

    # The training list reads lung1's SEG from the PACS onto its image grid.
    train = requests.get(f"{pacs_server.url}/datastore/?output=train", timeout=120).json()
    assert len(train) == 1 and lung1 in train[0]["image"]
    label, _ = read_ijk(train[0]["label"])
    truth, _ = read_ijk(sample / "labels" / "final" / "lung1.nii.gz")
    assert np.array_equal(label, truth)

    # Ids are checked as for a local datastore: unknown series and path-like ids are refused in words.
    expect_status(lambda: pacs_client.infer("medsam_interactive", "1.2.3.4", {"foreground": [[1, 1, 1]]}), 404,
                  "not in the datastore")
    expect_status(lambda: pacs_client.save_label("1.2.3.4", str(image_file), tag="final"), 404, "not in")
    expect_status(lambda: pacs_client.save_label("..", str(image_file), tag="final"), 400, "not allowed")

    # Images come from the PACS: uploading or deleting one here is refused and changes nothing.
    expect_status(lambda: pacs_client.upload_image(str(image_file), "extra"), 405, "PACS")
    assert requests.delete(f"{pacs_server.url}/datastore/image", params={"id": lung2}, timeout=60).status_code == 405


def test_label_goes_to_the_pacs_as_seg_then_trains(pacs, pacs_server, pacs_client, tmp_path):
    sample = SAMPLE
    lung2_study, lung2 = pacs.ids["lung2"]
    brain1 = pacs.ids["brain1"][1]
    truth, _ = read_ijk(sample / "labels" / "final" / "lung2.nii.gz")

    # Interactive on a CT series, with the stock plugin's per-axis ROI.
    result, params = pacs_client.infer("medsam_interactive", lung2, {"roi": label_roi(truth)})
    predicted, predicted_image = read_ijk(result)
    assert dice(predicted > 0, truth > 0) > 0.6
    assert predicted_image.GetSize() == sitk.ReadImage(str(sample / "lung2.nii.gz")).GetSize()

    # A label on another grid is refused before anything reaches the PACS.
    wrong = sitk.ReadImage(str(sample / "labels" / "final" / "lung1.nii.gz"))
    wrong_file = tmp_path / "wrong.nii.gz"
    sitk.WriteImage(wrong, str(wrong_file))
    expect_status(lambda: pacs_client.save_label(lung2, str(wrong_file), tag="final"), 422, "size")
    assert segs_in_study(pacs, lung2_study) == []

    # A final label becomes a SEG series of the same study, readable by highdicom, voxel for voxel.
    pacs_client.save_label(lung2, str(sample / "labels" / "final" / "lung2.nii.gz"), tag="final")
    (seg_series,) = segs_in_study(pacs, lung2_study)
    stored = pacs.client.retrieve_series(lung2_study, str(seg_series.SeriesInstanceUID))
    seg = hd.seg.Segmentation.from_dataset(stored[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == lung2
    assert [seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()] == ["lesion"]
    sources = [uid for _, _, uid in seg.get_source_image_uids()]
    frames = seg.get_pixels_by_source_instance(sources, combine_segments=True)
    assert int(frames.sum()) == int((truth > 0).sum())
    # Orthanc itself files it as a SEG series of lung2's study.
    found = requests.post(f"{pacs.url}/tools/find", timeout=30, json={
        "Level": "Series", "Query": {"SeriesInstanceUID": str(seg_series.SeriesInstanceUID)}, "Expand": True}).json()
    study = requests.post(f"{pacs.url}/tools/find", timeout=30, json={
        "Level": "Study", "Query": {"StudyInstanceUID": lung2_study}}).json()
    assert found[0]["MainDicomTags"]["Modality"] == "SEG" and found[0]["ParentStudy"] == study[0]
    stats = requests.get(f"{pacs_server.url}/datastore/?output=stats", timeout=60).json()
    assert stats["completed"] == 2

    # Held out, then train on lung1's PACS label; the guard judges on lung2.
    marked = requests.put(f"{pacs_server.url}/medfm/heldout", json={"images": [lung2], "held_out": True}, timeout=60)
    assert marked.status_code == 200 and marked.json()["held_out"] == [lung2]
    pacs_client.train_start("medsam_adapt", TRAIN)
    status = wait_for_training(pacs_client)
    assert status["status"] == "DONE", "\n".join(status.get("details", []))
    version = pacs_server.info()["train_stats"]["medsam_adapt"]["version"]
    detail = requests.get(f"{pacs_server.url}/medfm/adapters/{version}", timeout=60).json()
    manifest_images = [item["id"] for item in detail["manifest"]["train_images"]]
    assert manifest_images == [pacs.ids["lung1"][1]]
    checks = detail["decision"]["checks"]
    assert any("held-out images" in c["by_source"] for c in checks), checks

    # Automatic on an MR series with the new version.
    auto_file, auto_params = pacs_client.infer("medsam_auto", brain1, {"adapter": version})
    auto, _ = read_ijk(auto_file)
    assert auto_params["mode"] == "automatic" and set(np.unique(auto).tolist()) <= {0, 1}


def test_a_pacs_that_goes_down_answers_502_and_nothing_changes(sample_datastore, tmp_path):
    """In-process, against its own Orthanc: a final label the PACS cannot store leaves the cache as it was."""
    from fastapi import HTTPException

    from lib.pacs_datastore import PACSDatastore

    series = build_sample_series(sample_datastore, ROOT / "build" / "sample_dicom")
    with OrthancProcess() as orthanc:
        upload([s for s in series if s.name == "lung2"], orthanc.dicomweb)
        store = PACSDatastore(DICOMwebClient(url=orthanc.dicomweb), str(tmp_path / "cache"), {"lesion": 1})
        (lung2,) = store.list_images()
        assert store.get_image_uri(lung2)  # fetched while the PACS was up
        orthanc.stop()
        with pytest.raises(HTTPException) as refused:
            store.save_label(lung2, str(sample_datastore / "labels" / "final" / "lung2.nii.gz"), "final", {})
    assert refused.value.status_code == 502 and "PACS" in refused.value.detail
    assert store.get_labels_by_image_id(lung2) == {}
    assert not list((tmp_path / "cache" / "labels").rglob("*.nii.gz"))
