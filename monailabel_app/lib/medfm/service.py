"""What the server does with an FM, independent of MONAI Label: requests in, label maps and provenance out.

The MONAI Label infer and train tasks are thin wrappers over this, and a benchmark or notebook can use it directly.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections import OrderedDict
from functools import cached_property
from pathlib import Path

from . import interaction
from .adapter_store import AdapterStore
from .backends import get_backend
from .embedding_cache import EmbeddingCache
from .errors import ConflictError, InputError
from .prompts import InferOptions, parse_points, parse_roi, resolve
from .segmenter import SegmentationResult, Segmenter
from .settings import Settings
from .volume import Volume, load_volume, write_image

RESULT_NAME = re.compile(r"^uncertainty-[0-9a-f]{32}\.nii\.gz$")


class MedFMService:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.backend = get_backend(settings.fm)
        self.store = AdapterStore(settings.models_dir / "adapters", self.backend.name)
        self.cache = EmbeddingCache(settings.embedding_cache_mb << 20, settings.embedding_cache_dir)
        self._volumes: OrderedDict[tuple, Volume] = OrderedDict()
        self._lock = threading.Lock()
        self.interactions = interaction.InteractionStore()

    @cached_property
    def segmenter(self) -> Segmenter:
        """Built on first use: the training subprocess rebuilds the app and never needs the inference model."""
        return Segmenter(self.backend, self.store, self.cache, self.settings.device, self.settings.batch_size,
                         precision=self.settings.precision, runtime=self.settings.runtime,
                         runtime_dir=self.settings.runtime_dir)

    def fm_info(self) -> dict:
        return {"name": self.backend.name, "sha256": self.backend.weights_sha256()}

    def volume(self, path: str, modality: str | None = None) -> Volume:
        """Volumes are re-read only when their file changes; a click should not pay for decoding a CT again."""
        try:
            stat = os.stat(path)
        except OSError as err:
            raise InputError(f"image {os.path.basename(path)} cannot be read", status=404) from err
        key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, modality)
        with self._lock:
            if key in self._volumes:
                self._volumes.move_to_end(key)
                return self._volumes[key]
        volume = load_volume(path, modality=modality, ct_window=self.settings.ct_window)
        with self._lock:
            self._volumes[key] = volume
            while len(self._volumes) > 4:
                self._volumes.popitem(last=False)
        return volume

    def interactive(self, path: str, params: dict) -> tuple[Volume, SegmentationResult]:
        """Segment from the prompts; a request that adds clicks to the previous one of its session edits that
        answer instead (lib/medfm/interaction.py). An uncertainty map always comes from a fresh answer."""
        options = InferOptions.from_params(params)
        volume = self.volume(path, options.modality)
        prompts = resolve(volume, params.get("foreground"), params.get("background"), params.get("roi"))
        version = self.store.resolve(options.adapter)
        request = interaction.Request(
            volume.key, version, _flat(parse_roi(params.get("roi"), volume.shape)), options.max_propagation,
            *(tuple(tuple(p) for p in parse_points(params.get(n), n, volume.shape)) for n in ("foreground",
                                                                                                "background")))
        name = interaction.session_name(options.session, request)
        if options.reset_state:
            self.interactions.drop(name)
        state = self.interactions.get(name)
        added = request.added_to(state.request) if state else None
        if state and options.session and state.request.image_key != request.image_key:
            self.interactions.drop(name)
            raise ConflictError(f"session {options.session!r} was segmenting another image, or this image changed "
                                "since: its previous answer is discarded; send the request again with "
                                "reset_state=true")
        if not added or options.uncertainty:  # not a continuation, or the same prompts again: afresh
            result = self.segmenter.interactive(volume, prompts, version, options.max_propagation,
                                                uncertainty=options.uncertainty)
        else:
            ax, (px, py) = volume.slice_axis, volume.in_plane_axes
            clicks = [(p[ax], (float(p[px]), float(p[py]), flag)) for p, flag in added]
            result = self.segmenter.refine(volume, prompts, clicks, state.label(), version, options.max_propagation)
        self.interactions.put(name, interaction.State.of(request, result.label))
        return volume, result

    def automatic(self, path: str, params: dict) -> tuple[Volume, SegmentationResult]:
        options = InferOptions.from_params(params)
        version = self.store.resolve(options.adapter)
        if not options.adapter and not self.store.serves(version, "automatic"):
            raise ConflictError(f"the live adapter '{version}' serves box and click prompts only: its automatic "
                                "masks were worse than box prompts when it was activated (see its decision). Use "
                                f"medsam_interactive, or pass adapter={version} to review its automatic masks")
        volume = self.volume(path, options.modality)
        roi = parse_roi(params.get("roi"), volume.shape)
        slice_range = (roi[0][volume.slice_axis], roi[1][volume.slice_axis]) if roi else None
        return volume, self.segmenter.automatic(volume, version, slice_range, options.labels,
                                                uncertainty=options.uncertainty)

    def save_uncertainty(self, result: SegmentationResult, volume: Volume, keep: int = 50) -> str:
        """Write the uncertainty map for GET /medfm/results/<name>; only the newest `keep` maps are kept."""
        folder = self.settings.models_dir / "results"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"uncertainty-{uuid.uuid4().hex}.nii.gz"
        write_image(result.uncertainty, volume.reference, folder / name)
        for old in sorted(folder.glob("uncertainty-*.nii.gz"), key=lambda p: p.stat().st_mtime)[:-keep]:
            old.unlink(missing_ok=True)
        return name

    def result_path(self, name: str) -> Path:
        if not RESULT_NAME.match(name or ""):
            raise InputError(f"result name {name!r} is not valid", status=404)
        path = self.settings.models_dir / "results" / name
        if not path.is_file():
            raise InputError(f"result {name} does not exist (only the newest maps are kept)", status=404)
        return path

    def provenance(self, result: SegmentationResult, volume: Volume) -> dict:
        return {"fm": self.fm_info(), "adapter": result.adapter,
                "adapter_method": self.store.manifest(result.adapter).method or "none",
                "timing": result.timing, "slices": result.slices, "slice_axis": volume.slice_axis,
                "refined_clicks": result.refined_clicks,
                "modality": volume.modality, "cache": self.cache.stats()}


def _flat(roi) -> tuple[int, ...] | None:
    return None if roi is None else (*roi[0], *roi[1])
