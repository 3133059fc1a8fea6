"""Training sees what serving sees: the server's CT window reaches adaptation, pretraining and a federation site.

Before issue 23 the three jobs read their slices with the default window while inference, evaluation and scoring
honoured `--conf ct_window`, so a site that set its window trained on one image and served another. Here a tiny
job runs on a real CT (lung1) with a soft-tissue window; every slice it prepared must be the slice inference
reads for the same index, and none may be the default-window slice. With the default window, training sees
exactly the default-window slices it always saw (the site test, and every other training test, run it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.medfm.adaptation.config import AdaptConfig
from lib.medfm.adaptation.data import LabelledImage
from lib.medfm.adaptation.job import run_adaptation
from lib.medfm.adaptation.pretrain import PretrainConfig, UnlabelledImage, run_pretraining
from lib.medfm.backends import FMBackend
from lib.medfm.federated.config import FederatedConfig
from lib.medfm.federated.site import SiteData, SiteTrainer
from lib.medfm.service import MedFMService
from lib.medfm.settings import Settings
from lib.medfm.volume import CT_DEFAULT_WINDOW, load_volume

SOFT_TISSUE = (-160.0, 240.0)  # HU; far from the default (-1000, 1000)
CASE = "lung1"  # CT, 512 x 512 x 48, one lesion


@pytest.fixture
def lung(sample_datastore: Path) -> LabelledImage:
    return LabelledImage(CASE, str(sample_datastore / f"{CASE}.nii.gz"),
                         str(sample_datastore / "labels" / "final" / f"{CASE}.nii.gz"))


def service_with(tmp_path: Path, window: tuple[float, float] | None) -> MedFMService:
    return MedFMService(Settings(models_dir=tmp_path, **({"ct_window": window} if window else {})))


def record_prepared(backend: FMBackend) -> list[np.ndarray]:
    """The seam: every 2D slice the backend is asked to prepare for the model, in call order."""
    seen: list[np.ndarray] = []
    prepare = backend.prepare

    def recording(slice2d: np.ndarray):
        seen.append(np.array(slice2d, copy=True))
        return prepare(slice2d)

    backend.prepare = recording
    return seen


def check_seen_as_served(seen: list[np.ndarray], service: MedFMService, path: str, slices: list[int],
                         window: tuple[float, float] | None) -> None:
    """Each slice a job prepared is the slice inference reads at one of the indices the job recorded, and it is
    the default-window slice exactly when the server runs the default window."""
    served = service.volume(path)  # what medsam_interactive / medsam_auto read, with the server's window
    default = load_volume(path)  # what every job read before the fix, whatever the server's window
    assert served.window == (window or CT_DEFAULT_WINDOW)
    assert len(seen) == len(slices) > 0
    for image in seen:
        matches = [k for k in slices if np.array_equal(image, served.slice_windowed(k))]
        assert matches, "a training slice is not what inference reads for any slice the job recorded"
        assert np.array_equal(image, default.slice_windowed(matches[0])) == (window is None)


def test_adaptation_trains_on_the_slices_inference_reads(tmp_path, lung):
    service = service_with(tmp_path, SOFT_TISSUE)
    seen = record_prepared(service.backend)
    summary = run_adaptation(service.backend, service.backend.build_model("cpu"), service.store, [lung],
                             AdaptConfig(method="decoder", max_epochs=1, slices_per_image=1, auto_head=False,
                                         val_fraction=0.0), service.settings, log=lambda _line: None)
    (record,) = service.store.manifest(summary["version"]).train_images
    check_seen_as_served(seen, service, lung.image_path, record.slices, SOFT_TISSUE)


def test_pretraining_embeds_the_slices_inference_reads(tmp_path, lung):
    service = service_with(tmp_path, SOFT_TISSUE)
    seen = record_prepared(service.backend)
    out = run_pretraining(service.backend, service.backend.build_model("cpu"), service.store,
                          [UnlabelledImage(lung.image_id, lung.image_path)],
                          PretrainConfig(recipe="distill", max_epochs=1, slices_per_image=1, batch_size=1),
                          service.settings, log=lambda _line: None)
    (record,) = service.store.manifest(out["version"]).train_images
    check_seen_as_served(seen, service, lung.image_path, record.slices, SOFT_TISSUE)


@pytest.mark.parametrize("window", [None, SOFT_TISSUE], ids=["default", "soft-tissue"])
def test_a_federation_site_trains_on_the_tensors_inference_prepares(tmp_path, lung, window):
    """The site's samples, prepared once before its rounds, are the model inputs inference prepares for the same
    slices; with the default window they are the default-window inputs every job used before."""
    service = service_with(tmp_path, window)
    trainer = SiteTrainer(service.backend, None, SiteData("site", [lung], []),
                          FederatedConfig(slices_per_image=2, auto_head=False), service.settings,
                          log=lambda _line: None)
    served, default = service.volume(lung.image_path), load_volume(lung.image_path)
    assert len(trainer.samples) == 2
    for sample in trainer.samples:
        expected = service.backend.prepare(served.slice_windowed(sample.slice_index)).tensor
        before = service.backend.prepare(default.slice_windowed(sample.slice_index)).tensor
        assert torch.equal(sample.prepared.tensor, expected)
        assert torch.equal(sample.prepared.tensor, before) == (window is None)
