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
from MedFMAdaptLib import prompt_nodes as prompt_lib
from MedFMAdaptLib import scene as scene_lib
from MedFMAdaptLib.logic import Job, MedFMAdaptLogic, run_now, toggle_review  # the module's Logic (testable)
from MedFMAdaptLib.outcomes import Connected, Outcome, SampleLoaded, Segmented, TrainingStarted
from MedFMAdaptLib.presenter import SHORTCUTS, Action, Presenter
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
    """Binds the .ui to the presenter and logic: reads the widgets, starts jobs, renders the presenter's state.

    Panel state lives in the presenter and scene facts in the scene; the widget holds only plumbing (the job
    runners, the training timer, the prompt watcher, the shortcuts while the module is shown).
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.presenter = Presenter()
        self.logic: MedFMAdaptLogic | None = None
        self.runner: JobRunner | None = None
        self.training_timer: qt.QTimer | None = None
        self.poll_runner: JobRunner | None = None
        self.shortcuts: list = []
        self.prompt_watcher: prompt_lib.PromptWatcher | None = None

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
        self.ui.heldOutCheckBox.toggled.connect(self.onHeldOutToggled)
        self.ui.autoSegmentButton.clicked.connect(
            lambda: self.start(
                lambda: self.logic.auto_segment_job(self._volume(), self._adapter(), uncertainty=self._uncertainty())
            )
        )
        self.ui.propagateButton.clicked.connect(self.onPropagate)
        self.ui.undoPromptButton.clicked.connect(self.onUndoPrompt)
        self.ui.propagateCheckBox.toggled.connect(lambda on: self.presenter.set_propagate(on))
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
        self._setupPromptTools()
        self.onVolumeChanged(self.ui.inputVolumeSelector.currentNode())

    def _setupPromptTools(self) -> None:
        """The three place widgets as bare place buttons; their nodes are bound now and after a scene is closed."""
        modes = slicer.qSlicerMarkupsPlaceWidget
        for role in prompt_lib.ROLES:
            place = self._placeWidget(role)
            place.setMRMLScene(slicer.mrmlScene)
            place.buttonsVisible = False
            place.placeButton().show()
            place.placeMultipleMarkups = (modes.ForcePlaceSingleMarkup if role == prompt_lib.BOX
                                          else modes.ForcePlaceMultipleMarkups)
            place.activeMarkupsPlaceModeChanged.connect(
                lambda placing, role=role: placing and self.presenter.point_tool_chosen(role))
        self._bindPromptNodes()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, lambda _s, _e: self._bindPromptNodes())

    def _bindPromptNodes(self) -> None:
        """Point the place widgets at the module's own markups nodes (made again when a scene was closed) and watch
        them: each placement segments its slice."""
        if self.prompt_watcher is not None:
            self.prompt_watcher.stop()
        nodes = self.logic.prompt_nodes()
        for role in prompt_lib.ROLES:
            self._placeWidget(role).setCurrentNode(nodes.by_role(role))
        self.prompt_watcher = prompt_lib.PromptWatcher(nodes, self.onPromptPlaced, self.onPromptsCounted)

    def enter(self) -> None:
        """Shortcuts of the annotation loop, live only while the module is shown."""
        for key in SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            shortcut.activated.connect(lambda key=key: self.onShortcut(key))
            self.shortcuts.append(shortcut)

    def exit(self) -> None:
        for shortcut in self.shortcuts:
            shortcut.activated.disconnect()
            shortcut.setParent(None)
        self.shortcuts = []

    def cleanup(self) -> None:
        self.exit()
        if self.training_timer is not None:
            self.training_timer.stop()
        self.removeObservers()
        if self.prompt_watcher is not None:
            self.prompt_watcher.stop()
        prompt_lib.remove_owned(slicer.mrmlScene)

    # ---- plumbing ---------------------------------------------------------------------------------------------------

    def _volume(self):
        return self.ui.inputVolumeSelector.currentNode()

    def _adapter(self) -> str:
        return self.presenter.state.selected_adapter or "base"

    def _uncertainty(self) -> bool:
        return bool(self.ui.uncertaintyCheckBox.checked)

    def _placeWidget(self, role: str):
        return {prompt_lib.FOREGROUND: self.ui.foregroundPlaceWidget,
                prompt_lib.BACKGROUND: self.ui.backgroundPlaceWidget, prompt_lib.BOX: self.ui.boxPlaceWidget}[role]

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

    def onJobDone(self, job: Job, outcome: Outcome) -> None:
        """The presenter takes the outcome; the views show its nodes."""
        self.presenter.apply(job.action, outcome)
        if isinstance(outcome, Connected):
            qt.QSettings().setValue(SETTINGS_URL, self.ui.serverUrlLineEdit.text)
        if isinstance(outcome, SampleLoaded) and outcome.volume is not None:
            self.ui.inputVolumeSelector.setCurrentNode(outcome.volume)
            slicer.util.setSliceViewerLayers(background=outcome.volume, fit=True)
        if isinstance(outcome, Segmented):
            self.ui.segmentEditorWidget.setSegmentationNode(outcome.segmentation)
            self.ui.segmentEditorWidget.setSourceVolumeNode(self._volume())
            if outcome.segment_id:
                self.ui.segmentEditorWidget.setCurrentSegmentID(outcome.segment_id)
            if outcome.overlay is not None:
                self._showOverlay(outcome.overlay)
        if isinstance(outcome, TrainingStarted):
            self.training_timer.start()
        self.ui.callProgressBar.value = 100
        self.render()
        pending = self.presenter.take_pending()
        if pending is not None:
            self._segmentPlaced(pending)

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
            Action.HELD_OUT: self.ui.heldOutCheckBox,
            Action.AUTO_SEGMENT: self.ui.autoSegmentButton,
            Action.PROPAGATE: self.ui.propagateButton,
            Action.UNDO_PROMPT: self.ui.undoPromptButton,
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
        placing = self.presenter.state.connected and s.image_id is not None  # placing stays possible while busy
        for role in prompt_lib.ROLES:
            self._placeWidget(role).enabled = placing
        self._setChecked(self.ui.heldOutCheckBox, s.image_held_out)
        self._setChecked(self.ui.propagateCheckBox, s.propagate)
        self.ui.statusLabel.text = s.status
        self.ui.fmLabel.text = s.fm or "-"
        self.ui.serverInfoLabel.text = f"Strategies: {', '.join(s.strategies) or 'none'}" if s.connected else ""
        self.ui.sampleReasonLabel.text = s.sample_reason
        self.ui.trainingProgressBar.value = int(100 * s.progress)
        labels, rate, dice = s.session.lines
        self.ui.sessionLabelsLabel.text, self.ui.sessionRateLabel.text = labels, rate
        self.ui.sessionDiceLabel.text = dice
        self._fillCombo(self.ui.adapterComboBox, [a.label for a in s.adapters], [a.version for a in s.adapters],
                        [a.tip for a in s.adapters])
        self._fillCombo(self.ui.strategyComboBox, s.strategies, s.strategies)
        self._fillTable(self.ui.comparisonTable, [row.cells for row in s.comparison])
        self.ui.comparisonSummaryLabel.text = s.comparison_summary

    @staticmethod
    def _setChecked(box, checked: bool) -> None:
        box.blockSignals(True)
        box.checked = bool(checked)
        box.blockSignals(False)

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
        for index, tip in enumerate(tips or []):  # the guard's intervals and reason, on hover
            combo.setItemData(index, tip, qt.Qt.ToolTipRole)
        index = combo.findData(current)
        combo.setCurrentIndex(index if index >= 0 else 0)
        combo.blockSignals(False)

    # ---- slots ------------------------------------------------------------------------------------------------------

    def onConnect(self) -> None:
        url = self.ui.serverUrlLineEdit.text
        token = self.ui.tokenLineEdit.text or None
        verify = self.ui.verifyTlsCheckBox.checked
        username, password = self.ui.usernameLineEdit.text.strip(), self.ui.passwordLineEdit.text
        self.ui.passwordLineEdit.text = ""  # used once, for the sign-in; the token is kept, the password is not
        self.start(lambda: self.logic.connect_job(url, token, verify, username, password))

    def onNextSample(self) -> None:
        strategy = self.ui.strategyComboBox.currentText
        self.start(lambda: self.logic.fetch_job(strategy=strategy))

    def onHeldOutToggled(self, checked: bool) -> None:
        volume = self._volume()
        self.start(lambda: self.logic.held_out_job(volume, bool(checked)))

    def onPromptPlaced(self, placed) -> None:
        """A point or the box was placed: segment its slice now (or after the call that is running)."""
        if self.presenter.prompt_placed(placed):
            self._segmentPlaced(placed)
        self.render()

    def _segmentPlaced(self, placed) -> None:
        volume, segment_id = self._volume(), self._editorNode().GetSelectedSegmentID()
        propagate = self.presenter.state.propagate
        self.start(lambda: self.logic.segment_job(volume, None, segment_id, self._adapter(), self._uncertainty(),
                                                  placed=placed, propagate=propagate))

    def onPromptsCounted(self, count: int) -> None:
        self.presenter.prompts_changed(count)
        self.render()

    def onPropagate(self) -> None:
        volume, segment_id = self._volume(), self._editorNode().GetSelectedSegmentID()
        self.start(lambda: self.logic.segment_job(volume, None, segment_id, self._adapter(), self._uncertainty()))

    def onUndoPrompt(self) -> None:
        self.start(lambda: self.logic.undo_prompt_job(self._volume(), self.presenter.last_prompt_step()))

    def onTogglePoint(self) -> None:
        role = self.presenter.toggle_point()
        self._placeWidget(role).setPlaceModeEnabled(True)
        self.render()

    def onShortcut(self, key: str) -> None:
        action = self.presenter.shortcut(key)
        slots = {
            Action.NEXT_SAMPLE: self.onNextSample,
            Action.SUBMIT: self.onSubmit,
            Action.TOGGLE_POINT: self.onTogglePoint,
            Action.UNDO_PROMPT: self.onUndoPrompt,
            Action.PROPAGATE: self.onPropagate,
        }
        if action in slots:
            slots[action]()

    def onSubmit(self) -> None:
        volume = self._volume()
        self.start(lambda: self.logic.submit_job(volume, scene_lib.working_segmentation(slicer.mrmlScene, volume)))

    def onStartTraining(self) -> None:
        method = self.ui.methodComboBox.currentText
        epochs = self.ui.epochsSpinBox.value
        rank = self.ui.rankSpinBox.value
        parent = self.presenter.training_parent(method)
        extra = {"parent": parent} if parent else None
        self.start(lambda: self.logic.start_training_job(method, epochs, rank, extra))

    def onStartPretraining(self) -> None:
        epochs = self.ui.epochsSpinBox.value
        rank = self.ui.rankSpinBox.value
        self.start(lambda: self.logic.start_pretraining_job(epochs, rank))

    def pollTraining(self) -> None:
        if not self.presenter.enabled(Action.POLL_TRAINING):
            self.training_timer.stop()
            return
        self.poll_runner.start(self.logic.poll_training_job())

    def onTrainingPolled(self, job: Job, outcome: Outcome) -> None:
        self.presenter.apply(job.action, outcome)
        chart = self.logic.show_training(outcome.info, self.presenter.state.training_task)
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        if not self.presenter.state.training:
            self.training_timer.stop()
        self.render()

    def onTrainingPollError(self, job: Job, error: Exception) -> None:
        self.training_timer.stop()
        self.presenter.failed(error, job.action)
        self.render()

    def onReview(self) -> None:
        adapted = next((a.version for a in self.presenter.state.adapters if a.version != "base"), "base")
        if self._adapter() != "base":
            adapted = self._adapter()
        self.start(lambda: self.logic.review_job(self._volume(), adapted))

    def onToggleReview(self) -> None:
        try:
            toggle_review(self._volume())
        except ValueError as error:
            self.presenter.failed(error, Action.TOGGLE_REVIEW)
            self.render()

    def onActivate(self) -> None:
        version = self._adapter()
        if slicer.util.confirmOkCancelDisplay(f"Make adapter {version} the one every inference uses?"):
            self.start(lambda: self.logic.activate_job(version))

    def onRollback(self) -> None:
        if slicer.util.confirmOkCancelDisplay("Return to the previously active adapter?"):
            self.start(self.logic.rollback_job)

    def onUncertaintyToggled(self, checked: bool) -> None:
        """Later segmentations ask for uncertainty; the current volume's overlay is shown or hidden now."""
        self.presenter.set_uncertainty(checked)
        self._showOverlay(scene_lib.overlay_of(self._volume()) if checked else None)

    def onAdapterSelected(self, _index: int) -> None:
        self.presenter.adapter_selected(self.ui.adapterComboBox.currentData)
        self.render()

    def onVolumeChanged(self, volume) -> None:
        image_id = self.logic.image_id(volume)
        if image_id != self.presenter.state.image_id:
            self.logic.prompt_nodes().clear()  # prompts belong to the case they were placed on
        self.presenter.volume_changed(volume is not None, image_id)
        self.render()


