"""The foundation-model backend interface. Infer and train code talk only to this, so a second FM slots in beside."""

from __future__ import annotations

import types
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..runtime import ExportPart


@dataclass(frozen=True)
class SlicePrompt:
    """Prompts on one 2D slice, in that slice's pixel frame (x = column, y = row).

    `label_index` asks for the learned prompt-free label token instead of clicks (automatic mode). `mask` is a
    previous answer fed back (SAM's mask_input): logits in the model frame (S x S), None = no mask prompt.
    """

    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()
    label_index: int | None = None
    mask: torch.Tensor | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PreparedSlice:
    """A slice resized into the model's square input frame, with what it takes to map results back."""

    tensor: torch.Tensor  # 3 x S x S, float32 in [0, 1]
    scale: float  # model pixels per slice pixel
    original_hw: tuple[int, int]


@dataclass(frozen=True)
class PeftTargets:
    """Which modules a PEFT method may wrap or fully train, by backend-specific names."""

    lora_target_regex: str  # also matches the prompt-free path's own decoder, so LoRA adapts it separately
    decoder_modules: tuple[str, ...]  # what the interactive (box, click) path decodes with
    auto_head_modules: tuple[str, ...]  # the prompt-free head, trained whole by every method
    auto_decoder_modules: tuple[str, ...] = ()  # the prompt-free path's own decoder, trained whole by `decoder`
    encoder_lora_regex: str = ""  # the image encoder's share of lora_target_regex: what pretraining adapts


class FMBackend(ABC):
    """Loads an FM, prepares slices, embeds them, and decodes masks from an embedding plus prompts."""

    name: str
    input_size: int
    max_labels: int

    @abstractmethod
    def weights_sha256(self) -> str:
        """SHA-256 of the base weights, recorded in every adapter so it is never applied to another FM."""

    @abstractmethod
    def build_model(self, device: torch.device | str = "cpu") -> nn.Module:
        """The base model with its pretrained weights, in eval mode."""

    @abstractmethod
    def prepare(self, slice2d: np.ndarray) -> PreparedSlice:
        """Turn one windowed 2D slice (values in [0, 1], rows x cols) into the model's input."""

    @abstractmethod
    def embed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Image-encoder embeddings for a batch of prepared slices (B x 3 x S x S)."""

    @abstractmethod
    def decode(
        self, model: nn.Module, embeddings: torch.Tensor, prompts: list[SlicePrompt], prepared: list[PreparedSlice],
        near_prompts: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits in the model frame (B x 1 x S x S) and predicted mask quality (B,).

        `near_prompts`: a backend may draw prompted masks only near their boxes, clicks and mask prompts (certain
        background elsewhere), for speed at inference; training leaves it off and gets the whole frame.
        """

    @abstractmethod
    def to_slice_frame(self, logits: torch.Tensor, prepared: PreparedSlice) -> torch.Tensor:
        """Model-frame logits (1 x S x S) back onto the slice's own pixel grid (rows x cols)."""

    @abstractmethod
    def to_model_frame(self, mask2d: np.ndarray, prepared: PreparedSlice) -> torch.Tensor:
        """A slice-frame mask resized into the model frame (S x S), for training targets."""

    @abstractmethod
    def peft_targets(self) -> PeftTargets:
        """Module names PEFT may target on this backend."""

    def runtime_parts(self, model: nn.Module) -> list[ExportPart]:
        """Inference-only submodules an inference runtime (lib/medfm/runtime.py) may run; none = PyTorch only."""
        return []

    def enable_gradient_checkpointing(self, model: nn.Module) -> bool:
        """Trade compute for memory while training (recompute activations in backward); False where unsupported."""
        return False


def _checkpointed_forward(self: nn.Module, *args, **kwargs):
    forward = type(self).forward
    if self.training and torch.is_grad_enabled():
        return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)
    return forward(self, *args, **kwargs)


def checkpoint_forward(module: nn.Module) -> None:
    """Make `module` keep no activations for backward (they are recomputed), keeping its parameter names.

    A bound method rather than a wrapper module: peft target names and adapter files stay the same, and
    `copy.deepcopy` rebinds it to the copy.
    """
    module.forward = types.MethodType(_checkpointed_forward, module)
