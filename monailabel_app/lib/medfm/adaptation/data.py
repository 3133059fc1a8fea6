"""Training samples: labelled slices of a site's volumes, prepared once in the model's frame.

The CT window is always the caller's (the server's `Settings.ct_window`), never a default here: a slice trained on
is windowed exactly as the same slice is at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..backends import FMBackend, PreparedSlice
from ..volume import load_label, load_volume


@dataclass(frozen=True)
class LabelledImage:
    image_id: str
    image_path: str
    label_path: str
    slices: tuple[int, int] | None = None  # first, last (inclusive) slice it may give; None = all of them

    def allows(self, k: int) -> bool:
        return self.slices is None or self.slices[0] <= k <= self.slices[1]


@dataclass
class SliceSample:
    image_id: str
    slice_index: int
    prepared: PreparedSlice
    targets: dict[int, torch.Tensor]  # label value -> S x S mask in the model frame (may be empty)
    present: list[int] = field(default_factory=list)  # label values with pixels on this slice
    embedding: torch.Tensor | None = None  # filled when the encoder is frozen, so it runs once per slice


def build_samples(images: list[LabelledImage], backend: FMBackend, label_values: dict[str, int],
                  slices_per_image: int, rng: np.random.Generator, negatives: bool, *,
                  ct_window: tuple[float, float]) -> list[SliceSample]:
    """Up to `slices_per_image` labelled slices per image, evenly spread, plus a few empty ones for the auto head."""
    wanted = set(label_values.values())
    samples: list[SliceSample] = []
    for item in images:
        volume = load_volume(item.image_path, ct_window=ct_window)
        label = load_label(item.label_path, volume)
        annotated = sorted(int(v) for v in np.unique(label) if v in wanted)
        if not annotated:
            continue
        per_slice = [np.take(label, k, axis=volume.slice_axis).T for k in range(volume.n_slices)]
        positive = [k for k, s in enumerate(per_slice) if np.isin(s, annotated).any() and item.allows(k)]
        chosen = spread(positive, slices_per_image)
        if negatives:
            empty = [k for k, s in enumerate(per_slice) if item.allows(k) and not np.isin(s, annotated).any()]
            n_neg = min(len(empty), max(1, slices_per_image // 4))
            chosen += sorted(rng.choice(empty, size=n_neg, replace=False).tolist()) if n_neg else []
        for k in chosen:
            prepared = backend.prepare(volume.slice_windowed(k))
            targets = {v: backend.to_model_frame(per_slice[k] == v, prepared) for v in annotated}
            present = [v for v in annotated if (per_slice[k] == v).any()]
            samples.append(SliceSample(item.image_id, k, prepared, targets, present))
    return samples


def spread(indices: list[int], n: int) -> list[int]:
    """`n` indices evenly spread over `indices` (all of them when there are fewer)."""
    if len(indices) <= n:
        return list(indices)
    picks = np.linspace(0, len(indices) - 1, n).round().astype(int)
    return [indices[i] for i in sorted(set(picks.tolist()))]


def box_from_mask(mask: torch.Tensor, jitter: float, rng: np.random.Generator | None) -> tuple[float, ...]:
    """The mask's box in the model frame, each side moved by up to `jitter` of the box size (a real user's box)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    x0, x1, y0, y1 = xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1
    if rng is not None and jitter > 0:
        w, h = x1 - x0, y1 - y0
        dx0, dx1, dy0, dy1 = rng.uniform(-jitter, jitter, 4)
        x0, x1 = x0 + dx0 * w, x1 + dx1 * w
        y0, y1 = y0 + dy0 * h, y1 + dy1 * h
    size = mask.shape[-1]
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(size), max(x1, x0 + 1)), min(float(size), max(y1, y0 + 1))
    return (float(x0), float(y0), float(x1), float(y1))


def hold_apart(item: LabelledImage, label_values: dict[str, int], val_fraction: float,
               gap: int) -> tuple[LabelledImage, LabelledImage, int] | None:
    """Split one labelled image into a training part and a validation part `gap` slices apart (fewer when the
    structure spans too few slices, never none): the evidence a single labelled image can give.

    The validation part is the top `val_fraction` of the labelled slices; None when no labelled slice would be
    left to train on. Returns (train part, validation part, the gap used). Only the label and the image's geometry
    are read here, never its pixels, so no window applies.
    """
    volume = load_volume(item.image_path)
    label = load_label(item.label_path, volume)
    wanted = list(label_values.values())
    positive = [k for k in range(volume.n_slices) if np.isin(np.take(label, k, axis=volume.slice_axis), wanted).any()]
    n_val = max(1, round(val_fraction * len(positive)))
    if len(positive) <= n_val:
        return None
    first_val = positive[-n_val]
    for used_gap in range(gap, 0, -1):
        last_train = first_val - used_gap - 1
        if any(k <= last_train for k in positive):
            return (LabelledImage(item.image_id, item.image_path, item.label_path, (0, last_train)),
                    LabelledImage(item.image_id, item.image_path, item.label_path, (first_val, volume.n_slices - 1)),
                    used_gap)
    return None

