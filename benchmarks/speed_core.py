"""In-process speed measurements of the product's inference and training code (no server)."""

from __future__ import annotations

import copy
import gc
from functools import partial
from pathlib import Path

import common
import numpy as np
import SimpleITK as sitk
import torch
from tensor_memory import PeakTensorMemory

from lib.medfm import precision as precision_mod
from lib.medfm.adaptation import AdaptConfig
from lib.medfm.adaptation.data import LabelledImage, build_samples
from lib.medfm.adaptation.peft_setup import encoder_is_frozen, make_trainable, save_adapter
from lib.medfm.adaptation.trainer import embed_with_base, training_loss
from lib.medfm.adapter_store import AdapterStore
from lib.medfm.embedding_cache import EmbeddingCache
from lib.medfm.manifest import Manifest
from lib.medfm.metrics import dice
from lib.medfm.prompts import resolve
from lib.medfm.segmenter import Segmenter
from lib.medfm.volume import CT_DEFAULT_WINDOW, load_label, load_volume


def embedding_throughput(backend, model, dev: str, batches: list[int], reps: int, bf16: bool,
                         served: dict | None = None) -> list[dict]:
    """Slices per second of the image encoder, per batch size: the plain code against the product's settings.

    `plain` is the encoder as LiteMedSAM ships it (fp32, default memory layout): the reference point's code. The
    product runs it channels-last, in bf16 where the device does that natively; `served` adds models on an
    inference runtime (name -> served model), timed in the same run so ratios are not skewed by other load. Each
    row gives its largest difference from the plain fp32 embedding, absolute and relative to that embedding's
    range, and the load average when it was timed.
    """
    plain_encoder = copy.deepcopy(model.sam.image_encoder).to(memory_format=torch.contiguous_format)
    variants = [("plain fp32", lambda x: plain_encoder(x.contiguous()), "fp32"),
                ("product fp32", lambda x: backend.embed(model, x), "fp32")]
    if bf16:
        variants.append(("product bf16", lambda x: backend.embed(model, x), "bf16"))
    variants += [(name, partial(backend.embed, m), "fp32") for name, m in (served or {}).items()]
    rows = []
    x = torch.rand(max(batches), 3, backend.input_size, backend.input_size, device=dev)
    with torch.inference_mode():
        reference = plain_encoder(x[:1].contiguous()).float()
        for name, run, mode in variants:
            with precision_mod.autocast(dev, mode):
                error = float((run(x[:1]).float() - reference).abs().max())
                for batch in batches:
                    run(x[:batch])  # warm-up at this shape
                    with common.Timer(dev) as timer:
                        for _ in range(reps):
                            run(x[:batch])
                    rows.append({"variant": name, "batch": batch, "reps": reps,
                                 "slices_per_s": batch * reps / timer.s, "s_per_slice": timer.s / (batch * reps),
                                 "max_abs_diff_vs_plain_fp32": round(error, 6),
                                 "max_rel_diff_vs_plain_fp32": round(error / float(reference.abs().max()), 6),
                                 "load_1min": common.load_average()[0]})
                    print(f"embed {name} batch {batch}: {rows[-1]['slices_per_s']:.2f} slices/s", flush=True)
    return rows


def precision_fidelity(backend, studies: Path, cases: list[str], dev: str, tmp: Path,
                       runtimes: tuple[str, ...] = ()) -> list[dict]:
    """Zero-shot 3D Dice of each lesion with its label's box as the roi, in fp32 and in the product's precision,
    and on each of `runtimes` in both (columns `dice_<runtime>_<precision>`).

    The tolerance a faster number format or runtime is held to: what it does to a radiologist's result, not only
    to the embedding.
    """
    product = precision_mod.resolve("auto", dev)
    store = AdapterStore(tmp / "fidelity_models", backend.name)
    segmenters = {name: Segmenter(backend, store, EmbeddingCache(), device=dev, precision=name)
                  for name in dict.fromkeys(("fp32", product))}
    segmenters |= {f"{r}_{p}": Segmenter(backend, store, EmbeddingCache(), device=dev, precision=p, runtime=r,
                                         runtime_dir=tmp / "runtime")
                   for r in runtimes for p in dict.fromkeys(("fp32", product))}
    rows = []
    for case in cases:
        volume = load_volume(studies / f"{case}.nii.gz")
        truth = load_label(studies / "labels" / "final" / f"{case}.nii.gz", volume) > 0
        voxels = np.argwhere(truth)
        lo, hi = voxels.min(0).tolist(), voxels.max(0).tolist()
        prompts = resolve(volume, roi=[lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]])
        row = {"image": case, "precision": product}
        for name, segmenter in segmenters.items():
            result = segmenter.interactive(volume, prompts)
            row[f"dice_{name}"] = round(dice(result.label > 0, truth), 4)
            row[f"embedding_s_{name}"] = result.timing["embedding_s"]
        row["dice_change"] = round(row[f"dice_{product}"] - row["dice_fp32"], 4)
        for name in segmenters:
            if name not in ("fp32", product):
                row[f"dice_change_{name}"] = round(row[f"dice_{name}"] - row["dice_fp32"], 4)
        rows.append(row)
        print(f"fidelity {row}", flush=True)
    return rows


