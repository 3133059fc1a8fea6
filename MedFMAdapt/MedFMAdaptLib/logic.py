"""The module's Logic: every panel action as a Job, with no Qt and no `slicer.app`.

A Job splits an action in three so the GUI never blocks and MRML is only touched on the GUI thread:
what must read the scene runs when the job is made (and may raise ValueError with a plain message at once),
`work` does the network calls (safe on a worker thread, reports progress through a callback),
and `finish` puts the answer into the scene (GUI thread) and returns a typed Outcome (status line plus payload)
for the presenter. The Logic keeps its connection and the annotation clock, never its last answers.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from . import prompt_nodes, sign_in
from . import scene as scene_lib
from .client import AUTO_MODEL, INTERACTIVE_MODEL, PRETRAINER, RUNNING_STATES, TRAINER, InferResult, MedFMClient
from .errors import ServerError
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

T = TypeVar("T")
Report = Callable[[str, float], None]
IMAGE_ID_ATTRIBUTE = "MedFMAdapt.ImageID"
BASE_COLOR = (0.25, 0.55, 1.0)
ADAPTED_COLOR = (1.0, 0.55, 0.1)
RESULT_COLOR = (0.95, 0.85, 0.2)
REVIEW_ROLES = ("MedFMAdapt.reviewBase", "MedFMAdapt.reviewAdapted")


def _ignore(_message: str, _fraction: float) -> None:
    return None


@dataclass
class Job(Generic[T]):
    """One panel action: `work(report)` off the GUI thread, then `finish(result)` on it."""

    action: Action
    work: Callable[[Report], T]
    finish: Callable[[T], Outcome]


def run_now(job: Job, report: Report = _ignore) -> Outcome:
    """Run a job synchronously (tests and the in-Slicer self-test); the Widget uses a worker thread instead."""
    return job.finish(job.work(report))


class MedFMAdaptLogic:
    """Scene-side operations of the panel; holds the connection and the scene it was given."""

    def __init__(
        self,
        scene,
        client_factory: Callable[..., MedFMClient] = MedFMClient,
        work_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scene = scene
        self.client_factory = client_factory
        self.client: MedFMClient | None = None
        self.info: dict[str, Any] = {}  # GET /info/ of the connected server: label names for every conversion
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="medfmadapt_scene_"))
        # The annotation record sent with each label: one id per Slicer session (per Logic), and per image id
        # when its annotation started (fetched, or first segmented) and which strategy proposed it.
        self.session_id = f"slicer-{uuid.uuid4().hex[:12]}"
        self.clock = clock
        self.started: dict[str, float] = {}
        self.proposed_by: dict[str, str] = {}

    # ---- helpers --------------------------------------------------------------------------------------------------

    def _client(self) -> MedFMClient:
        if self.client is None:
            raise ValueError("Connect to a server first.")
        return self.client

    def interaction_session(self, image_id: str, segment_id: str) -> str:
        """The server's name for the interaction on one image's segment in this Slicer session: a request that adds
        clicks to the previous one of this name refines the answer the radiologist sees instead of starting afresh,
        and no other user's or segment's clicks are mixed in (the server's default is one state per image)."""
        digest = hashlib.sha256(f"{image_id}\0{segment_id}".encode()).hexdigest()[:16]
        return f"{self.session_id}:{digest}"

    @staticmethod
    def image_id(volume) -> str | None:
        """The server's id for a volume, once it was uploaded or fetched."""
        return volume.GetAttribute(IMAGE_ID_ATTRIBUTE) if volume is not None else None

    def _label_names(self) -> dict[int, str]:
        return scene_lib.label_names(self.info.get("labels"))

    def prompt_nodes(self) -> prompt_nodes.PromptNodes:
        """The prompt tools' markups nodes in this Logic's scene (created on first use)."""
        return prompt_nodes.PromptNodes.owned(self.scene)

    def _require_image_id(self, volume) -> str:
        if volume is None:
            raise ValueError("Select a volume first.")
        image_id = self.image_id(volume)
        if not image_id:
            raise ValueError(f"Upload '{volume.GetName()}' to the server first.")
        return image_id

    # ---- server -----------------------------------------------------------------------------------------------------

    def connect_job(self, url: str, token: str | None = None, verify_tls: bool = True, username: str = "",
                    password: str = "") -> Job:
        """GET /info/ and the adapter registry (GET /medfm/adapters); with a username, sign in first at the
        identity provider the server names (sign_in.py), and keep the token in memory, renewed, for every call."""
        client = self.client_factory(url, token=token, verify_tls=verify_tls, download_dir=self.work_dir)

        def work(report: Report):
            if username:
                report("Signing in", 0.1)
                provider = sign_in.discover(client.auth(), client.timeout)
                if provider is None:
                    raise ValueError("This server does not ask for a sign-in: connect without a username.")
                keeper = sign_in.TokenKeeper(provider, timeout=client.timeout)
                keeper.sign_in(username, password)
                client.token_source = keeper.bearer
            report("Asking the server what it offers", 0.2)
            return client.info(), client.registry(), client.heldout(), client.sessions()

        def finish(result) -> Connected:
            self.client = client
            self.info, registry, held_out, sessions = result
            return Connected(f"Connected to {client.base_url}.", client.base_url, self.info, registry, held_out,
                             sessions, self.session_id)

        return Job(Action.CONNECT, work, finish)

    # ---- case -------------------------------------------------------------------------------------------------------

    def upload_job(self, volume, image_id: str | None = None) -> Job:
        """Write the volume as NIfTI with its real geometry now; upload it in `work`."""
        if volume is None:
            raise ValueError("Select a volume first.")
        client = self._client()
        wanted = image_id or scene_lib.sanitize_id(volume.GetName())
        path = scene_lib.write_volume(volume, self.work_dir / f"{wanted}.nii.gz")

        def work(report: Report) -> str:
            report(f"Uploading {path.stat().st_size / 1e6:.1f} MB", 0.1)
            return client.upload_image(path, wanted)

        def finish(stored_id: str) -> Uploaded:
            volume.SetAttribute(IMAGE_ID_ATTRIBUTE, stored_id)
            return Uploaded(f"Uploaded '{volume.GetName()}' as {stored_id}.", stored_id)

        return Job(Action.UPLOAD, work, finish)

    def fetch_job(self, image_id: str | None = None, strategy: str | None = None, seed: int | None = None) -> Job:
        """Fetch an image into the scene: a given id, or the one an active-learning strategy picks.

        An empty pool (every image labelled, the server answers {}) is not an error: nothing is loaded and the
        status line says so. The annotation clock of the image starts when it is loaded.
        """
        client = self._client()
        if not image_id and not strategy:
            raise ValueError("Choose a strategy first.")

        def work(report: Report):
            sample: dict[str, Any] = {}
            chosen = image_id
            if not chosen:
                report(f"Asking '{strategy}' for the next sample", 0.1)
                sample = client.next_sample(strategy or "", seed)
                chosen = sample.get("id")
                if not chosen:
                    return None, sample, None
            report(f"Downloading {chosen}", 0.4)
            return chosen, sample, client.download_image(str(chosen))

        def finish(result) -> SampleLoaded:
            chosen, sample, path = result
            if chosen is None:
                message = f"Nothing to label: every image on the server has a label ({strategy} has no candidate)."
                return SampleLoaded(message, strategy or "", sample)
            volume = scene_lib.read_volume(self.scene, path, str(chosen))
            volume.SetAttribute(IMAGE_ID_ATTRIBUTE, str(chosen))
            self.prompt_nodes().clear()  # prompts belong to the case they were placed on
            self.started[str(chosen)] = self.clock()
            proposer = sample.get("chosen_by") or (strategy if sample else None)
            if proposer:
                self.proposed_by[str(chosen)] = str(proposer)
            else:
                self.proposed_by.pop(str(chosen), None)
            reason = sample.get("reason")
            message = f"Loaded {chosen} from the server" + (f" ({proposer}: {reason})." if reason else ".")
            return SampleLoaded(message, strategy or "", sample, volume, str(chosen))

        return Job(Action.NEXT_SAMPLE, work, finish)

    # ---- segment ----------------------------------------------------------------------------------------------------

    def _run_infer(self, client: MedFMClient, model: str, image_id: str, params: dict[str, Any], uncertainty: bool):
        """The network half of every segmentation: infer, then the uncertainty map when one was asked for."""

        def work(report: Report) -> InferResult:
            report(f"Running {model} on the server", 0.1)
            result = client.infer(model, image_id, params)
            described = result.params.get("uncertainty")
            if uncertainty and isinstance(described, dict) and described.get("url"):
                report("Downloading the uncertainty map", 0.8)
                result.extra_files["uncertainty"] = client.download_result(str(described["url"]))
            return result

        return work

    @staticmethod
    def _require_files(result: InferResult, uncertainty: bool) -> None:
        if result.label_path is None:
            raise ValueError("The server answered without a label; nothing was added.")
        if uncertainty and "uncertainty" not in result.extra_files:
            raise ValueError("The server sent no uncertainty map (is it older than this module?); nothing added.")

    def _overlay(self, result: InferResult, volume, uncertainty: bool):
        return scene_lib.load_overlay(self.scene, result.extra_files["uncertainty"], volume) if uncertainty else None

    def _checked_answer(self, result: InferResult, volume, uncertainty: bool):
        """The reply's label as voxels (and overlay) once checked against the volume's grid; nothing is changed
        before."""
        self._require_files(result, uncertainty)
        label = scene_lib.read_volume(self.scene, result.label_path, "answer", labelmap=True, add=False)
        if not scene_lib.same_grid(label, volume):
            raise ValueError("The server's label is not on the volume's voxel grid; nothing was added to the scene.")
        return scene_lib.voxel_array(label), self._overlay(result, volume, uncertainty)

    @staticmethod
    def _said(title: str, names: list[str], result: InferResult, params: dict[str, Any], uncertainty: bool) -> str:
        adapter = result.params.get("adapter", params.get("adapter", "base"))
        timing = result.params.get("timing")
        total = timing.get("total_s") if isinstance(timing, dict) else None  # the server's whole call, seconds
        took = f" in {float(total):.1f} s" if total else ""
        most = (result.params.get("uncertainty") or {}).get("max") if uncertainty else None
        unsure = f"; uncertainty up to {float(most):.2f} nats (0.69 = guessing)" if most is not None else ""
        return f"{title}: {', '.join(names) or 'empty result'} (adapter {adapter}){took}{unsure}"

    def segment_job(
        self,
        volume,
        nodes: prompt_nodes.PromptNodes | None = None,
        segment_id: str | None = None,
        adapter: str = "base",
        uncertainty: bool = False,
        placed: prompt_nodes.Placed | None = None,
        propagate: bool = True,
    ) -> Job:
        """Interactive segmentation from the prompt tools' markups, into one segment of the working segmentation.

        A `placed` prompt without `propagate` asks for its slice only (about 0.2 s on a 2-core CPU) and replaces
        that slice of the segment; Propagate (no `placed`) or `propagate` asks for the whole structure from every
        prompt and replaces the segment's earlier prediction. Slices the radiologist edited by hand are kept,
        except the slice a prompt was just placed on. The target is `segment_id` (the Segment Editor's selection),
        else the first segment, else a new one named after the server's first label.
        """
        if volume is None:
            raise ValueError("Select a volume first.")
        client = self._client()
        image_id = self._require_image_id(volume)
        nodes = nodes or self.prompt_nodes()
        segmentation = scene_lib.working_segmentation(self.scene, volume)
        name = next(iter(self._label_names().values()), "Segment_1")
        target = scene_lib.target_segment(segmentation, segment_id, name, RESULT_COLOR)
        axis = scene_lib.acquisition_axis(volume)
        clicked = prompt_nodes.placed_slice(volume, nodes, placed, axis) if placed is not None else None
        if clicked is not None and not propagate:
            current = scene_lib.segment_array(segmentation, target, volume)
            params = prompt_nodes.slice_request(volume, nodes, axis, clicked, current)
        else:
            params = prompt_nodes.structure_request(volume, nodes, axis)
        params = {**params, "adapter": adapter, "session": self.interaction_session(image_id, target),
                  **({"uncertainty": True} if uncertainty else {})}
        self.started.setdefault(image_id, self.clock())  # an uploaded case's annotation starts with its first call
        whole = clicked is None or propagate

        def finish(result: InferResult) -> Segmented:
            answer, overlay = self._checked_answer(result, volume, uncertainty)
            reply_axis = int(result.params.get("slice_axis", axis))
            slices = [int(k) for k in result.params.get("slices") or []]
            forced = [clicked] if clicked is not None and reply_axis == axis else []
            change = scene_lib.replace_slices(segmentation, target, volume, answer > 0, reply_axis, slices, forced,
                                              clear_stale=whole)
            segment = segmentation.GetSegmentation().GetSegment(target).GetName()
            where = f"slice {clicked}" if not whole else f"{len(slices)} slice{'s' * (len(slices) != 1)}"
            kept = f"; kept your edits on {len(change.kept)} slices" if change.kept else ""
            refined = int(result.params.get("refined_clicks") or 0)
            how = f"; refined with your {refined} new click{'s' * (refined != 1)}" if refined else ""
            message = self._said(f"Segment ({where})", [segment], result, params, uncertainty) + how + kept + "."
            return Segmented(message, segmentation, target, overlay, result.params, result.label_path,
                             result.extra_files, change, placed, change.kept)

        return Job(Action.SEGMENT if placed is not None else Action.PROPAGATE,
                   self._run_infer(client, INTERACTIVE_MODEL, image_id, params, uncertainty), finish)

    def undo_prompt_job(self, volume, step: PromptStep | None, nodes: prompt_nodes.PromptNodes | None = None) -> Job:
        """Take back the last prompt: its markup goes and the slices its answer replaced come back (no network)."""
        if step is None:
            raise ValueError("There is no prompt to undo.")
        if volume is None or self.image_id(volume) != step.image_id:
            raise ValueError(f"The last prompt was placed on {step.image_id}; select that volume to undo it.")
        segmentation = scene_lib.working_segmentation(self.scene, volume)
        nodes = nodes or self.prompt_nodes()

        def finish(_none) -> PromptUndone:
            if step.placed is not None:
                nodes.remove(step.placed)
            scene_lib.undo_slices(segmentation, volume, step.change)
            slices = ", ".join(str(k) for k in step.change.replaced) or "none changed"
            return PromptUndone(f"Undid the last prompt (slices {slices}).")

        return Job(Action.UNDO_PROMPT, lambda _report: None, finish)

    def auto_segment_job(self, volume, adapter: str = "base", roi=None, uncertainty: bool = False) -> Job:
        """Automatic segmentation with an adapter, optionally limited to an ROI (and with the uncertainty overlay).

        Each label's segment is replaced as a whole by the answer (segments of other labels stay)."""
        if volume is None:
            raise ValueError("Select a volume first.")
        client = self._client()
        image_id = self._require_image_id(volume)
        params: dict[str, Any] = {"adapter": adapter, **({"uncertainty": True} if uncertainty else {})}
        if roi is not None:
            params["roi"] = scene_lib.roi_to_box(volume, roi)
        self.started.setdefault(image_id, self.clock())

        def finish(result: InferResult) -> Segmented:
            self._require_files(result, uncertainty)
            fresh = scene_lib.label_file_to_segmentation(  # reads the label once and checks its grid
                self.scene, result.label_path, volume, "Auto segment", self._label_names(), RESULT_COLOR
            )
            try:
                overlay = self._overlay(result, volume, uncertainty)  # checked before the user's segmentation changes
                target = scene_lib.working_segmentation(self.scene, volume)
                names = scene_lib.merge_segments(target, fresh)
            finally:
                self.scene.RemoveNode(fresh)
            first = target.GetSegmentation().GetSegmentIdBySegmentName(names[0]) if names else ""
            message = self._said("Auto segment", names, result, params, uncertainty) + "."
            return Segmented(message, target, first, overlay, result.params, result.label_path, result.extra_files)

        return Job(Action.AUTO_SEGMENT, self._run_infer(client, AUTO_MODEL, image_id, params, uncertainty), finish)

    def submit_job(self, volume, segmentation) -> Job:
        """Write the corrected segmentation on the volume's grid now; save it as the final label in `work`."""
        client = self._client()
        image_id = self._require_image_id(volume)
        if segmentation is None or segmentation.GetSegmentation().GetNumberOfSegments() == 0:
            raise ValueError("There is no segment to submit.")
        values = {name: value for value, name in self._label_names().items()}
        path = scene_lib.segmentation_to_label_file(
            segmentation, volume, self.work_dir / f"{image_id}_label.nii.gz", values
        )

        record = self.annotation_record(image_id)

        def work(report: Report):
            report("Sending the label", 0.2)
            client.save_label(image_id, path, params=record)
            report("Reading this session's figures", 0.8)
            try:
                return client.sessions()
            except ServerError:  # the label is saved; the session panel keeps its figures until the next read
                return None

        def finish(sessions: dict[str, Any] | None) -> Submitted:
            self.started.pop(image_id, None)  # a later correction of this image starts a new clock
            took = f" after {record['annotation_seconds']:.0f} s" if "annotation_seconds" in record else ""
            return Submitted(f"Saved the label of {image_id} on the server{took}.", image_id, sessions)

        return Job(Action.SUBMIT, work, finish)

    def annotation_record(self, image_id: str) -> dict[str, Any]:
        """What PUT /datastore/label keeps with a label: seconds since the case was fetched or first segmented,
        the strategy that proposed it (if one did) and this Slicer session's id."""
        record: dict[str, Any] = {"session": self.session_id}
        if image_id in self.started:
            record["annotation_seconds"] = round(max(0.0, self.clock() - self.started[image_id]), 1)
        if image_id in self.proposed_by:
            record["strategy"] = self.proposed_by[image_id]
        return record

    # ---- adapt ------------------------------------------------------------------------------------------------------

    def start_training_job(self, method: str, max_epochs: int, rank: int, extra: dict | None = None) -> Job:
        """POST /train/medsam_adapt with the panel's settings."""
        client = self._client()
        if max_epochs < 1:
            raise ValueError("Epochs must be at least 1.")
        params = {"method": method, "max_epochs": int(max_epochs), "rank": int(rank), **(extra or {})}

        def work(report: Report):
            report(f"Starting {method} adaptation", 0.05)
            return client.start_training(params)

        said = f"Adaptation ({method}, {max_epochs} epochs) started."
        return Job(Action.START_TRAINING, work, lambda _r: TrainingStarted(said, TRAINER, int(max_epochs)))

    def start_pretraining_job(self, max_epochs: int, rank: int, recipe: str = "consistency") -> Job:
        """POST /train/medsam_pretrain: adapt the image encoder to every scan on the server (labelled or not,
        held-out ones excepted), without labels; supervised LoRA can then continue from it (parent)."""
        client = self._client()
        if max_epochs < 1:
            raise ValueError("Epochs must be at least 1.")
        params = {"recipe": recipe, "max_epochs": int(max_epochs), "rank": int(rank)}

        def work(report: Report):
            report("Starting pretraining on the unlabelled scans", 0.05)
            return client.start_training(params, trainer=PRETRAINER)

        said = f"Pretraining on the unlabelled scans ({recipe}, {max_epochs} epochs) started."
        return Job(Action.START_PRETRAINING, work, lambda _r: TrainingStarted(said, PRETRAINER, int(max_epochs)))

    def poll_training_job(self) -> Job:
        """Training status and fresh /info/ (for the history); once the task stopped, the registry too (a new
        version and the guard's decision)."""
        client = self._client()

        def work(_report: Report):
            status = client.training_status()
            info = client.info()
            running = str(status.get("status", "")).upper() in RUNNING_STATES
            return status, info, None if running else client.registry()

        def finish(result) -> TrainingPolled:
            status, info, registry = result
            self.info = info
            return TrainingPolled(str(status.get("status", "")), status, info, registry)

        return Job(Action.POLL_TRAINING, work, finish)

    def show_training(self, info: dict[str, Any], task: str = TRAINER):
        """Update the loss/Dice chart from /info/ train_stats of `task` (GUI thread). Returns the chart node."""
        from .plots import update_training_plot

        history = ((info.get("train_stats") or {}).get(task) or {}).get("history") or []
        return update_training_plot(self.scene, history)

    def stop_training_job(self) -> Job:
        client = self._client()
        return Job(Action.STOP_TRAINING, lambda _report: client.stop_training(),
                   lambda _r: Outcome("Adaptation stopped."))

    # ---- review -----------------------------------------------------------------------------------------------------

    def review_job(self, volume, adapted: str, base: str = "base") -> Job:
        """Run base and adapted models on the volume; show both as separate, differently coloured segmentations."""
        client = self._client()
        image_id = self._require_image_id(volume)

        def work(report: Report):
            results = {}
            for n, version in enumerate((base, adapted)):
                report(f"Running adapter {version}", 0.1 + 0.45 * n)
                results[version] = client.infer(AUTO_MODEL, image_id, {"adapter": version})
            return results

        def finish(results: dict[str, InferResult]) -> ReviewReady:
            nodes = []
            try:
                for version, color in ((base, BASE_COLOR), (adapted, ADAPTED_COLOR)):
                    label = results[version].label_path
                    if label is None:
                        raise ValueError(f"Adapter {version} returned no label; nothing was added.")
                    nodes.append(
                        scene_lib.label_file_to_segmentation(
                            self.scene, label, volume, f"Review {version}", self._label_names(), color
                        )
                    )
            except Exception:
                for node in nodes:
                    self.scene.RemoveNode(node)
                raise
            for role, node in zip(REVIEW_ROLES, nodes):  # noqa: B905 -- Slicer 5.6 has Python 3.9
                old = volume.GetNodeReference(role)
                volume.SetNodeReferenceID(role, node.GetID())
                if old is not None:
                    self.scene.RemoveNode(old)
            scene_lib.set_visible(nodes[0], False)
            message = f"Review ready: base (blue) and {adapted} (orange); use Toggle to compare."
            return ReviewReady(message, nodes[0], nodes[1])

        return Job(Action.REVIEW, work, finish)

    def compare_job(self, adapted: str, base: str = "base", mode: str = "interactive") -> Job:
        """GET /medfm/adapters/compare: base against an adapter on the server's held-out images (the Review table).

        The server evaluates each version once per set of held-out images and caches it; without held-out images
        it refuses (400) and the status line says to mark some first.
        """
        client = self._client()

        def work(report: Report) -> dict[str, Any]:
            report(f"Comparing {base} and {adapted} on the held-out images", 0.1)
            return client.compare_adapters(base, adapted, mode)

        def finish(result: dict[str, Any]) -> Compared:
            return Compared(str(result.get("summary") or "Comparison ready."), result)

        return Job(Action.COMPARE, work, finish)

    def _registry_change(self, action: Action, call: Callable[[], dict[str, Any]], said: Callable[[str], str]) -> Job:
        client = self._client()

        def work(_report: Report):
            answer = call()
            return answer, client.registry()

        def finish(result) -> RegistryChanged:
            answer, registry = result
            return RegistryChanged(said(str(answer.get("active") or registry.get("active") or "?")), registry)

        return Job(action, work, finish)

    def activate_job(self, version: str) -> Job:
        """Activate a version, then re-read the registry so the selector's [active] mark follows."""
        client = self._client()
        return self._registry_change(
            Action.ACTIVATE, lambda: client.activate_adapter(version), lambda active: f"Adapter {active} is active."
        )

    def rollback_job(self) -> Job:
        client = self._client()
        return self._registry_change(
            Action.ROLLBACK, client.rollback_adapter, lambda active: f"Rolled back to adapter {active}."
        )

    # ---- held-out images ----------------------------------------------------------------------------------------

    def held_out_job(self, volume, held_out: bool) -> Job:
        """PUT /medfm/heldout for the volume's image: evaluate adapters on it and never train on it (or undo).

        The server takes only images with a final label, and says so in plain words otherwise."""
        client = self._client()
        image_id = self._require_image_id(volume)

        def work(report: Report) -> list[str]:
            report("Marking the image held out" if held_out else "Returning the image to training", 0.2)
            return client.set_heldout([image_id], held_out)

        def finish(listed: list[str]) -> HeldOutChanged:
            said = ("is held out: adapters are judged on it and never trained on it" if held_out
                    else "is used for training again")
            return HeldOutChanged(f"{image_id} {said} ({len(listed)} held-out images).", list(listed))

        return Job(Action.HELD_OUT, work, finish)


def toggle_review(volume) -> bool:
    """Show the other one of a volume's review pair (base or adapted); returns whether adapted is now shown."""
    base, adapted = (volume.GetNodeReference(role) if volume is not None else None for role in REVIEW_ROLES)
    if base is None or adapted is None:
        raise ValueError("Run base and adapted first.")
    showing_adapted = bool(adapted.GetDisplayNode().GetVisibility())
    scene_lib.set_visible(adapted, not showing_adapted)
    scene_lib.set_visible(base, showing_adapted)
    return not showing_adapted
