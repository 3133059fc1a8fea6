"""In-process speed measurements of the product's inference and training code (no server)."""

from __future__ import annotations

import time
from pathlib import Path

import common
import numpy as np
import SimpleITK as sitk
import torch

from lib.medfm.adaptation import AdaptConfig
from lib.medfm.adaptation.data import LabelledImage, build_samples
from lib.medfm.adaptation.peft_setup import encoder_is_frozen, make_trainable, save_adapter
from lib.medfm.adaptation.trainer import _embed, _step_loss
from lib.medfm.adapter_store import AdapterStore
from lib.medfm.embedding_cache import EmbeddingCache
from lib.medfm.prompts import resolve
from lib.medfm.segmenter import Segmenter
from lib.medfm.volume import load_label, load_volume


def embedding_throughput(backend, model, dev: str, batches: list[int], reps: int, bf16: bool) -> list[dict]:
    """Slices per second of the image encoder on real-sized input, per batch size and dtype.

    bf16 rows also give the embedding's largest difference from fp32, relative to the fp32 range: the tolerance.
    """
    rows = []
    x = torch.rand(max(batches), 3, backend.input_size, backend.input_size, device=dev)
    dtypes = ["fp32"] + (["bf16"] if bf16 else [])
    with torch.inference_mode():
        reference = backend.embed(model, x[:1]).float()
        for dtype in dtypes:
            ctx = (lambda: torch.autocast(dev, dtype=torch.bfloat16)) if dtype == "bf16" else torch.no_grad
            with ctx():
                out = backend.embed(model, x[:1]).float()  # warm-up, and the fidelity check
            error = float((out - reference).abs().max() / reference.abs().max())
            for batch in batches:
                with ctx():
                    backend.embed(model, x[:batch])  # warm-up at this shape
                    with common.Timer(dev) as timer:
                        for _ in range(reps):
                            backend.embed(model, x[:batch])
                rows.append({"dtype": dtype, "batch": batch, "reps": reps, "slices_per_s": batch * reps / timer.s,
                             "s_per_slice": timer.s / (batch * reps), "max_rel_diff_vs_fp32": round(error, 5)})
                print(f"embed {dtype} batch {batch}: {rows[-1]['slices_per_s']:.2f} slices/s", flush=True)
    return rows


def interactive_latency(backend, studies: Path, image_id: str, clicks: int, dev: str, tmp: Path,
                        propagation: int = 32) -> dict:
    """One foreground click at a lesion voxel: first on a cold volume (empty cache), then `clicks` more on it.

    `propagation` is the product's default (32 slices each way) except in the smoke run, which only checks the code.
    """
    volume = load_volume(studies / f"{image_id}.nii.gz")
    label = load_label(studies / "labels" / "final" / f"{image_id}.nii.gz", volume)
    voxels = np.argwhere(label > 0)
    centre = voxels[np.argmin(((voxels - voxels.mean(0)) ** 2).sum(1))].tolist()
    segmenter = Segmenter(backend, AdapterStore(tmp / "models", backend.name), EmbeddingCache(), device=dev)
    cold = segmenter.interactive(volume, resolve(volume, foreground=[centre]), max_propagation=propagation)
    picks = np.random.default_rng(0).choice(len(voxels), size=clicks)
    times, misses = [], 0
    for n in picks:
        result = segmenter.interactive(volume, resolve(volume, foreground=[voxels[n].tolist()]),
                                       max_propagation=propagation)
        times.append(result.timing["total_s"])
        misses += result.timing["cache_misses"]
    return {"image": image_id, "shape": list(volume.shape), "max_propagation": propagation,
            "cold_s": cold.timing["total_s"],
            "cold_timing": cold.timing, "clicks": clicks, "cached_p50_s": float(np.percentile(times, 50)),
            "cached_p95_s": float(np.percentile(times, 95)), "cached_mean_s": float(np.mean(times)),
            "cache_misses_during_cached_clicks": misses}


