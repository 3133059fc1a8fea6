"""Load MedFMAdapt.ui without Slicer: plain QUiLoader (ctk/qMRML classes fall back to their declared bases),
or a preview loader that draws stand-ins for them so a screenshot shows what the panel contains."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UI_FILE = REPO / "MedFMAdapt/Resources/UI/MedFMAdapt.ui"


def application():
    """The one QApplication of the process, offscreen so no display is needed."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def load(preview: bool = False):
    """The panel as a QWidget; with preview=True ctk/qMRML widgets are drawn as similar plain Qt widgets."""
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QComboBox, QGroupBox, QLabel, QPushButton

    class PreviewLoader(QUiLoader):
        def createWidget(self, class_name, parent=None, name=""):  # noqa: N802 -- Qt override
            stand_ins = {"ctkCollapsibleButton": QGroupBox, "qMRMLNodeComboBox": QComboBox}
            if class_name in stand_ins:
                widget = stand_ins[class_name](parent)
            elif class_name == "qSlicerMarkupsPlaceWidget":
                widget = QPushButton("Place", parent)  # Slicer draws a place-mode tool button here
            elif class_name == "qMRMLSegmentEditorWidget":
                widget = QLabel("[ Slicer Segment Editor: segments, effects, undo ]", parent)
                widget.setMinimumHeight(60)
                widget.setStyleSheet("border: 1px dashed gray; color: gray; padding: 6px;")
            else:
                return super().createWidget(class_name, parent, name)
            widget.setObjectName(name)
            return widget

    application()
    loader = PreviewLoader() if preview else QUiLoader()
    file = QFile(str(UI_FILE))
    if not file.open(QFile.ReadOnly):
        raise OSError(f"cannot open {UI_FILE}")
    try:
        panel = loader.load(file)
    finally:
        file.close()
    if panel is None:
        raise RuntimeError(loader.errorString())
    if preview:
        for box in panel.findChildren(QGroupBox):
            box.setTitle(str(box.property("text") or box.objectName()))
        for combo in panel.findChildren(QComboBox):
            types = combo.property("nodeTypes")
            if types:
                combo.addItem(f"(select {types[0].replace('vtkMRML', '').replace('Node', '')})")
    return panel


def screenshot(path: Path, width: int = 420) -> Path:
    """Render the preview panel to a PNG."""
    panel = load(preview=True)
    panel.resize(width, panel.sizeHint().height())
    panel.show()
    application().processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(path)):
        raise OSError(f"could not save {path}")
    panel.close()
    return path
