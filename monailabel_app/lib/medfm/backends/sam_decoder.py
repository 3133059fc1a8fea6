"""SAM's mask decoder run for speed on a CPU: image tokens kept channels-last, and masks drawn only near the prompts.

Same weights and the same arithmetic as `MaskDecoder.predict_masks` (single-mask output), arranged so that
- the 64 x 64 image tokens enter the two-way transformer contiguous as tokens x channels (SAM's own forward
  permutes them to a strided view, and every projection and addition on them then runs on strided memory), and
  at inference the transformer is `sam_transformer.two_way_transformer` (the image tokens never projected), and
- the output upscaling (two 2x transposed convolutions, layer norm and GELU, all per pixel of its token) and the
  hypernetwork product run only on the tokens near the prompts when a window is given (the rest of the frame is
  certain background), and at inference on channels-last pixels (`upscale_channels_last`).
Measured on the 2-core Intel Xeon (2026-12-07, one box prompt): PyTorch fp32 64 -> 48 ms a pass channels-last
(logits within 2e-5), 26 ms with the window; bf16 autocast 50 -> 37 -> 27 ms. With the transformer and upscaling
of today: benchmarks/README, "The decoder without projecting the image tokens".
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .sam_transformer import two_way_transformer

BACKGROUND_LOGIT = -20.0  # outside the window: sigmoid 2e-9, entropy ~0


def decode_masks(decoder: nn.Module, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                 sparse: torch.Tensor, dense: torch.Tensor,
                 window: tuple[int, int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-mask logits (B x 1 x 4h x 4w) and quality (B x 1); `window` = (y0, y1, x0, x1) in tokens."""
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), dim=1)
    if image_embeddings.shape[0] != tokens.shape[0]:
        image_embeddings = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0)
    src = (image_embeddings + dense).contiguous(memory_format=torch.channels_last)
    pos = image_pe.contiguous(memory_format=torch.channels_last)  # one for the batch: it broadcasts
    b, c, h, w = src.shape
    if torch.is_grad_enabled():  # training keeps SAM's own transformer (and its backward)
        hs, src = decoder.transformer(src, pos, tokens)
    else:
        hs, src = two_way_transformer(decoder.transformer, src.flatten(2).transpose(1, 2),
                                      pos.flatten(2).transpose(1, 2), tokens)
    y0, y1, x0, x1 = window or (0, h, 0, w)
    hyper = decoder.output_hypernetworks_mlps[0](hs[:, 1])  # the single-mask token (SAM's mask_slice 0:1)
    if torch.is_grad_enabled() or not _per_pixel(decoder.output_upscaling):
        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w)[:, :, y0:y1, x0:x1])
        _, cu, hu, wu = upscaled.shape
        masks = (hyper[:, None] @ upscaled.reshape(b, cu, hu * wu)).reshape(b, 1, hu, wu)
    else:
        upscaled = upscale_channels_last(decoder.output_upscaling, src.reshape(b, h, w, c)[:, y0:y1, x0:x1])
        _, hu, wu, cu = upscaled.shape
        masks = (upscaled.reshape(b, hu * wu, cu) @ hyper[:, :, None]).reshape(b, 1, hu, wu)
    if window is not None:
        up = hu // (y1 - y0)
        full = masks.new_full((b, 1, h * up, w * up), BACKGROUND_LOGIT)
        full[:, :, y0 * up:y1 * up, x0 * up:x1 * up] = masks
        masks = full
    return masks, decoder.iou_prediction_head(hs[:, 0])[:, :1]


def _per_pixel(upscaling: nn.Module) -> bool:
    """SAM's output upscaling as it ships: 2x2 stride-2 transposed convolution, channel layer norm, activation,
    2x2 stride-2 transposed convolution, activation (anything else runs as the module)."""
    parts = list(upscaling) if isinstance(upscaling, nn.Sequential) else []
    if len(parts) != 5 or not all(type(parts[i]) is nn.ConvTranspose2d for i in (0, 3)):
        return False
    plain = all(tuple(parts[i].kernel_size) == (2, 2) and tuple(parts[i].stride) == (2, 2) and parts[i].groups == 1
                and tuple(parts[i].padding) == (0, 0) and tuple(parts[i].output_padding) == (0, 0)
                and tuple(parts[i].dilation) == (1, 1) and parts[i].bias is not None for i in (0, 3))
    return plain and type(parts[1]).__name__ == "LayerNorm2d"


def _transposed_2x2(conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """A 2x2 stride-2 transposed convolution on channels-last pixels (B x h x w x Cin -> B x 2h x 2w x Cout): each
    input pixel makes its own 2 x 2 output pixels, so it is one matrix product and a shuffle."""
    b, h, w, cin = x.shape
    cout = conv.weight.shape[1]
    # columns ordered (cout, row, column); the bias added in the product, before the shuffle copies
    y = torch.addmm(conv.bias.repeat_interleave(4), x.reshape(b * h * w, cin), conv.weight.reshape(cin, cout * 4))
    return y.reshape(b, h, w, cout, 2, 2).permute(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, cout)


def upscale_channels_last(upscaling: nn.Sequential, pixels: torch.Tensor) -> torch.Tensor:
    """SAM's output upscaling on B x h x w x C tokens, channels-last throughout (B x 4h x 4w x C/8). On the CPU its
    convolutions on channels-first maps spent most of their time reordering memory: the whole 256 x 256 frame (an
    automatic pass) took 28-30 ms, 6 ms this way (2-core Intel Xeon, 2026-12-07)."""
    conv1, norm, act1, conv2, act2 = upscaling
    x = _transposed_2x2(conv1, pixels)
    x = act1(nn.functional.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
    return act2(_transposed_2x2(conv2, x))


def grid_pe(prompt_encoder: nn.Module) -> torch.Tensor:
    """SAM's positional encoding of the image-token grid (1 x C x h x w, channels-last). It is a fixed function of
    one buffer that no method trains, so at inference it is computed once per model, not once per decoder pass
    (1.3 ms of a 25 ms pass); a buffer moved or written to (a new version's weights) computes it anew."""
    if torch.is_grad_enabled():
        return prompt_encoder.get_dense_pe()
    source = prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    key = (source.device, source.data_ptr(), source._version)
    cached = prompt_encoder.__dict__.get("_medfm_grid_pe")
    if cached is None or cached[0] != key:
        cached = (key, prompt_encoder.get_dense_pe().contiguous(memory_format=torch.channels_last))
        prompt_encoder.__dict__["_medfm_grid_pe"] = cached
    return cached[1]


def token_window(extents: list[tuple[float, float, float, float] | None], frame: int, grid: int,
                 margin: float) -> tuple[int, int, int, int] | None:
    """The token rows and columns (y0, y1, x0, x1) covering every extent (x0, y0, x1, y1 in model pixels) widened
    by `margin` model pixels; None (the whole frame) when any item has no extent (a prompt-free label token)."""
    if not extents or any(e is None for e in extents):
        return None
    per_token = frame / grid
    xs0, ys0, xs1, ys1 = zip(*extents, strict=True)

    def span(lo: float, hi: float) -> tuple[int, int]:
        first = max(0, math.floor((lo - margin) / per_token))
        return first, min(grid, max(first + 1, math.ceil((hi + margin) / per_token)))

    (ty0, ty1), (tx0, tx1) = span(min(ys0), max(ys1)), span(min(xs0), max(xs1))
    return ty0, ty1, tx0, tx1
