"""The module's Logic: every panel action as a Job, with no Qt and no `slicer.app`.

A Job splits an action in three so the GUI never blocks and MRML is only touched on the GUI thread:
what must read the scene runs when the job is made (and may raise ValueError with a plain message at once),
`work` does the network calls (safe on a worker thread, reports progress through a callback),
and `finish` puts the answer into the scene (GUI thread) and returns the status line.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from . import scene as scene_lib
from .client import AUTO_MODEL, INTERACTIVE_MODEL, PRETRAINER, TRAINER, InferResult, MedFMClient
from .presenter import Action

T = TypeVar("T")
Report = Callable[[str, float], None]
IMAGE_ID_ATTRIBUTE = "MedFMAdapt.ImageID"
BASE_COLOR = (0.25, 0.55, 1.0)
ADAPTED_COLOR = (1.0, 0.55, 0.1)
RESULT_COLOR = (0.95, 0.85, 0.2)


def _ignore(_message: str, _fraction: float) -> None:
    return None


@dataclass
class Job(Generic[T]):
    """One panel action: `work(report)` off the GUI thread, then `finish(result)` on it."""

    action: Action
    work: Callable[[Report], T]
    finish: Callable[[T], str]


def run_now(job: Job, report: Report = _ignore) -> str:
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
        self.info: dict[str, Any] = {}
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="medfmadapt_scene_"))
        self.last_fetched = None  # volume node most recently fetched from the server
        self.last_result: InferResult | None = None
        self.review_nodes: list = []  # [base, adapted] segmentation nodes of the last review
        self.registry: dict[str, Any] | None = None  # GET /medfm/adapters; None until connected
        self.last_sample: dict[str, Any] = {}  # the last active-learning answer (id, chosen_by, reason, ...)
        self.last_comparison: dict[str, Any] = {}
        self.last_overlay = None  # uncertainty overlay node of the last segmentation that asked for one
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

    @staticmethod
    def image_id(volume) -> str | None:
        """The server's id for a volume, once it was uploaded or fetched."""
        return volume.GetAttribute(IMAGE_ID_ATTRIBUTE) if volume is not None else None

    def _label_names(self) -> dict[int, str]:
        return scene_lib.label_names(self.info.get("labels"))

    def _require_image_id(self, volume) -> str:
        if volume is None:
            raise ValueError("Select a volume first.")
        image_id = self.image_id(volume)
        if not image_id:
            raise ValueError(f"Upload '{volume.GetName()}' to the server first.")
        return image_id

    # ---- server -----------------------------------------------------------------------------------------------------

    def connect_job(self, url: str, token: str | None = None, verify_tls: bool = True) -> Job:
        """GET /info/ and the adapter registry (GET /medfm/adapters)."""
        client = self.client_factory(url, token=token, verify_tls=verify_tls, download_dir=self.work_dir)

        def work(report: Report):
            report("Asking the server what it offers", 0.2)
            return client.info(), client.registry()

        def finish(result) -> str:
            self.client = client
            self.info, self.registry = result
            return f"Connected to {client.base_url}."

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

        def finish(stored_id: str) -> str:
            volume.SetAttribute(IMAGE_ID_ATTRIBUTE, stored_id)
            return f"Uploaded '{volume.GetName()}' as {stored_id}."

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

        def finish(result) -> str:
            chosen, sample, path = result
            self.last_sample = sample
            self.last_fetched = None
            if chosen is None:
                return f"Nothing to label: every image on the server has a label ({strategy} has no candidate)."
            volume = scene_lib.read_volume(self.scene, path, str(chosen))
            volume.SetAttribute(IMAGE_ID_ATTRIBUTE, str(chosen))
            self.last_fetched = volume
            self.started[str(chosen)] = self.clock()
            proposer = sample.get("chosen_by") or (strategy if sample else None)
            if proposer:
                self.proposed_by[str(chosen)] = str(proposer)
            else:
                self.proposed_by.pop(str(chosen), None)
            reason = sample.get("reason")
            return f"Loaded {chosen} from the server" + (f" ({proposer}: {reason})." if reason else ".")

        return Job(Action.NEXT_SAMPLE, work, finish)

    # ---- segment ----------------------------------------------------------------------------------------------------

    def _infer_into_scene(
        self, action: Action, volume, model: str, params: dict[str, Any], title: str, uncertainty: bool = False
    ) -> Job:
        client = self._client()
        image_id = self._require_image_id(volume)
        if uncertainty:
            params = {**params, "uncertainty": True}
        self.started.setdefault(image_id, self.clock())  # an uploaded case's annotation starts with its first call

        def work(report: Report) -> InferResult:
            report(f"Running {model} on the server", 0.1)
            result = client.infer(model, image_id, params)
            described = result.params.get("uncertainty")
            if uncertainty and isinstance(described, dict) and described.get("url"):
                report("Downloading the uncertainty map", 0.8)
                result.extra_files["uncertainty"] = client.download_result(str(described["url"]))
            return result

        def finish(result: InferResult) -> str:
            if result.label_path is None:
                raise ValueError("The server answered without a label; nothing was added.")
            if uncertainty and "uncertainty" not in result.extra_files:
                raise ValueError("The server sent no uncertainty map (is it older than this module?); nothing added.")
            fresh = scene_lib.label_file_to_segmentation(
                self.scene, result.label_path, volume, title, self._label_names(), RESULT_COLOR
            )
            try:
                overlay = None
                if uncertainty:  # checked against the grid before the user's segmentation changes
                    overlay = scene_lib.load_overlay(self.scene, result.extra_files["uncertainty"], volume)
                target = scene_lib.working_segmentation(self.scene, volume)
                names = scene_lib.merge_segments(target, fresh)
            finally:
                self.scene.RemoveNode(fresh)
            self.last_result = result
            self.last_overlay = overlay
            adapter = result.params.get("adapter", params.get("adapter", "base"))
            timing = result.params.get("timing")
            total = timing.get("total_s") if isinstance(timing, dict) else None  # the server's whole call, seconds
            took = f" in {float(total):.1f} s" if total else ""
            most = (result.params.get("uncertainty") or {}).get("max") if uncertainty else None
            unsure = f"; uncertainty up to {float(most):.2f} nats (0.69 = guessing)" if most is not None else ""
            return f"{title}: {', '.join(names) or 'empty result'} (adapter {adapter}){took}{unsure}."

        return Job(action, work, finish)

    def segment_job(
        self,
        volume,
        roi=None,
        foreground=None,
        background=None,
        adapter: str = "base",
        uncertainty: bool = False,
        slice_only: bool = False,
    ) -> Job:
        """Interactive segmentation from markups, converted to the server's IJK prompts now.

        With `uncertainty` the server also returns its per-voxel uncertainty, loaded as a colour overlay volume.
        With `slice_only`, points without an ROI segment only the slices they sit on (a refinement answers in about
        0.2 s on a 2-core CPU instead of about 0.8 s when it follows the structure through the volume).
        """
        if volume is None:
            raise ValueError("Select a volume first.")
        params = scene_lib.build_prompts(volume, roi, foreground, background)
        params["adapter"] = adapter
        if slice_only:
            params["max_propagation"] = 0
        return self._infer_into_scene(Action.SEGMENT, volume, INTERACTIVE_MODEL, params, "Segment", uncertainty)

    def auto_segment_job(self, volume, adapter: str = "base", roi=None, uncertainty: bool = False) -> Job:
        """Automatic segmentation with an adapter, optionally limited to an ROI (and with the uncertainty overlay)."""
        if volume is None:
            raise ValueError("Select a volume first.")
        params: dict[str, Any] = {"adapter": adapter}
        if roi is not None:
            params["roi"] = scene_lib.roi_to_box(volume, roi)
        return self._infer_into_scene(Action.AUTO_SEGMENT, volume, AUTO_MODEL, params, "Auto segment", uncertainty)

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
            return client.save_label(image_id, path, params=record)

        def finish(_result) -> str:
            self.started.pop(image_id, None)  # a later correction of this image starts a new clock
            took = f" after {record['annotation_seconds']:.0f} s" if "annotation_seconds" in record else ""
            return f"Saved the label of {image_id} on the server{took}."

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

        return Job(Action.START_TRAINING, work, lambda _r: f"Adaptation ({method}, {max_epochs} epochs) started.")

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

        return Job(Action.START_PRETRAINING, work,
                   lambda _r: f"Pretraining on the unlabelled scans ({recipe}, {max_epochs} epochs) started.")

    def poll_training(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Training status and fresh /info/ (for the history); network only, safe on a worker thread."""
        client = self._client()
        status = client.training_status()
        info = client.info()
        return status, info

    def show_training(self, info: dict[str, Any], task: str = TRAINER):
        """Update the loss/Dice chart from /info/ train_stats of `task` (GUI thread). Returns the chart node."""
        from .plots import update_training_plot

        self.info = info
        history = ((info.get("train_stats") or {}).get(task) or {}).get("history") or []
        return update_training_plot(self.scene, history)

    def stop_training_job(self) -> Job:
        client = self._client()
        return Job(Action.STOP_TRAINING, lambda _report: client.stop_training(), lambda _r: "Adaptation stopped.")

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

        def finish(results: dict[str, InferResult]) -> str:
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
            self.review_nodes = nodes
            scene_lib.set_visible(nodes[0], False)
            return f"Review ready: base (blue) and {adapted} (orange); use Toggle to compare."

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

        def finish(result: dict[str, Any]) -> str:
            self.last_comparison = result
            return str(result.get("summary") or "Comparison ready.")

        return Job(Action.COMPARE, work, finish)

    def _registry_change(self, action: Action, call: Callable[[], dict[str, Any]], said: Callable[[str], str]) -> Job:
        client = self._client()

        def work(_report: Report):
            answer = call()
            return answer, client.registry()

        def finish(result) -> str:
            answer, self.registry = result
            return said(str(answer.get("active") or self.registry.get("active") or "?"))

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
