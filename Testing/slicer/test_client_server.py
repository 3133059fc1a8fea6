"""The client against the real MedFMAdapt MONAI Label server (fixture `monailabel_server` from Testing/conftest.py).

Few and cheap on purpose: inference costs ~1.5 s per slice on CPU, so only test_logic_server.py runs one.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedFMAdapt.MedFMAdaptLib.client import AUTO_MODEL, INTERACTIVE_MODEL, TRAINER, MedFMClient
from MedFMAdapt.MedFMAdaptLib.errors import HTTPFailure
from MedFMAdapt.MedFMAdaptLib.presenter import Action, Presenter, describe_error

pytestmark = pytest.mark.server


@pytest.fixture
def client(monailabel_server, tmp_path) -> MedFMClient:
    return MedFMClient(monailabel_server, timeout=30, download_dir=tmp_path)


def test_info_lists_our_models_and_fills_the_panel(client, monailabel_server):
    info = client.info()
    assert info["models"][INTERACTIVE_MODEL]["type"] == "deepgrow"
    assert info["models"][AUTO_MODEL]["type"] == "segmentation"
    assert TRAINER in info["trainers"]
    presenter = Presenter()
    presenter.connected(monailabel_server, info, adapters=client.registry())
    assert presenter.state.connected and presenter.state.status.startswith("Connected to")
    assert Action.START_TRAINING in presenter.enabled_actions()


def test_upload_small_volume_and_download_it_back(client, tmp_path):
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(0, 255, size=(3, 16, 16)).astype(np.int16))
    image.SetSpacing((0.8, 0.8, 3.0))
    image.SetOrigin((10.0, -5.0, 2.0))
    path = tmp_path / "upload" / "slicer_client_test.nii.gz"
    path.parent.mkdir()
    sitk.WriteImage(image, str(path))

    stored = client.upload_image(path, "slicer_client_test")
    try:
        assert stored == "slicer_client_test"
        fetched = client.download_image(stored)
        assert fetched.parent == client.download_dir
        back = sitk.ReadImage(str(fetched))
        assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
        np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    finally:  # the shared server's pool stays "every image labelled" for the active-learning test
        client.send(client.build_request("DELETE", "/datastore/image", {"id": "slicer_client_test"}))


def test_missing_image_is_a_404_in_plain_words(client):
    with pytest.raises(HTTPFailure) as caught:
        client.download_image("no_such_image_anywhere")
    assert caught.value.status == 404
    assert describe_error(caught.value, Action.NEXT_SAMPLE) == "The server refused to send the image: Image NOT Found"


def test_prompt_outside_the_image_is_refused_with_the_servers_words(client):
    """The server checks prompts before running the model, and says why in `detail` (4xx, not 500)."""
    with pytest.raises(HTTPFailure) as caught:
        client.infer(INTERACTIVE_MODEL, "breast1", {"roi": [0, 4, 0, 4, 100000, 100002], "adapter": "base"})
    assert 400 <= caught.value.status < 500
    assert caught.value.detail and caught.value.detail != "Not Found"
    assert describe_error(caught.value, Action.SEGMENT).startswith("The server refused to segment from the prompt: ")
