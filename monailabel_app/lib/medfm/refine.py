"""A correction click edits the answer the radiologist already has, on its slice, and never the other way round.

LiteMedSAM learned box prompts only (its training never fed points or masks), so a click handed to its decoder is a
prompt it does not understand: on the sample lesions a click moved Dice either way, and piled-up background clicks
emptied slices. Here the decoder is only asked what it knows, boxes (and, as one more candidate, SAM's point and
mask_input path), and the click decides what of the answers is taken:

- a foreground click adds the part of a candidate mask that holds it, and removes nothing;
- a background click removes the part of the previous mask around it that a candidate excludes, and adds nothing;
  at the centre of a blob without a foreground click it removes that blob;
- every click of the slice so far stays honoured (no edit may drop a foreground click or cover a background one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .prompts import box_of_mask

Box = tuple[float, float, float, float]
Click = tuple[float, float, int]  # x (column), y (row), 1 = foreground / 0 = background
# (boxes, with_clicks) -> [(mask, quality)]: the decoder on one slice; with_clicks also sends the slice's clicks as
# points and the previous mask as mask_input.
Decode = Callable[[list[Box], bool], list[tuple[np.ndarray, float]]]
EIGHT = np.ones((3, 3), dtype=bool)
FALLBACK_RADIUS = 2  # pixels: what a click changes when no candidate agrees with it
CENTRE_DEPTH = 0.5  # a background click this deep in a blob (of its deepest point) removes the blob
CENTRE_MIN_DEPTH = 3.0  # pixels: a blob thinner than this has no heart to click apart from its rim
MOST_OF_A_SLICE = 0.5  # a removal larger than this share of a slice's answer is a cut gone wrong, not a trim
GROW_TOLERANCE = 0.05  # windowed intensity ([0, 1]): how alike pixels grown from a foreground click must be
GROW_LIMIT = 20  # pixels: the most a click may grow on a slice whose answer is smaller than that
MIXED_SPREAD = 2.0  # an addition whose intensities spread more than this many times the answer's is not the structure
INTENSITY_TOLERANCE = 0.1  # windowed units ([0, 1]): the least change of mean that makes a mask other tissue (Looks)


@dataclass(frozen=True)
class SliceEdit:
    mask: np.ndarray  # rows x cols, bool
    how: str  # which candidate was taken, for the log and the tests


def edit_slice(previous: np.ndarray, clicks: list[Click], newest: Click, decode: Decode,
               bounds: Box | None = None, click_boxes: list[Box] | None = None,
               neighbours: np.ndarray | None = None, in_roi: bool = False,
               image: np.ndarray | None = None) -> SliceEdit:
    """The previous mask of one slice edited by its newest click, honouring every click of the slice.

    `in_roi`: the slice is inside the user's 3D box, which says the structure is on it, so a click never empties it.
    `image`: the slice's windowed intensities ([0, 1]), for a foreground click no decoder answer holds.
    """
    previous = previous.astype(bool)
    x, y, flag = newest
    r, c = _pixel(previous.shape, x, y)
    if flag == 1:
        if previous[r, c]:
            return SliceEdit(previous, "already foreground")
        return _add(previous, clicks, (r, c), decode, bounds, click_boxes or [], neighbours, image)
    if not previous[r, c]:
        return SliceEdit(previous, "already background")
    return _remove(previous, clicks, (r, c), decode, neighbours, in_roi, image)


def _add(previous, clicks, at, decode: Decode, bounds, click_boxes, neighbours: np.ndarray | None,
         image: np.ndarray | None) -> SliceEdit:
    r, c = at
    if bounds is not None and not (bounds[0] <= c < bounds[2] and bounds[1] <= r < bounds[3]):
        bounds = None  # a click outside the user's own box says the structure goes past it
    grown = previous.copy()
    grown[r, c] = True
    boxes = []
    if previous.any():
        boxes.append(_clip(box_of_mask(grown), bounds))
    elif neighbours is not None and neighbours.any():  # a slice with no answer yet: the structure next to it, moved
        boxes.append(_clip(box_of_mask(neighbours | grown), bounds))  # to take the click in, as propagation does
    boxes += [_clip(b, bounds) for b in click_boxes]
    candidates = [(m, q, f"box {n}") for n, (m, q) in enumerate(decode(boxes, False))]
    if previous.any():
        candidates += [(m, q, "box+clicks+mask") for m, q in decode(boxes[:1], True)]
    keep_out = _near(previous.shape, clicks, flag=0)  # background clicks stay background
    best = None
    for mask, quality, how in candidates:
        part = _component(mask & ~keep_out, at)
        if not part.any() or (image is not None and _not_the_answers_kind(image, previous, part & ~previous)):
            continue
        edited = previous | part
        if honours(edited, clicks) and (best is None or quality > best[1]):
            best = (edited, quality, how)
    if best is not None:
        return SliceEdit(best[0], best[2])
    for similar in _grow_criteria(image, previous, at) if image is not None else ():
        grown = _grow(similar, previous, at, bounds)
        if grown is not None and honours(previous | grown, clicks):
            return SliceEdit(previous | grown, "grown")
    # A fallback disk never takes back an earlier click's own pixel (brain2: a background click's disk took the
    # foreground click one pixel away, and the annotator clicked it again).
    return SliceEdit(previous | (_disk(previous.shape, at) & ~_near(previous.shape, clicks, 0, radius=0)), "disk")


@dataclass(frozen=True)
class Looks:
    """How the clicked structure looks on its seed slice: the mean and spread of its windowed intensities.

    Without an roi nothing bounds a propagation but the decoder's quality estimate, and LiteMedSAM rates a box
    around whatever tissue it finds past a small lesion's ends as highly as the lesion itself (brain2: 3 lesion
    slices, 14 answered, the extra ones a flat region 0.1-0.2 darker than the lesion). A propagated mask whose mean
    intensity is further from the seed's than the seed's own spread (at least INTENSITY_TOLERANCE) is another
    structure, and the walk stops there.
    """

    mean: float
    spread: float

    @classmethod
    def of(cls, slice2d: np.ndarray, mask: np.ndarray) -> Looks:
        values = slice2d[mask]
        return cls(float(values.mean()), max(float(values.std()), INTENSITY_TOLERANCE))

    def matches(self, slice2d: np.ndarray, mask: np.ndarray) -> bool:
        return abs(float(slice2d[mask].mean()) - self.mean) <= self.spread


def _not_the_answers_kind(image: np.ndarray, previous: np.ndarray, added: np.ndarray) -> bool:
    """Whether a decoder's addition is other tissue than the answer it joins (both larger than GROW_LIMIT pixels):
    its intensities spread more than MIXED_SPREAD times the answer's (at least GROW_TOLERANCE), or, larger than the
    answer, it does not look like the answer (Looks: its mean further than the answer's spread, at least 0.1).

    A click box large enough to hold the click also holds what is around the structure, and the walk carries it on.
    On the site benchmark's clicks-only sessions: brain1_crop, a 60 mm box added 2,235 pixels (176 of them lesion),
    spread 0.18 against the answer's 0.08 (Dice 0.85 -> 0.52; refused: 0.855); brain2_crop after decoder
    adaptation, a 60 mm box added 785 pixels of mean 0.28 to an 86-pixel answer of 0.41 +- 0.10 (0.55 -> 0.14). An
    organ's sliver grows into more of the same organ, alike in mean and spread (organs unchanged).
    """
    if previous.sum() < GROW_LIMIT or added.sum() <= GROW_LIMIT:
        return False
    if float(image[added].std()) > MIXED_SPREAD * max(float(image[previous].std()), GROW_TOLERANCE):
        return True
    return bool(added.sum() > previous.sum() and not Looks.of(image, previous).matches(image, added))


def _grow_criteria(image: np.ndarray, previous: np.ndarray, at: tuple[int, int]):
    """What "looks like the click" means for a foreground click, tried in turn: within GROW_TOLERANCE of it; then
    (beside an answer) as far from the background around the answer as the click, or further.

    The second is for a miss whose pixels vary more than the tolerance but all stand out from the tissue around:
    breast1's bright lesion (slice 9: 34 missed pixels, 0.79 +- 0.11) took a 2-pixel disk per click; grown as
    "at least as bright as the click" its first click added 23 pixels, 23 of them lesion (Dice after box + 5 clicks
    0.664 -> 0.706, Intel Xeon, 2026-12-07). Tried first instead of second, it leaked on brain2 (0.751 -> 0.742).
    """
    yield _like_the_click(image, at)
    if previous.any():
        ring = ndimage.binary_dilation(previous, iterations=3) & ~previous
        if ring.any():
            yield _past_the_click(image, at, float(np.median(image[ring])))


def _grow(similar: np.ndarray, previous: np.ndarray, at: tuple[int, int], bounds: Box | None) -> np.ndarray | None:
    """What a foreground click no decoder answer holds marks: the pixels connected to it that look like it.

    LiteMedSAM leaves out the darker half of a heterogeneous lesion whatever box it is given (brain2: 86 of 185
    pixels), and a 2-pixel disk per click took four clicks to add 50 of the 99 missed. Here the click grows over
    `similar` pixels (see _grow_criteria), kept to the user's box and to within twice the click's distance from the
    answer (a miss at the answer's edge is the answer's size, not the image's). A region larger than the answer (at
    least GROW_LIMIT pixels) has leaked into the background: None, and the disk it is.
    """
    if previous.any():
        reach = ndimage.distance_transform_edt(~previous)[at]
        similar &= ndimage.binary_dilation(previous, iterations=int(2 * reach) + 2)
    if bounds is not None:
        inside = np.zeros_like(similar)
        x0, y0, x1, y1 = (int(round(v)) for v in bounds)
        inside[max(y0, 0):y1, max(x0, 0):x1] = True  # box corners are pixel edges
        similar &= inside
    region = _component(similar, at)
    added = region & ~previous
    if not added.any() or added.sum() > max(int(previous.sum()), GROW_LIMIT):
        return None
    return region


def click_value(image: np.ndarray, at: tuple[int, int]) -> float:
    """The mean of the click's 3 x 3 neighbourhood: what the radiologist pointed at, not one noisy pixel."""
    r, c = at
    return float(image[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].mean())


def _like_the_click(image: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    """Pixels within GROW_TOLERANCE of the click's value."""
    return np.abs(image - click_value(image, at)) <= GROW_TOLERANCE


def _past_the_click(image: np.ndarray, at: tuple[int, int], reference: float) -> np.ndarray:
    """Pixels at least as far from `reference` as the click (less GROW_TOLERANCE), on the click's side of it."""
    value = click_value(image, at)
    return image <= value + GROW_TOLERANCE if value < reference else image >= value - GROW_TOLERANCE


def _alike(image: np.ndarray, removable: np.ndarray, at: tuple[int, int]) -> np.ndarray | None:
    """The part of the answer a background click sits on that is the click's kind of tissue: connected to it, and
    as far from the answer's median as the click or further (darker when the click is darker than the answer).

    An over-segmentation is most often a rim or a blob of the tissue next to a structure, which differs from the
    structure in one direction (lung1's rim 0.29-0.31 around a 0.47 nodule; brain1's 0.30-0.36 around 0.44-0.50);
    its pixels vary, so "within GROW_TOLERANCE of the click" left most of them: lesions after box + 5 clicks
    0.817 -> 0.822, clicks only 0.744 -> 0.765 (breast1 0.62 -> 0.73, lung1 0.91 -> 0.93; Intel Xeon, 2026-12-07).
    None when the click's own pixel is not in it."""
    part = _component(removable & _past_the_click(image, at, float(np.median(image[removable]))), at)
    return part if part.any() else None


def _remove(previous, clicks, at, decode: Decode, neighbours: np.ndarray | None, in_roi: bool,
            image: np.ndarray | None) -> SliceEdit:
    r, c = at
    part = _component(previous, at)
    # A cut one click asks of the decoder trims the answer, it never takes most of the slice: one removed 219 of a
    # kidney slice's 287 pixels (74 of them wrong); without a box, one took brain1's whole lesion (226 pixels) with
    # 291 wrong ones and kept 351 wrong. A whole blob clicked at its centre (or a separate island) may go, except
    # inside the user's 3D box when it is most of the slice (brain1: a centre click took 786 of a slice's 859
    # pixels, the lesion's 232 with them, and left a 73-pixel stray; Dice on the slice 0.42 -> 0).
    trim = previous.sum() * MOST_OF_A_SLICE
    most = trim if in_roi else np.inf
    if part.sum() <= most and not _holds_foreground(part, clicks) and _is_centre(part, at):
        return SliceEdit(previous & ~part, "centre")  # a click at the heart of a blob says all of it is wrong
    ys, xs = np.nonzero(part)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    cuts = [(c + 1, y0, x1, y1), (x0, y0, c, y1), (x0, r + 1, x1, y1), (x0, y0, x1, r)]  # keep one side of the click
    boxes = [tuple(float(v) for v in b) for b in cuts if b[2] - b[0] >= 2 and b[3] - b[1] >= 2]
    full = box_of_mask(previous)
    candidates = [(m, q, f"cut {n}") for n, (m, q) in enumerate(decode(boxes, False))] if boxes else []
    candidates += [(m, q, "box+clicks+mask") for m, q in decode([full], True)]
    keep_in = _near(previous.shape, clicks, flag=1)  # foreground clicks stay foreground
    # What stays should go on in the slices next to it (a structure is continuous; a wrong blob removed from one
    # slice often is too): the kept part that overlaps the neighbouring slices' answer most wins, quality breaks ties.
    best = None
    for mask, quality, how in candidates:
        removed = _component(previous & ~mask & ~keep_in, at)
        if not removed.any() or removed.sum() > trim:  # however small: the decoder's small removal is often right
            continue
        kept = previous & ~removed
        score = (_overlap(kept, neighbours), quality)
        if honours(kept, clicks) and (best is None or score > best[1]):
            best = (kept, score, how)
    if best is not None:
        alike = _alike(image, previous & ~keep_in, at) if image is not None else None
        if alike is not None and alike.sum() < (previous & ~best[0]).sum() and honours(previous & ~alike, clicks):
            return SliceEdit(previous & ~alike, "alike")
        return SliceEdit(best[0], best[2])
    if part.sum() <= most and not _holds_foreground(part, clicks) and (previous & ~part).any():
        return SliceEdit(previous & ~part, "island")  # a separate blob with no foreground click: all of it
    # No answer of the decoder's is a trim: the part that looks like the click where it is more than the disk and
    # still a trim, else the disk.
    disk = previous & _disk(previous.shape, at) & ~_near(previous.shape, clicks, 1, radius=0)
    alike = _alike(image, previous & ~keep_in, at) if image is not None else None
    if alike is not None and disk.sum() < alike.sum() <= trim and honours(previous & ~alike, clicks):
        return SliceEdit(previous & ~alike, "alike")
    return SliceEdit(previous & ~disk, "disk")


def _is_centre(part: np.ndarray, at: tuple[int, int]) -> bool:
    """Whether `at` lies in the middle of `part`, as a radiologist clicks a blob that should not be there at all
    rather than its rim or a tail to trim: at least CENTRE_DEPTH of the deepest pixel's distance to the border, and
    within CENTRE_DEPTH of the blob's equivalent radius from its centroid (a long blob is deep all along). A blob
    whose deepest pixel is under CENTRE_MIN_DEPTH from its border is all rim: a click there says "not here" as
    much as "none of this" (breast1 clicks only: a 49-pixel answer, 32 of it lesion, taken whole, 0.63 -> 0.54;
    brain2 a 60-pixel one, 0.505 -> 0.504), so the trims decide."""
    depth = ndimage.distance_transform_edt(part)
    if depth.max() < CENTRE_MIN_DEPTH or depth[at] < CENTRE_DEPTH * depth.max():
        return False
    centroid = np.asarray(ndimage.center_of_mass(part))
    return bool(np.hypot(*(np.asarray(at) - centroid)) <= CENTRE_DEPTH * np.sqrt(part.sum() / np.pi))


def _pixel(shape, x: float, y: float) -> tuple[int, int]:
    return min(max(int(y), 0), shape[0] - 1), min(max(int(x), 0), shape[1] - 1)


def _component(mask: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    """The 8-connected part of `mask` that holds pixel `at` (empty when `at` is not in it)."""
    if not mask[at]:
        return np.zeros_like(mask)
    labels, _ = ndimage.label(mask, structure=EIGHT)
    return labels == labels[at]


def honours(mask: np.ndarray, clicks: list[Click]) -> bool:
    """Every foreground click inside `mask`, every background click outside it: the least an answer owes them."""
    return all(mask[_pixel(mask.shape, x, y)] == bool(flag) for x, y, flag in clicks)


def _holds_foreground(part: np.ndarray, clicks: list[Click]) -> bool:
    return any(flag == 1 and part[_pixel(part.shape, x, y)] for x, y, flag in clicks)


def _overlap(mask: np.ndarray, other: np.ndarray | None) -> float:
    if other is None or not other.any():
        return 0.0
    return float((mask & other).sum() / max((mask | other).sum(), 1))


def _near(shape, clicks: list[Click], flag: int, radius: int = FALLBACK_RADIUS) -> np.ndarray:
    """Pixels within `radius` of the slice's clicks of one kind (0: the pixels they sit on)."""
    out = np.zeros(shape, dtype=bool)
    for x, y, f in clicks:
        if f == flag:
            out |= _disk(shape, _pixel(shape, x, y), radius)
    return out


def _disk(shape, at: tuple[int, int], radius: int = FALLBACK_RADIUS) -> np.ndarray:
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return (rows - at[0]) ** 2 + (cols - at[1]) ** 2 <= radius ** 2


def _clip(box: Box, bounds: Box | None) -> Box:
    if bounds is None:
        return box
    x0, y0, x1, y1 = max(box[0], bounds[0]), max(box[1], bounds[1]), min(box[2], bounds[2]), min(box[3], bounds[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else box