def _ct_volume(studies: Path, slices: int, tmp: Path) -> Path:
    """A 512x512x`slices` CT volume made of lung1's real slices repeated (speed depends on size, not content)."""
    image = sitk.ReadImage(str(studies / "lung1.nii.gz"))
    array = sitk.GetArrayFromImage(image)
    reps = int(np.ceil(slices / array.shape[0]))
    big = sitk.GetImageFromArray(np.concatenate([array] * reps)[:slices])
    big.SetSpacing(image.GetSpacing())
    path = tmp / "ct512x512x200.nii.gz"
    sitk.WriteImage(big, str(path))
    return path


def automatic_volume(backend, studies: Path, slices: int, measured: int, dev: str, tmp: Path) -> dict:
    """Prompt-free segmentation of a 512x512x`slices` CT volume with a decoder adapter and its auto head.

    With `measured` < `slices` only that many slices run and the total is extrapolated linearly (and says so).
    """
    store = AdapterStore(tmp / "auto_models", backend.name)
    cfg = AdaptConfig(method="decoder")
    model = make_trainable(backend.build_model("cpu"), backend, cfg)  # untrained weights: speed is the same
    staging = store.staging()
    save_adapter(model, cfg, staging)
    version = store.commit(staging, {"fm": backend.name, "method": "decoder", "auto_head": True,
                                     "labels": {"lesion": {"value": 1, "token": 0}}})
    volume = load_volume(_ct_volume(studies, slices, tmp))
    segmenter = Segmenter(backend, store, EmbeddingCache(), device=dev)
    segmenter.model(version)  # adapter load is a one-off, not part of the per-volume time
    result = segmenter.automatic(volume, version, slice_range=(0, measured - 1))
    per_slice = result.timing["total_s"] / measured
    return {"shape": list(volume.shape), "slices_measured": measured, "measured_s": result.timing["total_s"],
            "timing": result.timing, "per_slice_s": per_slice, "full_volume_s": per_slice * slices,
            "extrapolated": measured < slices, "batch_size": segmenter.batch_size}


def adaptation_steps(backend, base, studies: Path, methods: list[str], batch: int, warmup: int, timed: int,
                     dev: str) -> list[dict]:
    """Seconds per optimizer step and peak memory of the product's training step (Dice+BCE, box + auto head).

    Decoder-only runs on embeddings computed once beforehand, as the product's loop does for a frozen encoder;
    that one-off embedding is not in its step time.
    """
    items = [LabelledImage(c, str(studies / f"{c}.nii.gz"), str(studies / "labels" / "final" / f"{c}.nii.gz"))
             for c in ("lung2", "brain1")]
    pool = build_samples(items, backend, {"lesion": 1}, batch, np.random.default_rng(0), negatives=False)
    samples = [pool[i % len(pool)] for i in range(batch)]
    rows = []
    for method in methods:
        cfg = AdaptConfig(method=method, batch_size=batch)
        rng = np.random.default_rng(0)
        with common.PeakMemory(dev) as memory:
            model = make_trainable(base, backend, cfg).to(dev).train()
            frozen = encoder_is_frozen(model)
            if frozen:
                for s in samples:
                    s.embedding = _embed(backend, base, [s], torch.device(dev), grad=False)[0:1].cpu()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
            times = []
            for n in range(warmup + timed):
                with common.Timer(dev) as timer:
                    loss = _step_loss(backend, model, samples, cfg, {1: 0}, torch.device(dev), rng, frozen)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                if n >= warmup:
                    times.append(timer.s)
        rows.append({"method": method, "batch": batch, "s_per_step": float(np.mean(times)), "timed_steps": timed,
                     "warmup_steps": warmup, "peak_memory_mb": memory.peak_mb, "memory_kind": memory.kind,
                     "encoder_frozen": frozen})
        print(f"step {method} batch {batch}: {rows[-1]['s_per_step']:.3f} s, {memory.peak_mb} MB", flush=True)
        del model, optimizer
        for s in samples:
            s.embedding = None
        time.sleep(0.2)
    return rows
