"""The federation's final adapter arrives at a site the way any foreign adapter does: as an archive through the
registry's checked import (FM, base-weight hash, file hashes, safetensors only, tensor names and shapes), and goes
live only if the site's guard finds it at least as good as what is live on the site's own held-out images."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import numpy as np

from ..adaptation.peft_setup import count_parameters, save_adapter
from ..adapter_store import MANIFEST
from ..evaluation import HeldOutCase
from ..files import write_json_atomic
from ..manifest import Manifest
from ..registry import Registry
from .site import SiteTrainer


def adapter_archive(trainer: SiteTrainer, params: dict[str, np.ndarray], federation: dict, out_dir: Path) -> Path:
    """The global adapter as a version archive (the layout `export_version` writes), with a federation manifest."""
    model = trainer.model_with(params)
    folder = Path(tempfile.mkdtemp(dir=out_dir)) / "federated"
    folder.mkdir()
    sizes = save_adapter(model, folder)
    trainable, total = count_parameters(model)
    cfg = trainer.adapt_cfg
    labels = {name: {"value": value, "token": trainer.tokens[value]}
              for name, value in trainer.label_values.items() if value in trainer.tokens}
    manifest = Manifest.of_version(
        trainer.backend, folder, sizes, trainable, total, method=cfg.method, config=cfg.to_json(), labels=labels,
        auto_head=cfg.auto_head, train_images=[], val_images=[], evidence=None, federation=federation,
        note=f"federation {federation.get('id')}: {federation.get('rounds')} round(s) over "
             f"{len(federation.get('sites', {}))} site(s)")
    write_json_atomic(folder / MANIFEST, manifest.to_json())
    archive = folder.parent / "federated.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=f"federated/{path.name}", recursive=False)
    return archive


def receive_global_adapter(registry: Registry, trainer: SiteTrainer, params: dict[str, np.ndarray],
                           federation: dict, heldout: list[HeldOutCase], margin: float = 0.0) -> dict:
    """Import the federation's adapter into this site's registry (checked) and let the guard decide."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = adapter_archive(trainer, params, federation, Path(tmp))
        version = registry.import_(archive)["version"]
    decision = registry.guard(version, heldout, margin)
    return {"version": version, "decision": decision}
