"""How much held-out box Dice moves when nothing but the box changes: the noise the guard's default margin is set from.

The base FM is evaluated through `Registry.evaluate` (interactive mode, the product's box jitter of up to 3 voxels
per side) on the sample datastore's lesions, `--draws` times with a different jitter draw each time (the draw is
seeded by the case id, so each draw renames the case). Every draw is an equally good box a user could have drawn;
the differences between draws of the SAME model are measurement noise, not a change of model. Writes
`benchmarks/results/guard-noise-<machine>.json` and prints the figures the margin comment quotes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the domain core on sys.path)
import numpy as np  # noqa: E402

from lib.medfm.adapter_store import BASE  # noqa: E402
from lib.medfm.evaluation import HeldOutCase  # noqa: E402
from lib.medfm.registry import Registry  # noqa: E402
from lib.medfm.service import MedFMService  # noqa: E402
from lib.medfm.settings import Settings  # noqa: E402

CASES = ("brain1", "brain2", "breast1", "lung1", "lung2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=Path, default=common.ROOT / "build" / "sample_datastore")
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    info = common.machine()
    start = time.perf_counter()
    registry = Registry(MedFMService(Settings(models_dir=Path(tempfile.mkdtemp(prefix="medfm-noise-")),
                                              embedding_cache_mb=1024)))
    per_unit: dict[str, list[float]] = {}
    draws_mean = []
    for r in range(args.draws):
        cases = [HeldOutCase(f"{c}~{r}", str(args.studies / f"{c}.nii.gz"),
                             str(args.studies / "labels" / "final" / f"{c}.nii.gz")) for c in CASES]
        result = registry.evaluate(BASE, cases, "interactive")
        draws_mean.append(result["mean"]["dice"])
        for image, labels in result["images"].items():
            for label, score in labels.items():
                per_unit.setdefault(f"{image.split('~')[0]}:{label}", []).append(score["dice"])
        print(f"[{time.perf_counter() - start:6.1f}s] draw {r}: mean box Dice {result['mean']['dice']}", flush=True)
    unit_sd = {u: round(float(np.std(v, ddof=1)), 4) for u, v in per_unit.items()}
    # Paired differences between two draws of the same model, per unit and of the mean over units.
    unit_diffs = [abs(a - b) for v in per_unit.values() for a, b in itertools.combinations(v, 2)]
    mean_diffs = [abs(a - b) for a, b in itertools.combinations(draws_mean, 2)]
    out = {"machine": info, "draws": args.draws, "cases": list(CASES), "mode": "interactive", "jitter_voxels": 3,
           "per_unit_dice": per_unit, "per_unit_sd": unit_sd,
           "mean_unit_sd": round(float(np.mean(list(unit_sd.values()))), 4),
           "mean_abs_unit_diff": round(float(np.mean(unit_diffs)), 4),
           "p90_abs_unit_diff": round(float(np.percentile(unit_diffs, 90)), 4),
           "draw_means": draws_mean, "mean_abs_mean_diff": round(float(np.mean(mean_diffs)), 4),
           "max_abs_mean_diff": round(float(np.max(mean_diffs)), 4), "wall_s": round(time.perf_counter() - start, 1)}
    path = common.RESULTS / f"guard-noise-{common.machine_tag(info)}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k not in ("machine", "per_unit_dice")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
