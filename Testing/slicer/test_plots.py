"""The training chart: table rows follow the server's history, and repeated polls reuse the same nodes."""

from __future__ import annotations

import math

from MedFMAdapt.MedFMAdaptLib.plots import update_training_plot


def test_chart_tracks_history_without_duplicating_nodes(scene):
    chart = update_training_plot(scene, [{"epoch": 1, "train_loss": 0.9, "val_dice": 0.6}])
    history = [{"epoch": 1, "train_loss": 0.9, "val_dice": 0.6}, {"epoch": 2, "train_loss": 0.7}]
    again = update_training_plot(scene, history)
    assert again is chart and chart.GetNumberOfPlotSeriesNodes() == 2
    table = scene.GetFirstNodeByName("MedFMAdapt training history").GetTable()
    assert table.GetNumberOfRows() == 2
    assert table.GetColumnByName("train_loss").GetValue(1) == 0.7
    assert math.isnan(table.GetColumnByName("val_dice").GetValue(1))  # epoch without validation stays a gap
    assert scene.GetNodesByClass("vtkMRMLPlotSeriesNode").GetNumberOfItems() == 2
