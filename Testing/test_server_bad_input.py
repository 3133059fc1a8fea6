"""Every kind of bad request gets a 4xx in plain words from the real server, and changes nothing."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import SimpleITK as sitk

from Testing.helpers import expect_status


def snapshot(server) -> dict[str, str]:
    """Hash of every file in the datastore and model folders: a refused request must leave all of them as they were."""
    files = sorted(p for root in (server.studies, server.models / "adapters") if root.exists()
                   for p in root.rglob("*") if p.is_file() and p.name != ".lock")
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def unchanged(server):
    before = snapshot(server)
    yield
    assert snapshot(server) == before


def write(tmp_path, name: str, image: sitk.Image) -> str:
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return str(path)


@pytest.mark.parametrize(("params", "status", "words"), [
    ({"roi": [0, 10, 0, 10, 100, 120]}, 400, "outside the volume"),
    ({"roi": [30, 30, 70, 70, 8, 10]}, 400, "empty"),
    ({"roi": [21, 64, 29]}, 400, "6 integers"),
    ({"roi": [21.5, 64, 29, 75, 8, 10]}, 400, "whole voxel"),
    ({"foreground": [[500, 10, 3]]}, 400, "outside the volume"),
    ({"background": [[10, 10, 3]]}, 400, "foreground point or an roi"),
    ({}, 400, "foreground point or an roi"),
    ({"roi": [21, 29, 64, 75, 8, 10], "adapter": "v9999"}, 404, "does not exist"),
    ({"roi": [21, 29, 64, 75, 8, 10], "adapter": "../../etc"}, 400, "not valid"),
    ({"roi": [21, 29, 64, 75, 8, 10], "modality": "PET"}, 400, "modality"),
    ({"foreground": [[25, 70, 9]], "max_propagation": -1}, 400, "max_propagation"),
    ({"foreground": [[25, 70, 9]], "max_propagation": "all"}, 400, "whole number of slices"),
])
def test_bad_prompts(client, unchanged, params, status, words):
    expect_status(lambda: client.infer("medsam_interactive", "breast1", params), status, words)


def test_unknown_model_is_404_not_500(client, unchanged):
    expect_status(lambda: client.infer("no_such_model", "breast1", {}), 404, "unknown model")


@pytest.mark.parametrize("image_id", ["no_such_image", "../../etc/passwd", "/etc/hostname", "pyproject.toml"])
def test_unknown_or_escaping_image_ids(client, unchanged, image_id):
    expect_status(lambda: client.infer("medsam_interactive", image_id, {"foreground": [[1, 1, 1]]}), 404,
                  "not in the datastore")


def test_auto_before_any_adapter_says_to_train_first(client, unchanged):
    expect_status(lambda: client.infer("medsam_auto", "breast1", {}), 409, "train")


def test_2d_4d_and_corrupt_uploads_are_refused(client, server, tmp_path, unchanged):
    flat = write(tmp_path, "flat.nii.gz", sitk.GetImageFromArray(np.zeros((32, 32), np.int16)))
    four_d = write(tmp_path, "fourd.nii.gz", sitk.Image([16, 16, 4, 2], sitk.sitkInt16))
    rgb = write(tmp_path, "rgb.nii.gz", sitk.GetImageFromArray(np.zeros((4, 16, 16, 3), np.uint8), isVector=True))
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"not really gzip" * 50)
    text = tmp_path / "notes.nii.gz"
    text.write_text("this is a text file, not a scan")
    for path, words in ((flat, "3D"), (four_d, "3D"), (rgb, "components"), (corrupt, "not a readable"),
                        (text, "not a readable")):
        expect_status(lambda p=path: client.upload_image(str(p), image_id="bad_upload"), 400, words)
        expect_status(lambda p=path: client.infer("medsam_interactive", "", {"foreground": [[1, 1, 0]]}, file=str(p)),
                      400, words)
    assert "bad_upload" not in str(client.datastore())


def test_escaping_upload_id_is_refused(client, server, unchanged):
    expect_status(lambda: client.upload_image(str(server.studies / "breast1.nii.gz"), image_id="../evil"),
                  400, "not allowed")


def test_labels_that_do_not_fit_their_image(client, server, tmp_path, unchanged):
    image = sitk.ReadImage(str(server.studies / "breast1.nii.gz"))
    wrong_size = sitk.Image([s + 1 for s in image.GetSize()], sitk.sitkUInt8)
    wrong_spacing = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    wrong_spacing.CopyInformation(image)
    wrong_spacing.SetSpacing([s * 2 for s in image.GetSpacing()])
    fractional = sitk.Image(image.GetSize(), sitk.sitkFloat32) + 0.5
    fractional.CopyInformation(image)
    cases = ((wrong_size, 422, "size"), (wrong_spacing, 422, "spacing"), (fractional, 400, "integer"))
    for n, (label, status, words) in enumerate(cases):
        path = write(tmp_path, f"label{n}.nii.gz", label)
        expect_status(lambda p=path: client.save_label("breast1", p, tag="final"), status, words)
    good = write(tmp_path, "good.nii.gz", sitk.Cast(image * 0, sitk.sitkUInt8))
    expect_status(lambda: client.save_label("no_such_image", good), 404, "not in the datastore")
    expect_status(lambda: client.save_label("breast1", good, tag="../../escape"), 400, "not allowed")


@pytest.mark.parametrize(("params", "status", "words"), [
    ({"method": "magic"}, 400, "method must be one of"),
    ({"rank": 0}, 400, "rank"),
    ({"max_epochs": "ten"}, 400, "max_epochs"),
    ({"lr": -1}, 400, "lr"),
    ({"target_modules": "(unclosed"}, 400, "regular expression"),
    ({"labels": ["kidney"]}, 400, "unknown label"),
])
def test_bad_training_requests_never_start_a_job(client, unchanged, params, status, words):
    expect_status(lambda: client.train_start("medsam_adapt", params), status, words)
    assert client.train_status(check_if_running=True) is False


def test_unknown_trainer(client, unchanged):
    expect_status(lambda: client.train_start("no_such_trainer", {}), 404, "unknown trainer")


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "words"), [
    ("POST", "/infer/wsi_v2/medsam_interactive?image=breast1", {}, 404, "whole-slide"),
    ("PUT", "/model/medsam_interactive", {"files": {"file": ("w.pt", b"\x80junk")}}, 403, "read-only"),
    ("DELETE", "/model/medsam_interactive", {}, 403, "read-only"),
    ("PUT", "/datastore/image/info?image=nope", {"data": {"info": "{}"}}, 404, "nope"),
    ("PUT", "/datastore/image/info?image=breast1", {"data": {"info": "{not json"}}, 400, "JSON object"),
    ("PUT", "/datastore/label/info?label=nope&tag=final", {"data": {"info": "[]"}}, 400, "JSON object"),
    ("POST", "/infer/medsam_interactive", {"data": {"params": "{}"}}, 400, "name an image"),
    ("POST", "/infer/medsam_interactive?image=breast1", {"data": {"params": "{bad"}}, 400, "JSON object"),
    ("GET", "/logs/?html=false&lines=575530497531534589091119104", {}, 400, "lines must be at most"),
    ("POST", "/scoring/no_such_method?run_sync=true", {"json": None}, 404, "unknown scoring method"),
])
def test_monai_label_routes_that_answered_500_answer_in_words(server, unchanged, method, path, kwargs, status, words):
    """What the API fuzzer found (MONAI Label 0.8.5 answered these with a 500); test_fuzz_api.py runs the fuzzer."""
    import requests

    reply = requests.request(method, server.url + path, timeout=120, **kwargs)
    assert reply.status_code == status and words in reply.json()["detail"], reply.text


def test_logs_in_range_still_answer(server):
    import requests

    reply = requests.get(server.url + "/logs/?html=false&lines=3", timeout=60)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    assert 0 < len(reply.text.splitlines()) <= 3
