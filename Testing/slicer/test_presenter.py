"""The panel's rules without Qt: which actions are live in each state, and the status line for each failure."""

from __future__ import annotations

import json

import pytest

from MedFMAdapt.MedFMAdaptLib.errors import (
    BadResponse,
    ConnectionFailed,
    HTTPFailure,
    ServerTimeout,
    TLSFailure,
)
from MedFMAdapt.MedFMAdaptLib.outcomes import Segmented
from MedFMAdapt.MedFMAdaptLib.presenter import Action, Presenter, describe_error
from Testing.slicer.replies import like, reply


def test_before_connecting_only_connect_is_live():
    assert Presenter().enabled_actions() == {Action.CONNECT}


def test_connected_without_volume(connected):
    assert connected.enabled_actions() == {
        Action.CONNECT, Action.NEXT_SAMPLE, Action.START_TRAINING, Action.START_PRETRAINING, Action.COMPARE,
        Action.ROLLBACK
    }
    assert "MedSAM-Lite" in connected.state.status and "v0001, v0002" in connected.state.status


def test_volume_selected_then_uploaded_then_prompted(connected):
    connected.volume_changed(True)
    assert Action.UPLOAD in connected.enabled_actions()
    assert Action.AUTO_SEGMENT not in connected.enabled_actions()  # the server does not have it yet

    connected.volume_changed(True, image_id="case7")
    live = connected.enabled_actions()
    assert {Action.AUTO_SEGMENT, Action.REVIEW, Action.SEGMENT, Action.HELD_OUT} <= live  # a placed prompt is sent
    assert not {Action.PROPAGATE, Action.UNDO_PROMPT, Action.SUBMIT} & live  # nothing placed, nothing to submit

    connected.prompts_changed(1)
    connected.apply(Action.SEGMENT, Segmented("Segment (slice 3): lesion.", change="slices of case7"))
    assert {Action.PROPAGATE, Action.UNDO_PROMPT, Action.SUBMIT} <= connected.enabled_actions()

    connected.volume_changed(True, image_id="case8")  # a new volume drops the old result
    assert Action.SUBMIT not in connected.enabled_actions()


def test_busy_disables_everything_but_stop_training(connected):
    connected.volume_changed(True, image_id="case7")
    connected.state.training = True
    connected.begin(Action.AUTO_SEGMENT)
    assert connected.enabled_actions() == {Action.POLL_TRAINING}  # stop waits for the call; progress goes on
    connected.succeeded("done")
    assert Action.STOP_TRAINING in connected.enabled_actions()
    assert Action.START_TRAINING not in connected.enabled_actions()


def test_registry_actions(connected, info, registry):
    connected.connected("http://127.0.0.1:8000", info, adapters=like(registry, active="base", adapters=[]))
    assert not connected.enabled(Action.ACTIVATE) and not connected.enabled(Action.ROLLBACK)  # base alone
    assert connected.enabled(Action.COMPARE)
    connected.connected("http://127.0.0.1:8000", info, adapters=registry)
    assert connected.state.selected_adapter == "v0001"
    assert not connected.enabled(Action.ACTIVATE)  # v0001 is already active
    connected.state.selected_adapter = "v0002"
    assert connected.enabled(Action.ACTIVATE) and connected.enabled(Action.ROLLBACK)
    assert connected.enabled(Action.COMPARE)
    assert [a.label for a in connected.state.adapters] == [
        "base, not evaluated",
        "v0001 (lora), held-out Dice 0.682 [active, guard: not worse]",
        "v0002 (dora), no held-out Dice (validation 0.740)",
    ]


