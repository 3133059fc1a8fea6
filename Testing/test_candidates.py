"""Which of the decoder's candidate masks answers a lone click (Segmenter._segment_slice without an roi)."""

from __future__ import annotations

import numpy as np

from lib.medfm.segmenter import QUALITY_TIE, _likest_the_clicks


def _scene():
    """A bright 6 x 6 lesion (0.8) in darker tissue (0.4); candidates: the lesion, and a box-filling 20 x 20 mask."""
    image = np.full((32, 32), 0.4, np.float32)
    image[10:16, 10:16] = 0.8
    lesion = np.zeros((32, 32), bool)
    lesion[10:16, 10:16] = True
    wide = np.zeros((32, 32), bool)
    wide[4:24, 4:24] = True
    return image, [lesion, wide]


def test_near_equal_quality_goes_to_the_tissue_the_click_is_on():
    image, masks = _scene()
    quality = np.array([0.715, 0.723], np.float32)  # breast1's two candidates, a pixel off the lesion's centre
    clicks = [(12.0, 13.0, 1)]
    best = int(np.argmax(quality))
    assert _likest_the_clicks(masks, quality, clicks, best, image) == 0


def test_a_clear_quality_lead_is_kept_and_a_mask_missing_the_click_never_wins():
    image, masks = _scene()
    clicks = [(12.0, 13.0, 1)]
    quality = np.array([0.70, 0.70 + QUALITY_TIE + 0.01], np.float32)
    assert _likest_the_clicks(masks, quality, clicks, 1, image) == 1
    elsewhere = np.zeros((32, 32), bool)
    elsewhere[26:30, 26:30] = True  # bright-looking as the click? no matter: it leaves the click out
    image[26:30, 26:30] = 0.8
    quality = np.array([0.70, 0.70, 0.705], np.float32)
    assert _likest_the_clicks([masks[1], masks[1], elsewhere], quality, clicks, 0, image) in (0, 1)
