"""The product's speed-ups keep its outputs: channels-last, bf16 where native, gradient checkpointing.

Speed itself is measured by `benchmarks/speed.py`, never asserted here.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lib.medfm import precision
from lib.medfm.adaptation.config import AdaptConfig
from lib.medfm.adaptation.peft_setup import make_trainable
from lib.medfm.backends import SlicePrompt, get_backend
from lib.medfm.errors import InputError


@pytest.fixture(scope="module")
def backend_and_model():
    backend = get_backend()
    return backend, backend.build_model("cpu")


def _slices(backend, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return torch.stack([backend.prepare(rng.random((64, 80)).astype(np.float32)).tensor for _ in range(n)])


def test_channels_last_encoder_gives_the_plain_layout_result(backend_and_model):
    backend, model = backend_and_model
    images = _slices(backend)
    with torch.inference_mode():
        fast = backend.embed(model, images)
        plain = copy.deepcopy(model.sam.image_encoder).to(memory_format=torch.contiguous_format)(images.contiguous())
    assert fast.shape == plain.shape == (2, 256, 64, 64)
    assert float((fast - plain).abs().max() / plain.abs().max()) < 1e-4


def test_precision_setting_is_checked_and_resolved():
    assert precision.resolve("fp32", "cpu") == "fp32"
    assert precision.resolve("auto", "cpu") == ("bf16" if precision.cpu_has_native_bf16() else "fp32")
    with pytest.raises(InputError, match="precision must be one of"):
        precision.resolve("fp8", "cpu")
    with precision.autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with precision.autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")


def test_gradient_checkpointing_keeps_gradients_and_adapter_names(backend_and_model):
    backend, model = backend_and_model
    images = _slices(backend, n=2, seed=1)
    prompt = [SlicePrompt(box=(20.0, 20.0, 120.0, 140.0))] * 2
    prepared = [backend.prepare(np.zeros((64, 80), np.float32))] * 2
    grads, names = {}, {}
    for flag in (False, True):
        torch.manual_seed(0)
        trained = make_trainable(model, backend, AdaptConfig(method="lora", gradient_checkpointing=flag)).train()
        copied = copy.deepcopy(trained)  # the bound forward follows a deep copy instead of calling the original
        logits, _ = backend.decode(copied, backend.embed(copied, images), prompt, prepared)
        logits.float().sigmoid().mean().backward()
        grads[flag] = {n: p.grad.clone() for n, p in copied.named_parameters() if p.grad is not None}
        names[flag] = sorted(copied.state_dict())
    assert names[True] == names[False]
    assert grads[True].keys() == grads[False].keys() and any("image_encoder" in n for n in grads[True])
    for name, grad in grads[False].items():
        assert torch.allclose(grads[True][name], grad, rtol=1e-3, atol=1e-6), name
