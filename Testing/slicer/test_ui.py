"""The .ui file loads under Qt (offscreen), names every widget MedFMAdapt.py uses, and renders to a PNG."""

from __future__ import annotations

import re

import pytest

from Testing.slicer.ui_preview import REPO, UI_FILE, application, load, screenshot

pytest.importorskip("PySide6.QtUiTools")
MODULE_FILE = REPO / "MedFMAdapt/MedFMAdapt.py"


def widget_names_used_by_module() -> set[str]:
    return set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))


def test_ui_loads_with_ctk_and_mrml_widgets_falling_back_to_their_bases():
    from PySide6.QtWidgets import QPushButton, QWidget

    application()
    panel = load()
    assert panel.objectName() == "MedFMAdapt"
    server = panel.findChild(QWidget, "serverCollapsibleButton")
    assert type(server) is QWidget  # ctkCollapsibleButton -> declared base QWidget
    assert type(panel.findChild(QWidget, "segmentEditorWidget")) is QWidget  # via qMRMLWidget -> QWidget
    assert isinstance(panel.findChild(QWidget, "connectButton"), QPushButton)


def test_ui_declares_slicer_custom_widgets():
    text = UI_FILE.read_text()
    for cls, base in [
        ("ctkCollapsibleButton", "QWidget"),
        ("qMRMLNodeComboBox", "QWidget"),
        ("qMRMLSegmentEditorWidget", "qMRMLWidget"),
    ]:
        assert re.search(rf"<class>{cls}</class>\s*<extends>{base}</extends>", text), cls


def test_ui_has_every_widget_the_module_refers_to():
    from PySide6.QtCore import QObject

    names = widget_names_used_by_module()
    assert len(names) > 25  # the parse found the Widget's bindings, not nothing
    panel = load()
    missing = sorted(n for n in names if panel.findChild(QObject, n) is None)
    assert missing == []


def test_panel_screenshot(tmp_path):
    from PySide6.QtGui import QImage

    path = screenshot(tmp_path / "panel.png")
    image = QImage(str(path))
    assert image.width() == 420 and image.height() > 600
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 10  # drawn widgets, not a blank surface
