"""The adaptation loop: Dice+CE on box-prompted (then click-corrected) and prompt-free masks, validation by image,
early stopping."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import precision as precision_mod
from ..backends import FMBackend, SlicePrompt
from ..metrics import dice_batch, mask_loss
from .clicks import ClickRound, click_rounds_loss
from .config import AdaptConfig
from .data import SliceSample, box_from_mask
from .peft_setup import count_parameters, encoder_is_frozen, make_trainable, trainable_state


class StopRequested(Exception):
    """Raised by the loop when `should_stop()` says so; nothing is saved."""


@dataclass
class AdaptResult:
    model: nn.Module
    history: list[dict]
    best: dict
    base_val: dict
    trainable_params: int
    total_params: int
    peak_memory_mb: float
    wall_s: float
    stopped_early: str = ""
    notes: list[str] = field(default_factory=list)


def adapt(backend: FMBackend, base_model: nn.Module, train: list[SliceSample], val: list[SliceSample],
          cfg: AdaptConfig, label_tokens: dict[int, int], device: str = "cpu",
          on_epoch: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
          log: Callable[[str], None] = print, precision: str = "auto",
          start_from: dict[str, torch.Tensor] | None = None) -> AdaptResult:
    """Train `cfg.method` on `train` slices, validate on `val` (other images), keep the best epoch's weights.

    `label_tokens` maps a label value to the index of its learned prompt token (the prompt-free head).
    `precision` ('auto', 'bf16', 'fp32') is the mixed-precision mode of the forward passes; weights stay fp32.
    `start_from`: adapter tensors (by the trainable model's names) to start from instead of the method's fresh
    initialisation, e.g. a federation's global adapter.
    """
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dev = torch.device(device)
    mode = precision_mod.resolve(precision, dev)
    if cfg.gradient_checkpointing is None:
        cfg = cfg.replace(gradient_checkpointing=dev.type == "cuda")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    model = make_trainable(base_model, backend, cfg).to(dev)
    if start_from:
        unexpected = model.load_state_dict(start_from, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"start_from holds {len(unexpected)} tensors this model lacks, e.g. {unexpected[:2]}")
    trainable, total = count_parameters(model)
    log(f"method={cfg.method} trainable={trainable} of {total} ({100 * trainable / total:.3f}%) "
        f"train_slices={len(train)} val_slices={len(val)} precision={mode} "
        f"gradient_checkpointing={cfg.gradient_checkpointing}")
    frozen = encoder_is_frozen(model)
    # The base encoder's embedding of each slice, once: the frozen encoder's input to the decoder, and what the
    # base FM's answers to random boxes are computed from (the self-distillation targets). Active-learning rounds
    # hand in slices embedded already.
    if frozen or cfg.preservation > 0:
        embed_with_base(backend, base_model, train, dev, mode)
    embed_with_base(backend, base_model, val, dev, mode)  # the base FM's validation, and every epoch's when frozen

    with precision_mod.autocast(dev, mode):
        base_val = evaluate(backend, base_model, val, cfg, label_tokens, dev, auto=False, base_embedded=True)
    log(f"base FM on validation: {base_val}")
    head_params = [p for n, p in model.named_parameters() if p.requires_grad and "label_prompts" in n]
    other = [p for n, p in model.named_parameters() if p.requires_grad and "label_prompts" not in n]
    groups = [{"params": other, "lr": cfg.learning_rate}] + ([{"params": head_params, "lr": cfg.head_lr}]
                                                               if head_params else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)

    history: list[dict] = []
    best: dict = {"epoch": 0, "val_dice": None}
    best_score = -1.0  # with no validation slices every epoch is "better": the last one is kept
    best_state = trainable_state(model)
    stale, stopped = 0, ""
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for n in range(0, len(order), cfg.batch_size):
            if should_stop and should_stop():
                raise StopRequested("training was stopped")
            batch = [train[i] for i in order[n:n + cfg.batch_size]]
            with precision_mod.autocast(dev, mode):
                loss = training_loss(backend, model, base_model, batch, cfg, label_tokens, dev, rng, frozen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if time.perf_counter() - start > cfg.max_seconds:
                stopped = f"wall-clock budget of {cfg.max_seconds:.0f} s reached in epoch {epoch}"
                break
        with precision_mod.autocast(dev, mode):
            metrics = evaluate(backend, model, val, cfg, label_tokens, dev, auto=cfg.auto_head, base_embedded=frozen)
        row = {"epoch": epoch, "train_loss": round(float(np.mean(losses)), 5) if losses else None,
               **metrics, "elapsed_s": round(time.perf_counter() - start, 2)}
        history.append(row)
        log(f"epoch {epoch}/{cfg.max_epochs} " + " ".join(f"{k}={v}" for k, v in row.items() if k != "epoch"))
        if on_epoch:
            on_epoch(row)
        score = row.get("val_dice")
        if score is None or score > best_score:
            best = {"epoch": epoch, "val_dice": score, **metrics}
            best_score = score if score is not None else -1.0
            best_state, stale = trainable_state(model), 0
        else:
            stale += 1
        if stopped:
            break
        if score is not None and stale >= cfg.patience:
            stopped = f"validation Dice did not improve for {cfg.patience} epochs"
            break
    model.load_state_dict(best_state, strict=False)
    model.eval()
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return AdaptResult(model=model, history=history, best=best, base_val=base_val, trainable_params=trainable,
                       total_params=total, peak_memory_mb=round(peak, 1),
                       wall_s=round(time.perf_counter() - start, 2), stopped_early=stopped)


def _embed(backend, model, batch: list[SliceSample], dev, grad: bool) -> torch.Tensor:
    images = torch.stack([s.prepared.tensor for s in batch]).to(dev)
    with torch.set_grad_enabled(grad):
        return backend.embed(model, images)


def embed_with_base(backend, base_model, samples: list[SliceSample], dev, mode: str) -> None:
    """Fill each sample's base-encoder embedding, once (samples that have one keep it)."""
    for s in samples:
        if s.embedding is None:
            with precision_mod.autocast(dev, mode):
                s.embedding = _embed(backend, base_model, [s], dev, grad=False)[0:1].float().cpu()


def training_loss(backend, model, base_model, batch: list[SliceSample], cfg: AdaptConfig, label_tokens, dev, rng,
                  frozen: bool) -> torch.Tensor:
    """One step's loss: the task (box-prompted and prompt-free masks) plus the weighted self-distillation."""
    emb = torch.cat([s.embedding for s in batch]).to(dev) if frozen else _embed(backend, model, batch, dev, True)
    loss = _task_loss(backend, model, emb, batch, cfg, label_tokens, dev, rng)
    if cfg.preservation > 0:
        loss = loss + cfg.preservation * _preserve_loss(backend, model, base_model, emb, batch, dev, rng)
    return loss


def _task_loss(backend, model, emb, batch, cfg, label_tokens, dev, rng,
               record: list[ClickRound] | None = None) -> torch.Tensor:
    """Box-prompted (plus `cfg.click_rounds` correction rounds on each box's answer) and prompt-free masks."""
    items, targets = [], []
    for i, s in enumerate(batch):
        if s.present:  # box-prompted: one labelled structure on this slice, with a jittered box
            value = s.present[rng.integers(len(s.present))]
            items.append((i, SlicePrompt(box=box_from_mask(s.targets[value], cfg.box_jitter, rng)), s))
            targets.append(s.targets[value])
        if cfg.auto_head:  # prompt-free: every label annotated in this image, empty targets teach "not here"
            for value, target in s.targets.items():
                items.append((i, SlicePrompt(label_index=label_tokens[value]), s))
                targets.append(target)
    if not items:  # a batch of empty slices with no prompt-free head to teach: nothing to learn from it
        return emb.float().sum() * 0.0
    index = torch.tensor([i for i, _, _ in items], device=dev)
    logits, _ = _decode_in_model_frame(backend, model, emb[index], [p for _, p, _ in items], [s for _, _, s in items])
    logits = logits.float()  # the loss in fp32 whatever the forward ran in
    target = torch.stack(targets).to(dev)[:, None]
    loss = mask_loss(logits, target)
    rows = [n for n, (_, p, _) in enumerate(items) if p.box is not None]
    if cfg.click_rounds and rows:  # correction clicks on the box's answer, with the previous logits fed back
        emb_rows, samples = emb[index[rows]], [items[n][2] for n in rows]

        def decode(prompts):
            return _decode_in_model_frame(backend, model, emb_rows, prompts, samples)[0]

        loss = loss + click_rounds_loss(decode, [items[n][1] for n in rows], target[rows], logits[rows],
                                        cfg.click_rounds, record)
    return loss


def _preserve_loss(backend, model, base_model, emb, batch, dev, rng) -> torch.Tensor:
    """Self-distillation: on a random box of each training slice, answer as the base FM does.

    Adapting on a few labelled structures otherwise teaches the shared mask decoder to forget every other one
    (measured: one case took interactive Dice on other structures from 0.53 to 0.04). The targets are the base
    FM's own probabilities, so nothing but its behaviour is taught.
    """
    size = batch[0].prepared.tensor.shape[-1]
    prompts = []
    for _ in batch:
        w, h = rng.uniform(0.1, 0.5, 2) * size
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        prompts.append(SlicePrompt(box=(float(x0), float(y0), float(x0 + w), float(y0 + h))))
    base_emb = torch.cat([s.embedding for s in batch]).to(dev)
    with torch.no_grad():
        target = torch.sigmoid(_decode_in_model_frame(backend, base_model, base_emb, prompts, batch)[0].float())
    logits = _decode_in_model_frame(backend, model, emb, prompts, batch)[0].float()
    return F.binary_cross_entropy_with_logits(logits, target)


def _decode_in_model_frame(backend, model, emb, prompts, samples):
    # Boxes from box_from_mask are already in the model frame, so decode with a unit scale.
    prepared = [type(s.prepared)(tensor=s.prepared.tensor, scale=1.0, original_hw=s.prepared.original_hw)
                for s in samples]
    return backend.decode(model, emb, prompts, prepared)


@torch.no_grad()
def evaluate(backend, model, samples: list[SliceSample], cfg: AdaptConfig, label_tokens, dev, auto: bool,
             base_embedded: bool = False, units: bool = False) -> dict:
    """Mean slice Dice on validation slices: box-prompted (box from the label, no jitter) and prompt-free.

    `base_embedded`: `model` has the base encoder, so the samples' stored base embeddings stand for its own.
    `units`: also return each slice x label's Dice (`box_units`, `auto_units`: unit id -> Dice), which the guard
    pairs with the active version's to judge a difference against its own spread.
    """
    if not samples:
        return {}
    model.eval()
    box_scores, auto_scores = [], []
    box_units: dict[str, float] = {}
    auto_units: dict[str, float] = {}
    for n in range(0, len(samples), cfg.batch_size):
        batch = samples[n:n + cfg.batch_size]
        if base_embedded and all(s.embedding is not None for s in batch):
            emb = torch.cat([s.embedding for s in batch]).to(dev)
        else:
            emb = _embed(backend, model, batch, dev, grad=False)
        items, targets, kinds, ids = [], [], [], []
        for i, s in enumerate(batch):
            for value in s.present:
                items.append((i, SlicePrompt(box=box_from_mask(s.targets[value], 0.0, None)), s))
                targets.append(s.targets[value])
                kinds.append("box")
                ids.append(f"{s.image_id}:{s.slice_index}:{value}")
            if auto:
                for value in (v for v in s.present if v in label_tokens):  # a label this model learned
                    items.append((i, SlicePrompt(label_index=label_tokens[value]), s))
                    targets.append(s.targets[value])
                    kinds.append("auto")
                    ids.append(f"{s.image_id}:{s.slice_index}:{value}")
        if not items:
            continue
        index = torch.tensor([i for i, _, _ in items], device=dev)
        logits, _ = _decode_in_model_frame(backend, model, emb[index], [p for _, p, _ in items],
                                           [s for _, _, s in items])
        scores = dice_batch((logits[:, 0] > 0).cpu(), torch.stack(targets))
        for score, kind, unit in zip(scores.tolist(), kinds, ids, strict=True):
            (box_scores if kind == "box" else auto_scores).append(score)
            (box_units if kind == "box" else auto_units)[unit] = round(score, 4)
    out = {"val_dice_box": round(float(np.mean(box_scores)), 4) if box_scores else None}
    if auto:
        out["val_dice_auto"] = round(float(np.mean(auto_scores)), 4) if auto_scores else None
    scores = [v for v in (out.get("val_dice_box"), out.get("val_dice_auto")) if v is not None]
    out["val_dice"] = round(float(np.mean(scores)), 4) if scores else None
    if units:
        out["box_units"] = box_units
        if auto:
            out["auto_units"] = auto_units
    return out
