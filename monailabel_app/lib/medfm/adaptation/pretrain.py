"""Self-supervised adaptation of the image encoder on a site's unlabelled scans (LoRA on the encoder only).

A site has hundreds of unlabelled scans and a handful of labels. Two recipes keep the encoder's embedding space
usable by the unchanged mask decoders while it adapts to the site's images:
- `distill`: teacher-student. The frozen base encoder embeds the clean slice; the LoRA student sees a strongly
  perturbed view (patches blanked, intensity scaled and shifted, noise) and is taught to embed it as the teacher
  embeds the clean one (1 - cosine per position). This is how LiteMedSAM itself was distilled from MedSAM.
- `consistency`: the student's embeddings of two perturbed views agree (one view as a stop-gradient target), and
  stay anchored to the frozen base encoder's embedding of the clean slice (weight `anchor_weight`), as WeSAM does.
The result is a version (method `ssl-lora`) in the same registry, judged by the same guard, that supervised LoRA
can start from (`parent`).
"""

from __future__ import annotations

import copy
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .. import precision as precision_mod
from ..adapter_store import AdapterStore
from ..backends import FMBackend
from ..digest import sha256_file
from ..errors import InputError
from ..manifest import Manifest
from ..options import Options
from ..settings import Settings
from ..volume import load_volume
from .peft_setup import SSL_METHOD, count_parameters, save_adapter
from .trainer import StopRequested

RECIPES = ("distill", "consistency")
METHOD = SSL_METHOD


class PretrainConfig(Options):
    what = "bad pretraining parameter"

    # `consistency` by default, from benchmarks/results/pretraining-cpu-*: LoRA at K=1 from it gained +0.034 mean
    # Dice over LoRA alone (distill +0.024), box Dice not lower (+0.007), 3 seeds, MNI152 slabs under a simulated
    # scanner; at K=2 neither recipe helped (-0.014, -0.007).
    recipe: Literal[RECIPES] = Field("consistency", description="self-supervised recipe")
    rank: int = Field(8, ge=1, le=256, description="LoRA rank on the image encoder (a supervised child must use the "
                      "same)")
    alpha: int = Field(16, ge=1, le=4096, description="LoRA scaling numerator")
    lr: float = Field(2e-4, gt=0, le=1, description="learning rate")
    max_epochs: int = Field(5, ge=1, le=10000, description="passes over the sampled slices")
    max_seconds: float = Field(1800.0, gt=0, description="wall-clock budget in seconds")
    slices_per_image: int = Field(8, ge=1, le=4096, description="slices sampled per image, evenly spread over the "
                                  "scanned body")
    batch_size: int = Field(4, ge=1, le=1024, description="slices per optimiser step")
    mask_ratio: float = Field(0.4, ge=0, le=0.9, description="share of 16x16 patches blanked in the student's view")
    noise: float = Field(0.1, ge=0, le=1, description="std of the Gaussian noise in the student's view, as a share "
                         "of the slice's std")
    anchor_weight: float = Field(1.0, ge=0, le=100, description="consistency recipe: weight of the frozen base "
                                 "encoder's anchor")
    seed: int = Field(0, description="seed of the slice draw and the perturbations")
    images: list[str] | None = Field(None, description="pretrain on these image ids only; empty = every image that "
                                     "is not held out")
    note: str = Field("", description="free text kept in the version's manifest")


@dataclass(frozen=True)
class UnlabelledImage:
    image_id: str
    image_path: str


def sample_slices(images: list[UnlabelledImage], backend: FMBackend, per_image: int, rng: np.random.Generator, *,
                  ct_window: tuple[float, float]) -> list[tuple[str, int, torch.Tensor]]:
    """Up to `per_image` slices per image, evenly spread over the slices that hold more than background, windowed
    with the server's CT window (as inference windows them)."""
    out = []
    for item in images:
        volume = load_volume(item.image_path, ct_window=ct_window)
        body = [k for k in range(volume.n_slices)
                if float(np.mean(np.take(volume.array, k, axis=volume.slice_axis) > volume.window[0])) > 0.05]
        body = body or list(range(volume.n_slices))
        picks = sorted({body[int(i)] for i in np.linspace(0, len(body) - 1, min(per_image, len(body)))})
        for k in picks:
            out.append((item.image_id, k, backend.prepare(volume.slice_windowed(k)).tensor))
    rng.shuffle(out)
    return out


