"""Slice-wise 3D segmentation with an FM backend: interactive (box/clicks, propagated) and automatic (no prompts)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from . import precision as precision_mod
from . import runtime as runtime_mod
from .adapter_store import BASE, AdapterStore
from .backends import FMBackend, PreparedSlice, SlicePrompt
from .embedding_cache import EmbeddingCache, EmbeddingKey
from .errors import ConflictError
from .prompts import VolumePrompts, box_of_mask
from .refine import INTENSITY_TOLERANCE, MOST_OF_A_SLICE, Click, Looks, click_value, edit_slice, honours  # noqa: F401
from .settings import decode_chunk, default_batch_size
from .volume import Volume

MIN_PROPAGATION_QUALITY = 0.5  # stop following a structure once the decoder's own IoU estimate drops below this
# LiteMedSAM was trained with boxes; clicks alone give it almost nothing to go on (Dice 0.0-0.05 on the sample
# lesions). Without an roi, boxes of these sizes are tried around the clicks and the decoder keeps the one it
# rates best (lung2 / brain1 lesions: Dice 0.94 / 0.88 at 40 mm; a 5 mm breast lesion still fails: use an roi).
# 10 mm (2026-12-06, Intel Xeon): brain2's clicks-only Dice after 5 clicks 0.50 -> 0.57, the rest unchanged, for two
# more decoder passes on the clicked slice (first click +0.1-0.2 s); swapping 15/30/45 for 20/40 or dropping 45
# instead cost breast1 or brain1 0.2-0.3.
CLICK_BOX_MM = (10.0, 15.0, 30.0, 45.0, 60.0)
# Edits that stay on their slice. A grown addition is what looks like the click there, not a decoder's answer: the
# box around it took in the tissue beside the lesion on the next slices (site benchmark, clicks only: brain2_crop
# 65 pixels grown, 329 carried onto two slices past the lesion, Dice 0.62 -> 0.49; kept on its slice: 0.66;
# brain1_crop 872 grown, 793 carried). The interactive benchmark's lesions and organs are unchanged.
NOT_CARRIED = frozenset({"grown"})
QUALITY_TIE = 0.02  # decoder quality estimates this close do not rank two candidate masks


@dataclass
class SegmentationResult:
    label: np.ndarray  # uint8, [i, j, k] on the input grid
    adapter: str
    slices: list[int]
    timing: dict = field(default_factory=dict)
    uncertainty: np.ndarray | None = None  # float32 binary entropy of the predicted probability, in nats
    refined_clicks: int = 0  # clicks applied to the previous answer rather than segmented afresh


def binary_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of sigmoid(logits): 0 where the model is sure, ln 2 (0.693) where it is guessing."""
    p = torch.sigmoid(logits.float()).clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


@dataclass
class _Counters:
    hits: int = 0
    misses: int = 0
    embed_s: float = 0.0
    decode_s: float = 0.0


