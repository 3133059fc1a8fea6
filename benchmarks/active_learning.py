"""Simulated annotation sessions: does choosing slices by FM uncertainty/diversity beat random?

The ground truth plays the annotator. Pool and held-out set are slices of the sample datastore's MNI152 template
(grey matter, a large structure the prompt-free head can learn) - one "image" per slice, so the pool is big
enough for rounds. Each round: every strategy picks k more slices, the FM is adapted from scratch (decoder-only
with the prompt-free label prompt, a fixed number of steps, so rounds differ only in which labels were bought),
then scored on the fixed held-out slices, prompt-free and box-prompted. Encoder embeddings are computed once for
all slices and shared by every strategy, seed and round, as the server's cache shares them.

    make bench-al                       # CPU-sized (under 30 min on 2 idle cores)
    make bench-al BENCH_ARGS=--smoke    # seconds-to-minutes check that the script works
On a CUDA machine the same command runs a larger configuration.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "monailabel_app"))

from lib.medfm.active.selection import rank  # noqa: E402
from lib.medfm.adaptation import AdaptConfig, adapt  # noqa: E402
from lib.medfm.adaptation.data import SliceSample  # noqa: E402
from lib.medfm.adaptation.trainer import evaluate  # noqa: E402
from lib.medfm.backends import get_backend  # noqa: E402
from lib.medfm.segmenter import binary_entropy  # noqa: E402
from lib.medfm.volume import load_label, load_volume  # noqa: E402

STRATEGIES = ("random", "uncertainty", "diversity", "hybrid")
GRAY = 2
CONFIGS = {
    "smoke": {"pool": 8, "heldout": 3, "start": 1, "k": 1, "rounds": 2, "steps": 4, "seeds": 1},
    "cpu": {"pool": 24, "heldout": 6, "start": 1, "k": 2, "rounds": 3, "steps": 12, "seeds": 3},
    "cuda": {"pool": 64, "heldout": 16, "start": 1, "k": 4, "rounds": 6, "steps": 60, "seeds": 5},
}


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
            platform.machine(), "cores": __import__("os").cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def build_slices(studies: Path, cfg: dict, backend, device) -> tuple[list[SliceSample], list[SliceSample]]:
    volume = load_volume(studies / "mni152.nii.gz")
    label = load_label(studies / "labels" / "final" / "mni152.nii.gz", volume)
    with_gm = [k for k in range(volume.n_slices) if (np.take(label, k, axis=volume.slice_axis) == GRAY).sum() > 200]
    picks = np.linspace(0, len(with_gm) - 1, cfg["pool"] + cfg["heldout"]).round().astype(int)
    chosen = [with_gm[i] for i in picks]
    heldout_idx = set(chosen[1::max(2, len(chosen) // cfg["heldout"])][: cfg["heldout"]])
    model = backend.build_model(device)
    samples = []
    for k in chosen:
        prepared = backend.prepare(volume.slice_windowed(k))
        mask = np.take(label, k, axis=volume.slice_axis).T == GRAY
        with torch.no_grad():
            emb = backend.embed(model, prepared.tensor[None].to(device)).cpu()
        samples.append(SliceSample(f"mni152:{k}", k, prepared, {GRAY: backend.to_model_frame(mask, prepared)},
                                   [GRAY], embedding=emb))
    pool = [s for s in samples if s.slice_index not in heldout_idx]
    heldout = [s for s in samples if s.slice_index in heldout_idx]
    return pool, heldout


def pool_uncertainty(backend, model, pool: list[SliceSample], device) -> np.ndarray:
    """Mean entropy of the current model's prompt-free prediction on each pool slice."""
    from lib.medfm.backends import SlicePrompt

    scores = []
    with torch.no_grad():
        for s in pool:
            logits, _ = backend.decode(model, s.embedding.to(device), [SlicePrompt(label_index=0)], [s.prepared])
            scores.append(float(binary_entropy(logits).mean()))
    return np.asarray(scores)


