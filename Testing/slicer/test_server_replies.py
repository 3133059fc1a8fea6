"""The replies the Slicer library reads, recorded from the real server and held to fixtures/server_replies.json.

The unit tests (test_client.py, test_presenter.py, test_logic.py) build their fake replies from that file (see
replies.py), so what they fake cannot drift from what the server sends: each test here fails when a reply's keys
or types (not its values) differ from the recorded ones, and says how to regenerate the file.

One server of its own, because it trains: breast1 held out, one short decoder adaptation on brain2 and brain1 (one
of them validates; about 30 s on a 2-core CPU) so the registry, /info/ train_stats and GET /train/ carry a real
version; then every call the panel makes, each once (about 100 s in all). Regenerate after an intended server change:
    MEDFM_RECORD_FIXTURES=1 .venv/bin/python -m pytest Testing/slicer/test_server_replies.py
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import SimpleITK as sitk

from MedFMAdapt.MedFMAdaptLib.client import INTERACTIVE_MODEL, MedFMClient
from MedFMAdapt.MedFMAdaptLib.multipart import encode_form
from Testing.conftest import RunningServer, copy_datastore
from Testing.helpers import label_roi, read_ijk
from Testing.slicer import replies

# Two images, so one is kept for validation and the history rows and the version carry a validation Dice.
TRAINING = {"method": "decoder", "max_epochs": 1, "slices_per_image": 2, "batch_size": 2, "labels": ["lesion"],
            "images": ["brain2", "brain1"], "regression_margin": 1.0, "note": "recorded for the Slicer reply fixtures"}
# Every reply the Slicer library reads or a unit test fakes (GET /medfm/adapters/{version}, /evaluate and the reply
# to POST /train/ are left out: nothing in the library reads them, so they would only make this test fail for
# server changes that cannot break the panel).
NAMES = ("heldout", "train_status", "info", "registry", "compare", "infer_interactive", "infer_interactive_uncertainty",
         "activate", "rollback", "upload", "sample_random", "sample_diversity", "sessions")


def wait_for_training(client: MedFMClient, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.training_status()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            return status
        time.sleep(2)
    raise AssertionError("the adaptation did not finish in time")


@pytest.fixture(scope="module")
def recorded(sample_datastore, tmp_path_factory) -> dict[str, tuple[str, object]]:
    """name -> (request, the server's JSON reply) for every reply in NAMES, from one trained server."""
    base = tmp_path_factory.mktemp("replies")
    studies = copy_datastore(sample_datastore, base / "studies", images=("breast1", "brain2", "brain1"))
    server = RunningServer(studies, base / "models", base / "server.log")
    try:
        (base / "client").mkdir()
        client = MedFMClient(server.url, timeout=60, download_dir=base / "client")
        out: dict[str, tuple[str, object]] = {}
        out["heldout"] = ("PUT /medfm/heldout", client._json("PUT", "/medfm/heldout", payload={"images": ["breast1"]}))
        client.start_training(TRAINING)
        status = wait_for_training(client)
        assert status["status"] == "DONE", status
        out["train_status"] = ("GET /train/", status)
        out["info"] = ("GET /info/", client.info())
        registry = client.registry()
        out["registry"] = ("GET /medfm/adapters", registry)
        (version,) = [a["version"] for a in registry["adapters"]]
        out["compare"] = ("GET /medfm/adapters/compare", client.compare_adapters("base", version))

        # Interactive inference on 3 slices of breast1's lesion box, as the panel's Segment sends it.
        truth, _ = read_ijk(studies / "labels" / "final" / "breast1.nii.gz")
        roi = label_roi(truth)
        middle = (roi[4] + roi[5]) // 2
        roi[4:] = [max(0, middle - 1), min(truth.shape[2] - 1, middle + 1)]
        params = {"roi": roi, "adapter": version}
        out["infer_interactive"] = ("POST /infer/medsam_interactive (params)",
                                    client.infer(INTERACTIVE_MODEL, "breast1", params).params)
        out["infer_interactive_uncertainty"] = (
            "POST /infer/medsam_interactive with uncertainty (params)",
            client.infer(INTERACTIVE_MODEL, "breast1", {**params, "uncertainty": True}).params,
        )

        out["activate"] = ("POST /medfm/adapters/{version}/activate", client.activate_adapter(version))
        out["rollback"] = ("POST /medfm/adapters/rollback", client.rollback_adapter())

        # One unlabelled image, so the active-learning strategies have something to propose.
        image = sitk.GetImageFromArray(np.zeros((3, 16, 16), dtype=np.int16))
        image.SetSpacing((0.8, 0.8, 3.0))
        path = base / "up" / "unlabelled_case.nii.gz"
        path.parent.mkdir()
        sitk.WriteImage(image, str(path))
        body, ctype = encode_form({"params": "{}"}, {"file": path})  # as upload_image, which keeps only the id
        request = client.build_request("PUT", "/datastore/image", {"image": "unlabelled_case"}, body, ctype)
        out["upload"] = ("PUT /datastore/image", client.send(request, client.long_timeout).json())
        out["sample_random"] = ("POST /activelearning/random", client.next_sample("random", seed=0))
        out["sample_diversity"] = ("POST /activelearning/diversity (nothing scored)",
                                   client.next_sample("diversity", seed=0))
        # A label submitted as the panel submits it (with its annotation record), so a session row exists.
        record = {"session": "slicer-recorded", "annotation_seconds": 95.0, "strategy": "random"}
        label = shutil.copy(studies / "labels" / "final" / "brain1.nii.gz", base / "up" / "brain1_label.nii.gz")
        client.save_label("brain1", label, params=record)
        out["sessions"] = ("GET /medfm/sessions", client.sessions())
        assert set(out) == set(NAMES)
        yield out
    finally:
        server.stop()


@pytest.mark.server
@pytest.mark.parametrize("name", NAMES)
def test_reply_has_the_recorded_keys_and_types(recorded, name):
    request, value = recorded[name]
    replies.check_reply(name, request, value)


def test_fixture_holds_only_replies_recorded_here():
    stale = sorted(set(replies.load_replies()) - set(NAMES))
    assert not stale, f"{replies.FIXTURE.name} holds replies no test records: {stale}; remove them"


def test_the_panels_status_keys_are_in_the_recorded_replies():
    """The keys the library reads, named once more so a regenerated fixture that lost one fails here too."""
    r = {name: replies.reply(name) for name in NAMES}
    assert {"fm", "adapter", "timing", "slices", "slice_axis"} <= set(r["infer_interactive"])
    assert "total_s" in r["infer_interactive"]["timing"]
    assert {"url", "max"} <= set(r["infer_interactive_uncertainty"]["uncertainty"])
    assert {"active", "adapters"} <= set(r["registry"])
    assert {"version", "method", "heldout_dice", "val_dice"} <= set(r["registry"]["adapters"][0])
    assert {"models", "trainers", "strategies", "labels", "train_stats"} <= set(r["info"])
    assert {"version", "history"} <= set(r["info"]["train_stats"]["medsam_adapt"])
    assert {"epoch", "val_dice"} <= set(r["info"]["train_stats"]["medsam_adapt"]["history"][0])
    assert {"status", "details"} <= set(r["train_status"])
    assert {"a", "b", "per_image", "mean_dice_a", "mean_dice_b", "summary"} <= set(r["compare"])
    assert {"image", "label", "dice_a", "dice_b", "diff"} <= set(r["compare"]["per_image"][0])
    assert "active" in r["activate"] and "active" in r["rollback"]
    assert "image" in r["upload"]
    assert {"sessions", "progress"} <= set(r["sessions"])
    assert {"session", "labels", "labels_per_hour", "annotation_seconds"} <= set(r["sessions"]["sessions"][0])
    assert {"version", "heldout_dice"} <= set(r["sessions"]["progress"][0])
    for sample in (r["sample_random"], r["sample_diversity"]):
        assert {"id", "chosen_by", "reason", "score", "rank"} <= set(sample)
