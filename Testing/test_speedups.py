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
from lib.medfm.backends.sam_decoder import BACKGROUND_LOGIT, _per_pixel, grid_pe, upscale_channels_last
from lib.medfm.backends.sam_transformer import two_way_transformer
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
    assert precision.decoder_precision("cpu", "bf16") == "fp32"  # measured faster there, and the reference numerics
    assert precision.decoder_precision("cuda", "bf16") == "bf16"


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


@pytest.fixture(scope="module")
def lesion_slices(sample_datastore, backend_and_model):
    """Real lesion slices with their boxes and fp32 embeddings: brain MR, lung CT, breast MR."""
    from Testing.helpers import lesion_slice

    backend, model = backend_and_model
    out = {}
    for case in ("brain1", "lung2", "breast1"):
        image, box = lesion_slice(sample_datastore, case)
        prepared = backend.prepare(image)
        with torch.inference_mode():
            out[case] = (backend.embed(model, prepared.tensor[None]), prepared, box)
    return out


def _sams_own_call(model, embedding, sparse_dense):
    sam = model.sam
    logits, iou = sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse_dense[0], dense_prompt_embeddings=sparse_dense[1],
                                   multimask_output=False)
    return logits, iou[:, 0]


def test_channels_last_decoder_gives_sams_own_logits(backend_and_model, lesion_slices):
    backend, model = backend_and_model
    pe = model.sam.prompt_encoder
    for case, (embedding, prepared, box) in lesion_slices.items():
        with torch.inference_mode():
            logits, iou = backend.decode(model, embedding, [SlicePrompt(box=box)], [prepared])
            scaled = torch.tensor([box]) * prepared.scale
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *pe.image_embedding_size)
            ref_logits, ref_iou = _sams_own_call(model, embedding, (pe._embed_boxes(scaled), dense))
        assert (ref_logits > 0).sum() > 20, case  # a real lesion mask, not two empty ones
        assert float((logits - ref_logits).abs().max()) < 1e-3 * float(ref_logits.abs().max()), case
        assert abs(float(iou[0]) - float(ref_iou[0])) < 1e-4, case


def test_near_prompts_draws_the_same_mask_and_background_elsewhere(backend_and_model, lesion_slices):
    """The window around box, clicks and mask prompt holds the whole answer; outside it is certain background."""
    backend, model = backend_and_model
    for case, (embedding, prepared, box) in lesion_slices.items():
        x0, y0, x1, y1 = box
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        with torch.inference_mode():
            whole, _ = backend.decode(model, embedding, [SlicePrompt(box=box)], [prepared])
            previous = (whole[0, 0] > 0).float() * 20 - 10  # the answer fed back, as a correction click does
        prompts = [SlicePrompt(box=box), SlicePrompt(box=box, points=(centre,), point_labels=(1,), mask=previous)]
        for prompt in prompts:
            with torch.inference_mode():
                full, full_iou = backend.decode(model, embedding, [prompt], [prepared])
                near, near_iou = backend.decode(model, embedding, [prompt], [prepared], near_prompts=True)
            assert torch.equal(near > 0, full > 0), case
            assert torch.equal(near_iou, full_iou), case
            far = (slice(None), slice(None), slice(int(y1 * prepared.scale) + 40, None))
            if near[far].numel():
                assert bool((near[far] == BACKGROUND_LOGIT).all()), case  # not drawn there: certain background


def _tokens(model, n_clicks: int) -> torch.Tensor:
    """SAM's prompt tokens for a box and `n_clicks` clicks on real positions: output tokens first, as the decoder."""
    pe, decoder = model.sam.prompt_encoder, model.sam.mask_decoder
    points = torch.tensor([[[100.0 + 3 * n, 120.0 - 2 * n] for n in range(n_clicks)]]).reshape(1, n_clicks, 2)
    sparse = [pe._embed_boxes(torch.tensor([[90.0, 100.0, 150.0, 160.0]]))]
    if n_clicks:
        sparse.insert(0, pe._embed_points(points, torch.ones(1, n_clicks), pad=False))
    output = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])[None]
    return torch.cat([output, *sparse], dim=1)