def test_adapter_list_shows_the_guards_decision(connected, info, registry):
    """A version the guard kept inactive says so, with the server's reason on hover; one activated anyway says so."""
    kept = like(registry["adapters"][0]["decision"], activated=False, verdict="worse",
                reason="interactive Dice 0.41 vs active 0.80 on validation images: worse than v0001 beyond the "
                       "margin of 0.0; registered but not activated")
    rows = [registry["adapters"][0], like(registry["adapters"][1], decision=kept)]
    connected.registry_changed(like(registry, adapters=rows))
    v2 = connected.state.adapters[2]
    assert v2.label == "v0002 (dora), no held-out Dice (validation 0.740) [guard: worse, not activated by the guard]"
    assert "registered but not activated" in v2.reason
    by_hand = like(kept, manual=[{"by": "admin", "at": "2026-11-28T09:00:00+00:00"}])
    rows = [like(registry["adapters"][0], active=False), like(rows[1], active=True, decision=by_hand)]
    connected.registry_changed(like(registry, active="v0002", adapters=rows))
    assert connected.state.adapters[2].label.endswith(
        "[active, activated by hand, guard: worse, not activated by the guard]")


@pytest.mark.parametrize("verdict", ["better", "not worse", "worse", "cannot tell yet"])
def test_adapter_list_shows_the_guards_verdict_with_the_interval_on_hover(connected, info, registry, verdict):
    """The guard's word for a version against what was live, and each judged mode's interval when hovered."""
    check = {"mode": "interactive", "against": "interactive", "state": verdict, "diff": -0.009,
             "interval": [-0.041, 0.022], "n_units": 12}
    unjudged = {"mode": "click", "against": "click", "state": None, "diff": None, "interval": None, "n_units": 0}
    decision = like(registry["adapters"][0]["decision"], verdict=verdict, activated=verdict in ("better", "not worse"),
                    checks=[check, unjudged], confidence=0.9, margin=0.015)
    rows = [registry["adapters"][0], like(registry["adapters"][1], decision=decision)]
    connected.registry_changed(like(registry, adapters=rows))
    v2 = connected.state.adapters[2]
    assert f"guard: {verdict}" in v2.label
    assert v2.tip.splitlines()[:2] == [
        f"interactive: -0.009 [-0.041, +0.022] over 12 units, {verdict}",
        "(90% interval of the mean paired Dice difference, margin 0.015)"]


def test_adapter_list_says_when_automatic_mode_stays_off(connected, info, registry):
    """Live for box and click prompts only: the guard found its automatic masks worse than a box on the live one."""
    decision = like(registry["adapters"][0]["decision"], serves=["interactive"])
    rows = [like(registry["adapters"][0], decision=decision), registry["adapters"][1]]
    connected.registry_changed(like(registry, adapters=rows))
    assert connected.state.adapters[1].label == (
        "v0001 (lora), held-out Dice 0.682 [active, guard: not worse, automatic off]")


def test_adapter_list_shows_a_federated_version(connected, info, registry):
    """A version a federation made says so, with how many sites and rounds made it."""
    origin = {"id": None, "created": None, "note": "",
              "federation": {"id": "fl-1a2b3c4d", "rounds": 3, "sites": {"site-a": 5, "site-b": 5, "site-c": 4}}}
    rows = [like(registry["adapters"][0], imported_from=origin), registry["adapters"][1]]
    connected.registry_changed(like(registry, adapters=rows))
    assert connected.state.adapters[1].label.startswith("v0001 (lora, federated: 3 sites, 3 rounds), held-out Dice")
    assert connected.state.adapters[2].federated == ""


def test_adapter_list_names_the_pretrained_parent(connected, info, registry):
    """A LoRA version that continued a self-supervised one says which."""
    rows = [like(registry["adapters"][0], continued_from="v0003"), registry["adapters"][1]]
    connected.registry_changed(like(registry, adapters=rows))
    assert connected.state.adapters[1].label.startswith("v0001 (lora, from v0003), held-out Dice")
    assert connected.state.adapters[2].parent == ""


def test_lora_continues_a_selected_pretrained_version(connected, registry):
    rows = [like(registry["adapters"][0], version="v0003", method="ssl-lora"), registry["adapters"][1]]
    connected.registry_changed(like(registry, adapters=rows))
    connected.state.selected_adapter = "v0003"
    assert connected.training_parent("lora") == "v0003"
    assert connected.training_parent("decoder") is None  # only LoRA can continue a LoRA version
    connected.state.selected_adapter = "v0002"
    assert connected.training_parent("lora") is None  # an ordinary version is not a starting point


