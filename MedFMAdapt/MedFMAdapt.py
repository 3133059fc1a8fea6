"""MedFMAdapt: annotate, adapt and review a medical foundation model from 3D Slicer.

This file holds what needs a running Slicer: the module description, a thin Widget that binds the .ui to
MedFMAdaptLib (presenter + logic), and the in-Slicer self-test. Everything testable without Slicer lives in
MedFMAdaptLib and is tested by pytest (Testing/slicer).
"""

from __future__ import annotations

import os
import queue
import threading

import ctk  # noqa: F401  (Slicer modules import ctk/qt at top; the .ui uses ctk widgets)
import qt
import slicer
from MedFMAdaptLib import scene as scene_lib
from MedFMAdaptLib.client import PRETRAINER, TRAINER
from MedFMAdaptLib.errors import ServerError
from MedFMAdaptLib.logic import Job, MedFMAdaptLogic, run_now  # the module's Logic (scene-injected, testable)
from MedFMAdaptLib.presenter import Action, Presenter, describe_error
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

SETTINGS_URL = "MedFMAdapt/serverUrl"
POLL_MS = 100
TRAIN_POLL_MS = 3000


class MedFMAdapt(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedFMAdapt"
        self.parent.categories = ["Segmentation"]
        self.parent.contributors = ["MedFMAdapt contributors"]
        self.parent.helpText = (
            "Segment with a medical foundation model served by MONAI Label, correct the result, "
            "adapt the model to your site's scans (LoRA, DoRA, decoder, full) and review base against adapted."
        )
        self.parent.acknowledgementText = "Built on 3D Slicer, MONAI Label and MedSAM."


class JobRunner:
    """Runs a Job's `work` on a worker thread and its `finish` on the GUI thread via a polling QTimer."""

    def __init__(self, on_progress, on_done, on_error) -> None:
        self._events: queue.Queue = queue.Queue()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._drain)
        self._on_progress, self._on_done, self._on_error = on_progress, on_done, on_error

    def start(self, job: Job) -> None:
        def target() -> None:
            try:
                result = job.work(lambda message, fraction: self._events.put(("progress", job, (message, fraction))))
                self._events.put(("done", job, result))
            except Exception as error:  # reported on the GUI thread as a status line
                self._events.put(("error", job, error))

        threading.Thread(target=target, name=f"MedFMAdapt-{job.action.value}", daemon=True).start()
        self._timer.start()

    def _drain(self) -> None:
        while True:
            try:
                kind, job, payload = self._events.get_nowait()
            except queue.Empty:
                return
            if kind == "progress":
                self._on_progress(*payload)
                continue
            self._timer.stop()
            if kind == "error":
                self._on_error(job, payload)
                continue
            try:
                self._on_done(job, job.finish(payload))
            except Exception as error:
                self._on_error(job, error)


class MedFMAdaptWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the presenter and logic; keeps no state of its own."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.presenter = Presenter()
        self.logic: MedFMAdaptLogic | None = None
        self.runner: JobRunner | None = None
        self.training_timer: qt.QTimer | None = None
        self.poll_runner: JobRunner | None = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        panel = slicer.util.loadUI(self.resourcePath("UI/MedFMAdapt.ui"))
        self.layout.addWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        panel.setMRMLScene(slicer.mrmlScene)
        self.logic = MedFMAdaptLogic(slicer.mrmlScene)
        self.runner = JobRunner(self.onProgress, self.onJobDone, self.onJobError)
        self.poll_runner = JobRunner(lambda *_: None, self.onTrainingPolled, self.onTrainingPollError)
        self.training_timer = qt.QTimer()
        self.training_timer.setInterval(TRAIN_POLL_MS)
        self.training_timer.timeout.connect(self.pollTraining)

        self.ui.serverUrlLineEdit.text = qt.QSettings().value(SETTINGS_URL, "http://127.0.0.1:8000")
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self._editorNode())
        self.ui.connectButton.clicked.connect(self.onConnect)
        self.ui.uploadButton.clicked.connect(lambda: self.start(lambda: self.logic.upload_job(self._volume())))
        self.ui.nextSampleButton.clicked.connect(self.onNextSample)
        self.ui.autoSegmentButton.clicked.connect(
            lambda: self.start(
                lambda: self.logic.auto_segment_job(self._volume(), self._adapter(), uncertainty=self._uncertainty())
            )
        )
        self.ui.segmentButton.clicked.connect(self.onSegment)
        self.ui.submitLabelButton.clicked.connect(self.onSubmit)
        self.ui.startTrainingButton.clicked.connect(self.onStartTraining)
        self.ui.pretrainButton.clicked.connect(self.onStartPretraining)
        self.ui.stopTrainingButton.clicked.connect(lambda: self.start(self.logic.stop_training_job))
        self.ui.reviewButton.clicked.connect(self.onReview)
        self.ui.toggleReviewButton.clicked.connect(self.onToggleReview)
        self.ui.compareButton.clicked.connect(lambda: self.start(lambda: self.logic.compare_job(self._adapter())))
        self.ui.uncertaintyCheckBox.toggled.connect(self.onUncertaintyToggled)
        self.ui.activateButton.clicked.connect(self.onActivate)
        self.ui.rollbackButton.clicked.connect(self.onRollback)
        self.ui.adapterComboBox.currentIndexChanged.connect(self.onAdapterSelected)
        self.ui.inputVolumeSelector.currentNodeChanged.connect(self.onVolumeChanged)
        for selector in (self.ui.roiSelector, self.ui.foregroundSelector, self.ui.backgroundSelector):
            selector.currentNodeChanged.connect(self.onPromptsChanged)
        self.onVolumeChanged(self.ui.inputVolumeSelector.currentNode())

    def cleanup(self) -> None:
        if self.training_timer is not None:
            self.training_timer.stop()
        self.removeObservers()

    # ---- plumbing ---------------------------------------------------------------------------------------------------

    def _volume(self):
        return self.ui.inputVolumeSelector.currentNode()

    def _adapter(self) -> str:
        return self.presenter.state.selected_adapter or "base"

    def _uncertainty(self) -> bool:
        return bool(self.ui.uncertaintyCheckBox.checked)

    def _showOverlay(self, overlay) -> None:
        """Show an uncertainty map as the slice views' foreground (None: hide it)."""
        if overlay is None:
            slicer.util.setSliceViewerLayers(foreground=None)
        else:
            slicer.util.setSliceViewerLayers(foreground=overlay, foregroundOpacity=0.5)

    def _editorNode(self):
        node = slicer.mrmlScene.GetSingletonNode("MedFMAdapt", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag("MedFMAdapt")
            node = slicer.mrmlScene.AddNode(node)
        return node

    def start(self, make_job) -> None:
        """Build a job (scene reads happen now; a ValueError is shown at once) and run it off the GUI thread."""
        try:
            job = make_job()
        except Exception as error:
            self.presenter.failed(error, None)
            self.render()
            return
        self.presenter.begin(job.action)
        self.render()
        self.runner.start(job)

    def onProgress(self, message: str, fraction: float) -> None:
        self.ui.statusLabel.text = message + "..."
        self.ui.callProgressBar.value = int(100 * fraction)

    def onJobDone(self, job: Job, message: str) -> None:
        if job.action is Action.CONNECT:
            self.presenter.connected(self.logic.client.base_url, self.logic.info, self.logic.registry)
            qt.QSettings().setValue(SETTINGS_URL, self.ui.serverUrlLineEdit.text)
        else:
            self.presenter.succeeded(message)
        if job.action is Action.NEXT_SAMPLE:
            self.presenter.sample_chosen(self.ui.strategyComboBox.currentText, self.logic.last_sample)
            if self.logic.last_fetched is not None:
                self.ui.inputVolumeSelector.setCurrentNode(self.logic.last_fetched)
                slicer.util.setSliceViewerLayers(background=self.logic.last_fetched, fit=True)
        if job.action in (Action.AUTO_SEGMENT, Action.SEGMENT):
            self.presenter.state.has_result = True
            segmentation = scene_lib.working_segmentation(slicer.mrmlScene, self._volume())
            self.ui.segmentEditorWidget.setSegmentationNode(segmentation)
            self.ui.segmentEditorWidget.setSourceVolumeNode(self._volume())
            if self._uncertainty():
                self._showOverlay(self.logic.last_overlay)
        if job.action is Action.COMPARE:
            self.presenter.compared(self.logic.last_comparison)
        if job.action in (Action.ACTIVATE, Action.ROLLBACK):
            self.presenter.registry_changed(self.logic.registry)
        if job.action is Action.UPLOAD:
            self.presenter.volume_changed(True, self.logic.image_id(self._volume()))
        if job.action is Action.REVIEW:
            self.presenter.state.has_review = True
        if job.action in (Action.START_TRAINING, Action.START_PRETRAINING):
            self.presenter.state.training = True
            self.training_timer.start()
        self.ui.callProgressBar.value = 100
        self.render()

    def onJobError(self, job: Job, error: Exception) -> None:
        self.presenter.failed(error, job.action)
        self.ui.callProgressBar.value = 0
        self.render()

    def render(self) -> None:
        """Copy the presenter's state onto the widgets."""
        s = self.presenter.state
        buttons = {
            Action.CONNECT: self.ui.connectButton,
            Action.UPLOAD: self.ui.uploadButton,
            Action.NEXT_SAMPLE: self.ui.nextSampleButton,
            Action.AUTO_SEGMENT: self.ui.autoSegmentButton,
            Action.SEGMENT: self.ui.segmentButton,
            Action.SUBMIT: self.ui.submitLabelButton,
            Action.START_TRAINING: self.ui.startTrainingButton,
            Action.START_PRETRAINING: self.ui.pretrainButton,
            Action.STOP_TRAINING: self.ui.stopTrainingButton,
            Action.REVIEW: self.ui.reviewButton,
            Action.COMPARE: self.ui.compareButton,
            Action.TOGGLE_REVIEW: self.ui.toggleReviewButton,
            Action.ACTIVATE: self.ui.activateButton,
            Action.ROLLBACK: self.ui.rollbackButton,
        }
        for action, button in buttons.items():
            button.enabled = self.presenter.enabled(action)
        self.ui.statusLabel.text = s.status
        self.ui.fmLabel.text = s.fm or "-"
        self.ui.serverInfoLabel.text = f"Strategies: {', '.join(s.strategies) or 'none'}" if s.connected else ""
        self.ui.sampleReasonLabel.text = s.sample_reason
        self.ui.trainingProgressBar.value = int(100 * s.progress)
        self._fillCombo(self.ui.adapterComboBox, [a.label for a in s.adapters], [a.version for a in s.adapters],
                        [a.reason for a in s.adapters])
        self._fillCombo(self.ui.strategyComboBox, s.strategies, s.strategies)
        self._fillTable(self.ui.comparisonTable, [row.cells for row in s.comparison])
        self.ui.comparisonSummaryLabel.text = s.comparison_summary

    @staticmethod
    def _fillTable(table, rows) -> None:
        table.setRowCount(len(rows))
        for r, cells in enumerate(rows):
            for c, text in enumerate(cells):
                table.setItem(r, c, qt.QTableWidgetItem(text))
        table.resizeColumnsToContents()

    @staticmethod
    def _fillCombo(combo, labels, values, tips=None) -> None:
        current = combo.currentData
        combo.blockSignals(True)
        combo.clear()
        for label, value in zip(labels, values):  # noqa: B905 -- strict= needs Python 3.10; Slicer 5.6 has 3.9
            combo.addItem(label, value)
        for index, tip in enumerate(tips or []):  # the guard's reason, on hover
            combo.setItemData(index, tip, qt.Qt.ToolTipRole)
        index = combo.findData(current)
        combo.setCurrentIndex(index if index >= 0 else 0)
        combo.blockSignals(False)

    # ---- slots ------------------------------------------------------------------------------------------------------

    def onConnect(self) -> None:
        url = self.ui.serverUrlLineEdit.text
        token = self.ui.tokenLineEdit.text or None
        verify = self.ui.verifyTlsCheckBox.checked
        self.start(lambda: self.logic.connect_job(url, token, verify))

    def onNextSample(self) -> None:
        strategy = self.ui.strategyComboBox.currentText
        self.start(lambda: self.logic.fetch_job(strategy=strategy))

    def onSegment(self) -> None:
        self.start(
            lambda: self.logic.segment_job(
                self._volume(),
                self.ui.roiSelector.currentNode(),
                self.ui.foregroundSelector.currentNode(),
                self.ui.backgroundSelector.currentNode(),
                self._adapter(),
                self._uncertainty(),
                slice_only=bool(self.ui.sliceOnlyCheckBox.checked),
            )
        )

    def onSubmit(self) -> None:
        volume = self._volume()
        self.start(lambda: self.logic.submit_job(volume, scene_lib.working_segmentation(slicer.mrmlScene, volume)))

    def onStartTraining(self) -> None:
        method = self.ui.methodComboBox.currentText
        epochs = self.ui.epochsSpinBox.value
        rank = self.ui.rankSpinBox.value
        self.max_epochs = epochs
        self.presenter.training_started(TRAINER)
        parent = self.presenter.training_parent(method)
        extra = {"parent": parent} if parent else None
        self.start(lambda: self.logic.start_training_job(method, epochs, rank, extra))

    def onStartPretraining(self) -> None:
        epochs = self.ui.epochsSpinBox.value
        rank = self.ui.rankSpinBox.value
        self.max_epochs = epochs
        self.presenter.training_started(PRETRAINER)
        self.start(lambda: self.logic.start_pretraining_job(epochs, rank))

    def pollTraining(self) -> None:
        self.poll_runner.start(Job(Action.START_TRAINING, lambda _r: self.logic.poll_training(), lambda r: r))

    def onTrainingPolled(self, _job: Job, result) -> None:
        status, info = result
        self.presenter.training_update(status, info, getattr(self, "max_epochs", 1))
        chart = self.logic.show_training(info, self.presenter.state.training_task)
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        if not self.presenter.state.training:
            self.training_timer.stop()
            try:
                self.logic.registry = self.logic.client.registry()
            except ServerError as error:  # the adapter list stays as it was; the status line says why
                self.presenter.state.status = describe_error(error)
            else:
                self.presenter.connected(self.logic.client.base_url, info, self.logic.registry)
        self.render()

    def onTrainingPollError(self, job: Job, error: Exception) -> None:
        self.training_timer.stop()
        self.onJobError(job, error)

    def onReview(self) -> None:
        adapted = next((a.version for a in self.presenter.state.adapters if a.version != "base"), "base")
        if self._adapter() != "base":
            adapted = self._adapter()
        self.start(lambda: self.logic.review_job(self._volume(), adapted))

    def onToggleReview(self) -> None:
        base, adapted = self.logic.review_nodes
        showing_adapted = adapted.GetDisplayNode().GetVisibility()
        scene_lib.set_visible(adapted, not showing_adapted)
        scene_lib.set_visible(base, showing_adapted)

    def onActivate(self) -> None:
        version = self._adapter()
        if slicer.util.confirmOkCancelDisplay(f"Make adapter {version} the one every inference uses?"):
            self.start(lambda: self.logic.activate_job(version))

    def onRollback(self) -> None:
        if slicer.util.confirmOkCancelDisplay("Return to the previously active adapter?"):
            self.start(self.logic.rollback_job)

    def onUncertaintyToggled(self, checked: bool) -> None:
        """Later segmentations ask for uncertainty; the current volume's overlay is shown or hidden now."""
        self.presenter.state.uncertainty = bool(checked)
        self._showOverlay(scene_lib.overlay_of(self._volume()) if checked else None)

    def onAdapterSelected(self, _index: int) -> None:
        self.presenter.state.selected_adapter = self.ui.adapterComboBox.currentData or "base"
        self.render()

    def onVolumeChanged(self, volume) -> None:
        self.presenter.volume_changed(volume is not None, self.logic.image_id(volume))
        self.render()

    def onPromptsChanged(self, _node) -> None:
        self.presenter.state.has_prompts = any(
            s.currentNode() is not None for s in (self.ui.roiSelector, self.ui.foregroundSelector)
        )
        self.render()


class MedFMAdaptTest(ScriptedLoadableModuleTest):
    """The whole workflow inside a real Slicer against a running server (MEDFMADAPT_SERVER, default localhost).

    Run: Slicer --no-splash --ignore-slicerrc --python-code
    "import slicer.testing; slicer.testing.runUnitTest(['<repo>/MedFMAdapt'], 'MedFMAdapt')"
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_workflow()

    def test_workflow(self) -> None:
        url = os.environ.get("MEDFMADAPT_SERVER", "http://127.0.0.1:8000")
        logic = MedFMAdaptLogic(slicer.mrmlScene)
        presenter = Presenter()
        self.delayDisplay(f"Connecting to {url}")
        run_now(logic.connect_job(url))
        presenter.connected(url, logic.info, logic.registry)
        self.assertIn(Action.NEXT_SAMPLE, presenter.enabled_actions())
        self.assertTrue(any(a.active for a in presenter.state.adapters))

        self.delayDisplay("Fetching breast1")
        run_now(logic.fetch_job(image_id="breast1"))
        volume = logic.last_fetched
        dims = scene_lib.dimensions(volume)
        to_ras = scene_lib.ijk_to_ras(volume)
        center = to_ras @ [dims[0] / 2, dims[1] / 2, dims[2] / 2, 1.0]
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "prompt")
        roi.SetCenterWorld(center[0], center[1], center[2])
        spacing = volume.GetSpacing()
        roi.SetSizeWorld(dims[0] * spacing[0] / 4, dims[1] * spacing[1] / 4, 2 * spacing[2])

        self.delayDisplay("Segmenting from an ROI (3 slices), with the uncertainty overlay")
        run_now(logic.segment_job(volume, roi=roi, uncertainty=True))
        segmentation = scene_lib.working_segmentation(slicer.mrmlScene, volume)
        self.assertGreater(segmentation.GetSegmentation().GetNumberOfSegments(), 0)
        self.assertTrue(scene_lib.same_grid(logic.last_overlay, volume))
        slicer.util.setSliceViewerLayers(foreground=logic.last_overlay, foregroundOpacity=0.5)

        self.delayDisplay("Re-uploading as a new case and submitting the label")
        run_now(logic.upload_job(volume, "breast1_slicer_selftest"))
        run_now(logic.submit_job(volume, segmentation))

        self.delayDisplay("Training status and chart")
        status, info = logic.poll_training() if "medsam_adapt" in logic.info.get("trainers", {}) else ({}, logic.info)
        self.assertIsNotNone(logic.show_training(info))
        self.delayDisplay(f"Workflow passed ({status.get('status', 'no training yet')})")
