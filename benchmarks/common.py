"""What both benchmarks share: the domain core on sys.path, the machine's name, peak memory, and result files.

Every figure in a result file comes from a measurement in the run that wrote it; the machine and library versions
are written beside it, so a number is never read without knowing where it came from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "monailabel_app"))

import torch  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU, cores, GPU and library versions: printed at start and stored in every result file."""
    import monai
    import peft

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "cuda": torch.version.cuda if gpu else None, "monai": monai.__version__,
            "peft": peft.__version__, "python": platform.python_version(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "load_average_at_start": load_average()}  # other work sharing the CPU


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: above the core count, other work was sharing the CPU."""
    return [round(v, 2) for v in os.getloadavg()]


def machine_tag(info: dict) -> str:
    """A file-name-safe name of the machine: the GPU when there is one, else the CPU and its core count."""
    name = info["gpu"] or f"{info['cpu']}-{info['cores']}cores"
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Peak memory of one block: CUDA max allocated on a GPU, else process RSS sampled every 20 ms.

    ru_maxrss only ever grows over a process, so it cannot tell one method's peak from the previous one's;
    sampling the current RSS can, at the cost of missing spikes shorter than the sampling period.
    """

    def __init__(self, dev: str):
        self.dev = dev
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.dev == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak_mb = _rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __exit__(self, *exc) -> None:
        if self.dev == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            if self._thread:
                self._thread.join()
            self.peak_mb = max(self.peak_mb, _rss_mb())
        self.peak_mb = round(self.peak_mb, 1)

    @property
    def kind(self) -> str:
        return "cuda_max_allocated_mb" if self.dev == "cuda" else "cpu_rss_sampled_mb"


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


class Timer:
    def __init__(self, dev: str):
        self.dev = dev
        self.s = 0.0

    def __enter__(self) -> Timer:
        sync(self.dev)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.dev)
        self.s = time.perf_counter() - self._start


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def parse_args(parser: argparse.ArgumentParser, sizes: dict) -> tuple[argparse.Namespace, str]:
    """The options every benchmark takes, parsed; returns the arguments and the size to run."""
    global RESULTS
    parser.add_argument("--studies", type=Path, default=ROOT / "datastore")
    parser.add_argument("--smoke", action="store_true", help="CI-sized run: checks the script, asserts nothing")
    parser.add_argument("--size", choices=sorted(sizes), help="override the size picked from --smoke and CUDA")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON, markdown and PNG")
    args = parser.parse_args()
    RESULTS = args.results
    return args, args.size or ("smoke" if args.smoke else "cuda" if device() == "cuda" else "cpu")


def write_results(name: str, size: str, info: dict, data: dict, markdown: str) -> tuple[Path, Path]:
    """`<name>-<size>-<machine>.json` and `.md`; the markdown opens with the machine it was measured on."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{name}-{size}-{machine_tag(info)}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps({"machine": info, "size": size, **data}, indent=2, default=str))
    header = (f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores"
              f"{', GPU ' + info['gpu'] if info['gpu'] else ', no GPU'}), torch {info['torch']}, "
              f"monai {info['monai']}, peft {info['peft']}; size `{size}`; load average at start "
              f"{info.get('load_average_at_start')}, at end {[round(v, 2) for v in os.getloadavg()]}.\n\n")
    md_path.write_text(header + markdown + "\n")
    return json_path, md_path


def plot_path(name: str, size: str, info: dict) -> Path:
    return RESULTS / f"{name}-{size}-{machine_tag(info)}.png"
