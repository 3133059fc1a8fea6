"""The benchmark's labelled slices: lesion cases split by case, MNI152 tissue split by slice, never overlapping.

Slices are prepared exactly as the product prepares them (the backend's `prepare` and `to_model_frame`), so the
adapted FM, the zero-shot FM and the UNet baseline all see the same pixels and the same targets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.medfm.adaptation.data import SliceSample, spread
from lib.medfm.backends import FMBackend
from lib.medfm.volume import load_label, load_volume

LESION_CASES = ("brain1", "brain2", "breast1", "lung1", "lung2")
LESION_VALUES = {"lesion": 1}
TISSUE_CASE = "mni152"
TISSUE_VALUES = {"gray_matter": 2, "white_matter": 3}


@dataclass
class Split:
    """One train/test split: `train[K]` is the training set with K cases (or K slice sets) for each K asked."""

    task: str
    name: str  # the held-out case, or the seed of a slice draw
    seed: int
    train: dict[int, list[SliceSample]]
    test: list[SliceSample]
    tokens: dict[int, int]  # label value -> prompt-free token index


class CaseSlices:
    """One labelled volume, loaded once, handing out prepared slices on request."""

    def __init__(self, studies: Path, image_id: str, backend: FMBackend, values: dict[str, int]):
        self.image_id = image_id
        self.backend = backend
        self.volume = load_volume(studies / f"{image_id}.nii.gz")
        self.label = load_label(studies / "labels" / "final" / f"{image_id}.nii.gz", self.volume)
        self.values = [v for v in values.values() if (self.label == v).any()]
        self.positive = [k for k in range(self.volume.n_slices) if np.isin(self._label_slice(k), self.values).any()]

    def _label_slice(self, k: int) -> np.ndarray:
        return np.take(self.label, k, axis=self.volume.slice_axis).T

    def sample(self, k: int) -> SliceSample:
        prepared = self.backend.prepare(self.volume.slice_windowed(k))
        lab = self._label_slice(k)
        targets = {v: self.backend.to_model_frame(lab == v, prepared) for v in self.values}
        present = [v for v in self.values if targets[v].any()]
        return SliceSample(self.image_id, k, prepared, targets, present)


def lesion_splits(studies: Path, backend: FMBackend, held_out: list[str], seeds: list[int], ks: list[int],
                  train_slices: int, test_slices: int) -> list[Split]:
    """Leave-one-case-out: for each held-out case and seed, K training cases drawn from the other four."""
    cases = {c: CaseSlices(studies, c, backend, LESION_VALUES) for c in LESION_CASES}
    splits = []
    for case in held_out:
        test = [cases[case].sample(k) for k in spread(cases[case].positive, test_slices)]
        others = [c for c in LESION_CASES if c != case]
        for seed in seeds:
            order = [others[i] for i in np.random.default_rng(seed).permutation(len(others))]
            train = {k: [cases[c].sample(s) for c in order[:k] for s in spread(cases[c].positive, train_slices)]
                     for k in ks if k <= len(order)}
            splits.append(Split("lesion", f"{case}/seed{seed}", seed, train, test, {1: 0}))
    return splits


def tissue_splits(studies: Path, backend: FMBackend, seeds: list[int], ks: list[int], train_slices: int,
                  test_slices: int) -> list[Split]:
    """Fixed held-out slices (and their neighbours) never trained on; K slice sets drawn per seed from the rest."""
    case = CaseSlices(studies, TISSUE_CASE, backend, TISSUE_VALUES)
    inner = case.positive[len(case.positive) // 8: len(case.positive) - len(case.positive) // 8]
    held = spread(inner, test_slices)
    test = [case.sample(k) for k in held]
    pool = [k for k in case.positive if all(abs(k - h) > 1 for h in held)]
    splits = []
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(pool))
        sets = [sorted(pool[i] for i in order[n * train_slices:(n + 1) * train_slices]) for n in range(max(ks))]
        train = {k: [case.sample(s) for group in sets[:k] for s in group] for k in ks}
        tokens = {v: i for i, v in enumerate(sorted(TISSUE_VALUES.values()))}
        splits.append(Split("tissue", f"seed{seed}", seed, train, test, tokens))
    return splits


def fixed_rng(*parts) -> np.random.Generator:
    """A generator seeded by its arguments: the same test slice gets the same jittered box in every method."""
    text = ":".join(str(p) for p in parts)
    return np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16))
