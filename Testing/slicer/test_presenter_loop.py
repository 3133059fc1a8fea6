"""The annotation loop's panel rules without Qt: each typed outcome, prompts and undo, shortcuts, held-out marking
and the session panel, from the recorded server replies."""

from __future__ import annotations

import re

import pytest

from MedFMAdapt.MedFMAdaptLib.errors import ServerTimeout
from MedFMAdapt.MedFMAdaptLib.outcomes import (
    Compared,
    Connected,
    HeldOutChanged,
    PromptUndone,
    RegistryChanged,
    ReviewReady,
    SampleLoaded,
    Segmented,
    Submitted,
    TrainingPolled,
    TrainingStarted,
    Uploaded,
)
from MedFMAdapt.MedFMAdaptLib.presenter import (
    BACKGROUND,
    FOREGROUND,
    SHORTCUTS,
    UNDO_DEPTH,
    Action,
    Presenter,
)
from Testing.slicer.replies import like, reply
from Testing.slicer.ui_preview import REPO

SESSION = "slicer-0123456789ab"


def sessions_reply(labels: int = 3, per_hour: float | None = 42.5) -> dict:
    """GET /medfm/sessions (recorded) with this panel's session holding `labels` labels."""
    recorded = reply("sessions")
    row = recorded["sessions"][0]
    other = like(row, session="slicer-someone-else", labels=9, labels_per_hour=80.0)
    mine = like(row, session=SESSION, labels=labels, labels_per_hour=per_hour, annotation_seconds=254.0)
    progress = [like(recorded["progress"][0], version="v0001", heldout_dice=0.812)] if recorded["progress"] else []
    return like(recorded, sessions=[other, mine], progress=progress)


@pytest.fixture
def on_case(info, registry) -> Presenter:
    """Connected through the Connect outcome, with case7 (on the server) selected."""
    presenter = Presenter()
    presenter.begin(Action.CONNECT)
    presenter.apply(Action.CONNECT, Connected("Connected.", "http://127.0.0.1:8000", info, registry, ["case3"],
                                              sessions_reply(), SESSION))
    presenter.volume_changed(True, "case7")
    return presenter


def test_connect_outcome_fills_held_out_and_the_session_panel(on_case):
    s = on_case.state
    assert s.connected and s.busy is None and s.held_out == ["case3"]
    assert s.session.lines == ("3 labels this session", "42.5 per hour, 4.2 min annotating",
                               "v0001: held-out Dice 0.812")


def test_session_panel_without_labels_or_evidence(info):
    presenter = Presenter()
    registry = like(reply("registry"), active="base", adapters=[])
    presenter.apply(Action.CONNECT, Connected("Connected.", "http://x", info, registry, [],
                                              like(reply("sessions"), sessions=[], progress=[]), SESSION))
    assert presenter.state.session.lines == ("0 labels this session", "no timed label yet",
                                             "base: held-out Dice not measured (mark held-out images)")


def test_submit_outcome_updates_the_session_panel(on_case):
    on_case.begin(Action.SUBMIT)
    on_case.apply(Action.SUBMIT, Submitted("Saved the label of case7.", "case7", sessions_reply(labels=4)))
    assert on_case.state.session.labels == 4 and on_case.state.status == "Saved the label of case7."


def test_held_out_marking(on_case):
    assert on_case.enabled(Action.HELD_OUT) and not on_case.state.image_held_out
    on_case.begin(Action.HELD_OUT)
    assert not on_case.enabled(Action.HELD_OUT)
    on_case.apply(Action.HELD_OUT, HeldOutChanged("case7 is held out.", ["case3", "case7"]))
    assert on_case.state.image_held_out and on_case.state.status == "case7 is held out."
    on_case.volume_changed(True, None)  # a volume not on the server cannot be held out
    assert not on_case.enabled(Action.HELD_OUT) and not on_case.state.image_held_out


