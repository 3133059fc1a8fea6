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

from ..service import MedFMService
from ..settings import Settings
from .config import FederatedConfig
from .controller import DECISIONS, EXCHANGE_LOG, GLOBAL_ADAPTER, AdapterFedAvg
from .exchange import nbytes
from .privacy import ClipAndNoise
from .site import initial_adapter

CLIENT_SCRIPT = Path(__file__).with_name("client.py")
LIB_ROOT = Path(__file__).resolve().parents[3]  # monailabel_app/, where `lib` is importable from


@dataclass
class SiteSpec:
    name: str
    studies: Path
    models: Path
    ct_window: tuple[float, float] | None = None  # the site's server's --conf ct_window; None: the default


def build_job(sites: list[SiteSpec], cfg: FederatedConfig, workspace: Path, labels: dict[str, int],
              device: str = "cpu", log=print):
    """The NVFlare job: AdapterFedAvg on the server starting from one seeded adapter, the client script (and the
    privacy filter, if set) at each site. Returns (job, initial adapter, folder of the global adapter)."""
    from nvflare.job_config.api import FedJob
    from nvflare.job_config.defs import FilterType
    from nvflare.job_config.script_runner import FrameworkType, ScriptRunner

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

    job = FedJob(name=f"fl-{uuid.uuid4().hex[:8]}", min_clients=len(sites))
    save_file(initial, str(workspace / "initial_adapter.safetensors"))
    job.to(AdapterFedAvg(num_clients=len(sites), num_rounds=cfg.rounds, out_dir=str(out_dir),
                         initial=str(workspace / "initial_adapter.safetensors")), "server")
    for spec in sites:
        args = (f"--studies {spec.studies} --models {spec.models} --config {config_path} --labels {labels_path} "
                f"--device {device}" + (f" --ct-window {spec.ct_window[0]} {spec.ct_window[1]}" if spec.ct_window
                                        else ""))
        job.to(ScriptRunner(script=str(CLIENT_SCRIPT), script_args=args, framework=FrameworkType.NUMPY), spec.name)
        if cfg.clip_norm:
            job.to(ClipAndNoise(cfg.clip_norm, cfg.noise_multiplier), spec.name, filter_type=FilterType.TASK_RESULT,
                   tasks=["train"])
    return job, initial, out_dir


def run_simulation(sites: list[SiteSpec], cfg: FederatedConfig, workspace: Path, labels: dict[str, int],
                   device: str = "cpu", log=print) -> dict:
    started = time.perf_counter()
    job, initial, out_dir = build_job(sites, cfg, workspace, labels, device, log)
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{LIB_ROOT}{os.pathsep}{path}" if path else str(LIB_ROOT)
    try:
        job.simulator_run(str(Path(workspace) / "nvflare"), threads=min(2, len(sites)))
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

    # Each site imported the final adapter itself (the controller's last task); here we read what they decided.
    record = json.loads((out_dir / DECISIONS).read_text())
    federation = {**record["federation"], "method": cfg.method, "ffa": cfg.ffa, "clip_norm": cfg.clip_norm,
                  "noise_multiplier": cfg.noise_multiplier}
    received = {}
    for spec in sites:
        outcome = record["sites"].get(spec.name) or {}
        if not outcome.get("decision"):
            raise RuntimeError(f"{spec.name} sent no decision on the final adapter; see the logs under {workspace}")
        received[spec.name] = outcome
        log(f"{spec.name}: final adapter imported as {outcome['version']}: {outcome['decision']['reason']}")
    return {"federation": federation, "initial": initial, "final": final, "exchange": exchange,
            "received": received, "out_dir": str(out_dir), "wall_s": round(time.perf_counter() - started, 1),
            "fl_wall_s": round(fl_seconds, 1), "adapter_bytes": nbytes(final)}


def bytes_per_round(exchange: list[dict]) -> dict[str, float]:
    sent: dict[str, list[int]] = {}
    for row in exchange:
        sent.setdefault(row["site"], []).append(row["bytes"])
    return {site: float(np.mean(v)) for site, v in sent.items()}
