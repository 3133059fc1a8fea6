"""The baseline a MONAI Label user would pick instead of an FM: a MONAI 2D UNet trained from scratch.

It trains on exactly the FM's training slices (the same 256x256 prepared pixels and targets), for the same number
of optimizer steps at the same batch size, and is scored prompt-free on the same held-out slices.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from safetensors.torch import save_file

from lib.medfm.adaptation.data import SliceSample


def build_unet(n_labels: int) -> torch.nn.Module:
    return UNet(spatial_dims=2, in_channels=1, out_channels=n_labels + 1, channels=(16, 32, 64, 128, 256),
                strides=(2, 2, 2, 2), num_res_units=2)


def _batch(samples: list[SliceSample], tokens: dict[int, int], dev) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([s.prepared.tensor[0:1] for s in samples]).to(dev)
    classes = torch.zeros(len(samples), 1, *images.shape[-2:], dtype=torch.long)
    for n, s in enumerate(samples):
        for value, target in s.targets.items():
            classes[n, 0][target > 0] = tokens[value] + 1
    return images, classes.to(dev)


def train_unet(train: list[SliceSample], tokens: dict[int, int], steps: int, batch_size: int, seed: int,
               dev: str, lr: float = 1e-3) -> tuple[torch.nn.Module, int]:
    """`steps` Adam steps of Dice+CE; returns the model and the steps actually taken."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_unet(len(tokens)).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    per_epoch = math.ceil(len(train) / batch_size)
    taken = 0
    model.train()
    while taken < steps:
        order = rng.permutation(len(train))
        for n in range(per_epoch):
            images, classes = _batch([train[i] for i in order[n * batch_size:(n + 1) * batch_size]], tokens, dev)
            loss = loss_fn(model(images), classes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            taken += 1
            if taken >= steps:
                break
    return model.eval(), taken


@torch.no_grad()
def predict_unet(model: torch.nn.Module, sample: SliceSample, tokens: dict[int, int], dev) -> dict[int, torch.Tensor]:
    """Label value -> predicted binary mask in the model frame."""
    images, _ = _batch([sample], tokens, dev)
    classes = model(images).argmax(1)[0].cpu()
    return {value: classes == token + 1 for value, token in tokens.items()}


def save_unet(model: torch.nn.Module, path: Path) -> int:
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, str(path))
    return path.stat().st_size