def perturb(x: torch.Tensor, cfg: PretrainConfig, gen: torch.Generator) -> torch.Tensor:
    """A strongly perturbed view of a batch [B, C, H, W]: intensity scale and shift, noise, blanked patches."""
    b = x.shape[0]
    std = x.flatten(1).std(dim=1).view(b, 1, 1, 1)
    mean = x.flatten(1).mean(dim=1).view(b, 1, 1, 1)
    scale = 1 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.2
    shift = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.2 * std
    view = (x - mean) * scale + mean + shift + torch.randn(x.shape, generator=gen) * cfg.noise * std
    if cfg.mask_ratio > 0:
        grid = (x.shape[-2] // 16, x.shape[-1] // 16)
        keep = (torch.rand(b, 1, *grid, generator=gen) >= cfg.mask_ratio).float()
        keep = F.interpolate(keep, size=x.shape[-2:], mode="nearest")
        view = view * keep + mean * (1 - keep)
    return view


def _cosine_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of two [B, C, H, W] embeddings along C, averaged over positions."""
    return (1 - F.cosine_similarity(a.float(), b.float(), dim=1)).mean()


@dataclass
class PretrainResult:
    model: nn.Module
    history: list[dict]
    trainable_params: int
    total_params: int
    wall_s: float
    slices: list[tuple[str, int]]
    peak_memory_mb: float = 0.0
    stopped_early: str = ""


def pretrain(backend: FMBackend, base_model: nn.Module, images: list[UnlabelledImage], cfg: PretrainConfig,
             settings: Settings, on_epoch: Callable[[dict], None] | None = None,
             should_stop: Callable[[], bool] | None = None, log=print) -> PretrainResult:
    from peft import LoraConfig, get_peft_model

    start = time.perf_counter()
    if not images:
        raise InputError("there are no images to pretrain on (held-out images are never used)")
    regex = backend.peft_targets().encoder_lora_regex
    if not regex:
        raise InputError(f"the {backend.name} backend names no image-encoder modules to pretrain")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    dev = torch.device(settings.device)
    mode = precision_mod.resolve(settings.precision, dev)
    slices = sample_slices(images, backend, cfg.slices_per_image, np.random.default_rng(cfg.seed),
                           ct_window=settings.ct_window)
    student = get_peft_model(copy.deepcopy(base_model), LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha,
                                                                   target_modules=regex)).to(dev)
    trainable, total = count_parameters(student)
    log(f"pretrain recipe={cfg.recipe} trainable={trainable} of {total} slices={len(slices)} "
        f"images={len(images)} precision={mode}")
    teacher = {}
    with torch.no_grad(), precision_mod.autocast(dev, mode):
        for n in range(0, len(slices), cfg.batch_size):
            batch = torch.stack([t for _, _, t in slices[n:n + cfg.batch_size]]).to(dev)
            for i, emb in enumerate(backend.embed(base_model, batch)):
                teacher[n + i] = emb.float().cpu()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=1e-4)
    history, stopped = [], ""
    for epoch in range(1, cfg.max_epochs + 1):
        student.train()
        order = torch.randperm(len(slices), generator=gen).tolist()
        losses = []
        for n in range(0, len(order), cfg.batch_size):
            if should_stop and should_stop():
                raise StopRequested("pretraining was stopped")
            idx = order[n:n + cfg.batch_size]
            clean = torch.stack([slices[i][2] for i in idx])
            target = torch.stack([teacher[i] for i in idx]).to(dev)
            with precision_mod.autocast(dev, mode):
                view = backend.embed(student, perturb(clean, cfg, gen).to(dev))
                loss = _cosine_gap(view, target)
                if cfg.recipe == "consistency":
                    with torch.no_grad():
                        other = backend.embed(student, perturb(clean, cfg, gen).to(dev))
                    loss = _cosine_gap(view, other) + cfg.anchor_weight * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.item()))
            if time.perf_counter() - start > cfg.max_seconds:
                stopped = f"wall-clock budget of {cfg.max_seconds:.0f} s reached in epoch {epoch}"
                break
        row = {"epoch": epoch, "train_loss": round(float(np.mean(losses)), 5) if losses else None,
               "elapsed_s": round(time.perf_counter() - start, 2)}
        history.append(row)
        log(f"epoch {epoch}/{cfg.max_epochs} loss={row['train_loss']} elapsed_s={row['elapsed_s']}")
        if on_epoch:
            on_epoch(row)
        if stopped:
            break
    student.eval()
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:  # the process's peak resident memory (the server's training subprocess: this task alone)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return PretrainResult(student, history, trainable, total, round(time.perf_counter() - start, 2),
                          [(i, k) for i, k, _ in slices], round(peak, 1), stopped)


def run_pretraining(backend: FMBackend, base_model: nn.Module, store: AdapterStore, images: list[UnlabelledImage],
                    cfg: PretrainConfig, settings: Settings, on_epoch=None, should_stop=None, log=print) -> dict:
    """Pretrain, then save the encoder LoRA as a new (inactive) version with its provenance; the guard decides."""
    result = pretrain(backend, base_model, images, cfg, settings, on_epoch, should_stop, log)
    staging = store.staging()
    try:
        sizes = save_adapter(result.model, staging)
        used = {i for i, _ in result.slices}
        manifest = Manifest.of_version(
            backend, staging, sizes, result.trainable_params, result.total_params,
            run=(settings.device, settings.precision),
            method=METHOD, config=cfg.to_json(), labels={}, auto_head=False, parent=None,
            train_images=[{"id": i.image_id, "image_sha256": sha256_file(i.image_path),
                           "slices": sorted(k for j, k in result.slices if j == i.image_id)}
                          for i in images if i.image_id in used],
            val_images=[], evidence=None, labelled=False,
            ssl={"recipe": cfg.recipe, "steps": sum(1 for _ in range(0, len(result.slices), cfg.batch_size))
                 * len(result.history), "loss_curve": [r["train_loss"] for r in result.history]},
            metrics={"history": result.history}, wall_s=result.wall_s, peak_memory_mb=result.peak_memory_mb,
            stopped_early=result.stopped_early, note=cfg.note)
        version = store.commit(staging, manifest)
    except BaseException:
        store.discard(staging)
        raise
    log(f"SUMMARY version={version} method={METHOD} recipe={cfg.recipe} trainable={result.trainable_params} "
        f"adapter_bytes={manifest.adapter_bytes} wall_s={result.wall_s} loss={manifest.ssl['loss_curve']}")
    return {"version": version, "method": METHOD, "recipe": cfg.recipe, "epochs": len(result.history),
            "history": result.history, "adapter_bytes": manifest.adapter_bytes, "wall_s": result.wall_s,
            "peak_memory_mb": result.peak_memory_mb,
            "images": sorted(used), "stopped_early": result.stopped_early}

