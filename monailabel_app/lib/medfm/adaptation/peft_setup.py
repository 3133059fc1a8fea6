"""Turn a base FM into a trainable one for each method, and save only what the method trained."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..adapter_store import PEFT_CONFIG, PEFT_WEIGHTS, STATE_WEIGHTS, AdapterStore
from ..backends import FMBackend
from ..errors import InputError
from .config import AdaptConfig

SSL_METHOD = "ssl-lora"  # self-supervised encoder LoRA (pretrain.py)
LORA_METHODS = (SSL_METHOD, "lora", "dora")  # versions saved as peft LoRA: what a supervised child may continue


def make_trainable(base_model: nn.Module, backend: FMBackend, cfg: AdaptConfig) -> nn.Module:
    """LoRA/DoRA go through `peft`; decoder-only and full fine-tuning unfreeze modules of a copy."""
    targets = backend.peft_targets()
    head = list(targets.auto_head_modules) if cfg.auto_head else []
    model = copy.deepcopy(base_model)
    if cfg.gradient_checkpointing:  # adapt() settles None for its device first
        backend.enable_gradient_checkpointing(model)
    if cfg.method in ("lora", "dora"):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, use_dora=cfg.method == "dora",
                            target_modules=cfg.target_modules or targets.lora_target_regex,
                            modules_to_save=head or None)
        model = get_peft_model(model, config)
        if cfg.freeze_lora_a:
            for name, p in model.named_parameters():
                if ".lora_A." in name:
                    p.requires_grad_(False)
        return model
    for p in model.parameters():
        p.requires_grad_(cfg.method == "full")
    auto_decoder = list(targets.auto_decoder_modules) if cfg.auto_head else []
    trainable = list(targets.decoder_modules) + auto_decoder + head if cfg.method == "decoder" else head
    for name in trainable:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    if not cfg.auto_head:  # nothing trains the prompt-free path, so nothing of it is saved
        for name in (*targets.auto_head_modules, *targets.auto_decoder_modules):
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(False)
    return model


def encoder_is_frozen(model: nn.Module) -> bool:
    return not any(p.requires_grad for n, p in model.named_parameters() if "image_encoder" in n)


def trainable_state(model: nn.Module) -> dict:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def save_adapter(model: nn.Module, folder: Path) -> dict[str, int]:
    """Write the adapter files into `folder`; return each file's size in bytes. A peft model (LoRA, DoRA, the
    self-supervised encoder LoRA) saves its adapter; any other saves the tensors it trained."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.save_pretrained(str(folder), safe_serialization=True)
        (folder / "README.md").unlink(missing_ok=True)  # peft's model-card template says nothing true about us
        files = [PEFT_CONFIG, PEFT_WEIGHTS]
    else:
        save_file({k: v.contiguous() for k, v in trainable_state(model).items()}, str(folder / STATE_WEIGHTS))
        files = [STATE_WEIGHTS]
    return {f: (folder / f).stat().st_size for f in files}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in model.named_parameters()
                if "modules_to_save" not in n and "lora_" not in n)  # count the FM once, not peft's copies
    return trainable, total


def parent_lora(store: AdapterStore, base_model: nn.Module, version: str) -> dict[str, torch.Tensor]:
    """A version's LoRA factors, named as a fresh peft model over the same FM names them: what a supervised
    child starts from."""
    from peft import PeftModel

    method = store.manifest(store.check_id(version)).method
    if method not in LORA_METHODS:
        raise InputError(f"parent {version} is a {method!r} version; only LoRA versions "
                         f"({', '.join(LORA_METHODS)}) can be continued")
    model = PeftModel.from_pretrained(copy.deepcopy(base_model), str(store.path(version)), is_trainable=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if re.search(r"\.lora_[AB]\.", k)}
