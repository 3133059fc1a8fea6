"""Eight annotators at once while a training runs: next sample -> a click -> submit, with no error, and no label lost
or half-written. /info/ latency under this load is a benchmark figure (benchmarks/server_load.py), not asserted.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from Testing.conftest import IMAGE_IDS, RunningServer, copy_datastore
from Testing.helpers import read_ijk

CLIENTS = 8
TRAIN = {"method": "decoder", "max_epochs": 2, "slices_per_image": 2, "batch_size": 2, "labels": ["lesion"],
         "note": "under load"}


@pytest.fixture(scope="module")
def busy_server(sample_datastore, tmp_path_factory):
    """Every sample image, only breast1 labelled (the training's one image); the rest wait for annotators."""
    base = tmp_path_factory.mktemp("load")
    studies = copy_datastore(sample_datastore, base / "studies", images=IMAGE_IDS, labels=False)
    shutil.copy(sample_datastore / "labels" / "final" / "breast1.nii.gz", studies / "labels" / "final")
    running = RunningServer(studies, base / "models", base / "server.log")
    yield running
    running.stop()


def annotate(url: str, studies: Path, folder: Path, n: int) -> tuple[str, np.ndarray]:
    """One annotator's round: ask for the next image, click its centre, submit what came back as its final label."""
    from monailabel.client import MONAILabelClient

    folder.mkdir()
    client = MONAILabelClient(url, tmpdir=str(folder))
    image_id = client.next_sample("random", {})["id"]
    click = [s // 2 for s in sitk.ReadImage(str(studies / f"{image_id}.nii.gz")).GetSize()]
    result, _ = client.infer("medsam_interactive", image_id, {"foreground": [click], "max_propagation": 1})
    submitted, _ = read_ijk(result)
    client.save_label(image_id, result, tag="final", params={"session": f"load-{n}", "annotation_seconds": 30})
    return image_id, submitted


def test_eight_annotators_and_a_training_at_once(busy_server, tmp_path):
    from monailabel.client import MONAILabelClient

    trainer = MONAILabelClient(busy_server.url, tmpdir=str(tmp_path))
    trainer.train_start("medsam_adapt", TRAIN)
    with ThreadPoolExecutor(CLIENTS) as pool:
        rounds = list(pool.map(lambda n: annotate(busy_server.url, busy_server.studies, tmp_path / f"c{n}", n),
                               range(CLIENTS)))  # any client error is raised here

    final = busy_server.studies / "labels" / "final"
    submitted: dict[str, list[np.ndarray]] = {}
    for image_id, label in rounds:
        submitted.setdefault(image_id, []).append(label)
    for image_id, labels in submitted.items():  # last writer wins, whole: never a mix, never a torn file
        stored, _ = read_ijk(final / f"{image_id}.nii.gz")
        assert any(np.array_equal(stored, label) for label in labels), image_id
    assert sorted(p.name for p in final.iterdir()) == sorted(f"{i}.nii.gz" for i in {*submitted, "breast1"})

    deadline = time.time() + 900
    while (status := trainer.train_status()).get("status") in ("SUBMITTED", "RUNNING") and time.time() < deadline:
        time.sleep(2)
    assert status["status"] == "DONE", status