def test_prompt_answers_stack_for_undo_per_case(on_case):
    assert on_case.last_prompt_step() is None and not on_case.enabled(Action.UNDO_PROMPT)
    for n in range(UNDO_DEPTH + 2):
        on_case.begin(Action.SEGMENT)
        on_case.apply(Action.SEGMENT, Segmented(f"Segment (slice {n}).", change=f"change {n}", placed=f"point {n}"))
    step = on_case.last_prompt_step()
    assert (step.image_id, step.change, step.placed) == ("case7", f"change {UNDO_DEPTH + 1}", f"point {UNDO_DEPTH + 1}")
    assert len(on_case.state.prompt_steps) == UNDO_DEPTH  # the oldest fall off

    on_case.volume_changed(True, "case8")  # another case: its own (empty) history
    assert on_case.last_prompt_step() is None and not on_case.enabled(Action.UNDO_PROMPT)
    on_case.apply(Action.SEGMENT, Segmented("Segment (slice 1).", change="change on case8"))
    on_case.volume_changed(True, "case7")  # back again: case7's steps still apply, case8's newer one does not
    assert on_case.enabled(Action.UNDO_PROMPT) and on_case.last_prompt_step().change == f"change {UNDO_DEPTH + 1}"

    on_case.begin(Action.UNDO_PROMPT)
    on_case.apply(Action.UNDO_PROMPT, PromptUndone("Undid the last prompt (slices 4)."))
    assert on_case.last_prompt_step().change == f"change {UNDO_DEPTH}"
    assert [s.change for s in on_case.state.prompt_steps][-1] == "change on case8"  # the other case's step stays
    assert on_case.state.status == "Undid the last prompt (slices 4)."


def test_auto_segment_is_not_an_undo_step(on_case):
    on_case.apply(Action.AUTO_SEGMENT, Segmented("Auto segment: lesion.", segment_id="lesion"))
    assert on_case.state.has_result and on_case.state.prompt_steps == []


def test_a_prompt_placed_during_a_call_waits_for_it(on_case):
    assert on_case.prompt_placed("first") is True
    on_case.begin(Action.SEGMENT)
    assert on_case.prompt_placed("second") is False
    assert on_case.prompt_placed("third") is False  # only the newest waits: it sees every placed prompt anyway
    assert "Still answering" in on_case.state.status
    on_case.apply(Action.SEGMENT, Segmented("Segment (slice 3).", change="c"))
    assert on_case.take_pending() == "third" and on_case.take_pending() is None


def test_a_waiting_prompt_is_dropped_with_its_case(on_case):
    on_case.begin(Action.SEGMENT)
    on_case.prompt_placed("on case7")
    on_case.volume_changed(True, "case8")
    assert on_case.take_pending() is None


def test_toggle_point_switches_the_placement(on_case):
    assert on_case.state.point_role == FOREGROUND
    assert on_case.toggle_point() == BACKGROUND and "background" in on_case.state.status
    assert on_case.toggle_point() == FOREGROUND
    on_case.point_tool_chosen(BACKGROUND)  # the radiologist pressed the background place button
    assert on_case.state.point_role == BACKGROUND


def test_shortcuts_run_only_live_actions(on_case):
    assert set(SHORTCUTS) == {"N", "S", "X", "U", "P"}
    assert on_case.shortcut("n") is Action.NEXT_SAMPLE and on_case.shortcut("x") is Action.TOGGLE_POINT
    assert on_case.shortcut("S") is None  # nothing segmented yet
    assert on_case.shortcut("U") is None and on_case.shortcut("P") is None
    assert on_case.shortcut("Q") is None  # not a shortcut
    on_case.prompts_changed(2)
    on_case.apply(Action.SEGMENT, Segmented("Segment.", change="c", placed="p"))
    assert [on_case.shortcut(k) for k in "SUP"] == [Action.SUBMIT, Action.UNDO_PROMPT, Action.PROPAGATE]
    on_case.begin(Action.PROPAGATE)
    assert all(on_case.shortcut(k) is None for k in SHORTCUTS)  # nothing runs twice


