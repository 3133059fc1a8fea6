"""The real MONAI Label server under load, over HTTP on localhost: /info/ latency while it infers and trains, and
concurrent interactive requests. Starts `scripts/serve.py` exactly as `make serve` does, on a copy of the datastore.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common  # noqa: F401 - puts monailabel_app (and so scripts.serve) on sys.path
import numpy as np
from scripts.serve import ServerProcess


class Server(ServerProcess):
    """The real server (as `make serve` starts it) on a copy of some of the datastore's images."""

    def __init__(self, studies: Path, tmp: Path, images: tuple[str, ...]):
        copy = tmp / "studies"
        (copy / "labels" / "final").mkdir(parents=True)
        for image_id in images:
            shutil.copy(studies / f"{image_id}.nii.gz", copy / f"{image_id}.nii.gz")
            shutil.copy(studies / "labels" / "final" / f"{image_id}.nii.gz",
                        copy / "labels" / "final" / f"{image_id}.nii.gz")
        super().__init__(copy, tmp / "models", tmp / "server.log",
                         env={"MONAI_LABEL_SESSION_PATH": str(tmp / "sessions"),
                              "MONAI_LABEL_AUTO_UPDATE_SCORING": "false"})

    def info_latency(self) -> float:
        start = time.perf_counter()
        with urllib.request.urlopen(f"{self.url}/info/", timeout=60) as response:
            response.read()
        return time.perf_counter() - start


def _poll_while(server: Server, busy: threading.Event, period: float = 0.2, cap: int = 2000) -> list[float]:
    """GET /info/ every `period` s while `busy` is set (at most `cap` requests)."""
    times: list[float] = []
    while busy.is_set() and len(times) < cap:
        times.append(server.info_latency())
        time.sleep(period)
    return times


def _stats(times: list[float]) -> dict:
    if not times:
        return {"n": 0}
    return {"n": len(times), "p50_s": float(np.percentile(times, 50)), "p95_s": float(np.percentile(times, 95)),
            "max_s": float(max(times))}


def _label_roi(studies: Path, image_id: str) -> list[int]:
    import SimpleITK as sitk

    label = np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(str(studies / "labels/final" / f"{image_id}.nii.gz"))),
                         (2, 1, 0))
    i, j, k = np.nonzero(label)
    return [int(i.min()), int(i.max()), int(j.min()), int(j.max()), int(k.min()), int(k.max())]  # per-axis pairs


def measure(studies: Path, tmp: Path, infer_image: str, concurrent: int, train: dict) -> dict:
    """Idle /info/ p95, /info/ while one inference runs, while a short training runs, then `concurrent` requests."""
    from monailabel.client import MONAILabelClient

    server = Server(studies, tmp, images=("breast1", "brain2", infer_image))
    client = MONAILabelClient(server.url, tmpdir=str(tmp))
    out: dict = {"startup_s": server.startup_s}
    try:
        out["idle_info"] = _stats([server.info_latency() for _ in range(20)])
        roi = _label_roi(server.studies, infer_image)
        busy = threading.Event()
        busy.set()
        result: dict = {}

        def infer_once() -> None:
            start = time.perf_counter()
            try:
                client.infer("medsam_interactive", infer_image, {"roi": roi})
                result["ok"] = True
            except Exception as err:  # reported, not raised: the poller must stop either way
                result["error"] = str(err)[:300]
            result["infer_s"] = time.perf_counter() - start
            busy.clear()

        worker = threading.Thread(target=infer_once)
        worker.start()
        during = _poll_while(server, busy)
        worker.join()
        out["info_during_infer"] = {**_stats(during), **result, "image": infer_image}

        start = time.perf_counter()
        client.train_start("medsam_adapt", train)
        busy.set()
        poller = ThreadPoolExecutor(1).submit(_poll_while, server, busy)
        status = {}
        while time.perf_counter() - start < 900:
            status = client.train_status()
            if status.get("status") not in ("SUBMITTED", "RUNNING"):
                break
            time.sleep(1)
        busy.clear()
        out["info_during_train"] = {**_stats(poller.result()), "train_status": status.get("status"),
                                    "train_s": time.perf_counter() - start, "train_request": train}

        roi_small = _label_roi(server.studies, "breast1")

        def one(n: int) -> tuple[bool, float, str]:
            started = time.perf_counter()
            try:
                MONAILabelClient(server.url, tmpdir=str(tmp)).infer("medsam_interactive", "breast1",
                                                                    {"roi": roi_small, "adapter": "base"})
                return True, time.perf_counter() - started, ""
            except Exception as err:
                return False, time.perf_counter() - started, str(err)[:200]

        with ThreadPoolExecutor(concurrent) as pool:
            results = list(pool.map(one, range(concurrent)))
        out["concurrent_interactive"] = {"requests": concurrent, "ok": sum(r[0] for r in results),
                                         "errors": [r[2] for r in results if not r[0]],
                                         "slowest_s": max(r[1] for r in results), "image": "breast1"}
    finally:
        server.stop()
    print(json.dumps(out, indent=1, default=str), flush=True)
    return out