class Segmenter:
    def __init__(self, backend: FMBackend, store: AdapterStore, cache: EmbeddingCache, device: str = "cpu",
                 batch_size: int | None = None, max_loaded_adapters: int = 3, precision: str = "auto",
                 runtime: str = "torch", runtime_dir: str | Path | None = None):
        self.backend = backend
        self.store = store
        self.cache = cache
        self.device = torch.device(device)
        self.batch_size = batch_size or default_batch_size(device)
        self.decode_chunk = decode_chunk(device)
        self.runtime = runtime_mod.resolve(runtime, self.device)
        self.precision = runtime_mod.AUTO_PRECISION if self.runtime != "torch" and precision == "auto" \
            else precision_mod.resolve(precision, self.device)
        self.base = backend.build_model(self.device)  # always the torch model: training and federation start here
        self.runtime_cache = None if self.runtime == "torch" else runtime_mod.RuntimeCache(
            runtime_dir or store.root / ".runtime", self.precision)
        self._served_base: nn.Module | None = None
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
        self._max_loaded = max_loaded_adapters
        self._lock = threading.Lock()

    # ---- models -------------------------------------------------------------------------------------------
    def model(self, version: str) -> nn.Module:
        """The model that serves `version`: on the inference runtime where one is set and works, else torch."""
        with self._lock:
            if version == BASE:
                if self._served_base is None:
                    self._served_base = self._on_runtime(BASE, self.base)
                return self._served_base
            if version in self._models:
                self._models.move_to_end(version)
                return self._models[version]
            model = self._on_runtime(version, self.store.apply(self.base, version).to(self.device))
            self._models[version] = model
            while len(self._models) > self._max_loaded:
                self._models.popitem(last=False)
            return model

    def _on_runtime(self, version: str, model: nn.Module) -> nn.Module:
        parts = self.backend.runtime_parts(model) if self.runtime_cache else []
        if not parts:
            return model
        hashes = (self.backend.weights_sha256(), self.store.content_sha256(version))
        return self.runtime_cache.serve(model, version, parts, hashes)

    # ---- embeddings ---------------------------------------------------------------------------------------
    def _preprocess_id(self, volume: Volume) -> str:
        lo, hi = volume.window
        # An embedding computed in bf16 (or by another runtime) is not the fp32 one: never reuse it across them.
        numerics = self.precision if self.runtime == "torch" else f"{self.precision}:{self.runtime}"
        return f"{self.backend.name}:{numerics}:{volume.modality}:{lo:.3f}:{hi:.3f}"

    def _embeddings(self, volume: Volume, version: str, model: nn.Module, indices: Iterable[int],
                    counters: _Counters) -> dict[int, tuple[torch.Tensor, PreparedSlice]]:
        """Embeddings for `indices`, from the cache where possible, the rest computed in batches."""
        out: dict[int, tuple[torch.Tensor, PreparedSlice]] = {}
        missing: list[tuple[int, PreparedSlice, EmbeddingKey]] = []
        for k in indices:
            prepared = self.backend.prepare(volume.slice_windowed(k))
            key = EmbeddingKey(volume.key, volume.slice_axis, k, version, self._preprocess_id(volume))
            cached = self.cache.get(key)
            if cached is not None:
                counters.hits += 1
                out[k] = (cached.to(self.device), prepared)
            else:
                counters.misses += 1
                missing.append((k, prepared, key))
        start = time.perf_counter()
        for n in range(0, len(missing), self.batch_size):
            chunk = missing[n:n + self.batch_size]
            batch = torch.stack([p.tensor for _, p, _ in chunk]).to(self.device)
            with torch.inference_mode(), self._autocast():
                emb = self.backend.embed(model, batch).float()
            for (k, prepared, key), e in zip(chunk, emb, strict=True):
                self.cache.put(key, e[None])
                out[k] = (e[None], prepared)
        counters.embed_s += time.perf_counter() - start
        return out

    def _autocast(self):
        return precision_mod.autocast(self.device, self.precision)

    def _decoder_autocast(self):
        return precision_mod.autocast(self.device, precision_mod.decoder_precision(self.device, self.precision))

    def _decode(self, model, items: list[tuple[torch.Tensor, PreparedSlice, SlicePrompt]], counters: _Counters):
        """Slice-frame logits and the decoder's quality estimate per item, in the items' order.

        Items go to the decoder in passes of `decode_chunk`, each pass holding prompts of one shape (points, box,
        label token): a prompt's answer then never depends on what shared its pass (a backend pads shorter prompts
        to the longest one's tokens), and on the CPU small passes cost less per prompt.
        """
        start = time.perf_counter()
        groups: dict[tuple, list[int]] = {}
        for i, (_, _, prompt) in enumerate(items):
            shape = (len(prompt.points), prompt.box is None, prompt.label_index is None, prompt.mask is None)
            groups.setdefault(shape, []).append(i)
        size = self.decode_chunk or len(items)
        passes = [rows[n:n + size] for rows in groups.values() for n in range(0, len(rows), size)]
        slice_logits: list = [None] * len(items)
        quality = np.zeros(len(items), dtype=np.float32)
        with torch.inference_mode(), self._decoder_autocast():
            for rows in passes:
                emb = torch.cat([items[i][0] for i in rows])
                logits, q = self.backend.decode(model, emb, [items[i][2] for i in rows], [items[i][1] for i in rows],
                                                near_prompts=True)
                quality[rows] = q.float().cpu().numpy()
                for i, lg in zip(rows, logits, strict=True):
                    slice_logits[i] = self.backend.to_slice_frame(lg.float(), items[i][1])
        counters.decode_s += time.perf_counter() - start
        return slice_logits, quality

    # ---- interactive --------------------------------------------------------------------------------------
    def interactive(self, volume: Volume, prompts: VolumePrompts, version: str = BASE,
                    max_propagation: int = 32, uncertainty: bool = False) -> SegmentationResult:
        """Segment from clicks and/or an roi box; the box follows the structure from slice to slice.

        With an roi the whole slice range is covered (each slice prompted by the box around the previous slice's
        mask, kept inside the roi); with clicks only, propagation goes on while the mask stays and the decoder's
        quality estimate holds, up to `max_propagation` slices each way.
        """
        total_start = time.perf_counter()
        model = self.model(version)
        counters = _Counters()
        label = volume.zeros(np.uint8)
        fetched: dict = {}  # this request's embeddings, so each slice is counted once as a cache hit or miss
        if prompts.slice_range:
            first, last = prompts.slice_range
            seeds = [k for k in prompts.clicks if first <= k <= last and _has_fg(prompts.clicks[k])]
            seeds = sorted(seeds) or [(first + last) // 2]
            fetched = self._embeddings(volume, version, model, range(first, last + 1), counters)  # one batch pass
        else:
            seeds = sorted(k for k in prompts.clicks if _has_fg(prompts.clicks[k]))
            first = max(0, seeds[0] - max_propagation)
            last = min(volume.n_slices - 1, seeds[-1] + max_propagation)
        masks: dict[int, np.ndarray] = {}
        entropies: dict[int, np.ndarray] = {}  # per-slice uncertainty, kept whether or not it is asked for
        for k in seeds:
            clicks = prompts.clicks.get(k, [])
            boxes = [prompts.box] if prompts.box is not None else _click_boxes(volume, clicks)
            masks[k], entropies[k] = self._segment_slice(volume, version, model, k, boxes, clicks, counters,
                                                         fetched, require_quality=False, entropy=uncertainty,
                                                         box_alone=prompts.box is None)
        # Each clicked slice's mask walks outward until it meets another clicked slice's (or its own end), so the
        # slices between two clicked slices are filled from both sides and none is left out.
        for direction, stop, starts in ((1, last, seeds), (-1, first, seeds[::-1])):
            for start in starts:
                self._propagate(volume, version, model, prompts, masks, entropies, start, direction, stop, counters,
                                fetched, uncertainty)
        entropy = volume.zeros(np.float32) if uncertainty else None
        for k, mask in masks.items():
            if mask is not None:
                volume.put_slice(label, k, mask.astype(np.uint8))
                if entropy is not None:
                    volume.put_slice(entropy, k, entropies[k])
        return SegmentationResult(label=label, adapter=version, slices=sorted(k for k in masks if masks[k] is not None),
                                  timing=_timing(counters, total_start), uncertainty=entropy)

    def _propagate(self, volume, version, model, prompts: VolumePrompts, masks: dict, entropies: dict, start: int,
                   direction: int, stop: int, counters, fetched: dict, uncertainty: bool) -> None:
        """Follow the structure from slice `start` towards `stop`, each slice prompted by the previous mask's box.

        With an roi, the roi itself is a second candidate on every slice and the decoder's quality decides: a
        structure that moves or changes size between thick slices leads the previous mask's box astray (brain1's
        lesion: 3D Dice 0.30 following the box alone, 0.80 with the roi as a candidate; see benchmarks/README).
        A hand-drawn roi runs past the structure's ends, and there the box still gets a mask of whatever it holds:
        the walk stops where the mask's intensities stop looking like the previous slice's (Looks; the truth's box
        one slice longer each way: lung2 Dice 0.852 -> 0.925, lung1 0.784 -> 0.894, the tight box unchanged).
        """
        previous = masks[start]
        if previous is None or not previous.any():  # nothing to follow (and nothing for Looks to measure)
            return
        looks = Looks.of(volume.slice_windowed(start), previous) if prompts.box is None else None
        for k in range(start + direction, stop + direction, direction):
            if k in masks:
                return
            box = _next_box(previous, prompts)
            if box is None:
                return
            boxes = [box] if prompts.box is None or box == prompts.box else [box, prompts.box]
            mask, entropies[k] = self._segment_slice(volume, version, model, k, boxes, prompts.clicks.get(k, []),
                                                     counters, fetched, require_quality=prompts.box is None,
                                                     entropy=uncertainty)
            if mask is None or not mask.any():
                return
            if looks is not None and not looks.matches(volume.slice_windowed(k), mask):
                return
            if prompts.box is not None and not Looks.of(volume.slice_windowed(k - direction), previous).matches(
                    volume.slice_windowed(k), mask):
                return  # the structure ended inside the roi: what the box holds here is other tissue
            masks[k] = previous = mask

    def _segment_slice(self, volume, version, model, k, boxes, clicks, counters, fetched: dict,
                       require_quality: bool, entropy: bool, box_alone: bool = False):
        """Decode slice `k` with each candidate box (plus the clicks); keep the mask the decoder rates best.

        `box_alone` also tries each box without the clicks as points: LiteMedSAM learned boxes only, and around a
        lone click the box alone is often the better answer (breast1's 5 mm lesion: Dice 0.68 at 15 mm, while every
        box with the click as a point missed it or took 10 times its area).
        """
        if k not in fetched:
            fetched.update(self._embeddings(volume, version, model, [k], counters))
        emb, prepared = fetched[k]
        points = tuple((x, y) for x, y, _ in clicks)
        flags = tuple(f for _, _, f in clicks)
        items = [(emb, prepared, SlicePrompt(box=b, points=points, point_labels=flags)) for b in boxes]
        if box_alone and points:
            # The box keeps one "not a point" token per click (SAM's padding; label -1 at the origin): measured
            # against the bare box, clicks only after 5 clicks 0.727 vs 0.658 (brain1 0.73 vs 0.46) on the lesions.
            padding = {"points": ((0.0, 0.0),) * len(points), "point_labels": (-1,) * len(points)}
            items += [(emb, prepared, SlicePrompt(box=b, **padding)) for b in boxes]
        logits, quality = self._decode(model, items, counters)
        masks = [(lg > 0).cpu().numpy() for lg in logits]
        # A mask that leaves out a foreground click (or covers a background one) answers another question than the
        # user's: among the candidates, those that honour every click of the slice come first, quality decides.
        best = max(range(len(masks)), key=lambda i: (honours(masks[i], clicks), float(quality[i])))
        if box_alone and points:
            best = _likest_the_clicks(masks, quality, clicks, best, volume.slice_windowed(k))
        if require_quality and quality[best] < MIN_PROPAGATION_QUALITY:
            return None, None
        return masks[best], binary_entropy(logits[best]).cpu().numpy() if entropy else None

    # ---- correction clicks on a previous answer ----------------------------------------------------------
    def refine(self, volume: Volume, prompts: VolumePrompts, new_clicks: list[tuple[int, Click]],
               previous: np.ndarray, version: str = BASE, max_propagation: int = 32) -> SegmentationResult:
        """Apply `new_clicks` (slice, click) to `previous`, the answer to the same prompts without them.

        Each click edits its own slice (lib/medfm/refine.py), then the edit walks to the neighbouring slices while
        the decoder, prompted by the box of the edited slice next to it, agrees: the part it adds (or removes) must
        touch what was added (removed) on that neighbour. It stops at a slice the user clicked on, which keeps its
        own answer, and at the roi's slices; the rest of the volume keeps the previous answer exactly.
        """
        total_start = time.perf_counter()
        model = self.model(version)
        counters = _Counters()
        label = (previous > 0).astype(np.uint8)
        fetched: dict = {}
        clicked = set(prompts.clicks)
        for k, click in new_clicks:
            old = self._slice(volume, label, k)
            edit = edit_slice(old, prompts.clicks.get(k, []), click,
                              self._slice_decoder(volume, version, model, k, old, prompts.clicks.get(k, []),
                                                  counters, fetched),
                              bounds=prompts.box, click_boxes=_click_boxes(volume, [click]) if click[2] else None,
                              neighbours=self._neighbours(volume, label, k),
                              in_roi=prompts.slice_range is not None and
                              prompts.slice_range[0] <= k <= prompts.slice_range[1],
                              image=volume.slice_windowed(k))
            volume.put_slice(label, k, edit.mask.astype(np.uint8))
            first, last = self._walk_range(volume, prompts, k, max_propagation, clicked)
            for direction, stop in ((1, last), (-1, first)):
                if edit.how == "centre":  # towards the structure its neighbours hold it: nothing to carry there
                    if _beyond_the_structure(prompts, k, direction):
                        _carry_removal(volume, label, k, old & ~edit.mask, direction, stop, clicked,
                                       self._structure_looks(volume, label, prompts, k))
                    continue
                if edit.how in NOT_CARRIED:
                    continue
                self._walk_edit(volume, version, model, prompts, label, k, direction, stop, old, edit.mask,
                                adds=click[2] == 1, clicked=clicked, counters=counters, fetched=fetched)
        slices = [k for k in range(volume.n_slices) if self._slice(volume, label, k).any()]
        return SegmentationResult(label=label, adapter=version, slices=slices, timing=_timing(counters, total_start),
                                  refined_clicks=len(new_clicks))

    @staticmethod
    def _structure_looks(volume: Volume, label: np.ndarray, prompts: VolumePrompts, k: int) -> Looks | None:
        """How the structure looks in the answer on the foreground-clicked slice nearest to k (None: no such)."""
        for j in sorted((j for j, c in prompts.clicks.items() if _has_fg(c)), key=lambda j: abs(j - k)):
            if (mask := Segmenter._slice(volume, label, j)).any():
                return Looks.of(volume.slice_windowed(j), mask)
        return None

    @staticmethod
    def _slice(volume: Volume, label: np.ndarray, k: int) -> np.ndarray:
        return np.take(label, k, axis=volume.slice_axis).T.astype(bool)

    def _neighbours(self, volume: Volume, label: np.ndarray, k: int, reach: int = 3) -> np.ndarray | None:
        """The answer on the nearest answered slice on each side of k (up to `reach` away), as one mask."""
        near = []
        for direction in (-1, 1):
            for j in range(k + direction, k + direction * (reach + 1), direction):
                if 0 <= j < volume.n_slices and (mask := self._slice(volume, label, j)).any():
                    near.append(mask)
                    break
        return np.logical_or.reduce(near) if near else None

    @staticmethod
    def _walk_range(volume: Volume, prompts: VolumePrompts, k: int, max_propagation: int,
                    clicked: set[int]) -> tuple[int, int]:
        """The roi's slices, else `max_propagation` each way; always as far as the other clicked slices, so a click
        on a second slice fills the slices between, as a fresh request does (the walk stops at a clicked slice)."""
        if prompts.slice_range:
            first, last = prompts.slice_range
        else:
            first, last = max(0, k - max_propagation), min(volume.n_slices - 1, k + max_propagation)
        return min([first, k, *clicked]), max([last, k, *clicked])

    def _walk_edit(self, volume, version, model, prompts: VolumePrompts, label, start: int, direction: int, stop: int,
                   old_start: np.ndarray, new_start: np.ndarray, adds: bool, clicked: set, counters, fetched) -> None:
        """Carry one slice's edit to its neighbours, slice by slice, while the decoder agrees with it."""
        delta = new_start & ~old_start if adds else old_start & ~new_start
        neighbour = new_start
        # An addition with no roi to bound it stops where it stops looking like the clicked slice's answer.
        looks = Looks.of(volume.slice_windowed(start), new_start) if adds and prompts.box is None else None
        for k in range(start + direction, stop + direction, direction):
            if k in clicked or not delta.any():
                return
            box = _next_box(neighbour, prompts)
            if box is None:
                return
            mask, _ = self._segment_slice(volume, version, model, k, [box], [], counters, fetched,
                                          require_quality=prompts.box is None, entropy=False)
            old = self._slice(volume, label, k)
            if mask is None:
                return
            change = mask & ~old if adds else old & ~mask
            near = ndimage.binary_dilation(delta, iterations=2)
            # Added parts may grow into the structure they touch (up to twice the neighbour's addition); removals
            # stay within the neighbour's removed footprint: slices 6.5 mm apart differ, and a removal that followed
            # the decoder emptied four correct lesion slices.
            delta = _touching(change, near) if adds else change & near
            if adds and delta.sum() > 2 * max(int(near.sum()), 1):
                delta = change & near
            if looks is not None and delta.any() and not looks.matches(volume.slice_windowed(k), delta):
                return
            if not adds and delta.sum() > MOST_OF_A_SLICE * old.sum():  # a trim carried on, never most of a slice
                return
            new = old | delta if adds else old & ~delta
            volume.put_slice(label, k, new.astype(np.uint8))
            neighbour = new

    def _slice_decoder(self, volume, version, model, k: int, previous: np.ndarray, clicks: list[Click], counters,
                       fetched: dict):
        """The decoder on slice k for refine.edit_slice: boxes alone, or with the slice's clicks and the previous
        mask as SAM's mask_input."""
        if k not in fetched:
            fetched.update(self._embeddings(volume, version, model, [k], counters))
        emb, prepared = fetched[k]
        mask_logits = (self.backend.to_model_frame(previous, prepared) - 0.5) * 20.0  # +-10: a confident answer
        points = tuple((x, y) for x, y, _ in clicks)
        flags = tuple(f for _, _, f in clicks)

        def decode(boxes, with_clicks: bool):
            if not boxes:
                return []
            prompts = [SlicePrompt(box=b, points=points, point_labels=flags, mask=mask_logits) if with_clicks
                       else SlicePrompt(box=b) for b in boxes]
            logits, quality = self._decode(model, [(emb, prepared, p) for p in prompts], counters)
            return [((lg > 0).cpu().numpy(), float(q)) for lg, q in zip(logits, quality, strict=True)]

        return decode

    # ---- automatic ----------------------------------------------------------------------------------------
    def automatic(self, volume: Volume, version: str, slice_range: tuple[int, int] | None = None,
                  labels: list[str] | None = None, uncertainty: bool = False) -> SegmentationResult:
        """Prompt-free segmentation of every label the adapter learned; overlaps go to the most confident label."""
        if version == BASE:
            raise ConflictError("automatic segmentation needs a trained adapter: the base FM has no prompt-free "
                                "head. Train one with the medsam_adapt trainer first, or pass adapter=<version>.")
        learned = self.store.manifest(version).learned_labels()
        if not learned:
            raise ConflictError(f"adapter '{version}' was trained without the prompt-free head, so it cannot "
                                "segment automatically; train one with auto_head=true")
        if labels:
            learned = {n: v for n, v in learned.items() if n in labels}
        total_start = time.perf_counter()
        model = self.model(version)
        counters = _Counters()
        first, last = slice_range or (0, volume.n_slices - 1)
        label = volume.zeros(np.uint8)
        entropy = volume.zeros(np.float32) if uncertainty else None
        names = sorted(learned)
        for start in range(first, last + 1, self.batch_size):
            indices = list(range(start, min(start + self.batch_size, last + 1)))
            embeddings = self._embeddings(volume, version, model, indices, counters)
            for k in indices:
                emb, prepared = embeddings[k]
                items = [(emb, prepared, SlicePrompt(label_index=learned[n].token)) for n in names]
                logits, _ = self._decode(model, items, counters)
                stack = torch.stack(logits)
                best = stack.argmax(0).cpu().numpy()
                positive = (stack.max(0).values > 0).cpu().numpy()
                values = np.asarray([learned[n].value for n in names], dtype=np.uint8)
                volume.put_slice(label, k, np.where(positive, values[best], 0).astype(np.uint8))
                if entropy is not None:  # the least certain label decides how sure this voxel is
                    volume.put_slice(entropy, k, binary_entropy(stack).max(0).values.cpu().numpy())
        return SegmentationResult(label=label, adapter=version, slices=list(range(first, last + 1)),
                                  timing=_timing(counters, total_start), uncertainty=entropy)


    # ---- summaries for active learning -------------------------------------------------------------------
    def summarize(self, volume: Volume, version: str, n_slices: int = 8) -> tuple[np.ndarray, float]:
        """A pooled image embedding (mean over `n_slices` evenly spread slices) and the model's mean uncertainty.

        Uncertainty is the mean binary entropy of the prompt-free prediction of every label the version learned;
        the base FM has no prompt-free head, so for it the whole-slice box stands in as the prompt.
        """
        model = self.model(version)
        counters = _Counters()
        picks = sorted(set(np.linspace(0, volume.n_slices - 1, min(n_slices, volume.n_slices)).round().astype(int)))
        embeddings = self._embeddings(volume, version, model, picks, counters)
        learned = self.store.manifest(version).learned_labels()
        pooled, entropies = [], []
        for k in picks:
            emb, prepared = embeddings[k]
            pooled.append(emb.float().mean(dim=(-2, -1))[0].cpu().numpy())
            h, w = prepared.original_hw
            prompts = [SlicePrompt(label_index=d.token) for d in learned.values()] or \
                [SlicePrompt(box=(0.0, 0.0, float(w), float(h)))]
            logits, _ = self._decode(model, [(emb, prepared, p) for p in prompts], counters)
            entropies.append(float(torch.stack([binary_entropy(lg) for lg in logits]).mean()))
        return np.mean(pooled, axis=0), float(np.mean(entropies))


def _likest_the_clicks(masks: list[np.ndarray], quality: np.ndarray, clicks, best: int, image: np.ndarray) -> int:
    """Among candidates the decoder rates within QUALITY_TIE of `best` (and that honour the clicks as it does), the
    one whose tissue is likest what the foreground clicks point at: the quality estimate cannot tell them apart.

    breast1, a lone click one pixel off the lesion's centre: the 30 mm box's 827 pixels (quality 0.723, mean 0.40)
    beat the 15 mm box's 176 (0.715, mean 0.58) around a click on 0.8 tissue, and were followed over all 21 slices
    (Dice 0.05); from the centre voxel the 15 mm box wins (0.742 vs 0.723).
    """
    fg = [(int(round(y)), int(round(x))) for x, y, flag in clicks if flag == 1]
    target = float(np.mean([click_value(image, at) for at in fg]))
    ties = [i for i in range(len(masks)) if masks[i].any() and quality[best] - quality[i] <= QUALITY_TIE
            and honours(masks[i], clicks) == honours(masks[best], clicks)]
    return min(ties, key=lambda i: abs(float(image[masks[i]].mean()) - target)) if ties else best


def _has_fg(clicks) -> bool:
    return any(flag == 1 for _, _, flag in clicks)


def _click_boxes(volume: Volume, clicks) -> list[tuple[float, float, float, float]]:
    """Candidate boxes of CLICK_BOX_MM around the foreground clicks of one slice, in its pixel frame."""
    fg = [(x, y) for x, y, flag in clicks if flag == 1]
    px, py = volume.in_plane_axes
    sx, sy = volume.spacing[px], volume.spacing[py]
    w, h = volume.shape[px], volume.shape[py]
    x0, x1 = min(x for x, _ in fg), max(x for x, _ in fg) + 1
    y0, y1 = min(y for _, y in fg), max(y for _, y in fg) + 1
    boxes = []
    for mm in CLICK_BOX_MM:
        hx, hy = mm / 2 / sx, mm / 2 / sy
        boxes.append((max(0.0, x0 - hx), max(0.0, y0 - hy), min(float(w), x1 + hx), min(float(h), y1 + hy)))
    return boxes


def _beyond_the_structure(prompts: VolumePrompts, k: int, direction: int) -> bool:
    """Whether slices past k in `direction` lie outside what the user marked: no roi, and no foreground click there
    (the structure runs from the foreground clicks; a blob removed whole past them was propagated there)."""
    if prompts.slice_range is not None:
        return False
    return not any((j - k) * direction > 0 and _has_fg(c) for j, c in prompts.clicks.items())


def _carry_removal(volume: Volume, label: np.ndarray, start: int, removed: np.ndarray, direction: int, stop: int,
                   clicked: set[int], structure: Looks | None = None) -> None:
    """Remove, slice by slice away from `start`, the blobs that continue the blob removed there: propagation put
    them there from it, so they go with it (up to a clicked slice, which keeps its own answer, and up to blobs that
    look more like the structure on its foreground-clicked slice than like what was removed: brain1 clicks only, a
    background click at the heart of a slice 613 px wrong of 839 had carried on through two slices 90 % right,
    Dice 0.73 -> 0.61)."""
    wrong = Looks.of(volume.slice_windowed(start), removed) if removed.any() else None
    for k in range(start + direction, stop + direction, direction):
        if k in clicked or not removed.any():
            return
        mask = Segmenter._slice(volume, label, k)
        removed = _touching(mask, ndimage.binary_dilation(removed, iterations=2))
        if removed.any() and structure is not None and wrong is not None:
            mean = float(volume.slice_windowed(k)[removed].mean())
            if abs(mean - structure.mean) < abs(mean - wrong.mean):
                return
        volume.put_slice(label, k, (mask & ~removed).astype(np.uint8))


def _touching(candidates: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The 8-connected parts of `candidates` that overlap `seed`."""
    labels, _ = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
    keep = np.unique(labels[seed & candidates])
    return np.isin(labels, keep[keep > 0])


def _next_box(mask: np.ndarray, prompts: VolumePrompts):
    """The prompt for the slice next to `mask`'s: the box around it, kept inside the user's roi (None: no mask)."""
    box = box_of_mask(mask)
    return _clip_box(box, prompts.box) if box is not None and prompts.box is not None else box


def _clip_box(box, bounds):
    x0, y0, x1, y1 = box
    bx0, by0, bx1, by1 = bounds
    clipped = (max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1))
    return clipped if clipped[2] > clipped[0] and clipped[3] > clipped[1] else bounds


def _timing(counters: _Counters, start: float) -> dict:
    return {"embedding_s": round(counters.embed_s, 4), "decode_s": round(counters.decode_s, 4),
            "total_s": round(time.perf_counter() - start, 4), "cache_hits": counters.hits,
            "cache_misses": counters.misses}
