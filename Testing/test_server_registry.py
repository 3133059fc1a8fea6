"""Adapter lifecycle over HTTP: train, register, guard, activate, roll back, export/import, evaluate, compare."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import requests
import SimpleITK as sitk
import torch

from Testing.conftest import RunningServer, copy_datastore
from Testing.helpers import label_roi, read_ijk
from Testing.test_server_adapt import wait_for_training

LORA = {"method": "lora", "max_epochs": 2, "slices_per_image": 3, "batch_size": 3, "labels": ["lesion"],
        "images": ["brain2"], "regression_margin": 1.0, "note": "first"}
DECODER = {"method": "decoder", "max_epochs": 2, "slices_per_image": 3, "batch_size": 3, "labels": ["lesion"],
           "images": ["brain2"], "regression_margin": -1.0, "note": "must beat the active one by 1.0"}


@pytest.fixture(scope="module")
def site(sample_datastore, tmp_path_factory):
    base = tmp_path_factory.mktemp("registry")
    studies = copy_datastore(sample_datastore, base / "studies", images=("breast1", "brain2"))
    running = RunningServer(studies, base / "models", base / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def other_site(sample_datastore, tmp_path_factory):
    base = tmp_path_factory.mktemp("other")
    studies = copy_datastore(sample_datastore, base / "studies", images=("breast1",))
    running = RunningServer(studies, base / "models", base / "server.log")
    yield running
    running.stop()


def api(server, method: str, path: str, expect: int = 200, **kwargs):
    response = requests.request(method, f"{server.url}{path}", timeout=600, **kwargs)
    assert response.status_code == expect, response.text
    return response


def infer(client, image: str, params: dict) -> tuple[np.ndarray, dict]:
    path, out = client.infer("medsam_interactive", image, params)
    return read_ijk(path)[0], out


@pytest.fixture(scope="module")
def trained(site, tmp_path_factory):
    """Held-out breast1; v0001 (LoRA, activated) and v0002 (decoder, kept inactive by the guard)."""
    from monailabel.client import MONAILabelClient

    client = MONAILabelClient(site.url, tmpdir=str(tmp_path_factory.mktemp("client")))
    api(site, "PUT", "/medfm/heldout", json={"images": ["breast1"]})
    truth, _ = read_ijk(site.studies / "labels" / "final" / "breast1.nii.gz")
    prompt = {"roi": label_roi(truth)}
    base_out, base_params = infer(client, "breast1", prompt)
    runs = {}
    for params in (LORA, DECODER):
        client.train_start("medsam_adapt", params)
        status = wait_for_training(client)
        assert status["status"] == "DONE", "\n".join(status["details"])
        runs[params["method"]] = status
    return {"client": client, "prompt": prompt, "base_out": base_out, "base_params": base_params, "runs": runs}


def test_versions_appear_with_metrics_and_the_guard_decides(site, trained):
    listing = api(site, "GET", "/medfm/adapters").json()
    rows = {r["version"]: r for r in listing["adapters"]}
    assert set(rows) == {"v0001", "v0002"} and listing["active"] == "v0001"
    assert rows["v0001"]["decision"]["activated"] is True and rows["v0001"]["active"]
    assert rows["v0002"]["decision"]["activated"] is False and not rows["v0002"]["active"]
    assert "not activated" in rows["v0002"]["decision"]["reason"]
    detail = api(site, "GET", "/medfm/adapters/v0001").json()
    manifest = detail["manifest"]
    assert manifest["train_images"][0]["id"] == "brain2"  # breast1 is held out: never trained on
    assert all(i["id"] != "breast1" for i in manifest["train_images"] + manifest["val_images"])
    assert manifest["fm_sha256"] == listing["fm"]["sha256"] and manifest["note"] == "first"
    assert len(manifest["files_sha256"]) == 2 and manifest["metrics"]["history"]
    assert detail["evaluations"]  # the guard's held-out evaluation is kept with the version


def test_activate_and_rollback_restore_identical_outputs(site, trained):
    client, prompt = trained["client"], trained["prompt"]
    v1_out, v1_params = infer(client, "breast1", prompt)
    assert v1_params["adapter"] == "v0001" and trained["base_params"]["adapter"] == "base"
    api(site, "POST", "/medfm/adapters/v0002/activate")
    v2_out, v2_params = infer(client, "breast1", prompt)
    assert v2_params["adapter"] == "v0002"
    assert api(site, "POST", "/medfm/adapters/rollback").json()["active"] == "v0001"
    again, params = infer(client, "breast1", prompt)
    assert params["adapter"] == "v0001" and np.array_equal(again, v1_out)
    assert api(site, "POST", "/medfm/adapters/rollback").json()["active"] == "base"
    base_again, params = infer(client, "breast1", prompt)
    assert params["adapter"] == "base" and np.array_equal(base_again, trained["base_out"])
    api(site, "POST", "/medfm/adapters/v0001/activate")


def test_evaluate_and_compare_on_held_out(site, trained):
    result = api(site, "POST", "/medfm/adapters/v0001/evaluate").json()
    scores = result["images"]["breast1"]["lesion"]
    assert 0 <= scores["dice"] <= 1 and scores["hd95_mm"] is not None and scores["hd95_mm"] >= 0
    assert result["mean"]["dice"] == scores["dice"]
    compared = api(site, "GET", "/medfm/adapters/compare", params={"a": "base", "b": "v0001"}).json()
    row = compared["per_image"][0]
    assert row["image"] == "breast1" and row["diff"] == pytest.approx(row["dice_b"] - row["dice_a"], abs=1e-4)
    assert compared["better"] in ("base", "v0001", "tie") and compared["by"] == abs(compared["mean_diff"])
    assert compared["mean_dice_b"] == result["mean"]["dice"]


def test_uncertainty_map_comes_on_the_image_grid(site, trained):
    _, params = infer(trained["client"], "breast1", {**trained["prompt"], "uncertainty": True})
    response = api(site, "GET", params["uncertainty"]["url"])
    path = site.models / "uncertainty-download.nii.gz"
    path.write_bytes(response.content)
    entropy = sitk.ReadImage(str(path))
    assert entropy.GetSize() == sitk.ReadImage(str(site.studies / "breast1.nii.gz")).GetSize()
    values = sitk.GetArrayFromImage(entropy)
    assert values.min() >= 0 and values.max() <= np.log(2) + 1e-4 and values.max() > 0
    api(site, "GET", "/medfm/results/..%2F..%2Fetc%2Fpasswd", expect=404)


def test_export_then_import_at_another_site_gives_identical_output(site, other_site, trained, tmp_path):
    from monailabel.client import MONAILabelClient

    archive = api(site, "GET", "/medfm/adapters/v0001/export").content
    imported = api(other_site, "POST", "/medfm/adapters/import", files={"file": ("v0001.tar.gz", archive)},
                   data={"note": "from site A"}).json()
    version = imported["version"]
    api(other_site, "POST", f"/medfm/adapters/{version}/activate")
    other = MONAILabelClient(other_site.url, tmpdir=str(tmp_path))
    here, _ = infer(trained["client"], "breast1", {**trained["prompt"], "adapter": "v0001"})
    there, params = infer(other, "breast1", trained["prompt"])
    assert params["adapter"] == version and np.array_equal(here, there)
    detail = api(other_site, "GET", f"/medfm/adapters/{version}").json()["manifest"]
    assert detail["imported_from"]["id"] == "v0001" and detail["note"] == "from site A"


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _pack(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_bad_lifecycle_requests_change_nothing(site, trained, tmp_path):
    before = api(site, "GET", "/medfm/adapters").json()
    files_before = sorted(p.name for p in (site.models / "adapters" / "litemedsam").iterdir())
    api(site, "GET", "/medfm/adapters/v0099", expect=404)
    api(site, "POST", "/medfm/adapters/v0099/activate", expect=404)
    api(site, "POST", "/medfm/adapters/..%2Fx/activate", expect=404)
    api(site, "DELETE", "/medfm/adapters/v0001", expect=409)  # the active one

    good = api(site, "GET", "/medfm/adapters/v0001/export").content
    members = _members(good)
    weights = "v0001/adapter_model.safetensors"
    manifest = json.loads(members["v0001/manifest.json"])

    tampered = dict(members)
    tampered[weights] = members[weights][:-1] + bytes([members[weights][-1] ^ 1])
    other_fm = {**members, "v0001/manifest.json": json.dumps({**manifest, "fm_sha256": "0" * 64}).encode()}
    pickled = io.BytesIO()
    torch.save({"base_model.model.sam.x": torch.zeros(1)}, pickled)
    import hashlib

    fake_hashes = {**manifest["files_sha256"], "adapter_model.safetensors": hashlib.sha256(pickled.getvalue())
                   .hexdigest()}
    pickle_case = {**members, weights: pickled.getvalue(),
                   "v0001/manifest.json": json.dumps({**manifest, "files_sha256": fake_hashes}).encode()}
    escaping = {**members, "../evil.json": b"{}"}
    for archive, words in ((_pack(tampered), "SHA-256"), (_pack(other_fm), "other base weights"),
                           (_pack(pickle_case), "pickle"), (_pack(escaping), "outside"),
                           (b"not an archive", "not a .tar.gz")):
        response = api(site, "POST", "/medfm/adapters/import", expect=400, files={"file": ("a.tar.gz", archive)})
        assert words in response.json()["detail"], response.json()["detail"]
    assert not (site.models / "adapters" / "evil.json").exists() and not (site.models / "evil.json").exists()

    after = api(site, "GET", "/medfm/adapters").json()
    assert [r["version"] for r in after["adapters"]] == [r["version"] for r in before["adapters"]]
    assert after["active"] == before["active"]
    assert sorted(p.name for p in (site.models / "adapters" / "litemedsam").iterdir()) == files_before

    api(site, "DELETE", "/medfm/adapters/v0002")
    api(site, "POST", "/medfm/adapters/v0002/activate", expect=404)  # deleted
    assert [r["version"] for r in api(site, "GET", "/medfm/adapters").json()["adapters"]] == ["v0001"]
