"""What each finished panel action hands back: a status line plus the payload the presenter and the views need.

The Logic keeps no record of its last answers; a Job's `finish` returns one of these and the Widget passes it to
`Presenter.apply` (panel state) and shows its scene nodes. Scene nodes travel as they are (the GUI thread made them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
