"""What the panel shows and which buttons are live, as plain Python.

The Widget only copies this state onto Qt widgets, so every rule about the GUI (what is enabled when,
what the status line says for each failure) is tested without Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .client import AUTO_MODEL, INTERACTIVE_MODEL, PRETRAINER, RUNNING_STATES, TRAINER
from .errors import (
    BadResponse,
    ConnectionFailed,
    HTTPFailure,
    ServerError,
    ServerTimeout,
    TLSFailure,
)
from .outcomes import (
    Action,
    Compared,
    Connected,
    HeldOutChanged,
    Outcome,
    PromptStep,
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

# What the panel is doing, in words that fit "... while <doing>" and "The server refused to <verb>".
DOING = {
    Action.CONNECT: ("connecting", "connect"),
    Action.UPLOAD: ("uploading the volume", "accept the volume"),
    Action.NEXT_SAMPLE: ("fetching the next sample", "send the image"),
    Action.AUTO_SEGMENT: ("segmenting automatically", "segment the volume"),
    Action.SEGMENT: ("segmenting the clicked slice", "segment from the prompt"),
    Action.PROPAGATE: ("following the structure through the volume", "segment from the prompts"),
    Action.UNDO_PROMPT: ("undoing the last prompt", "undo the prompt"),
    Action.TOGGLE_POINT: ("switching the point type", "switch the point type"),
    Action.SUBMIT: ("submitting the label", "accept the label"),
    Action.HELD_OUT: ("changing the held-out images", "change the held-out images"),
    Action.POLL_TRAINING: ("reading the training progress", "report the training progress"),
    Action.START_TRAINING: ("starting adaptation", "start adaptation"),
    Action.START_PRETRAINING: ("starting pretraining on the unlabelled scans", "start pretraining"),
    Action.STOP_TRAINING: ("stopping adaptation", "stop adaptation"),
    Action.REVIEW: ("running base and adapted models", "run the review"),
    Action.COMPARE: ("comparing the adapters on the held-out images", "compare the adapters"),
    Action.TOGGLE_REVIEW: ("switching the review view", "switch the view"),
    Action.ACTIVATE: ("activating the adapter", "activate the adapter"),
    Action.ROLLBACK: ("rolling back the adapter", "roll back the adapter"),
}

# The keys of the loop a session repeats; live only while the module is shown, each only when its action is.
SHORTCUTS = {
    "N": Action.NEXT_SAMPLE,
    "S": Action.SUBMIT,
    "X": Action.TOGGLE_POINT,
    "U": Action.UNDO_PROMPT,
    "P": Action.PROPAGATE,
}
FOREGROUND, BACKGROUND = "foreground", "background"
UNDO_DEPTH = 20  # prompts that can be taken back, newest first


def describe_error(error: BaseException, action: Action | None = None) -> str:
    """One status line, in plain words, for a failed call; includes the server's own message when it sent one."""
    doing, verb = DOING.get(action, ("talking to the server", "do that"))
    url = getattr(error, "url", "") or "the server"
    if isinstance(error, HTTPFailure):
        if error.status in (401, 403):
            return f"The server refused the access token (HTTP {error.status}): {error.detail}. Check the token."
        if 400 <= error.status < 500:
            return f"The server refused to {verb}: {error.detail}"
        return (
            f"The server failed while {doing} (HTTP {error.status}): {error.detail}. "
            "Nothing was changed in your scene; the server log has the details."
        )
    if isinstance(error, ServerTimeout):
        return (
            f"The server did not answer within {error.timeout:g} s while {doing}. "
            "It may be busy (adaptation shares its CPU); try again in a moment."
        )
    if isinstance(error, TLSFailure):
        return (
            f"The server's certificate could not be verified ({error}). "
            "Turn off 'Verify certificate' only for a server you trust."
        )
    if isinstance(error, ConnectionFailed):
        return (
            f"Cannot reach {_base(url)}: nothing answered ({error}). Check the address and that the server is running."
        )
    if isinstance(error, BadResponse):
        return (
            f"The server's reply could not be read while {doing}: {error}. "
            "Are the server app and this module the same version?"
        )
    if isinstance(error, ServerError):
        return f"Server problem while {doing}: {error}"
    if isinstance(error, (ValueError, OSError)):
        return str(error)
    return f"Unexpected error while {doing}: {error!r}"


