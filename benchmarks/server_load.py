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
    """The real server (as `make serve` starts it) on a copy of some of the datastore's images, with the final
    labels of `labelled` (default: all of them)."""

    def __init__(self, studies: Path, tmp: Path, images: tuple[str, ...], labelled: tuple[str, ...] | None = None):
        copy = tmp / "studies"
        (copy / "labels" / "final").mkdir(parents=True)
        for image_id in images:
            shutil.copy(studies / f"{image_id}.nii.gz", copy / f"{image_id}.nii.gz")
            if labelled is None or image_id in labelled:
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


MIXED_IMAGES = ("brain1", "brain2", "breast1", "lung1", "lung2", "mni152")
MIXED_TRAIN = {"method": "decoder", "max_epochs": 2, "slices_per_image": 2, "batch_size": 2, "labels": ["lesion"]}


def mixed_load(studies: Path, tmp: Path, clients: int = 8, train: dict | None = None) -> dict:
    """`clients` annotators at once, each next sample -> a click at the image centre -> submit it as the final label,
    while a training runs on the one labelled image (breast1); GET /info/ is polled throughout."""
    import SimpleITK as sitk
    from monailabel.client import MONAILabelClient

    server = Server(studies, tmp, images=MIXED_IMAGES, labelled=("breast1",))
    train = train or MIXED_TRAIN

    def annotator(n: int) -> tuple[bool, float, str]:
        started = time.perf_counter()
        try:
            client = MONAILabelClient(server.url, tmpdir=str(tmp))
            image_id = client.next_sample("random", {"seed": n})["id"]
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(server.studies / f"{image_id}.nii.gz"))
            reader.ReadImageInformation()
            click = [s // 2 for s in reader.GetSize()]
            result, _ = client.infer("medsam_interactive", image_id, {"foreground": [click], "max_propagation": 1})
            client.save_label(image_id, result, tag="final", params={"session": f"load-{n}"})
            return True, time.perf_counter() - started, ""
        except Exception as err:  # counted and reported: the benchmark measures, the test asserts
            return False, time.perf_counter() - started, str(err)[:200]

    try:
        client = MONAILabelClient(server.url, tmpdir=str(tmp))
        client.train_start("medsam_adapt", train)
        busy = threading.Event()
        busy.set()
        poller = ThreadPoolExecutor(1).submit(_poll_while, server, busy)
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            rounds = list(pool.map(annotator, range(clients)))
        busy.clear()
        out = {"clients": clients, "rounds_ok": sum(r[0] for r in rounds), "errors": [r[2] for r in rounds if not r[0]],
               "round_s": _stats([r[1] for r in rounds]), "all_rounds_s": time.perf_counter() - start,
               "info_during": _stats(poller.result()), "train_request": train}
        while client.train_status().get("status") in ("SUBMITTED", "RUNNING") and time.perf_counter() - start < 900:
            time.sleep(1)
        out["train_status"] = client.train_status().get("status")
    finally:
        server.stop()
    print(json.dumps(out, indent=1, default=str), flush=True)
    return out


def main() -> None:
    """`python benchmarks/server_load.py`: the mixed-load figures alone (speed.py runs the other phases)."""
    import argparse
    import tempfile

    args, size = common.parse_args(argparse.ArgumentParser(description=main.__doc__), {"cpu": {}, "cuda": {}})
    info = common.machine()
    with tempfile.TemporaryDirectory(prefix="medfm-load-") as tmp:
        out = mixed_load(args.studies, Path(tmp))
    info_s = out["info_during"]
    markdown = (f"{out['clients']} annotators at once (next sample -> a click -> submit), while a `decoder` training "
                f"ran: {out['rounds_ok']}/{out['clients']} rounds without error in {out['all_rounds_s']:.1f} s "
                f"(a round p50 {out['round_s']['p50_s']:.2f} s, max {out['round_s']['max_s']:.2f} s); GET /info/ "
                f"polled {info_s.get('n', 0)} times: p50 {info_s.get('p50_s', 0) * 1000:.0f} ms, p95 "
                f"{info_s.get('p95_s', 0) * 1000:.0f} ms, max {info_s.get('max_s', 0) * 1000:.0f} ms (target p95 "
                f"< 200 ms); training {out['train_status']}.")
    common.write_results("server-mixed", size, info, {"mixed": out}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
