"""Interactive adaptation (issue 24, step 3): simulated click rounds on real slices with the real LiteMedSAM weights.

Each round's click must sit in the error of the answer it corrects, with the label of the truth there; the previous
round's logits must go back in as the mask prompt; the loss must include the rounds; with no rounds the loss is the
box-only loss it always was. One breast1 slice pair, decoder and LoRA: a few seconds on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.medfm.adaptation.clicks import ClickRound
from lib.medfm.adaptation.config import AdaptConfig
from lib.medfm.adaptation.data import LabelledImage, SliceSample, box_from_mask, build_samples
from lib.medfm.adaptation.peft_setup import make_trainable
from lib.medfm.adaptation.trainer import _decode_in_model_frame, _task_loss, embed_with_base, training_loss
from lib.medfm.backends import SlicePrompt, get_backend
from lib.medfm.errors import InputError
from lib.medfm.metrics import mask_loss
from lib.medfm.volume import CT_DEFAULT_WINDOW

CASE, LESION = "breast1", 1


@pytest.fixture(scope="module")
def setup(sample_datastore: Path):
    backend = get_backend()
    base = backend.build_model()
    item = LabelledImage(CASE, str(sample_datastore / f"{CASE}.nii.gz"),
                         str(sample_datastore / "labels" / "final" / f"{CASE}.nii.gz"))
    samples = build_samples([item], backend, {"lesion": LESION}, 2, np.random.default_rng(0), negatives=False,
                            ct_window=CT_DEFAULT_WINDOW)
    assert len(samples) == 2 and all(s.present == [LESION] for s in samples)
    embed_with_base(backend, base, samples, torch.device("cpu"), "fp32")
    return backend, base, samples


def task_loss(setup, rounds: int, record: list[ClickRound] | None = None) -> torch.Tensor:
    """`_task_loss` of the base weights (a decoder version before its first step) with `rounds` click rounds."""
    backend, base, samples = setup
    cfg = AdaptConfig(click_rounds=rounds, auto_head=False)
    emb = torch.cat([s.embedding for s in samples])
    with torch.no_grad():
        return _task_loss(backend, base, emb, samples, cfg, {}, torch.device("cpu"), np.random.default_rng(0), record)


def box_prompts(samples: list[SliceSample], seed: int) -> list[SlicePrompt]:
    """The jittered boxes `_task_loss` draws, drawn again from the same seed."""
    rng = np.random.default_rng(seed)
    prompts = []
    for s in samples:
        value = s.present[rng.integers(len(s.present))]
        prompts.append(SlicePrompt(box=box_from_mask(s.targets[value], 0.1, rng)))
    return prompts


def test_click_rounds_click_in_the_error_feed_back_the_logits_and_add_to_the_loss(setup):
    """Each round's click sits on an error of the answer it corrects, labelled as the truth there; the previous
    round's logits are its mask prompt; the loss is the box loss plus the rounds' mean, and with no rounds exactly
    the box-only loss it always was."""
    backend, base, samples = setup
    emb = torch.cat([s.embedding for s in samples])
    target = torch.stack([s.targets[LESION] for s in samples])[:, None]
    with torch.no_grad():
        box_logits = _decode_in_model_frame(backend, base, emb, box_prompts(samples, 0), samples)[0]
    record: list[ClickRound] = []
    none, two = task_loss(setup, 0), task_loss(setup, 2, record)
    assert len(record) == 2
    clicked = 0
    for n, s in enumerate(samples):
        truth = s.targets[LESION].numpy() > 0.5
        previous = box_logits[n, 0]
        for r, rnd in enumerate(record):
            prompt = rnd.prompts[n]
            assert torch.allclose(prompt.mask, previous, atol=1e-5), f"round {r + 1}: mask prompt != last logits"
            pred = previous.numpy() > 0
            if (pred != truth).any():
                assert len(prompt.points) == len(prompt.point_labels) == r + 1  # one new click per round
                x, y = prompt.points[-1]
                row, col = int(y), int(x)
                assert pred[row, col] != truth[row, col], "the click is not on an error"
                assert prompt.point_labels[-1] == int(truth[row, col]), "foreground in a miss, background in a FP"
                clicked += 1
            if r:
                assert prompt.points[:-1] == record[r - 1].prompts[n].points  # every click so far is kept
            previous = rnd.logits[n, 0]
    assert clicked >= 2
    box_only = mask_loss(box_logits.float(), target)
    assert torch.equal(none, box_only)
    rounds = torch.stack([mask_loss(r.logits, target) for r in record]).mean()
    assert two.item() == pytest.approx((box_only + rounds).item(), rel=1e-5)
    assert abs(two.item() - none.item()) > 1e-3


@pytest.mark.parametrize("method", ["decoder", "lora"])
def test_click_rounds_train_every_method_and_keep_the_box_self_distillation(setup, method):
    """The click path is the same code for every method; what differs is which weights it reaches. Both run on the
    stored base embeddings here (an encoder backward would cost ~20 s of CPU): gradients reach the decoder's weights
    (decoder) and the LoRA factors of the mask decoder (lora; dora and full take the same path)."""
    backend, base, samples = setup
    cfg = AdaptConfig(method=method, click_rounds=1, auto_head=False)
    assert cfg.preservation > 0
    model = make_trainable(base, backend, cfg).train()
    loss = training_loss(backend, model, base, samples[:1], cfg, {}, torch.device("cpu"), np.random.default_rng(0),
                         frozen=True)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_bad_click_rounds_are_refused_in_words():
    for bad in (-1, 17, 1.5):
        with pytest.raises(InputError, match="bad training parameter.*click_rounds"):
            AdaptConfig(click_rounds=bad)
    assert AdaptConfig.from_request({"click_rounds": "3"}).click_rounds == 3
    assert "click" in AdaptConfig.help()["click_rounds"]
