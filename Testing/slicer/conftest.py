"""Fixtures for the Slicer-extension tests: a real MRML scene, and each direction case loaded as Slicer loads it."""

from __future__ import annotations

import pytest

from Testing.slicer.helpers import DIRECTIONS, make_image


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
