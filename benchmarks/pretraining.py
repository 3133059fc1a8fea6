"""Self-supervised pretraining on a site's scans, then supervised LoRA: does SSL first beat LoRA alone at K=1?

The site: the MNI152 template cut into axial slabs (as the site benchmark does), every slab seen through one
simulated scanner (MONAI transforms, seeded; site_data.py): the site's scanner differs from what the FM saw. Even
slabs are the site's scans (labelled K at a time), odd slabs are held out. Per seed and recipe: pretrain the
encoder (`medsam_pretrain`'s code) on the site's scans without labels, then LoRA with K labelled slabs from that
version (`parent`) and from the base FM; held-out box-prompted (3D roi) and automatic Dice. Also the box Dice of
the pretrained version alone against zero-shot (the guard's question). One template: slabs differ in anatomy
level, not subject; the shift is simulated.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the domain core on sys.path)
import numpy as np  # noqa: E402
from site_data import TISSUE_LABELS, build_shifted, build_slabs  # noqa: E402

from lib.medfm.adaptation.config import AdaptConfig  # noqa: E402
from lib.medfm.adaptation.data import LabelledImage  # noqa: E402
from lib.medfm.adaptation.job import run_adaptation  # noqa: E402
from lib.medfm.adaptation.pretrain import PretrainConfig, UnlabelledImage, run_pretraining  # noqa: E402
from lib.medfm.evaluation import HeldOutCase  # noqa: E402
from lib.medfm.registry import Registry  # noqa: E402
from lib.medfm.service import MedFMService  # noqa: E402
from lib.medfm.settings import Settings  # noqa: E402

LABELS = {"lesion": 1, **TISSUE_LABELS}
SIZES = {
    "smoke": dict(slabs=dict(n=4, slices=4, gap=2, test_slices=2), seeds=[0], ks=[1], recipes=["distill"],
                  ssl_epochs=1, lora_epochs=1, slices=2, budget_s=300),
    "cpu": dict(slabs=dict(n=8, slices=6, gap=2, test_slices=2), seeds=[0, 1, 2], ks=[1, 2],
                recipes=["distill", "consistency"], ssl_epochs=4, lora_epochs=5, slices=4, budget_s=1500),
}
TARGET = 0.03  # SSL + PEFT >= PEFT alone + 0.03 mean Dice at K=1, box Dice not lower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", help="override the size's K values")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the size's seeds")
    parser.add_argument("--recipes", nargs="+", help="override the size's SSL recipes")
    parser.add_argument("--tag", default="", help="suffix of the result files' size name, e.g. k4")
    args, size_name = common.parse_args(parser, SIZES)
    size = dict(SIZES.get(size_name, SIZES["cpu"]))
    for key in ("ks", "seeds", "recipes"):
        size[key] = getattr(args, key) or size[key]
    size_name = f"{size_name}-{args.tag}" if args.tag else size_name
    dev, info = common.device(), common.machine()
    print(f"machine: {info}\nsize: {size_name} {size}", flush=True)
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="medfm-ssl-"))

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {line}", flush=True)

    try:
        pool = work / "site"
        (pool / "labels" / "final").mkdir(parents=True)
        slabs = size["slabs"]
        train, test = build_slabs(args.studies, pool, slabs["n"], slabs["slices"], slabs["gap"], slabs["test_slices"])
        train = [build_shifted(v, pool) for v in train]
        test = [build_shifted(v, pool) for v in test]
        cases = [HeldOutCase(v.image_id, v.image_path, v.label_path) for v in test]
        scans = [UnlabelledImage(v.image_id, v.image_path) for v in train]
        service = MedFMService(Settings(models_dir=work / "models", device=dev, labels=LABELS))
        registry, store, base = Registry(service), service.store, service.segmenter.base

        def heldout(version: str) -> dict:
            box = registry.evaluate(version, cases, "interactive")["mean"]["dice"]
            auto = registry.evaluate(version, cases, "automatic")["mean"]["dice"] if version != "base" and \
                store.manifest(version).auto_head else None
            return {"box": box, "auto": auto}

        zero = heldout("base")
        log(f"zero-shot on the shifted held-out slabs: box {zero['box']}")
        runs, skipped = [], []
        for seed in size["seeds"]:
            order = np.random.default_rng(seed).permutation(len(train))
            starts = {"none": None}
            for recipe in size["recipes"]:
                t0 = time.perf_counter()
                out = run_pretraining(service.backend, base, store, scans, PretrainConfig(
                    recipe=recipe, max_epochs=size["ssl_epochs"], slices_per_image=size["slices"], seed=seed),
                    service.settings, log=lambda _line: None)
                measured = heldout(out["version"])
                runs.append({"seed": seed, "K": 0, "ssl": recipe, "version": out["version"], **measured,
                             "ssl_s": round(time.perf_counter() - t0, 1), "ssl_train_s": out["wall_s"],
                             "peak_memory_mb": out.get("peak_memory_mb"),
                             "loss_curve": [r["train_loss"] for r in out["history"]]})
                starts[recipe] = out["version"]
                log(f"seed {seed} {recipe} alone: box {measured['box']} (zero-shot {zero['box']}) in "
                    f"{runs[-1]['ssl_s']} s, loss {runs[-1]['loss_curve']}")
            for k in size["ks"]:
                items = [LabelledImage(train[i].image_id, train[i].image_path, train[i].label_path)
                         for i in order[:k]]
                for name, parent in starts.items():
                    if time.perf_counter() - start > size["budget_s"]:
                        skipped.append(f"seed {seed} K={k} {name}")
                        continue
                    t0 = time.perf_counter()
                    cfg = AdaptConfig(method="lora", max_epochs=size["lora_epochs"], slices_per_image=size["slices"],
                                      batch_size=2, labels=sorted(TISSUE_LABELS), seed=seed, parent=parent)
                    summary = run_adaptation(service.backend, base, store, items, cfg, service.settings,
                                             log=lambda _line: None)
                    measured = heldout(summary["version"])
                    runs.append({"seed": seed, "K": k, "ssl": name, "version": summary["version"], **measured,
                                 "train_s": round(time.perf_counter() - t0, 1)})
                    log(f"seed {seed} K={k} ssl={name}: box {measured['box']} auto {measured['auto']}")
        rows = summarise(runs, zero, size)
        wall = time.perf_counter() - start
        markdown = to_markdown(size_name, size, rows, zero, skipped, wall)
        data = {"config": size, "device": dev, "zero_shot": zero, "runs": runs, "summary": rows,
                "skipped": skipped, "total_wall_s": round(wall, 1), "load_average_at_end": common.load_average()}
        json_path, md_path = common.write_results("pretraining", size_name, info, data, markdown)
        print(markdown)
        print(f"wrote {json_path}, {md_path} in {wall:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def summarise(runs: list[dict], zero: dict, size: dict) -> list[dict]:
    rows = []
    for k in [0, *size["ks"]]:
        for name in ["none", *size["recipes"]]:
            chosen = [r for r in runs if r["K"] == k and r["ssl"] == name]
            if not chosen:
                continue
            row = {"K": k, "start": "base FM" if name == "none" else f"SSL ({name})", "n": len(chosen),
                   "box": mean([r["box"] for r in chosen]), "auto": mean([r["auto"] for r in chosen]),
                   "mean": mean([mean([r["box"], r["auto"]]) for r in chosen])}
            if k > 0 and name != "none":
                alone = [r for r in runs if r["K"] == k and r["ssl"] == "none"]
                gain = [mean([a["box"], a["auto"]]) for a in alone]
                row["vs LoRA alone"] = round(row["mean"] - mean(gain), 4) if row["mean"] is not None else None
                row["box vs LoRA alone"] = round(row["box"] - mean([a["box"] for a in alone]), 4)
            if k == 0:
                row["box vs zero-shot"] = round(row["box"] - zero["box"], 4)
            rows.append(row)
    return rows


def to_markdown(size_name: str, size: dict, rows: list[dict], zero: dict, skipped: list[str], wall: float) -> str:
    lines = [f"SSL then LoRA, size `{size_name}`: MNI152 slabs through one simulated scanner, seeds "
             f"{size['seeds']}, SSL {size['ssl_epochs']} epochs on the site's {size['slabs']['n'] // 2} training "
             f"slabs ({size['slices']} slices each), LoRA {size['lora_epochs']} epochs; held-out box (3D roi) and "
             f"automatic Dice, 'mean' = their mean; zero-shot box {zero['box']}. Target: SSL + LoRA >= LoRA alone "
             f"+ {TARGET} mean Dice at K=1 with box Dice not lower.", ""]
    lines.append(common.markdown_table(rows, ["K", "start", "n", "box", "auto", "mean", "vs LoRA alone",
                                              "box vs LoRA alone", "box vs zero-shot"]))
    if skipped:
        lines += ["", f"Skipped by the time budget: {', '.join(skipped)}."]
    lines += ["", f"Whole run {wall:.0f} s."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