def test_pretraining_progress_and_result(connected, info):
    """Pretraining reports its own task's epochs and loss, not the adaptation's, and says what to do next."""
    connected.training_started("medsam_pretrain")
    stats = like(info["train_stats"], medsam_pretrain={"status": "RUNNING", "history": [
        {"epoch": 1, "train_loss": 0.52, "elapsed_s": 8.5}]})
    connected.training_update({"status": "RUNNING"}, like(info, train_stats=stats), max_epochs=4)
    assert connected.state.status == "Pretraining on the unlabelled scans: epoch 1 of 4, loss 0.5200."
    assert connected.state.progress == 0.25 and Action.START_PRETRAINING not in connected.enabled_actions()
    done = like(info["train_stats"], medsam_pretrain={"status": "DONE", "version": "v0003", "history": []})
    connected.training_update({"status": "DONE"}, like(info, train_stats=done), max_epochs=4)
    assert connected.state.status.startswith("Pretraining finished: v0003 is ready to review")
    assert Action.START_PRETRAINING in connected.enabled_actions()


def test_registry_with_base_active_and_after_rollback(connected, info, registry):
    connected.connected("http://127.0.0.1:8000", info, adapters=like(registry, active="base", adapters=[]))
    assert [a.label for a in connected.state.adapters] == ["base, not evaluated [active]"]
    assert connected.state.selected_adapter == "base"

    connected.state.selected_adapter = "v0002"
    rows = [like(a, active=a["version"] == "v0002") for a in registry["adapters"]]
    connected.registry_changed(like(registry, active="v0002", adapters=rows))
    assert [a.version for a in connected.state.adapters if a.active] == ["v0002"]
    assert connected.state.selected_adapter == "v0002"  # the selection is kept while it exists
    connected.registry_changed(like(registry, active="base", adapters=[]))
    assert connected.state.selected_adapter == "base"


def test_training_progress_and_outcomes(connected, info):
    connected.training_update(reply("train_status", status="RUNNING"), info, max_epochs=4)
    assert connected.state.training and connected.state.progress == 0.5
    assert connected.state.status == "Adapting: epoch 2 of 4, validation Dice 0.740."
    connected.training_update(reply("train_status", status="DONE"), info, max_epochs=4)
    assert not connected.state.training and connected.state.progress == 1.0
    assert "v2 is ready" in connected.state.status
    failed = reply("train_status", status="ERROR", details=["loading", "CUDA out of memory"])
    connected.training_update(failed, None, 4)
    assert connected.state.status == "Adaptation failed on the server: CUDA out of memory"


def test_sample_reason(connected):
    reason = "highest disagreement between adapters"
    chosen = reply("sample_diversity", id="lung2", chosen_by="uncertainty", reason=reason)
    connected.sample_chosen("uncertainty", chosen)
    assert connected.state.status == "uncertainty chose lung2: highest disagreement between adapters"


def test_sample_names_the_strategy_from_chosen_by_not_strategy(connected):
    """MONAI Label overwrites "strategy" in the reply with image info; the server names itself in "chosen_by"."""
    chosen = reply("sample_diversity", id="lung1", chosen_by="diversity", score=0.4321, rank=1, reason=None)
    assert "strategy" in chosen  # MONAI Label's image info, under the name a client might read
    connected.sample_chosen("hybrid", chosen)
    assert connected.state.sample_reason == "diversity chose lung1: score 0.432, rank 1"
    connected.sample_chosen("hybrid", {})
    assert connected.state.status == (
        "Nothing to label: every image on the server has a label (hybrid has no candidate)."
    )


