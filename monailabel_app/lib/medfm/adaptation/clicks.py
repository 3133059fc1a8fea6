"""Simulated click rounds: the adaptation loop teaches clicks and mask feedback, as SAM and SAM-Med2D train.

LiteMedSAM learned box prompts only, so its point and mask_input paths were never trained on medical data and a
correction click moves Dice either way. Here each box-prompted training item starts from the box's answer (no
gradient), then for `rounds` rounds the benchmark's own annotator (annotator.challenge_click, on the slice: the
centre of the largest error component, foreground in a miss, background in a false positive) adds a click, and
the decoder answers box + every click so far + the previous round's logits as SAM's mask_input. Each round's
answer is scored against the truth; the mean over rounds is the click loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..annotator import challenge_click
from ..backends import SlicePrompt
from ..metrics import mask_loss

Decode = Callable[[list[SlicePrompt]], torch.Tensor]  # prompts -> B x 1 x S x S logits (with gradient)


@dataclass
class ClickRound:
    """What one round sent and got (the tests read it): the prompts, whose `mask` is the previous logits."""

    prompts: list[SlicePrompt]
    logits: torch.Tensor


def with_click(prompt: SlicePrompt, pred, truth, previous: torch.Tensor) -> SlicePrompt:
    """`prompt` plus the annotator's next click on this slice (none when `pred` is perfect) and `previous` as
    the mask prompt. `pred`, `truth`: S x S bool arrays in the model frame; the click is (x = column, y = row)."""
    points, labels = prompt.points, prompt.point_labels
    click = challenge_click(pred, truth)
    if click is not None:
        (row, col), foreground = click
        points, labels = (*points, (float(col), float(row))), (*labels, int(foreground))
    return SlicePrompt(box=prompt.box, points=points, point_labels=labels, mask=previous)


def click_rounds_loss(decode: Decode, prompts: list[SlicePrompt], targets: torch.Tensor, start: torch.Tensor,
                      rounds: int, record: list[ClickRound] | None = None) -> torch.Tensor:
    """Mean mask loss over `rounds` simulated correction rounds.

    `prompts`: the box prompts whose answer `start` (B x 1 x S x S logits) was; `targets`: B x 1 x S x S truth.
    Clicks are chosen on the thresholded previous answer and fed with it, with no gradient through the choice.
    """
    truth = targets[:, 0].detach().cpu().numpy() > 0.5
    previous = start.detach().float()
    losses = []
    for _ in range(rounds):
        pred = (previous[:, 0] > 0).cpu().numpy()
        prompts = [with_click(p, pr, tr, prev[0]) for p, pr, tr, prev in zip(prompts, pred, truth, previous,
                                                                              strict=True)]
        logits = decode(prompts).float()
        losses.append(mask_loss(logits, targets))
        if record is not None:
            record.append(ClickRound(prompts, logits.detach()))
        previous = logits.detach()
    return torch.stack(losses).mean()
