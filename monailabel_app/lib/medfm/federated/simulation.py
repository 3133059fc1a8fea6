"""A whole federation on one machine with NVFlare's simulator: server FedAvg plus one client process per site.

Each site is a folder (its own datastore) and a models folder (its own registry). The server starts every site
from one seeded initial adapter; after the last round each site receives the global adapter through its checked
import and its guard. Everything stays on 127.0.0.1; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ..registry import Registry
from ..service import MedFMService
from ..settings import Settings
from .config import FederatedConfig
from .controller import EXCHANGE_LOG, GLOBAL_ADAPTER, AdapterFedAvg
from .exchange import nbytes
from .privacy import ClipAndNoise
from .receive import receive_global_adapter
from .site import SiteData, SiteTrainer, initial_adapter

CLIENT_SCRIPT = Path(__file__).with_name("client.py")
LIB_ROOT = Path(__file__).resolve().parents[3]  # monailabel_app/, where `lib` is importable from


@dataclass
class SiteSpec:
    name: str
    studies: Path
    models: Path


def run_simulation(sites: list[SiteSpec], cfg: FederatedConfig, workspace: Path, labels: dict[str, int],
                   device: str = "cpu", log=print) -> dict:
    from nvflare.job_config.api import FedJob
    from nvflare.job_config.defs import FilterType
    from nvflare.job_config.script_runner import FrameworkType, ScriptRunner

    started = time.perf_counter()
    workspace = Path(workspace)
    shutil.rmtree(workspace, ignore_errors=True)
    out_dir = workspace / "global"
    config_path = workspace / "federation.json"
    workspace.mkdir(parents=True)
    config_path.write_text(json.dumps(cfg.to_json()))
    labels_path = workspace / "labels.json"
    labels_path.write_text(json.dumps(labels))
    service = MedFMService(Settings(models_dir=workspace / "server-models", device=device, labels=labels))
    initial = initial_adapter(service.backend, service.segmenter.base, cfg)
    log(f"initial adapter: {len(initial)} tensors, {nbytes(initial) / 2**20:.2f} MB")

    federation_id = f"fl-{uuid.uuid4().hex[:8]}"
    job = FedJob(name=federation_id, min_clients=len(sites))
    save_file(initial, str(workspace / "initial_adapter.safetensors"))
    job.to(AdapterFedAvg(num_clients=len(sites), num_rounds=cfg.rounds, out_dir=str(out_dir),
                         initial=str(workspace / "initial_adapter.safetensors")), "server")
    for spec in sites:
        args = f"--studies {spec.studies} --config {config_path} --labels {labels_path} --device {device}"
        job.to(ScriptRunner(script=str(CLIENT_SCRIPT), script_args=args, framework=FrameworkType.NUMPY), spec.name)
        if cfg.clip_norm:
            job.to(ClipAndNoise(cfg.clip_norm, cfg.noise_multiplier), spec.name, filter_type=FilterType.TASK_RESULT,
                   tasks=["train"])
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{LIB_ROOT}{os.pathsep}{path}" if path else str(LIB_ROOT)
    try:
        job.simulator_run(str(workspace / "nvflare"), threads=min(2, len(sites)))
    finally:
        if path:
            os.environ["PYTHONPATH"] = path
        else:
            os.environ.pop("PYTHONPATH", None)
    if not (out_dir / GLOBAL_ADAPTER).exists():
        raise RuntimeError(f"the federation ended without a global adapter; see the logs under {workspace}")
    final = load_file(str(out_dir / GLOBAL_ADAPTER))
    exchange = json.loads((out_dir / EXCHANGE_LOG).read_text())
    fl_seconds = time.perf_counter() - started

    last = max(row["round"] for row in exchange)
    federation = {"id": federation_id, "rounds": cfg.rounds, "method": cfg.method, "ffa": cfg.ffa,
                  "sites": {row["site"]: row["weight"] for row in exchange if row["round"] == last},
                  "clip_norm": cfg.clip_norm, "noise_multiplier": cfg.noise_multiplier}
    received = {}
    for spec in sites:
        site = SiteData.read(spec.studies, spec.name)
        site_service = MedFMService(Settings(models_dir=spec.models, device=device, labels=labels))
        trainer = SiteTrainer(site_service.backend, site_service.segmenter.base, site, cfg, labels, device,
                              log=lambda _line: None)
        received[spec.name] = receive_global_adapter(Registry(site_service), trainer, final, federation,
                                                     site.heldout)
        log(f"{spec.name}: global adapter imported as {received[spec.name]['version']}: "
            f"{received[spec.name]['decision']['reason']}")
    return {"federation": federation, "initial": initial, "final": final, "exchange": exchange,
            "received": received, "out_dir": str(out_dir), "wall_s": round(time.perf_counter() - started, 1),
            "fl_wall_s": round(fl_seconds, 1), "adapter_bytes": nbytes(final)}


def bytes_per_round(exchange: list[dict]) -> dict[str, float]:
    sent: dict[str, list[int]] = {}
    for row in exchange:
        sent.setdefault(row["site"], []).append(row["bytes"])
    return {site: float(np.mean(v)) for site, v in sent.items()}
