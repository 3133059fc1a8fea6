"""Self-supervised pretraining on the site's scans over HTTP, then supervised LoRA continuing from it (the hybrid)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import requests
import torch
from safetensors.torch import load_file

from Testing.conftest import RunningServer, copy_datastore
from Testing.helpers import expect_status
from Testing.test_server_adapt import wait_for_training

PRETRAIN = {"recipe": "distill", "max_epochs": 2, "slices_per_image": 2, "batch_size": 2, "note": "test ssl"}


@pytest.fixture(scope="module")
def site(sample_datastore, tmp_path_factory):
    """brain1 and brain2 labelled (brain2 held out), breast1 a scan nobody has labelled."""
    base = tmp_path_factory.mktemp("pretrain")
    studies = copy_datastore(sample_datastore, base / "studies", images=("brain1", "brain2"), labels=True)
    shutil.copy(sample_datastore / "breast1.nii.gz", studies / "breast1.nii.gz")
    running = RunningServer(studies, base / "models", base / "server.log")
    yield running
    running.stop()


@pytest.fixture
def site_client(site, tmp_path):
    from monailabel.client import MONAILabelClient

    return MONAILabelClient(site.url, tmpdir=str(tmp_path))


def encoder_lora(folder) -> dict[str, torch.Tensor]:
    weights = load_file(str(folder / "adapter_model.safetensors"))
    return {k: v for k, v in weights.items() if "image_encoder" in k}


def test_pretrain_on_unlabelled_scans_then_continue_with_labels(site, site_client):
    client = site_client
    marked = requests.put(f"{site.url}/medfm/heldout", json={"images": ["brain2"], "held_out": True}, timeout=60)
    assert marked.status_code == 200
    expect_status(lambda: client.train_start("medsam_pretrain", {**PRETRAIN, "recipe": "nope"}), 400, "recipe")

    client.train_start("medsam_pretrain", PRETRAIN)
    status = wait_for_training(client)
    assert status["status"] == "DONE", "\n".join(status.get("details", []))
    info = site.info()
    assert info["trainers"]["medsam_pretrain"]["config"]["recipe"] == ["consistency", "distill"]  # default first
    stats = info["train_stats"]["medsam_pretrain"]
    assert stats["status"] == "DONE" and [row["epoch"] for row in stats["history"]] == [1, 2]
    ssl_version = stats["version"]
    folder = site.models / "adapters" / "litemedsam" / ssl_version
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["method"] == "ssl-lora" and manifest["ssl"]["recipe"] == "distill"
    assert len(manifest["ssl"]["loss_curve"]) == 2 and manifest["note"] == "test ssl"
    # It saw the unlabelled scan and the labelled training image, never the held-out one.
    assert {i["id"] for i in manifest["train_images"]} == {"brain1", "breast1"}
    # The encoder changed (LoRA B starts at zero), and only the encoder.
    weights = load_file(str(folder / "adapter_model.safetensors"))
    assert weights and all("image_encoder" in k for k in weights)
    assert any(float(v.abs().max()) > 0 for k, v in weights.items() if "lora_B" in k)
    # The guard decided on the held-out image, as for any version.
    decision = requests.get(f"{site.url}/medfm/adapters/{ssl_version}", timeout=60).json()["decision"]
    held = [c for c in decision["checks"] if "held-out images" in c["by_source"]]
    assert {c["mode"] for c in held} == {"interactive", "click"}
    judged = [c for c in held if c["state"] is not None]  # a mode neither version serves on any label: not judged
    assert all(max(c["by_source"]["held-out images"]["new"], c["by_source"]["held-out images"]["active"])
               < decision["floor"] for c in held if c["state"] is None)
    assert decision["activated"] == (bool(judged) and all(c["state"] in ("better", "not worse") for c in judged))

    # Bad parents are refused before a training starts.
    expect_status(lambda: client.train_start("medsam_adapt", {"method": "lora", "parent": "v0099"}), 404, "v0099")
    expect_status(lambda: client.train_start("medsam_adapt", {"method": "decoder", "parent": ssl_version}), 400,
                  "parent")

    # The hybrid: supervised LoRA starts from the pretrained encoder LoRA.
    client.train_start("medsam_adapt", {"method": "lora", "parent": ssl_version, "max_epochs": 1,
                                        "slices_per_image": 2, "batch_size": 2, "labels": ["lesion"]})
    status = wait_for_training(client)
    assert status["status"] == "DONE", "\n".join(status.get("details", []))
    child = site.info()["train_stats"]["medsam_adapt"]["version"]
    child_folder = site.models / "adapters" / "litemedsam" / child
    assert json.loads((child_folder / "manifest.json").read_text())["parent"] == ssl_version
    before, after = encoder_lora(folder), encoder_lora(child_folder)
    a_names = [k for k in before if "lora_A" in k]
    assert a_names and set(a_names) <= set(after)
    similarity = [float(torch.nn.functional.cosine_similarity(before[k].flatten(), after[k].flatten(), dim=0))
                  for k in a_names]
    assert np.mean(similarity) > 0.9  # a fresh LoRA initialisation would be unrelated (about 0)
    listing = requests.get(f"{site.url}/medfm/adapters", timeout=60).json()["adapters"]
    assert {row["version"]: row["method"] for row in listing}[ssl_version] == "ssl-lora"
