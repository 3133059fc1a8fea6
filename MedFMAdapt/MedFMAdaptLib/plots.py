"""The live loss / validation-Dice chart, as MRML table and plot nodes (Slicer's own plot view shows them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import slicer
import vtk

COLUMNS = ("epoch", "train_loss", "val_dice")
SERIES = {"train_loss": ("Training loss", (0.85, 0.3, 0.1)), "val_dice": ("Validation Dice", (0.1, 0.45, 0.85))}
TABLE_NAME = "MedFMAdapt training history"
CHART_NAME = "MedFMAdapt training"


def _node(scene, class_name: str, name: str):
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.IsA(class_name):
        return existing
    node = getattr(slicer, class_name)()
    node.SetName(name)
    scene.AddNode(node)
    return node


def update_training_plot(scene, history: Sequence[dict[str, Any]]):
    """Rewrite the history table from the server's per-epoch list; create the chart once. Returns the chart node."""
    table_node = _node(scene, "vtkMRMLTableNode", TABLE_NAME)
    table = vtk.vtkTable()
    arrays = {}
    for name in COLUMNS:
        array = vtk.vtkDoubleArray()
        array.SetName(name)
        table.AddColumn(array)
        arrays[name] = array
    for row in history:
        for name in COLUMNS:
            value = row.get(name)
            arrays[name].InsertNextValue(float(value) if value is not None else float("nan"))
    table_node.SetAndObserveTable(table)

    chart = _node(scene, "vtkMRMLPlotChartNode", CHART_NAME)
    chart.SetTitle("Adaptation: loss and validation Dice")
    chart.SetXAxisTitle("epoch")
    for column, (title, color) in SERIES.items():
        series = _node(scene, "vtkMRMLPlotSeriesNode", title)
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("epoch")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetColor(*color)
        if not chart.HasPlotSeriesNodeID(series.GetID()):
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart
