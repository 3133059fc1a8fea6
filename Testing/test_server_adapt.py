"""A real (short) PEFT adaptation over HTTP: label, train, get a new adapter version, use it without a restart."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import requests
import SimpleITK as sitk
from safetensors.torch import load_file

from Testing.conftest import RunningServer, copy_datastore
from Testing.helpers import dice, expect_status, label_roi, read_ijk

TRAIN = {"method": "lora", "max_epochs": 3, "slices_per_image": 4, "batch_size": 2, "labels": ["lesion"],
         "note": "test run"}


@pytest.fixture(scope="module")
def fresh_server(sample_datastore, tmp_path_factory):
    """breast1 and brain2 without labels: the site has not annotated anything yet."""
    base = tmp_path_factory.mktemp("adapt")
    studies = copy_datastore(sample_datastore, base / "studies", images=("breast1", "brain2"), labels=False)
    running = RunningServer(studies, base / "models", base / "server.log")
    running.sample = sample_datastore
    yield running
    running.stop()


@pytest.fixture
def fresh_client(fresh_server, tmp_path):
    from monailabel.client import MONAILabelClient

    return MONAILabelClient(fresh_server.url, tmpdir=str(tmp_path))


def wait_for_training(client, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.train_status()
        if status["status"] not in ("SUBMITTED", "RUNNING"):
            return status
        time.sleep(3)
    raise AssertionError("training did not finish in time")


def test_adaptation_round_trip(fresh_client, fresh_server):
    client, server = fresh_client, fresh_server
    expect_status(lambda: client.train_start("medsam_adapt", TRAIN), 409, "no labelled images")
    expect_status(lambda: client.infer("medsam_auto", "breast1", {}), 409, "train")

    client.save_label("breast1", str(server.sample / "labels" / "final" / "breast1.nii.gz"), tag="final")
    truth, _ = read_ijk(server.studies / "labels" / "final" / "breast1.nii.gz")
    roi = label_roi(truth)
    base_file, base_params = client.infer("medsam_interactive", "breast1", {"roi": roi, "adapter": "base"})
    base_dice = dice(read_ijk(base_file)[0] > 0, truth > 0)

    client.train_start("medsam_adapt", TRAIN)
    status = wait_for_training(client)
    assert status["status"] == "DONE", "\n".join(status.get("details", []))
    assert any("SUMMARY version=v0001" in line for line in status["details"])

    info = server.info()
    stats = info["train_stats"]["medsam_adapt"]
    assert stats["status"] == "DONE" and stats["version"] == "v0001"
    # The options a client sends back leave per-method defaults to the method it picks.
    offered = info["trainers"]["medsam_adapt"]["config"]
    assert offered["lr"] is None and offered["preserve_weight"] is None
    assert offered["method"] == ["decoder", "lora", "dora", "full"]  # the plugin preselects the first: the default
    assert [row["epoch"] for row in stats["history"]] == [1, 2, 3]
    assert all(row["train_loss"] is not None for row in stats["history"])

    folder = server.models / "adapters" / "litemedsam" / "v0001"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["method"] == "lora" and manifest["note"] == "test run"
    # One labelled image: it validated on its own top labelled slice, kept apart from the slices it trained on.
    (trained_on,), (validated_on,) = manifest["train_images"], manifest["val_images"]
    assert trained_on["id"] == validated_on["id"] == "breast1"
    assert max(trained_on["slices"]) + manifest["val_gap_slices"] < min(validated_on["slices"])
    assert manifest["evidence"]["compared_with"] == "base" and "slices of breast1" in manifest["evidence"]["source"]
    assert 0 < manifest["trainable_fraction"] < 0.1 and manifest["adapter_bytes"] < 5_000_000
    weights = load_file(str(folder / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b)  # LoRA B starts at zero: it trained
    assert not list(server.models.glob("adapters/litemedsam/.staging-*"))

    # The guard decided from that validation alone, and said so where a client reads it.
    detail = requests.get(f"{server.url}/medfm/adapters/v0001", timeout=60).json()
    decision = detail["decision"]
    assert decision["checks"] and all("slices of breast1" in c["source"] for c in decision["checks"])
    # Box prompts decide activation; automatic mode, which base cannot serve, is held against base's box prompts
    # and decides only whether the version serves it.
    deciding = [c for c in decision["checks"] if c["mode"] == c["against"] == "interactive"]
    automatic = [c for c in decision["checks"] if c["mode"] == "automatic"]
    assert deciding and automatic and {c["against"] for c in automatic} == {"interactive"}
    assert decision["activated"] == all(c["passed"] for c in deciding)
    assert ("automatic" in decision["serves"]) == (decision["activated"] and all(c["passed"] for c in automatic))
    assert detail["active"] == decision["activated"] and stats["summary"]["decision"] == decision

    # The new version is used without a restart; on its training image it moved toward the label.
    tuned_file, tuned_params = client.infer("medsam_interactive", "breast1", {"roi": roi, "adapter": "v0001"})
    assert tuned_params["adapter"] == "v0001" and base_params["adapter"] == "base"
    tuned_dice = dice(read_ijk(tuned_file)[0] > 0, truth > 0)
    assert tuned_dice > base_dice, f"adapted {tuned_dice:.3f} vs base {base_dice:.3f}"

    auto_file, auto_params = client.infer("medsam_auto", "breast1", {"adapter": "v0001"})
    auto, auto_image = read_ijk(auto_file)
    assert auto_params["adapter"] == "v0001" and auto_params["mode"] == "automatic"
    assert auto_image.GetSize() == sitk.ReadImage(str(server.studies / "breast1.nii.gz")).GetSize()
    assert set(np.unique(auto).tolist()) <= {0, 1}


def test_harmful_training_is_registered_but_never_served(fresh_client, fresh_server):
    """lr 0.5 wrecks the FM: the version is kept for review, the guard refuses it, and what is served is unchanged."""
    client, server = fresh_client, fresh_server
    if not (server.studies / "labels" / "final" / "breast1.nii.gz").exists():
        pytest.skip("needs the label from test_adaptation_round_trip")
    truth, _ = read_ijk(server.studies / "labels" / "final" / "breast1.nii.gz")
    before = requests.get(f"{server.url}/medfm/adapters", timeout=60).json()
    served_file, served = client.infer("medsam_interactive", "breast1", {"roi": label_roi(truth)})

    client.train_start("medsam_adapt", {**TRAIN, "lr": 0.5, "note": "harmful"})
    status = wait_for_training(client)
    assert status["status"] == "DONE", "\n".join(status.get("details", []))
    after = requests.get(f"{server.url}/medfm/adapters", timeout=60).json()
    harmful = [r for r in after["adapters"] if r["note"] == "harmful"][0]
    assert harmful["decision"]["activated"] is False and "not activated" in harmful["decision"]["reason"]
    assert after["active"] == before["active"] == served["adapter"]

    again_file, again = client.infer("medsam_interactive", "breast1", {"roi": label_roi(truth)})
    assert again["adapter"] == served["adapter"] and np.array_equal(read_ijk(again_file)[0], read_ijk(served_file)[0])


def test_adapter_loads_with_plain_peft(fresh_server):
    """The adapter folder is a standard peft adapter: PeftModel.from_pretrained takes it as is."""
    from peft import PeftModel

    from lib.medfm.backends import get_backend

    folder = fresh_server.models / "adapters" / "litemedsam" / "v0001"
    if not folder.exists():
        pytest.skip("needs the adapter from test_adaptation_round_trip")
    base = get_backend().build_model()
    model = PeftModel.from_pretrained(base, str(folder))
    assert any("lora_A" in name for name, _ in model.named_parameters())
