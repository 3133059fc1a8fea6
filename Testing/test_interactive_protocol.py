"""The interactive benchmark's simulated annotator and scores follow CVPR25_iter_eval.py (issue 24)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "interactive_protocol", Path(__file__).resolve().parents[1] / "benchmarks" / "interactive_protocol.py")
protocol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(protocol)


def test_no_click_when_the_prediction_is_perfect():
    truth = np.zeros((8, 8, 4), bool)
    truth[2:5, 2:5, 1:3] = True
    assert protocol.challenge_click(truth.copy(), truth) is None


def test_a_miss_gets_a_foreground_click_inside_it_and_an_over_segmentation_a_background_click():
    truth = np.zeros((20, 20, 6), bool)
    truth[2:12, 2:12, 1:5] = True
    pred = truth.copy()
    pred[4:10, 4:10, 2:4] = False  # a hole: a miss
    (ijk, foreground) = protocol.challenge_click(pred, truth)
    assert foreground and truth[tuple(ijk)] and not pred[tuple(ijk)]
    pred = truth.copy()
    pred[13:19, 13:19, 1:5] = True  # a false positive, larger than any miss
    (ijk, foreground) = protocol.challenge_click(pred, truth)
    assert not foreground and pred[tuple(ijk)] and not truth[tuple(ijk)]


def test_error_components_are_26_connected():
    """Two error blocks touching only at a corner are one component (26-connectivity): together they outweigh a
    larger block that 6-connectivity would pick."""
    truth = np.zeros((30, 30, 3), bool)
    pred = truth.copy()
    pred[0:4, 0:4, 1] = True  # 16 voxels
    pred[4:8, 4:8, 1] = True  # 16 more, touching the first at one corner only
    pred[20:25, 20:25, 1] = True  # 25 voxels
    ijk, foreground = protocol.challenge_click(pred, truth)
    assert not foreground and ijk[0] < 8 and ijk[1] < 8


def test_dsc_auc_is_the_trapezoid_over_the_clicks_with_a_maximum_of_four_for_five_clicks():
    assert protocol.dsc_auc([1.0] * 5) == pytest.approx(4.0)
    assert protocol.dsc_auc([0.5, 0.6, 0.7, 0.8, 0.9]) == pytest.approx(2.8)


def test_nsd_is_one_for_a_perfect_mask_and_zero_against_an_empty_one():
    truth = np.zeros((20, 20, 6), bool)
    truth[5:15, 5:15, 1:5] = True
    assert protocol.nsd(truth, truth, (1.0, 1.0, 3.0)) == pytest.approx(1.0)
    assert protocol.nsd(np.zeros_like(truth), truth, (1.0, 1.0, 3.0)) == 0.0
    shifted = np.roll(truth, 1, axis=0)  # 1 mm off: within the 2 mm tolerance
    assert protocol.nsd(shifted, truth, (1.0, 1.0, 3.0)) == pytest.approx(1.0)
