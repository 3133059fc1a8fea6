"""NoC@90: a simulated annotator clicks until the product's interactive segmentation reaches Dice 0.90.

The annotator starts with no prediction and, each round, clicks the centre of the largest error region of the
current result (3D connected components of missed and false-positive voxels; the largest by voxel count): a
foreground click inside a missed region, a background click inside a false positive. The centre is the voxel
farthest from the region's border (Euclidean distance transform in mm; the volume's edge counts as border). Every
round sends all clicks so far, with no roi, as the server's interactive infer task answers a session's requests:
the first click through `Segmenter.interactive`, each later one through `Segmenter.refine` on the previous answer
(what `MedFMService.interactive` does when a request adds a click to its session's previous one); `refine=False`
gives the fresh answer to all clicks each round, the loop before issue 24. A structure never reached within
`max_clicks` counts `max_clicks + 1` (the usual penalty). As in the usual protocol, a click the model does not act
on is placed again at the same spot next round (the JSON keeps every click, so such sessions can be told apart).
"""

from __future__ import annotations

import numpy as np

from lib.medfm.evaluation import annotator_click
from lib.medfm.metrics import dice
from lib.medfm.prompts import resolve
from lib.medfm.volume import Volume

TARGET = 0.90
MAX_CLICKS = 10


def click_session(segmenter, volume: Volume, truth: np.ndarray, version: str, max_clicks: int = MAX_CLICKS,
                  max_propagation: int = 32, target: float = TARGET, min_clicks: int = 5, refine: bool = True) -> dict:
    """Clicks until Dice >= `target` (and at least `min_clicks`, so Dice after 1/3/5 clicks is always known), at
    most `max_clicks`. Returns the Dice after each click and NoC (`max_clicks + 1` when never reached)."""
    truth = truth.astype(bool)
    pred = np.zeros_like(truth)
    foreground, background, dices = [], [], []
    noc = None
    for n in range(1, max_clicks + 1):
        click = annotator_click(pred, truth, volume.spacing)
        if click is None:  # nothing left to correct: the previous result is perfect
            dices.append(dices[-1] if dices else 1.0)
        else:
            (foreground if click[1] else background).append(click[0])
            prompts = resolve(volume, foreground=foreground, background=background)
            if refine and len(foreground) + len(background) > 1:  # a later click of the session
                point, flag = click[0], int(click[1])
                ax, (px, py) = volume.slice_axis, volume.in_plane_axes
                new = [(point[ax], (float(point[px]), float(point[py]), flag))]
                pred = segmenter.refine(volume, prompts, new, pred.astype(np.uint8), version, max_propagation).label > 0
            else:
                pred = segmenter.interactive(volume, prompts, version, max_propagation).label > 0
            dices.append(round(dice(pred, truth), 4))
        if noc is None and dices[-1] >= target:
            noc = n
        if noc is not None and n >= min_clicks:
            break
    reached = noc is not None
    return {"noc": noc if reached else max_clicks + 1, "reached": reached, "dice_per_click": dices,
            "clicks": {"foreground": foreground, "background": background}}


def dice_after(dices: list[float], n: int) -> float:
    """Dice after `n` clicks; a session that stopped earlier (target reached) keeps its last Dice."""
    return dices[min(n, len(dices)) - 1]