def run_strategy(strategy: str, seed: int, pool, heldout, backend, base, cfg, device) -> list[dict]:
    rng = np.random.default_rng(seed)
    pooled = np.stack([s.embedding.float().mean(dim=(-2, -1))[0].numpy() for s in pool])
    labelled = list(rng.choice(len(pool), size=cfg["start"], replace=False))
    curve = []
    for round_ in range(cfg["rounds"] + 1):
        train = [pool[i] for i in labelled]
        epochs = max(1, math.ceil(cfg["steps"] * 2 / len(train)))
        acfg = AdaptConfig(method="decoder", max_epochs=epochs, batch_size=2, patience=10_000, seed=seed,
                           val_fraction=0, box_jitter=0.1)
        result = adapt(backend, base, train, [], acfg, {GRAY: 0}, device, log=lambda _m: None)
        scores = evaluate(backend, result.model, heldout, acfg, {GRAY: 0}, torch.device(device), auto=True)
        curve.append({"labelled": len(labelled), "dice_auto": scores["val_dice_auto"],
                      "dice_box": scores["val_dice_box"], "train_s": result.wall_s})
        if round_ == cfg["rounds"]:
            break
        remaining = [i for i in range(len(pool)) if i not in labelled]
        if strategy == "random":
            picks = list(rng.choice(remaining, size=cfg["k"], replace=False))
        else:
            unc = pool_uncertainty(backend, result.model, [pool[i] for i in remaining], device)
            order = rank(strategy, [str(i) for i in remaining], unc, pooled[remaining], pooled[labelled], seed)
            picks = [int(i) for i, _ in order[: cfg["k"]]]
        labelled += picks
    return curve


def area(curve: list[dict], key: str) -> float:
    """Area under held-out Dice vs labels, normalised by the label range (a mean Dice over the session)."""
    x = np.asarray([c["labelled"] for c in curve], float)
    y = np.asarray([c[key] for c in curve], float)
    return float(np.trapz(y, x) / (x[-1] - x[0])) if len(x) > 1 else float(y[0])


def summarise(results: dict) -> dict:
    out = {}
    for strategy, runs in results.items():
        by_n: dict[int, list] = {}
        for curve in runs:
            for point in curve:
                by_n.setdefault(point["labelled"], []).append(point)
        out[strategy] = {
            "labelled": sorted(by_n),
            "dice_auto_mean": [round(float(np.mean([p["dice_auto"] for p in by_n[n]])), 4) for n in sorted(by_n)],
            "dice_box_mean": [round(float(np.mean([p["dice_box"] for p in by_n[n]])), 4) for n in sorted(by_n)],
            "auc_auto": round(float(np.mean([area(c, "dice_auto") for c in runs])), 4),
            "auc_auto_sd": round(float(np.std([area(c, "dice_auto") for c in runs])), 4),
            "auc_box": round(float(np.mean([area(c, "dice_box") for c in runs])), 4),
        }
    rnd = out["random"]
    for s in out.values():
        target = rnd["dice_auto_mean"][-1]
        reached = [n for n, d in zip(s["labelled"], s["dice_auto_mean"], strict=True) if d >= target]
        s["labels_to_reach_random_final"] = reached[0] if reached else None
    return out


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for strategy, s in summary.items():
        axes[0].plot(s["labelled"], s["dice_auto_mean"], marker="o", label=f"{strategy} (AUC {s['auc_auto']:.3f})")
        axes[1].plot(s["labelled"], s["dice_box_mean"], marker="o", label=f"{strategy} (AUC {s['auc_box']:.3f})")
    for ax, name in zip(axes, ("prompt-free", "box-prompted"), strict=True):
        ax.set_xlabel("labelled slices")
        ax.set_ylabel(f"held-out Dice ({name})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", default="datastore")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = "smoke" if args.smoke else device
    cfg = CONFIGS[name]
    start = time.perf_counter()
    backend = get_backend()
    base = backend.build_model(device)
    pool, heldout = build_slices(Path(args.studies), cfg, backend, device)
    results: dict[str, list] = {}
    for strategy in STRATEGIES:
        results[strategy] = []
        for seed in range(cfg["seeds"]):
            results[strategy].append(run_strategy(strategy, seed, pool, heldout, backend, base, cfg, device))
            print(f"{strategy} seed {seed}: {results[strategy][-1]} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    summary = summarise(results)
    info = {"benchmark": "active_learning", "config": name, "settings": cfg, "machine": machine(),
            "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.perf_counter() - start, 1),
            "summary": summary, "runs": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"active_learning-{name}"
    (out / f"{stem}.json").write_text(json.dumps(info, indent=2))
    plot(summary, out / f"{stem}.png", f"Active learning on MNI152 grey-matter slices ({name}, {device}, "
                                       f"{cfg['seeds']} seeds, {info['wall_s']:.0f} s)")
    rows = ["| strategy | Dice (prompt-free) by labelled slices | AUC prompt-free | AUC box | labels to reach "
            "random's final |", "| --- | --- | --- | --- | --- |"]
    for strategy, s in summary.items():
        curve = ", ".join(f"{n}: {d:.3f}" for n, d in zip(s["labelled"], s["dice_auto_mean"], strict=True))
        rows.append(f"| {strategy} | {curve} | {s['auc_auto']:.3f} ± {s['auc_auto_sd']:.3f} | {s['auc_box']:.3f} "
                    f"| {s['labels_to_reach_random_final']} |")
    (out / f"{stem}.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    print(f"wrote {out / stem}.json/.md/.png in {info['wall_s']} s")


if __name__ == "__main__":
    main()
