"""What crosses between a site and the server: adapter tensors only, by name, as float32 numpy arrays.

A site sends the change of the tensors it trained (NVFlare's DIFF), so tensors it keeps frozen (FFA-LoRA's A)
stay exactly the shared ones; the server's weighted average of the changes, added to the global adapter, is
FedAvg (NVFlare's own, in controller.py). Clipping and noise (differential privacy) act on that change before it
leaves the site.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import InputError


def adapter_tensors(model: nn.Module, trainable_only: bool = False) -> dict[str, np.ndarray]:
    """The adapter's tensors (LoRA factors, unfrozen decoder weights, prompt-free tokens), never the base FM's."""
    names = adapter_names(model) if not trainable_only else {n for n, p in model.named_parameters()
                                                              if p.requires_grad}
    state = model.state_dict()
    return {k: state[k].detach().float().cpu().numpy().copy() for k in sorted(names)}


def adapter_names(model: nn.Module) -> set[str]:
    """Everything an adapter of this model holds: what is trainable now plus LoRA factors that are frozen."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return names | {n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}


def load_tensors(model: nn.Module, params: dict[str, np.ndarray]) -> None:
    """Put received tensors into the model; names or shapes that are not this model's adapter are refused."""
    check_params(params, {k: tuple(v.shape) for k, v in model.state_dict().items() if k in adapter_names(model)})
    with torch.no_grad():
        state = model.state_dict()
        for name, value in params.items():
            state[name].copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))


def check_params(params: dict, expected: dict[str, tuple]) -> None:
    unknown = sorted(set(params) - set(expected))
    if unknown:
        raise InputError(f"{len(unknown)} received tensor(s) are not part of this adapter, e.g. {unknown[:3]}")
    for name, value in params.items():
        if tuple(np.shape(value)) != tuple(expected[name]):
            raise InputError(f"tensor {name} has shape {tuple(np.shape(value))}, this adapter's is {expected[name]}")


def difference(new: dict[str, np.ndarray], old: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (new[k] - old[k]).astype(np.float32) for k in new}


def update_norm(update: dict[str, np.ndarray]) -> float:
    """The L2 norm of a whole update, every tensor together."""
    return float(np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in update.values())))


def clip_and_noise(update: dict[str, np.ndarray], clip_norm: float | None, noise_multiplier: float,
                   rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict]:
    """Scale the whole update to at most `clip_norm` (L2 over all tensors), then add N(0, (z * clip)^2) noise."""
    norm = update_norm(update)
    if clip_norm is None:
        return update, {"update_norm": round(norm, 6)}
    scale = min(1.0, clip_norm / max(norm, 1e-12))
    sigma = noise_multiplier * clip_norm
    out = {k: (v * scale + (rng.normal(0.0, sigma, v.shape) if sigma > 0 else 0.0)).astype(np.float32)
           for k, v in update.items()}
    return out, {"update_norm": round(norm, 6), "clip_scale": round(scale, 6), "noise_sigma": sigma}


def nbytes(params: dict[str, np.ndarray]) -> int:
    return int(sum(np.asarray(v).nbytes for v in params.values()))