class MedFMAdaptTest(ScriptedLoadableModuleTest):
    """The whole workflow inside a real Slicer against a running server (MEDFMADAPT_SERVER, default localhost).

    Run: Slicer --no-splash --ignore-slicerrc --python-code
    "import slicer.testing; slicer.testing.runUnitTest(['<repo>/MedFMAdapt'], 'MedFMAdapt')"
    Not run in CI (no Slicer there); pytest covers the same Logic, scene and presenter with slicer-core.
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
        presenter.apply(Action.CONNECT, run_now(logic.connect_job(url)))
        self.assertIn(Action.NEXT_SAMPLE, presenter.enabled_actions())
        self.assertTrue(any(a.active for a in presenter.state.adapters))

        self.delayDisplay("Fetching breast1")
        loaded = run_now(logic.fetch_job(image_id="breast1"))
        presenter.apply(Action.NEXT_SAMPLE, loaded)
        volume = loaded.volume
        presenter.volume_changed(True, logic.image_id(volume))
        dims = scene_lib.dimensions(volume)
        axis = scene_lib.acquisition_axis(volume)
        center = scene_lib.ijk_to_ras(volume) @ [dims[0] / 2, dims[1] / 2, dims[2] / 2, 1.0]
        nodes = logic.prompt_nodes()
        nodes.box.SetCenterWorld(center[0], center[1], center[2])
        spacing = volume.GetSpacing()
        nodes.box.SetSizeWorld(dims[0] * spacing[0] / 4, dims[1] * spacing[1] / 4, spacing[2] / 2)
        placed = prompt_lib.newest(nodes, prompt_lib.BOX)

        self.delayDisplay("A box placed: its slice is segmented, with the uncertainty overlay")
        segmented = run_now(logic.segment_job(volume, placed=placed, propagate=False, uncertainty=True))
        presenter.apply(Action.SEGMENT, segmented)
        mask = scene_lib.segment_array(segmented.segmentation, segmented.segment_id, volume)
        self.assertEqual(segmented.params["slices"], [prompt_lib.placed_slice(volume, nodes, placed, axis)])
        self.assertEqual(int(mask.any(axis=tuple(a for a in range(3) if a != 2 - axis)).sum()), 1)
        self.assertTrue(scene_lib.same_grid(segmented.overlay, volume))

        self.delayDisplay("Undo the box: the slice is empty again")
        presenter.apply(Action.UNDO_PROMPT, run_now(logic.undo_prompt_job(volume, presenter.last_prompt_step())))
        self.assertFalse(scene_lib.segment_array(segmented.segmentation, segmented.segment_id, volume).any())

        self.delayDisplay("Re-uploading as a new case, segmenting and submitting the label")
        run_now(logic.upload_job(volume, "breast1_slicer_selftest"))
        nodes.box.SetCenterWorld(center[0], center[1], center[2])
        run_now(logic.segment_job(volume, placed=prompt_lib.newest(nodes, prompt_lib.BOX), propagate=True))
        submitted = run_now(logic.submit_job(volume, segmented.segmentation))
        presenter.apply(Action.SUBMIT, submitted)
        self.assertGreaterEqual(presenter.state.session.labels, 1)

        self.delayDisplay("Held out and back")
        presenter.apply(Action.HELD_OUT, run_now(logic.held_out_job(volume, True)))
        self.assertIn("breast1_slicer_selftest", presenter.state.held_out)
        presenter.apply(Action.HELD_OUT, run_now(logic.held_out_job(volume, False)))

        self.delayDisplay("Training status and chart")
        polled = run_now(logic.poll_training_job())
        self.assertIsNotNone(logic.show_training(polled.info))
        self.delayDisplay(f"Workflow passed ({polled.status.get('status', 'no training yet')})")