def _base(url: str) -> str:
    parts = url.split("/")
    return "/".join(parts[:3]) if "://" in url else url


def _number(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class AdapterRow:
    """One line of the model selector: an adapter version and how good it is on held-out data.

    `dice` is the held-out Dice the server measured when the version was registered (its activation decision);
    `val_dice` the best validation Dice of its training run, shown only when there is no held-out number.
    `guard` is the server's activation decision (None for base or a version never checked), `reason` its words,
    `by_hand` whether an admin activated it anyway; `prompts_only` that the guard let it serve box and click
    prompts but not automatic mode (its automatic masks were worse than a box on the live version); `verdict` the
    guard's word for it against what was live, with each mode's interval in `intervals`.
    """

    version: str
    method: str = ""
    dice: float | None = None
    active: bool = False
    val_dice: float | None = None
    guard: bool | None = None
    reason: str = ""
    by_hand: bool = False
    prompts_only: bool = False
    federated: str = ""
    parent: str = ""
    verdict: str = ""  # the guard's word: better / not worse / worse / cannot tell yet (empty before it said one)
    intervals: str = ""  # per mode, the paired difference and its interval, shown on hover above the reason

    @property
    def tip(self) -> str:
        """What the selector shows on hover: the guard's intervals, then its reason."""
        return "\n".join(t for t in (self.intervals, self.reason) if t)

    @property
    def label(self) -> str:
        if self.dice is not None:
            dice = f"held-out Dice {self.dice:.3f}"
        elif self.val_dice is not None:
            dice = f"no held-out Dice (validation {self.val_dice:.3f})"
        else:
            dice = "not evaluated"
        details = [self.method] + ([f"from {self.parent}"] if self.parent else []) + \
            ([self.federated] if self.federated else [])
        method = f" ({', '.join(details)})" if self.method else ""
        flags = (["active"] if self.active else []) + (["activated by hand"] if self.by_hand else []) + \
            ([f"guard: {self.verdict}"] if self.verdict else []) + \
            (["not activated by the guard"] if self.guard is False else []) + \
            (["automatic off"] if self.prompts_only else [])
        return f"{self.version}{method}, {dice}" + (f" [{', '.join(flags)}]" if flags else "")


@dataclass
class ComparisonRow:
    """One line of the Review table: a held-out image (and label) with the Dice of base and of the adapter."""

    image: str
    label: str
    dice_base: float | None
    dice_adapted: float | None
    diff: float | None

    @property
    def cells(self) -> tuple[str, str, str, str]:
        def fmt(value: float | None, sign: str = "") -> str:
            return "-" if value is None else f"{value:{sign}.3f}"

        name = f"{self.image} / {self.label}" if self.label else self.image
        return name, fmt(self.dice_base), fmt(self.dice_adapted), fmt(self.diff, "+")


@dataclass
class SessionFigures:
    """The session panel: this Slicer session's labels and pace, and how good the live adapter is."""

    labels: int = 0
    labels_per_hour: float | None = None
    annotation_seconds: float = 0.0
    active: str = "base"
    active_dice: float | None = None

    @property
    def lines(self) -> tuple[str, str, str]:
        rate = f"{self.labels_per_hour:.1f} per hour" if self.labels_per_hour is not None else "no timed label yet"
        minutes = f", {self.annotation_seconds / 60:.1f} min annotating" if self.annotation_seconds else ""
        dice = f"{self.active_dice:.3f}" if self.active_dice is not None else "not measured (mark held-out images)"
        return (f"{self.labels} label{'s' * (self.labels != 1)} this session",
                f"{rate}{minutes}", f"{self.active}: held-out Dice {dice}")


@dataclass
class PanelState:
    """Everything the panel shows; the Widget renders it and never keeps state of its own."""

    connected: bool = False
    busy: Action | None = None
    server_url: str = ""
    fm: str = ""
    models: dict[str, Any] = field(default_factory=dict)
    trainers: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    labels: Any = field(default_factory=dict)
    adapters: list[AdapterRow] = field(default_factory=list)
    selected_adapter: str = "base"
    has_volume: bool = False
    image_id: str | None = None
    has_prompts: bool = False
    has_result: bool = False
    has_review: bool = False
    training: bool = False
    training_task: str = TRAINER  # which train task the progress is about: adaptation or pretraining
    training_history: list[dict[str, Any]] = field(default_factory=list)
    progress: float = 0.0
    sample_reason: str = ""
    comparison: list[ComparisonRow] = field(default_factory=list)
    comparison_summary: str = ""
    uncertainty: bool = False
    held_out: list[str] = field(default_factory=list)  # the server's held-out image ids
    point_role: str = FOREGROUND  # which point the next placement (and the X key) makes
    propagate: bool = False  # the setting: each placed prompt follows the structure instead of its slice only
    prompt_steps: list[PromptStep] = field(default_factory=list)  # newest last
    pending: Any = None  # a prompt placed while a call ran; sent when it ends
    max_epochs: int = 1
    session_id: str = ""
    session: SessionFigures = field(default_factory=SessionFigures)
    status: str = "Not connected. Enter the server address and press Connect."

    @property
    def image_held_out(self) -> bool:
        return self.image_id is not None and self.image_id in self.held_out


class Presenter:
    """Turns server answers and user events into PanelState, and decides what is enabled."""

    def __init__(self) -> None:
        self.state = PanelState()

    # ---- enabled actions ------------------------------------------------------------------------------------------

    def enabled(self, action: Action) -> bool:
        """Whether the button for `action` is live now."""
        s = self.state
        if action is Action.STOP_TRAINING:
            return s.connected and s.training and s.busy is None
        if action is Action.POLL_TRAINING:
            return s.connected and s.training
        if s.busy is not None:
            return False
        if action is Action.CONNECT:
            return True
        if not s.connected:
            return False
        on_server = s.image_id is not None
        rules = {
            Action.UPLOAD: s.has_volume,
            Action.NEXT_SAMPLE: bool(s.strategies),
            Action.AUTO_SEGMENT: on_server and AUTO_MODEL in s.models,
            Action.SEGMENT: on_server and INTERACTIVE_MODEL in s.models,
            Action.PROPAGATE: on_server and s.has_prompts and INTERACTIVE_MODEL in s.models,
            Action.UNDO_PROMPT: self.last_prompt_step() is not None,
            Action.TOGGLE_POINT: on_server and INTERACTIVE_MODEL in s.models,
            Action.SUBMIT: on_server and s.has_result,
            Action.HELD_OUT: on_server,
            Action.START_TRAINING: TRAINER in s.trainers and not s.training,
            Action.START_PRETRAINING: PRETRAINER in s.trainers and not s.training,
            Action.REVIEW: on_server and AUTO_MODEL in s.models and any(a.version != "base" for a in s.adapters),
            Action.COMPARE: True,
            Action.TOGGLE_REVIEW: s.has_review,
            Action.ACTIVATE: self._selected_is_inactive(),
            Action.ROLLBACK: len(s.adapters) > 1,
        }
        return bool(rules[action])

    def enabled_actions(self) -> set[Action]:
        return {a for a in Action if self.enabled(a)}

    def _selected_is_inactive(self) -> bool:
        return any(a.version == self.state.selected_adapter and not a.active for a in self.state.adapters)

    # ---- events ---------------------------------------------------------------------------------------------------

    def begin(self, action: Action, what: str | None = None) -> None:
        """A long call starts: everything else is disabled until it ends."""
        self.state.busy = action
        self.state.progress = 0.0
        self.state.status = (what or DOING[action][0]).capitalize() + "..."

    def succeeded(self, message: str) -> None:
        self.state.busy = None
        self.state.status = message

    def failed(self, error: BaseException, action: Action | None = None) -> None:
        """A call failed: show why; a failed connect leaves the panel disconnected. A failed progress poll stops
        the polling but leaves whatever call is running alone."""
        action = action or self.state.busy
        if action is Action.POLL_TRAINING:
            self.state.training = False
        else:
            self.state.busy = None
        if action is Action.CONNECT or isinstance(error, ConnectionFailed):
            self.state.connected = False
        self.state.status = describe_error(error, action)

    def connected(self, url: str, info: dict[str, Any], adapters: dict[str, Any]) -> None:
        """Fill the panel from GET /info/ and the adapter registry's reply (GET /medfm/adapters)."""
        s = self.state
        s.connected = True
        s.server_url = url
        s.models = dict(info.get("models") or {})
        s.trainers = list((info.get("trainers") or {}).keys())
        s.strategies = list((info.get("strategies") or {}).keys())
        s.labels = info.get("labels") or {}
        s.fm = self._fm_name(info)
        s.adapters = self._adapter_rows(adapters)
        s.comparison, s.comparison_summary = [], ""
        active = next((a.version for a in s.adapters if a.active), "base")
        s.selected_adapter = active
        s.training_history = self._history(info)
        names = ", ".join(a.version for a in s.adapters) or "none"
        s.busy = None
        s.status = f"Connected to {url}. Foundation model: {s.fm or 'unknown'}; adapters: {names}."

    def registry_changed(self, adapters: dict[str, Any]) -> None:
        """The registry changed (activate, rollback, a finished adaptation): new rows, selection kept if it exists."""
        s = self.state
        s.adapters = self._adapter_rows(adapters)
        if not any(a.version == s.selected_adapter for a in s.adapters):
            s.selected_adapter = next((a.version for a in s.adapters if a.active), "base")
        active = next((a for a in s.adapters if a.active), None)
        if active is not None and active.version != s.session.active:  # the live version changed
            s.session.active, s.session.active_dice = active.version, active.dice

    def volume_changed(self, has_volume: bool, image_id: str | None = None) -> None:
        """A different volume is selected: results and prompts belong to the old one (its undo steps are kept and
        apply again when it is selected again)."""
        s = self.state
        if image_id != s.image_id or not has_volume:
            s.has_result = False
            s.has_review = False
            s.pending = None
        s.has_volume = has_volume
        s.image_id = image_id

    # ---- prompts --------------------------------------------------------------------------------------------------

    def prompts_changed(self, count: int) -> None:
        """How many prompts (points and box) are placed: Propagate needs one."""
        self.state.has_prompts = count > 0

    def prompt_placed(self, placed: Any) -> bool:
        """A prompt was placed: True to send it now; while a call runs it waits (the newest one) and is sent after."""
        if self.state.busy is not None:
            self.state.pending = placed
            self.state.status = "Still answering the last prompt; the new one follows."
            return False
        return self.enabled(Action.SEGMENT)

    def take_pending(self) -> Any:
        """The prompt that waited for the last call, once (None when none did)."""
        pending, self.state.pending = self.state.pending, None
        return pending

    def toggle_point(self) -> str:
        """Switch which point the next placement makes (the X key); returns the new role."""
        s = self.state
        s.point_role = BACKGROUND if s.point_role == FOREGROUND else FOREGROUND
        s.status = f"Placing {s.point_role} points" + (
            ": click where the mask should not be." if s.point_role == BACKGROUND else ": click inside the structure.")
        return s.point_role

    def point_tool_chosen(self, role: str) -> None:
        self.state.point_role = role

    def set_propagate(self, propagate: bool) -> None:
        self.state.propagate = bool(propagate)

    def last_prompt_step(self) -> PromptStep | None:
        """The newest prompt on the case shown (each case keeps its own steps)."""
        return next((s for s in reversed(self.state.prompt_steps) if s.image_id == self.state.image_id), None)

    def set_uncertainty(self, uncertainty: bool) -> None:
        self.state.uncertainty = bool(uncertainty)

    def adapter_selected(self, version: str | None) -> None:
        self.state.selected_adapter = version or "base"

    def shortcut(self, key: str) -> Action | None:
        """The action a shortcut key runs now, or None when that action is not available."""
        action = SHORTCUTS.get(key.upper())
        return action if action is not None and self.enabled(action) else None

    # ---- outcomes -------------------------------------------------------------------------------------------------

    def apply(self, action: Action, outcome: Outcome) -> None:
        """A job finished: its status line, then what its outcome changes in the panel."""
        s = self.state
        if action is not Action.POLL_TRAINING:
            s.busy = None
            s.status = outcome.message
        if isinstance(outcome, Connected):
            self.connected(outcome.url, outcome.info, outcome.registry)
            s.held_out = list(outcome.held_out)
            s.session_id = outcome.session_id
            self.sessions_read(outcome.sessions)
        elif isinstance(outcome, Uploaded):
            self.volume_changed(True, outcome.image_id)
        elif isinstance(outcome, SampleLoaded):
            self.sample_chosen(outcome.strategy, outcome.sample)
        elif isinstance(outcome, Segmented):
            s.has_result = True
            if outcome.change is not None and s.image_id is not None:
                s.prompt_steps = [*s.prompt_steps, PromptStep(s.image_id, outcome.change, outcome.placed)]
                s.prompt_steps = s.prompt_steps[-UNDO_DEPTH:]  # the oldest fall off, whichever case they were on
        elif isinstance(outcome, PromptUndone):
            undone = self.last_prompt_step()
            s.prompt_steps = [step for step in s.prompt_steps if step is not undone]
        elif isinstance(outcome, Submitted) and outcome.sessions is not None:
            self.sessions_read(outcome.sessions)
        elif isinstance(outcome, TrainingStarted):
            s.training = True
            s.max_epochs = outcome.max_epochs
            self.training_started(outcome.task)
        elif isinstance(outcome, TrainingPolled):
            self.training_update(outcome.status, outcome.info, s.max_epochs)
            if outcome.registry is not None:
                self.registry_changed(outcome.registry)
        elif isinstance(outcome, ReviewReady):
            s.has_review = True
        elif isinstance(outcome, Compared):
            self.compared(outcome.comparison)
        elif isinstance(outcome, RegistryChanged):
            self.registry_changed(outcome.registry)
        elif isinstance(outcome, HeldOutChanged):
            s.held_out = list(outcome.held_out)

    def sessions_read(self, reply: dict[str, Any]) -> None:
        """The session panel from GET /medfm/sessions: this session's row, and the active version's held-out Dice."""
        s = self.state
        rows = [r for r in reply.get("sessions") or [] if isinstance(r, dict)]
        mine = next((r for r in rows if r.get("session") == s.session_id), {})
        active = next((a for a in s.adapters if a.active), None)
        version = active.version if active else "base"
        progress = {str(r.get("version")): _number(r.get("heldout_dice"))
                    for r in reply.get("progress") or [] if isinstance(r, dict)}
        dice = progress.get(version) if progress.get(version) is not None else (active.dice if active else None)
        s.session = SessionFigures(int(mine.get("labels") or 0), _number(mine.get("labels_per_hour")),
                                   _number(mine.get("annotation_seconds")) or 0.0, version, dice)

    def training_parent(self, method: str) -> str | None:
        """The hybrid: LoRA adaptation continues the selected adapter when that is a pretrained (`ssl-lora`) one."""
        selected = next((a for a in self.state.adapters if a.version == self.state.selected_adapter), None)
        if selected is not None and selected.method == "ssl-lora" and method in ("lora", "dora"):
            return selected.version
        return None

    def training_started(self, task: str) -> None:
        """A train task was started from the panel: progress from now on is about it."""
        self.state.training_task = task
        self.state.training_history = []

    def training_update(self, status: dict[str, Any], info: dict[str, Any] | None, max_epochs: int) -> None:
        """Progress from GET /train/ and the history in /info/ train_stats (of the task the panel started)."""
        s = self.state
        task = s.training_task
        what = "Pretraining on the unlabelled scans" if task == PRETRAINER else "Adapting"
        state = str(status.get("status", "")).upper()
        s.training = state in RUNNING_STATES
        if info is not None:
            s.training_history = self._history(info, task)
        epochs_done = max((int(h.get("epoch", 0)) for h in s.training_history), default=0)
        s.progress = min(1.0, epochs_done / max_epochs) if max_epochs > 0 else 0.0
        if s.training:
            last = s.training_history[-1] if s.training_history else {}
            dice, loss = last.get("val_dice"), last.get("train_loss")
            detail = (f", validation Dice {float(dice):.3f}" if dice is not None else
                      f", loss {float(loss):.4f}" if loss is not None and task == PRETRAINER else "")
            s.status = f"{what}: epoch {epochs_done} of {max_epochs}{detail}."
        elif state == "DONE":
            s.progress = 1.0
            version = (info or {}).get("train_stats", {}).get(task, {})
            name = version.get("version") or "a new version"
            s.status = (f"Pretraining finished: {name} is ready to review; adapt with LoRA from it (parent)."
                        if task == PRETRAINER else f"Adaptation finished: {name} is ready to review.")
        elif state == "ERROR":
            details = status.get("details") or []
            last_line = details[-1] if isinstance(details, list) and details else str(details or "no details")
            s.status = f"{'Pretraining' if task == PRETRAINER else 'Adaptation'} failed on the server: {last_line}"

    def sample_chosen(self, strategy: str, result: dict[str, Any]) -> None:
        """Say which image the active-learning strategy picked and why, in the server's own words ("reason").

        The strategy's name comes from "chosen_by": MONAI Label overwrites "strategy" in the reply with image info.
        An empty reply means every image already has a label.
        """
        s = self.state
        name = str(result.get("chosen_by") or strategy or "the server")
        if not result.get("id"):
            s.sample_reason = f"Nothing to label: every image on the server has a label ({name} has no candidate)."
        else:
            reason = result.get("reason")
            if not reason:
                score, rank = _number(result.get("score")), result.get("rank")
                parts = ([f"score {score:.3g}"] if score is not None else []) + ([f"rank {rank}"] if rank else [])
                reason = ", ".join(parts)
            s.sample_reason = f"{name} chose {result['id']}" + (f": {reason}" if reason else ".")
        s.busy = None
        s.status = s.sample_reason

    def compared(self, result: dict[str, Any]) -> None:
        """Fill the Review table from GET /medfm/adapters/compare (a = base, b = the selected adapter)."""
        s = self.state
        rows = [r for r in result.get("per_image") or [] if isinstance(r, dict)]
        s.comparison = [
            ComparisonRow(
                str(r.get("image", "?")),
                str(r.get("label", "")),
                _number(r.get("dice_a")),
                _number(r.get("dice_b")),
                _number(r.get("diff")),
            )
            for r in rows
        ]
        a, b = result.get("a", "base"), result.get("b", "?")
        mean_a, mean_b = _number(result.get("mean_dice_a")), _number(result.get("mean_dice_b"))
        means = f" (mean Dice {a} {mean_a:.3f}, {b} {mean_b:.3f})" if mean_a is not None and mean_b is not None else ""
        summary = result.get("summary") or f"{len(rows)} held-out image-label pairs"
        s.comparison_summary = f"{a} vs {b} on held-out images: {summary}{means}."
        s.busy = None
        s.status = s.comparison_summary

    # ---- reading /info/ -------------------------------------------------------------------------------------------

    @staticmethod
    def _fm_name(info: dict[str, Any]) -> str:
        for model in (INTERACTIVE_MODEL, AUTO_MODEL):
            m = (info.get("models") or {}).get(model) or {}
            fm = m.get("fm") or (m.get("config") or {}).get("fm")
            if fm:
                return str(fm)
        return str(info.get("name", "")) if info.get("name") else ""

    @staticmethod
    def _history(info: dict[str, Any], task: str = TRAINER) -> list[dict[str, Any]]:
        stats = (info.get("train_stats") or {}).get(task) or {}
        history = stats.get("history") or []
        return [h for h in history if isinstance(h, dict)]

    @staticmethod
    def _adapter_rows(registry: dict[str, Any]) -> list[AdapterRow]:
        """The selector's rows from GET /medfm/adapters: "base" first, then each version in "adapters"."""
        active = registry.get("active")
        rows = [
            AdapterRow(
                version=str(a.get("version") or "?"),
                method=str(a.get("method") or ""),
                dice=_number(a.get("heldout_dice")),
                active=a.get("version") == active,
                val_dice=_number(a.get("val_dice")),
                guard=(a.get("decision") or {}).get("activated"),
                reason=str((a.get("decision") or {}).get("reason") or ""),
                by_hand=bool((a.get("decision") or {}).get("manual")),
                prompts_only=(a.get("decision") or {}).get("serves") == ["interactive"],
                federated=_federation_words((a.get("imported_from") or {}).get("federation")),
                parent=_continued_from(a),
                verdict=str((a.get("decision") or {}).get("verdict") or ""),
                intervals=_interval_words(a.get("decision")),
            )
            for a in registry.get("adapters") or []
            if isinstance(a, dict)
        ]
        if not any(r.version == "base" for r in rows):
            rows.insert(0, AdapterRow("base", active=active == "base"))
        return rows


def _interval_words(decision: Any) -> str:
    """One line per judged mode: 'interactive: +0.052 [+0.031, +0.074] over 12 units, better (margin 0.015)'."""
    if not isinstance(decision, dict):
        return ""
    lines = []
    for c in decision.get("checks") or []:
        if not isinstance(c, dict) or not c.get("state"):
            continue
        low_high = c.get("interval")
        spread = f" [{low_high[0]:+.3f}, {low_high[1]:+.3f}]" if isinstance(low_high, list) else ""
        diff = c.get("diff")
        diff_words = f"{diff:+.3f}" if isinstance(diff, (int, float)) else "?"
        against = f" vs {c['against']}" if c.get("against") not in (None, c.get("mode")) else ""
        lines.append(f"{c.get('mode')}{against}: {diff_words}{spread} over {c.get('n_units')} units, {c['state']}")
    if lines:
        lines.append(f"({round(100 * (decision.get('confidence') or 0))}% interval of the mean paired Dice "
                     f"difference, margin {decision.get('margin')})")
    return "\n".join(lines)


def _federation_words(federation: Any) -> str:
    """'federated: 3 sites, 3 rounds' for a version a federation made; empty otherwise."""
    if not isinstance(federation, dict):
        return ""
    sites, rounds = federation.get("sites") or {}, federation.get("rounds")
    n = len(sites) if isinstance(sites, dict) else 0
    return f"federated: {n} site{'s' * (n != 1)}, {rounds} round{'s' * (rounds != 1)}"


def _continued_from(row: dict[str, Any]) -> str:
    """The version a training continued (a pretrained `ssl-lora` one, the hybrid); empty when it started fresh."""
    parent = row.get("continued_from")
    return parent if isinstance(parent, str) else ""