def test_comparison_table_from_compare(connected):
    recorded = reply("compare")
    row = recorded["per_image"][0]
    compared = like(
        recorded,
        a="base",
        b="v0001",
        per_image=[
            like(row, image="breast1", label="lesion", dice_a=0.61, dice_b=0.7, diff=0.09),
            like(row, image="lung1", label="lesion", dice_a=0.8, dice_b=0.75, diff=-0.05),
        ],
        mean_dice_a=0.705,
        mean_dice_b=0.725,
        mean_diff=0.02,
        better="v0001",
        by=0.02,
        summary="v0001 is better by 0.020 mean Dice over 2 image-label pairs",
    )
    connected.begin(Action.COMPARE)
    connected.compared(compared)
    assert [r.cells for r in connected.state.comparison] == [
        ("breast1 / lesion", "0.610", "0.700", "+0.090"),
        ("lung1 / lesion", "0.800", "0.750", "-0.050"),
    ]
    assert connected.state.busy is None
    assert connected.state.status == (
        "base vs v0001 on held-out images: v0001 is better by 0.020 mean Dice over 2 image-label pairs "
        "(mean Dice base 0.705, v0001 0.725)."
    )


def test_failed_connect_leaves_panel_disconnected(connected):
    connected.begin(Action.CONNECT)
    connected.failed(ConnectionFailed("[Errno 111] Connection refused", "http://10.0.0.9:8000/info/"))
    assert not connected.state.connected and connected.enabled_actions() == {Action.CONNECT}


URL = "http://127.0.0.1:8000/infer/medsam_interactive?image=x"


@pytest.mark.parametrize(
    ("error", "action", "expected"),
    [
        (
            ConnectionFailed("[Errno 111] Connection refused", URL),
            Action.CONNECT,
            "Cannot reach http://127.0.0.1:8000: nothing answered ([Errno 111] Connection refused). "
            "Check the address and that the server is running.",
        ),
        (
            ServerTimeout("no answer", URL, 20.0),
            Action.SEGMENT,
            "The server did not answer within 20 s while segmenting the clicked slice. "
            "It may be busy (adaptation shares its CPU); try again in a moment.",
        ),
        (
            HTTPFailure(422, "roi must be [i0, i1, j0, j1, k0, k1] inside the image", URL),
            Action.SEGMENT,
            "The server refused to segment from the prompt: roi must be [i0, i1, j0, j1, k0, k1] inside the image",
        ),
        (
            HTTPFailure(401, "invalid token", URL),
            Action.UPLOAD,
            "The server refused the access token (HTTP 401): invalid token. Check the token.",
        ),
        (
            HTTPFailure(500, "Failed to execute infer", URL),
            Action.AUTO_SEGMENT,
            "The server failed while segmenting automatically (HTTP 500): Failed to execute infer. "
            "Nothing was changed in your scene; the server log has the details.",
        ),
        (
            BadResponse("the server's reply is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
            Action.CONNECT,
            "The server's reply could not be read while connecting: the server's reply is not valid JSON "
            "(Expecting value: line 1 column 1 (char 0)). Are the server app and this module the same version?",
        ),
        (
            TLSFailure("CERTIFICATE_VERIFY_FAILED", URL),
            Action.CONNECT,
            "The server's certificate could not be verified (CERTIFICATE_VERIFY_FAILED). "
            "Turn off 'Verify certificate' only for a server you trust.",
        ),
        (
            ValueError("The point at RAS (1.0, 2.0, 3.0) is outside the volume."),
            Action.SEGMENT,
            "The point at RAS (1.0, 2.0, 3.0) is outside the volume.",
        ),
    ],
)
def test_status_line_for_each_failure(error, action, expected):
    assert describe_error(error, action) == expected


def test_bad_json_error_comes_from_a_real_parse():
    """The BadResponse text above is what the client really produces for a non-JSON body."""
    from MedFMAdapt.MedFMAdaptLib.client import Response

    with pytest.raises(BadResponse) as caught:
        Response(200, {}, b"<html>proxy error</html>").json()
    assert str(caught.value).startswith("the server's reply is not valid JSON")
    with pytest.raises(json.JSONDecodeError):
        json.loads("<html>")