@pytest.mark.parametrize("n_clicks", [0, 5, 12])  # 7 and 12 tokens reassociate; 19 run SAM's own attention
def test_transformer_without_projected_image_tokens_gives_sams_result(backend_and_model, lesion_slices, n_clicks):
    backend, model = backend_and_model
    transformer, pe = model.sam.mask_decoder.transformer, model.sam.prompt_encoder
    image_pe = pe.get_dense_pe()
    for case, (embedding, _, _) in lesion_slices.items():
        with torch.inference_mode():
            tokens = _tokens(model, n_clicks)
            src = embedding + pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
            ref_queries, ref_keys = transformer(src, image_pe, tokens)
            queries, keys = two_way_transformer(transformer, src.flatten(2).transpose(1, 2),
                                                image_pe.flatten(2).transpose(1, 2), tokens)
        for ours, sams in ((queries, ref_queries), (keys, ref_keys)):
            assert float((ours - sams).abs().max()) < 1e-4 * float(sams.abs().max()), (case, n_clicks)


def test_adapter_wrapped_attention_runs_sams_own_forward(backend_and_model, lesion_slices):
    """An unmerged adapter's projections are not plain weights: its attention must not be reassociated."""
    from peft import LoraConfig, get_peft_model

    backend, model = backend_and_model
    decoder = copy.deepcopy(model.sam.mask_decoder)
    wrapped = get_peft_model(decoder, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    transformer = wrapped.base_model.model.transformer
    embedding = next(iter(lesion_slices.values()))[0]
    image_pe = model.sam.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        tokens = _tokens(model, 0)
        ref_queries, ref_keys = transformer(embedding, image_pe, tokens)
        queries, keys = two_way_transformer(transformer, embedding.flatten(2).transpose(1, 2),
                                            image_pe.flatten(2).transpose(1, 2), tokens)
    assert torch.allclose(queries, ref_queries, atol=1e-5) and torch.allclose(keys, ref_keys, atol=1e-5)


def test_grid_pe_is_sams_and_follows_its_buffer(backend_and_model):
    _, model = backend_and_model
    encoder = copy.deepcopy(model.sam.prompt_encoder)
    with torch.inference_mode():
        first = grid_pe(encoder)
        assert torch.equal(first, encoder.get_dense_pe()) and grid_pe(encoder) is first  # computed once
    with torch.no_grad():
        encoder.pe_layer.positional_encoding_gaussian_matrix.mul_(2.0)  # a version's weights written in place
    with torch.inference_mode():
        assert torch.equal(grid_pe(encoder), encoder.get_dense_pe()) and not torch.equal(grid_pe(encoder), first)


def test_channels_last_upscaling_gives_sams_result(backend_and_model, lesion_slices):
    _, model = backend_and_model
    upscaling = model.sam.mask_decoder.output_upscaling
    assert _per_pixel(upscaling)
    for case, (embedding, _, _) in lesion_slices.items():
        with torch.inference_mode():
            ref = upscaling(embedding)
            ours = upscale_channels_last(upscaling, embedding.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            window = upscale_channels_last(upscaling, embedding.permute(0, 2, 3, 1)[:, 10:20, 30:41])
        assert ours.shape == ref.shape == (1, 32, 256, 256)
        assert float((ours - ref).abs().max()) < 1e-5 * float(ref.abs().max()), case
        assert torch.allclose(window.permute(0, 3, 1, 2), ref[:, :, 40:80, 120:164], atol=1e-5), case
    changed = copy.deepcopy(upscaling)
    changed[0] = torch.nn.ConvTranspose2d(256, 64, kernel_size=2, stride=2, padding=0, output_padding=0, bias=False)
    assert not _per_pixel(changed)  # not SAM's layers as they ship: the module itself runs