def _click_times(segmenter, volume, voxels, picks, propagation: int) -> dict:
    times, embed, decode, misses, slices = [], [], [], 0, []
    for n in picks:
        result = segmenter.interactive(volume, resolve(volume, foreground=[voxels[n].tolist()]),
                                       max_propagation=propagation)
        times.append(result.timing["total_s"])
        embed.append(result.timing["embedding_s"])
        decode.append(result.timing["decode_s"])
        misses += result.timing["cache_misses"]
        slices.append(len(result.slices))
    return {"max_propagation": propagation, "clicks": len(picks), "p50_s": float(np.percentile(times, 50)),
            "p95_s": float(np.percentile(times, 95)), "mean_s": float(np.mean(times)),
            "mean_decode_s": float(np.mean(decode)), "mean_embedding_s": float(np.mean(embed)),
            "mean_slices": float(np.mean(slices)), "cache_misses": misses}


def interactive_latency(backend, studies: Path, image_id: str, clicks: int, dev: str, tmp: Path,
                        propagation: int = 32, runtime: str = "torch") -> dict:
    """One foreground click at a lesion voxel on a cold volume (empty cache), then `clicks` more once it is cached.

    "Cached" means every slice has been embedded once (a volume the radiologist has already worked on, or that
    the server embedded ahead). Clicks are timed with the product's default propagation and on the clicked slice
    alone (`max_propagation` 0), and the seconds are split into embedding and decoding.
    """
    volume = load_volume(studies / f"{image_id}.nii.gz")
    label = load_label(studies / "labels" / "final" / f"{image_id}.nii.gz", volume)
    voxels = np.argwhere(label > 0)
    centre = voxels[np.argmin(((voxels - voxels.mean(0)) ** 2).sum(1))].tolist()
    segmenter = Segmenter(backend, AdapterStore(tmp / "models", backend.name), EmbeddingCache(), device=dev,
                          runtime=runtime, runtime_dir=tmp / "runtime")
    segmenter.model("base")  # a runtime's export and compile are a one-off per version, reported on their own
    cold = segmenter.interactive(volume, resolve(volume, foreground=[centre]), max_propagation=propagation)
    whole = [0, volume.shape[0] - 1, 0, volume.shape[1] - 1, 0, volume.shape[2] - 1]
    segmenter.interactive(volume, resolve(volume, roi=whole))  # embeds every slice once
    picks = np.random.default_rng(0).choice(len(voxels), size=clicks)
    return {"image": image_id, "shape": list(volume.shape), "precision": segmenter.precision,
            "runtime": segmenter.runtime, "load_1min": common.load_average()[0],
            "runtime_status": segmenter.runtime_cache.status if segmenter.runtime_cache else {},
            "cold_s": cold.timing["total_s"], "cold_timing": cold.timing,
            "cached": [_click_times(segmenter, volume, voxels, picks, propagation),
                       _click_times(segmenter, volume, voxels, picks, 0)]}


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


