"""One site of a federation: its own datastore folder, its local training round, and what it sends back.

The folder is a MONAI Label local datastore (images, `labels/final/`, `datastore_v2.json`); it is read here without
MONAI Label so the same code runs inside an NVFlare client. Held-out images (`held_out` in an image's info) are
never trained on: they are where the site's guard judges the federation's adapter (the server's own rule,
split.py). The site reads its images with its server's `Settings` (CT window, labels, device, precision).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..adaptation.data import LabelledImage, build_samples
from ..adaptation.job import label_tokens
from ..adaptation.peft_setup import make_trainable
from ..adaptation.trainer import adapt
from ..backends import FMBackend
from ..errors import InputError
from ..evaluation import HeldOutCase
from ..settings import Settings
from ..split import HELD_OUT, split_ids
from .config import FederatedConfig
from .exchange import adapter_tensors, difference, load_tensors, update_norm

DATASTORE_FILE = "datastore_v2.json"


@dataclass
class SiteData:
    name: str
    train: list[LabelledImage]
    heldout: list[HeldOutCase]

    @classmethod
    def read(cls, folder: str | Path, name: str | None = None) -> SiteData:
        folder = Path(folder)
        try:
            objects = json.loads((folder / DATASTORE_FILE).read_text())["objects"]
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{folder} is not a MONAI Label datastore folder ({DATASTORE_FILE}): {err}") from err
        labelled = {i: obj for i, obj in objects.items() if obj.get("labels", {}).get("final")}

        def paths(image_id: str) -> tuple[str, str]:
            obj = labelled[image_id]
            return (str(folder / f"{image_id}{obj['image']['ext']}"),
                    str(folder / "labels" / "final" / f"{image_id}{obj['labels']['final']['ext']}"))

        train, heldout = split_ids((i, obj["image"].get("info")) for i, obj in labelled.items())
        return cls(name or folder.name, [LabelledImage(i, *paths(i)) for i in train],
                   [HeldOutCase(i, *paths(i)) for i in heldout])


def initial_adapter(backend: FMBackend, base_model: nn.Module, cfg: FederatedConfig) -> dict[str, np.ndarray]:
    """The adapter every site starts from, made once by the server: the method's own initialisation, seeded."""
    torch.manual_seed(cfg.seed)
    return adapter_tensors(make_trainable(base_model, backend, cfg.adapt_config()))


class SiteTrainer:
    def __init__(self, backend: FMBackend, base_model: nn.Module, site: SiteData, cfg: FederatedConfig,
                 settings: Settings, log=print):
        if not site.train:
            raise InputError(f"site {site.name} has no labelled image to train on (held-out images never train)")
        self.backend, self.base_model, self.site, self.cfg = backend, base_model, site, cfg
        self.settings, self.log = settings, log
        self.adapt_cfg = cfg.adapt_config()
        labels = label_tokens(settings.labels, cfg.labels, backend.max_labels)
        self.label_values = {n: d["value"] for n, d in labels.items()}
        self.tokens = {d["value"]: d["token"] for d in labels.values()}
        self.samples = build_samples(site.train, backend, self.label_values, cfg.slices_per_image,
                                     np.random.default_rng(cfg.seed), negatives=cfg.auto_head,
                                     ct_window=settings.ct_window)
        if not self.samples:
            raise InputError(f"none of site {site.name}'s training images has any of the labels "
                             f"{sorted(self.label_values)}")

    @property
    def n_slices(self) -> int:
        """The site's weight in the average: the labelled slices it trains on."""
        return len(self.samples)

    def train_round(self, global_params: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
        """Train locally from the global adapter; return the change of the trained tensors and what the round
        measured. Clipping and noise are NVFlare's business (privacy.ClipAndNoise, a task-result filter)."""
        start = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in global_params.items()}
        result = adapt(self.backend, self.base_model, self.samples, [], self.adapt_cfg, self.tokens,
                       self.settings.device, log=self.log, precision=self.settings.precision, start_from=start)
        trained = adapter_tensors(result.model, trainable_only=True)
        update = difference(trained, {k: np.asarray(global_params[k], dtype=np.float32) for k in trained})
        losses = [row["train_loss"] for row in result.history if row.get("train_loss") is not None]
        return update, {"train_loss": losses[-1] if losses else None, "slices": self.n_slices,
                        "wall_s": result.wall_s, "update_norm": round(update_norm(update), 6)}

    def model_with(self, params: dict[str, np.ndarray]) -> nn.Module:
        """The trainable model holding `params`: what the site saves as an adapter version."""
        model = make_trainable(self.base_model, self.backend, self.adapt_cfg)
        load_tensors(model, params)
        return model.eval()


def write_site_folder(folder: str | Path, train: dict[str, tuple[str, str]], heldout: dict[str, tuple[str, str]],
                      source: str = "") -> Path:
    """A site's datastore folder in MONAI Label's local layout (what `make serve STUDIES=<folder>` serves), from
    image/label file pairs; held-out images are marked in their info."""
    folder = Path(folder)
    (folder / "labels" / "final").mkdir(parents=True, exist_ok=True)
    objects = {}
    for image_id, (image, label), held in [(i, p, False) for i, p in train.items()] + \
                                          [(i, p, True) for i, p in heldout.items()]:
        shutil.copy(image, folder / f"{image_id}.nii.gz")
        shutil.copy(label, folder / "labels" / "final" / f"{image_id}.nii.gz")
        info = {"name": f"{image_id}.nii.gz", "source": source, **({HELD_OUT: True} if held else {})}
        objects[image_id] = {"image": {"ext": ".nii.gz", "info": info},
                             "labels": {"final": {"ext": ".nii.gz", "info": {"name": f"{image_id}.nii.gz"}}}}
    (folder / DATASTORE_FILE).write_text(json.dumps({"name": folder.name, "description": source, "images_dir": ".",
                                                     "labels_dir": "labels", "objects": objects}, indent=1))
    return folder
