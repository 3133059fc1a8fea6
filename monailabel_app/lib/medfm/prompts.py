"""Interactive prompts in MONAI Label's sam2 request format, validated and turned into per-slice prompts.

`foreground` / `background`: `[[i, j, k], ...]` voxel indices. `roi`: `[i0, i1, j0, j1, k0, k1]`, per-axis pairs of
inclusive voxel bounds, the order MONAI Label's stock Slicer plugin sends (each pair in either order), so `k0 == k1`
is one slice. An roi that pokes out of the volume is clipped to it (an ROI drawn past the edge is common); one that
misses the volume, or is a point or a line, is refused. Along a volume whose acquisition axis is not k, the same
bounds are read per axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import ConfigDict, Field

from .errors import InputError
from .options import Options
from .volume import Volume


@dataclass(frozen=True)
class VolumePrompts:
    """Prompts resolved against one volume: a box per slice range, and clicks grouped by slice."""

    box: tuple[float, float, float, float] | None  # x0, y0, x1, y1 in slice pixels
    slice_range: tuple[int, int] | None  # first, last (inclusive) along the slice axis
    clicks: dict[int, list[tuple[float, float, int]]] = field(default_factory=dict)  # slice -> [(x, y, 1|0)]


class InferOptions(Options):
    """A request's fields other than its prompts, typed once for both modes."""

    model_config = ConfigDict(frozen=True)
    what = "bad inference parameter"

    adapter: str | None = Field(None, description="'base' or a version id; empty = the active version")
    modality: str | None = Field(None, description="CT, MR, ...; empty = guessed from the intensities")
    max_propagation: int = Field(32, ge=0, le=1024, json_schema_extra={"unit": "slices"},
                                 description="slices a click is followed each way; 0 = the clicked slice alone")
    uncertainty: bool = Field(False, description="also write a voxel-wise uncertainty map")
    labels: tuple[str, ...] | None = Field(None, description="automatic mode: these label names only")
    session: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[ -~]+$",
                                description="the interaction a request continues (printable ASCII); empty = the "
                                            "image's content and the adapter")
    reset_state: bool = Field(False, description="forget the session's previous answer first")

    @classmethod
    def from_params(cls, params: dict) -> InferOptions:
        return cls.from_request(params)


def _int_list(value, name: str, length: int | None = None) -> list[int]:
    if not isinstance(value, list | tuple) or (length is not None and len(value) != length):
        want = f"{length} integers" if length else "a list of integers"
        raise InputError(f"'{name}' must be {want}, got {value!r}")
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError) as err:
        raise InputError(f"'{name}' must hold integers, got {value!r}") from err
    if any(float(v) != o for v, o in zip(value, out, strict=True)):
        raise InputError(f"'{name}' must hold whole voxel indices, got {value!r}")
    return out


def parse_points(value, name: str, shape: tuple[int, int, int]) -> list[list[int]]:
    if value in (None, "", []):
        return []
    if not isinstance(value, list | tuple):
        raise InputError(f"'{name}' must be a list of [i, j, k] voxel indices, got {value!r}")
    points = [_int_list(p, f"{name} point", 3) for p in value]
    for p in points:
        if any(c < 0 or c >= n for c, n in zip(p, shape, strict=True)):
            raise InputError(f"{name} point {p} lies outside the volume, whose size is {list(shape)}")
    return points


def parse_roi(value, shape: tuple[int, int, int]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Per-axis pairs [i0, i1, j0, j1, k0, k1] -> (lows, highs) per axis, clipped to the volume.

    Each pair may come in either order: the stock plugin maps the ROI's RAS corners to IJK, and a flipped axis
    swaps them. Refused when wholly outside the volume, or when it is a point or a line (one voxel along two axes).
    """
    if value in (None, "", []):
        return None
    roi = _int_list(value, "roi", 6)
    pairs = [sorted(roi[n:n + 2]) for n in (0, 2, 4)]
    lows, highs = [lo for lo, _ in pairs], [hi for _, hi in pairs]
    if sum(hi > lo for lo, hi in pairs) < 2:
        raise InputError(f"roi {roi} is empty: as [i0, i1, j0, j1, k0, k1] it is a point or a line; it needs more "
                         "than one voxel along at least two axes")
    if any(hi < 0 or lo > n - 1 for lo, hi, n in zip(lows, highs, shape, strict=True)):
        raise InputError(f"roi {roi} lies outside the volume, whose voxel indices run from 0 to "
                         f"{[n - 1 for n in shape]}")
    return (tuple(max(lo, 0) for lo in lows),
            tuple(min(hi, n - 1) for hi, n in zip(highs, shape, strict=True)))


def resolve(volume: Volume, foreground=None, background=None, roi=None) -> VolumePrompts:
    """Validate a request's prompts against `volume` and express them in its slice frame."""
    fg = parse_points(foreground, "foreground", volume.shape)
    bg = parse_points(background, "background", volume.shape)
    box_ijk = parse_roi(roi, volume.shape)
    if not fg and not box_ijk:
        raise InputError("give at least one foreground point or an roi; background points alone mark nothing")
    ax = volume.slice_axis
    px, py = volume.in_plane_axes
    clicks: dict[int, list[tuple[float, float, int]]] = {}
    for points, flag in ((fg, 1), (bg, 0)):
        for p in points:
            clicks.setdefault(p[ax], []).append((float(p[px]), float(p[py]), flag))
    box = slice_range = None
    if box_ijk:
        lows, highs = box_ijk
        # Box corners are pixel edges: the box spans voxel i0 up to and including voxel i1.
        box = (float(lows[px]), float(lows[py]), float(highs[px] + 1), float(highs[py] + 1))
        slice_range = (lows[ax], highs[ax])
    return VolumePrompts(box=box, slice_range=slice_range, clicks=clicks)


def box_of_mask(mask2d: np.ndarray, margin: int = 2) -> tuple[float, float, float, float] | None:
    """The box around a rows x cols mask, grown by `margin` pixels: the prompt for the next slice."""
    ys, xs = np.nonzero(mask2d)
    if ys.size == 0:
        return None
    h, w = mask2d.shape
    return (float(max(xs.min() - margin, 0)), float(max(ys.min() - margin, 0)),
            float(min(xs.max() + 1 + margin, w)), float(min(ys.max() + 1 + margin, h)))