def automatic_volume(backend, studies: Path, slices: int, measured: int, dev: str, tmp: Path,
                     runtime: str = "torch") -> dict:
    """Prompt-free segmentation of a 512x512x`slices` CT volume with a decoder adapter and its auto head.

    With `measured` < `slices` only that many slices run and the total is extrapolated linearly (and says so).
    """
    store = AdapterStore(tmp / "auto_models", backend.name)
    cfg = AdaptConfig(method="decoder")
    model = make_trainable(backend.build_model("cpu"), backend, cfg)  # untrained weights: speed is the same
    staging = store.staging()
    save_adapter(model, staging)
    version = store.commit(staging, Manifest(fm=backend.name, method="decoder", auto_head=True,
                                             labels={"lesion": {"value": 1, "token": 0}}))
    path = tmp / "ct512x512x200.nii.gz"
    volume = load_volume(path if path.is_file() else _ct_volume(studies, slices, tmp))
    segmenter = Segmenter(backend, store, EmbeddingCache(), device=dev, runtime=runtime,
                          runtime_dir=tmp / "auto_runtime")
    segmenter.model(version)  # adapter load is a one-off, not part of the per-volume time
    result = segmenter.automatic(volume, version, slice_range=(0, measured - 1))
    per_slice = result.timing["total_s"] / measured
    return {"shape": list(volume.shape), "slices_measured": measured, "measured_s": result.timing["total_s"],
            "timing": result.timing, "per_slice_s": per_slice, "full_volume_s": per_slice * slices,
            "extrapolated": measured < slices, "batch_size": segmenter.batch_size, "runtime": segmenter.runtime,
            "load_1min": common.load_average()[0],
            "runtime_status": segmenter.runtime_cache.status if segmenter.runtime_cache else {}}


def _train_step(backend, model, base, optimizer, samples, cfg, rng, frozen: bool, dev: str, mode: str) -> None:
    with precision_mod.autocast(dev, mode):
        loss = training_loss(backend, model, base, samples, cfg, {1: 0}, torch.device(dev), rng, frozen)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _tracked_peak_mb(model, step) -> float:
    """Peak live tensor memory of one step (what a GPU would allocate), counted by a dispatch mode on any device."""
    with PeakTensorMemory(*model.parameters(), *model.buffers()) as memory:
        step()
    return memory.peak_mb


def adaptation_steps(backend, base, studies: Path, variants: list[dict], warmup: int, timed: int,
                     dev: str, precision: str = "auto") -> list[dict]:
    """Seconds per optimizer step and peak memory of the product's training step (Dice+BCE, box + auto head).

    Each variant is {"method", "batch", "gradient_checkpointing", "timed"(default True)}. Memory is given twice:
    the process's peak (CUDA max allocated, or sampled CPU RSS) and the peak of live tensors in one extra step,
    which on a CPU is the estimate of what the step needs on a GPU. Decoder-only runs on embeddings computed
    once beforehand, as the product's loop does for a frozen encoder; that one-off is not in its step time.
    """
    items = [LabelledImage(c, str(studies / f"{c}.nii.gz"), str(studies / "labels" / "final" / f"{c}.nii.gz"))
             for c in ("lung2", "brain1")]
    largest = max(v["batch"] for v in variants)
    pool = build_samples(items, backend, {"lesion": 1}, largest, np.random.default_rng(0), negatives=False,
                         ct_window=CT_DEFAULT_WINDOW)
    mode = precision_mod.resolve(precision, dev)
    rows = []
    for variant in variants:
        batch, timed_here = variant["batch"], variant.get("timed", True)
        samples = [copy.copy(pool[i % len(pool)]) for i in range(batch)]
        cfg = AdaptConfig(method=variant["method"], batch_size=batch,
                          gradient_checkpointing=variant.get("gradient_checkpointing", True))
        rng = np.random.default_rng(0)
        model = make_trainable(base, backend, cfg).to(dev).train()
        frozen = encoder_is_frozen(model)
        if frozen or cfg.preservation > 0:  # as the product's loop does before its first step
            embed_with_base(backend, base, samples, torch.device(dev), mode)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)

        step = partial(_train_step, backend, model, base, optimizer, samples, cfg, rng, frozen, dev, mode)
        times = []
        with common.PeakMemory(dev) as memory:
            for n in range(warmup + timed if timed_here else 0):
                with common.Timer(dev) as timer:
                    step()
                if n >= warmup:
                    times.append(timer.s)
        tracked = _tracked_peak_mb(model, step)
        rows.append({"method": cfg.method, "batch": batch, "precision": mode,
                     "checkpointing": cfg.gradient_checkpointing,
                     "s_per_step": float(np.mean(times)) if times else None, "timed_steps": len(times),
                     "warmup_steps": warmup if timed_here else 0,
                     "process_peak_mb": memory.peak_mb if timed_here else None, "process_memory_kind": memory.kind,
                     "tensor_peak_mb": tracked, "encoder_frozen": frozen})
        print(f"step {variant}: {rows[-1]}", flush=True)
        del model, optimizer, samples, step
        gc.collect()
    return rows
