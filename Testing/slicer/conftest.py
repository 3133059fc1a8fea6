"""Fixtures for the Slicer-extension tests: a real MRML scene, each direction case loaded as Slicer loads it, and
a presenter connected to the recorded server replies."""

from __future__ import annotations

import pytest

from MedFMAdapt.MedFMAdaptLib.presenter import Presenter
from Testing.slicer.helpers import DIRECTIONS, make_image
from Testing.slicer.replies import like, reply


@pytest.fixture
def scene():
    """An empty real MRML scene from slicer-core."""
    import slicer

    return slicer.vtkMRMLScene()


@pytest.fixture(params=sorted(DIRECTIONS))
def lps_case(request, tmp_path, scene):
    """(name, SimpleITK image, its NRRD file, the volume node Slicer loads from it) for each direction case."""
    import SimpleITK as sitk

    from MedFMAdapt.MedFMAdaptLib import scene as scene_lib

    image = make_image(DIRECTIONS[request.param])
    path = tmp_path / f"{request.param}.nrrd"
    sitk.WriteImage(image, str(path))
    volume = scene_lib.read_volume(scene, path, request.param)
    return request.param, image, path, volume


@pytest.fixture
def info() -> dict:
    """GET /info/ as the server sends it (recorded), after a LoRA adaptation v2 of two epochs, FM "MedSAM-Lite"."""
    info = reply("info")
    models = info["models"]
    models["medsam_interactive"] = like(models["medsam_interactive"], fm="MedSAM-Lite")
    stats = info["train_stats"]["medsam_adapt"]
    row = stats["history"][0]
    history = [like(row, epoch=1, train_loss=0.9, val_dice=0.61), like(row, epoch=2, train_loss=0.7, val_dice=0.74)]
    info["train_stats"]["medsam_adapt"] = like(stats, version="v2", method="lora", history=history)
    return info


@pytest.fixture
def registry() -> dict:
    """GET /medfm/adapters as the server sends it (recorded), with v0001 active and v0002 not evaluated."""
    listing = reply("registry")
    row = listing["adapters"][0]
    v1 = like(row, version="v0001", method="lora", val_dice=0.71, heldout_dice=0.682, active=True,
              decision=like(row["decision"], activated=True), imported_from=None)
    v2 = like(row, version="v0002", method="dora", val_dice=0.74, heldout_dice=None, active=False, decision=None,
              imported_from=None)
    return like(listing, active="v0001", history=["base"], adapters=[v1, v2])


@pytest.fixture
def connected(info, registry) -> Presenter:
    presenter = Presenter()
    presenter.connected("http://127.0.0.1:8000", info, adapters=registry)
    return presenter