def test_the_widget_binds_every_shortcut_to_a_slot():
    """MedFMAdapt.py's onShortcut maps each shortcut's action to a slot (no key silently does nothing)."""
    text = (REPO / "MedFMAdapt/MedFMAdapt.py").read_text()
    slots = re.search(r"def onShortcut.*?slots = \{(.*?)\}", text, re.S).group(1)
    assert {f"Action.{a.name}" for a in SHORTCUTS.values()} == set(re.findall(r"Action\.\w+", slots))


def test_training_outcomes_drive_progress_and_the_registry(on_case, info, registry):
    on_case.begin(Action.START_TRAINING)
    on_case.apply(Action.START_TRAINING, TrainingStarted("Adaptation (lora, 4 epochs) started.", "medsam_adapt", 4))
    assert on_case.state.training and on_case.state.max_epochs == 4
    assert on_case.enabled(Action.POLL_TRAINING)

    on_case.begin(Action.AUTO_SEGMENT)  # a call runs while the poll answers
    on_case.apply(Action.POLL_TRAINING, TrainingPolled("RUNNING", {"status": "RUNNING"}, info))
    assert on_case.state.busy is Action.AUTO_SEGMENT  # the poll leaves the running call alone
    assert on_case.state.progress == 0.5  # 2 of 4 epochs in the recorded history
    on_case.succeeded("Auto segment done.")

    v3 = like(registry["adapters"][1], version="v0003", heldout_dice=0.83)
    finished = like(registry, active="v0003", adapters=[*registry["adapters"], v3])
    on_case.apply(Action.POLL_TRAINING, TrainingPolled("DONE", {"status": "DONE"}, info, finished))
    assert not on_case.state.training and "v2 is ready to review" in on_case.state.status
    assert [a.version for a in on_case.state.adapters][-1] == "v0003"
    assert on_case.state.session.active == "v0003" and on_case.state.session.active_dice == 0.83


def test_a_failed_poll_stops_polling_but_not_the_running_call(on_case):
    on_case.state.training = True
    on_case.begin(Action.REVIEW)
    on_case.failed(ServerTimeout("no answer", "http://127.0.0.1:8000/train/", 20.0), Action.POLL_TRAINING)
    assert on_case.state.busy is Action.REVIEW and not on_case.state.training
    assert "reading the training progress" in on_case.state.status


def test_other_outcomes(on_case, registry):
    on_case.apply(Action.UPLOAD, Uploaded("Uploaded 'CT' as ct_1.", "ct_1"))
    assert on_case.state.image_id == "ct_1"
    on_case.apply(Action.NEXT_SAMPLE, SampleLoaded("Loaded case9.", "random", {"id": "case9", "chosen_by": "random"}))
    assert on_case.state.sample_reason == "random chose case9."
    on_case.apply(Action.REVIEW, ReviewReady("Review ready."))
    assert on_case.state.has_review and on_case.enabled(Action.TOGGLE_REVIEW)
    on_case.apply(Action.COMPARE, Compared("1 image", like(reply("compare"))))
    assert on_case.state.comparison
    on_case.adapter_selected("v0002")
    on_case.apply(Action.ACTIVATE, RegistryChanged("Adapter v0002 is active.", like(registry, active="v0002")))
    assert on_case.state.selected_adapter == "v0002" and on_case.state.status == "Adapter v0002 is active."
    assert [a.version for a in on_case.state.adapters if a.active] == ["v0002"]


def test_a_submit_whose_figures_could_not_be_read_keeps_the_session_panel(on_case):
    on_case.apply(Action.SUBMIT, Submitted("Saved the label of case7 on the server.", "case7", None))
    assert on_case.state.session.labels == 3 and on_case.state.status.startswith("Saved the label")


def test_a_submitted_training_counts_as_running(on_case, info):
    """MONAI Label answers SUBMITTED before RUNNING: polling must go on."""
    on_case.apply(Action.START_TRAINING, TrainingStarted("Adaptation started.", "medsam_adapt", 4))
    on_case.apply(Action.POLL_TRAINING, TrainingPolled("SUBMITTED", {"status": "SUBMITTED"}, info))
    assert on_case.state.training and on_case.enabled(Action.POLL_TRAINING)
