"""One adaptation job end to end: split, train, measure against the active version, save a new (inactive) version.

Validation is on data the version did not train on: other images when there are two or more; with one labelled
image, its top labelled slices, kept `val_gap_slices` apart from every training slice. What the validation showed
against the active version is stored in the manifest as `evidence`; whether the version goes live is the
registry's decision (its guard), not the job's.

The server's `Settings` say how images are read (the CT window), which labels exist, and the device and precision:
training reads its slices exactly as inference, evaluation and scoring read theirs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..adapter_store import AdapterStore
from ..backends import FMBackend
from ..digest import sha256_file as label_sha256
from ..errors import InputError
from ..manifest import Manifest
from ..settings import Settings
from .config import AdaptConfig
from .data import LabelledImage, build_samples, hold_apart
from .evidence import validation_evidence
from .peft_setup import parent_lora, save_adapter
from .trainer import adapt


def split_by_image(items: list[LabelledImage], val_fraction: float, seed: int):
    """Whole images go to one side only; with one image there is nothing to validate on."""
    order = np.random.default_rng(seed).permutation(len(items))
    shuffled = [items[i] for i in order]
    n_val = 0 if len(items) < 2 or val_fraction <= 0 else max(1, round(val_fraction * len(items)))
    n_val = min(n_val, len(items) - 1)
    return shuffled[n_val:], shuffled[:n_val]


def label_tokens(label_values: dict[str, int], wanted: list[str] | None, max_labels: int) -> dict[str, dict]:
    names = sorted(label_values, key=label_values.get)
    if wanted:
        unknown = [n for n in wanted if n not in label_values]
        if unknown:
            raise InputError(f"unknown label(s) {unknown}; this server's labels are {names}")
        names = [n for n in names if n in wanted]
    if len(names) > max_labels:
        raise InputError(f"at most {max_labels} labels can be adapted at once, got {len(names)}")
    return {n: {"value": label_values[n], "token": i} for i, n in enumerate(names)}


def run_adaptation(backend: FMBackend, base_model, store: AdapterStore, items: list[LabelledImage],
                   cfg: AdaptConfig, settings: Settings, on_epoch: Callable[[dict], None] | None = None,
                   should_stop=None, log=print) -> dict:
    if not items:
        raise InputError("there are no labelled images to adapt on: submit at least one final label first")
    device, precision, window = settings.device, settings.precision, settings.ct_window
    labels = label_tokens(settings.labels, cfg.labels, backend.max_labels)
    values = {n: d["value"] for n, d in labels.items()}
    train_items, val_items = split_by_image(items, cfg.val_fraction, cfg.seed)
    source, gap = "validation images", None
    if not val_items and cfg.val_fraction > 0:
        parts = hold_apart(train_items[0], values, cfg.val_fraction, cfg.val_gap_slices)
        if parts:
            train_items, val_items, gap = [parts[0]], [parts[1]], parts[2]
            source = f"slices of {parts[0].image_id} held {gap} slice(s) apart from its training slices"
    rng = np.random.default_rng(cfg.seed)
    train = build_samples(train_items, backend, values, cfg.slices_per_image, rng, negatives=cfg.auto_head,
                          ct_window=window)
    val = build_samples(val_items, backend, values, cfg.slices_per_image, rng, negatives=False, ct_window=window)
    if not train:
        raise InputError(f"none of the training images has any of the labels {sorted(values)}")
    used = {s.image_id for s in train} | {s.image_id for s in val}
    train_items = [i for i in train_items if i.image_id in used]  # images without these labels taught nothing
    val_items = [i for i in val_items if i.image_id in used]
    # A label no training image carries was never taught: it gets no prompt-free token, so automatic mode does not
    # paint it (measured: 2,346 voxels of "lesion" in a brain slab, and grey matter 0.54 instead of 0.62).
    taught = {v for s in train for v in s.targets}
    labels = {n: d for n, d in labels.items() if d["value"] in taught}
    tokens = {d["value"]: d["token"] for d in labels.values()}
    start_from = None
    if cfg.parent:  # the hybrid: continue a (self-supervised) LoRA version with labels
        start_from = parent_lora(store, base_model, cfg.parent)
    try:
        result = adapt(backend, base_model, train, val, cfg, tokens, device, on_epoch, should_stop, log, precision,
                       start_from=start_from)
    except RuntimeError as err:
        if start_from is None or "size mismatch" not in str(err):
            raise
        raise InputError(f"parent {cfg.parent}'s LoRA does not fit this training's (use the parent's rank, "
                         f"{next(iter(start_from.values())).shape[0]}): {str(err)[:200]}") from err
    evidence = validation_evidence(backend, base_model, store, result.model, tokens if cfg.auto_head else {}, val,
                                   cfg, device, precision, source)
    log(f"EVIDENCE {evidence}" if evidence else "EVIDENCE none: no labelled slice the version did not train on")

    staging = store.staging()
    try:
        sizes = save_adapter(result.model, staging)
        manifest = Manifest.of_version(
            backend, staging, sizes, result.trainable_params, result.total_params, run=(device, precision),
            method=cfg.method, config=cfg.to_json(), labels=labels, auto_head=cfg.auto_head,
            parent=cfg.parent or store.active(),
            train_images=[_provenance(i, train) for i in train_items],
            val_images=[_provenance(i, val) for i in val_items], val_gap_slices=gap, evidence=evidence,
            metrics={"best": result.best, "base": result.base_val, "history": result.history},
            peak_memory_mb=result.peak_memory_mb, wall_s=result.wall_s, stopped_early=result.stopped_early,
            note=cfg.note)
        version = store.commit(staging, manifest)
    except BaseException:
        store.discard(staging)
        raise
    summary = {
        "version": version, "method": cfg.method, "epochs": len(result.history),
        "trainable_params": result.trainable_params, "trainable_fraction": manifest.trainable_fraction,
        "adapter_bytes": manifest.adapter_bytes, "peak_memory_mb": result.peak_memory_mb,
        "best_val_dice": result.best.get("val_dice"),
        "best": result.best, "base_val": result.base_val, "wall_s": result.wall_s,
        "stopped_early": result.stopped_early, "train_images": [i.image_id for i in train_items],
        "val_images": [i.image_id for i in val_items], "evidence": evidence,
    }
    log(f"SUMMARY version={version} method={cfg.method} trainable={result.trainable_params} "
        f"({100 * manifest.trainable_fraction:.3f}%) adapter_bytes={manifest.adapter_bytes} "
        f"peak_memory_mb={result.peak_memory_mb} epochs={len(result.history)} "
        f"best_val_dice={summary['best_val_dice']} base_val_dice_box={result.base_val.get('val_dice_box')} "
        f"wall_s={result.wall_s}")
    return summary


def _provenance(item: LabelledImage, samples) -> dict:
    """Which image (and label file, by hash) a version saw, and the exact slices it used."""
    return {"id": item.image_id, "label_sha256": label_sha256(item.label_path),
            "slices": sorted({s.slice_index for s in samples if s.image_id == item.image_id})}

