"""The panel's actions, and what each one hands back when it finishes: a status line plus the payload the
presenter and the views need.

The Logic keeps no record of its last answers; a Job's `finish` returns one of these and the Widget passes it to
`Presenter.apply` (panel state) and shows its scene nodes. Scene nodes travel as they are (the GUI thread made them).
Both the Logic and the presenter read this module; the Logic imports nothing from the presenter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Action(str, Enum):  # noqa: UP042 -- StrEnum is 3.11+, and Slicer 5.6 ships Python 3.9
    """Every button of the panel that talks to the server or changes the scene."""

    CONNECT = "connect"
    UPLOAD = "upload"
    NEXT_SAMPLE = "next_sample"
    AUTO_SEGMENT = "auto_segment"
    SEGMENT = "segment"  # a prompt was placed: its slice is segmented at once
    PROPAGATE = "propagate"  # every prompt, followed through the structure
    UNDO_PROMPT = "undo_prompt"
    TOGGLE_POINT = "toggle_point"  # place foreground points <-> background points
    SUBMIT = "submit"
    HELD_OUT = "held_out"
    START_TRAINING = "start_training"
    START_PRETRAINING = "start_pretraining"
    STOP_TRAINING = "stop_training"
    REVIEW = "review"
    COMPARE = "compare"
    TOGGLE_REVIEW = "toggle_review"
    ACTIVATE = "activate"
    ROLLBACK = "rollback"
    POLL_TRAINING = "poll_training"  # the timer's status poll while a train task runs (no button)


@dataclass
class Outcome:
    """An action finished; `message` is its status line."""

    message: str


@dataclass
class Connected(Outcome):
    url: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    registry: dict[str, Any] = field(default_factory=dict)
    held_out: list[str] = field(default_factory=list)
    sessions: dict[str, Any] = field(default_factory=dict)  # GET /medfm/sessions
    session_id: str = ""  # this panel's annotation session


@dataclass
class Uploaded(Outcome):
    image_id: str = ""


@dataclass
class SampleLoaded(Outcome):
    """A case was fetched (volume is None when the strategy had nothing left to label)."""

    strategy: str = ""
    sample: dict[str, Any] = field(default_factory=dict)
    volume: Any = None
    image_id: str | None = None


@dataclass
class Segmented(Outcome):
    """A model answer is in the working segmentation. `change` (prompts only) is what undo puts back."""

    segmentation: Any = None
    segment_id: str = ""
    overlay: Any = None
    params: dict[str, Any] = field(default_factory=dict)  # the server's reply (timing, slices, adapter, ...)
    label_path: Any = None
    extra_files: dict[str, Any] = field(default_factory=dict)  # e.g. the downloaded uncertainty map
    change: Any = None  # scene.SliceChange
    placed: Any = None  # prompt_nodes.Placed that made this request; None for Propagate and Auto segment
    kept: list[int] = field(default_factory=list)  # slices the answer left alone because they were edited by hand


@dataclass
class PromptUndone(Outcome):
    pass


@dataclass
class Submitted(Outcome):
    image_id: str = ""
    sessions: dict[str, Any] | None = None  # None when the label was saved but the figures could not be read


@dataclass
class TrainingStarted(Outcome):
    task: str = ""
    max_epochs: int = 1


@dataclass
class TrainingPolled(Outcome):
    status: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    registry: dict[str, Any] | None = None  # re-read once the task is no longer running


@dataclass
class ReviewReady(Outcome):
    base: Any = None
    adapted: Any = None


@dataclass
class Compared(Outcome):
    comparison: dict[str, Any] = field(default_factory=dict)


@dataclass
class RegistryChanged(Outcome):
    registry: dict[str, Any] = field(default_factory=dict)


@dataclass
class HeldOutChanged(Outcome):
    held_out: list[str] = field(default_factory=list)


@dataclass
class PromptStep:
    """One prompt's answer, as undo needs it: the image, what the answer changed, and the prompt (None for
    Propagate, whose markups stay)."""

    image_id: str
    change: Any  # scene.SliceChange
    placed: Any = None  # prompt_nodes.Placed
