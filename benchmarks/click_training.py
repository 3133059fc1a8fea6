"""Does interactive adaptation help? Decoder adaptation with `click_rounds` 0 vs N on the lesion pairs, judged on the
held-out lesion by the CVPR 2025 protocol (box, then error-centre clicks). `--smoke` checks the script.

Each pair direction trains on one lesion case and tests on its partner (site.py's PAIR_DIRECTIONS). Training is the
product's job (`run_adaptation`, product defaults except the fields below); the held-out session is the interactive
benchmark's `Session` (every prompt so far through `MedFMService.interactive`, the truth's 3D box as roi). The base
FM's session on the same held-out lesion is run in the same process, so all three rows share machine and load.
The clicks-only start of interactive.py is not run here (CPU time). Beside the product's 3D session, the model's
own click path is scored on the held-out slices (`slice_rounds`), since the product's refinement takes a click
mostly through box decodes and uses the click-and-mask decode as one candidate among them.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the domain core on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from interactive import Session, truth_roi  # noqa: E402
from interactive_cases import Case  # noqa: E402
from interactive_protocol import dsc_auc  # noqa: E402

from lib.medfm.adaptation.clicks import ClickRound, click_rounds_loss  # noqa: E402
from lib.medfm.adaptation.config import AdaptConfig  # noqa: E402
from lib.medfm.adaptation.data import LabelledImage, SliceSample, box_from_mask, build_samples  # noqa: E402
from lib.medfm.adaptation.job import run_adaptation  # noqa: E402
from lib.medfm.adaptation.trainer import _decode_in_model_frame, embed_with_base  # noqa: E402
from lib.medfm.backends import SlicePrompt  # noqa: E402
from lib.medfm.metrics import dice_batch  # noqa: E402
from lib.medfm.service import MedFMService  # noqa: E402
from lib.medfm.settings import Settings, default_batch_size  # noqa: E402
from lib.medfm.volume import load_label, load_volume  # noqa: E402


def _pair_directions() -> tuple[tuple[str, str], ...]:
    """site.py's PAIR_DIRECTIONS (loaded by path: `import site` is the standard library's module)."""
    spec = importlib.util.spec_from_file_location("site_benchmark", Path(__file__).resolve().parent / "site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PAIR_DIRECTIONS


PAIR_DIRECTIONS = _pair_directions()
# rounds: the click_rounds values compared; the training fields are site.py's cpu-train size (decoder, K=1).
SIZES = {
    "smoke": dict(directions=1, rounds=[0, 1], epochs=1, slices_per_image=1, batch=1, clicks=1, max_propagation=2),
    "cpu": dict(directions=4, rounds=[0, 3], epochs=7, slices_per_image=4, batch=2, clicks=5, max_propagation=32),
}


def case(studies: Path, name: str) -> Case:
    return Case(name, "lesion", str(studies / f"{name}.nii.gz"), str(studies / "labels" / "final" / f"{name}.nii.gz"),
                1, "lesions", "manual")


def session(service: MedFMService, test: Case, size: dict, adapter: str | None) -> dict:
    volume = load_volume(test.image, ct_window=service.settings.ct_window)
    truth = load_label(test.label, volume) == test.value
    size_ = {"max_propagation": size["max_propagation"]}
    s = Session(service, test, truth, volume.spacing, size_, adapter, truth_roi(truth))
    start = time.perf_counter()
    s.interact(None)
    for _ in range(size["clicks"]):
        s.click()
    dices = [step["dice"] for step in s.steps]
    return {"dice_box": dices[0], "dice_per_click": dices[1:], "final_dsc": dices[-1],
            "dsc_auc": round(dsc_auc(dices[1:]), 4), "wall_s": round(time.perf_counter() - start, 1),
            "clicks": [[step["click"], step["foreground"]] for step in s.steps[1:]]}


def slices_of(service: MedFMService, test: Case) -> list[SliceSample]:
    """Every labelled slice of the held-out lesion, embedded once by the base encoder (the decoder method's own)."""
    item = LabelledImage(test.case, test.image, test.label)
    samples = build_samples([item], service.backend, {"lesion": test.value}, 4096, np.random.default_rng(0),
                            negatives=False, ct_window=service.settings.ct_window)
    embed_with_base(service.backend, service.segmenter.base, samples, torch.device(service.settings.device), "fp32")
    return samples


@torch.no_grad()
def slice_rounds(service: MedFMService, version: str, samples: list[SliceSample], clicks: int) -> list[float]:
    """The model's own click path, without the product's refinement: on each held-out slice the exact box, then
    `clicks` training-style rounds (annotator click, box + clicks + previous logits); mean slice Dice per step."""
    model = service.segmenter.model(version)
    emb = torch.cat([s.embedding for s in samples]).to(service.settings.device)
    prompts = [SlicePrompt(box=box_from_mask(s.targets[s.present[0]], 0.0, None)) for s in samples]
    targets = torch.stack([s.targets[s.present[0]] for s in samples])[:, None]

    def decode(ps):
        return _decode_in_model_frame(service.backend, model, emb, ps, samples)[0]

    start = decode(prompts)
    record: list[ClickRound] = []
    click_rounds_loss(decode, prompts, targets, start, clicks, record)
    return [round(float(dice_batch((logits[:, 0] > 0).cpu(), targets[:, 0] > 0.5).mean()), 4)
            for logits in [start, *[r.logits for r in record]]]


def train(service: MedFMService, studies: Path, name: str, rounds: int, size: dict, log) -> dict:
    cfg = AdaptConfig(method="decoder", max_epochs=size["epochs"], batch_size=size["batch"],
                      slices_per_image=size["slices_per_image"], labels=["lesion"], click_rounds=rounds,
                      note=f"click_training benchmark, click_rounds={rounds}")
    item = LabelledImage(name, str(studies / f"{name}.nii.gz"), str(studies / "labels" / "final" / f"{name}.nii.gz"))
    start = time.perf_counter()
    summary = run_adaptation(service.backend, service.segmenter.base, service.store, [item], cfg, service.settings,
                             log=lambda m: None)
    log(f"trained on {name} click_rounds={rounds}: {summary['version']} val {summary['best_val_dice']} "
        f"(base {summary['base_val'].get('val_dice_box')}) epochs {summary['epochs']}")
    return {"version": summary["version"], "val_dice_box": summary["best_val_dice"],
            "base_val_dice_box": summary["base_val"].get("val_dice_box"), "epochs": summary["epochs"],
            "train_wall_s": round(time.perf_counter() - start, 1)}


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def summarise(rows: list[dict], rounds: list[int]) -> list[dict]:
    out = []
    for label in ["base", *[f"click_rounds={r}" for r in rounds]]:
        rs = [r[label] for r in rows if label in r]
        n_clicks = len(rs[0]["dice_per_click"]) if rs else 0
        out.append({"version": label, "pairs": len(rs), "dice_box": mean(r["dice_box"] for r in rs),
                    **{f"c{i + 1}": mean(r["dice_per_click"][i] for r in rs) for i in range(n_clicks)},
                    "final_dsc": mean(r["final_dsc"] for r in rs), "dsc_auc": mean(r["dsc_auc"] for r in rs),
                    "2D rounds": " / ".join(f"{mean(r['slice_rounds'][i] for r in rs):.3f}"
                                            for i in range(n_clicks + 1)),
                    "val_dice_box": mean(r.get("val_dice_box") for r in rs),
                    "train_wall_s": mean(r.get("train_wall_s") for r in rs)})
    return out


def to_markdown(size_name: str, size: dict, rows: list[dict], summary: list[dict], wall: float) -> str:
    lines = [f"Size `{size_name}`: decoder adaptation on one lesion case (K=1, {size['epochs']} epochs, "
             f"{size['slices_per_image']} slices, batch {size['batch']}, product defaults otherwise) with "
             f"`click_rounds` {size['rounds']}; held-out partner judged by box then {size['clicks']} CVPR 2025 "
             f"clicks (max_propagation {size['max_propagation']}); {wall:.0f} s in all.", ""]
    table = []
    for r in rows:
        for label in ["base", *[f"click_rounds={k}" for k in size["rounds"]]]:
            if label in r:
                s = r[label]
                table.append({"train -> test": f"{r['train']} -> {r['test']}", "version": label,
                              "box": s["dice_box"], **{f"c{i + 1}": d for i, d in enumerate(s["dice_per_click"])},
                              "final": s["final_dsc"], "DSC_AUC": s["dsc_auc"],
                              "2D rounds": " / ".join(f"{d:.3f}" for d in s["slice_rounds"]),
                              "val box": s.get("val_dice_box"),
                              "train s": s.get("train_wall_s"), "session s": s["wall_s"]})
    lines += [common.markdown_table(table, list(table[0])) if table else "(no rows)", "", "Means over the pairs run:",
              ""]
    lines += [common.markdown_table(summary, list(summary[0])), ""]
    lines += ["`box`, `c1`.. `final`, `DSC_AUC`: 3D Dice through the product (`MedFMService.interactive`, its "
              "refinement choosing among box, cut and box+clicks+mask candidates by the decoder's predicted quality). "
              "`2D rounds`: the model's own click path without that refinement, on every labelled slice of the "
              "held-out lesion: mean slice Dice after the exact box, then after each training-style round (annotator "
              "click, box + clicks so far + previous logits as the mask prompt). "
              "`val box` = the job's own validation box Dice (top slices of the training case, held apart); "
              "`DSC_AUC` = trapezoid over the Dice after clicks 1..n (max n - 1). Seconds are wall time on a shared "
              "machine: upper bounds."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directions", type=int, help="how many of the pair directions to run (default: size's)")
    args, size_name = common.parse_args(parser, SIZES)
    size = dict(SIZES[size_name])
    if args.directions:
        size["directions"] = args.directions
    info = common.machine()
    dev = common.device()
    print(f"machine: {info}\nsize: {size_name} {size}", flush=True)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="medfm-clicktrain-"))
    try:
        settings = Settings(models_dir=work / "models", device=dev, embedding_cache_mb=1024,
                            batch_size=default_batch_size(dev))
        service = MedFMService(settings)
        rows = []
        for train_name, test_name in PAIR_DIRECTIONS[:size["directions"]]:
            test = case(args.studies, test_name)
            samples = slices_of(service, test)
            row = {"train": train_name, "test": test_name, "test_slices": len(samples),
                   "base": {**session(service, test, size, None),
                            "slice_rounds": slice_rounds(service, "base", samples, size["clicks"])}}
            log(f"{test_name} base: {row['base']}")
            for rounds in size["rounds"]:
                trained = train(service, args.studies, train_name, rounds, size, log)
                row[f"click_rounds={rounds}"] = {**trained, **session(service, test, size, trained["version"]),
                                                 "slice_rounds": slice_rounds(service, trained["version"], samples,
                                                                              size["clicks"])}
                log(f"{train_name} -> {test_name} click_rounds={rounds}: {row[f'click_rounds={rounds}']}")
            rows.append(row)
            wall = time.perf_counter() - start
            summary = summarise(rows, size["rounds"])
            data = {"config": size, "rows": rows, "summary": summary, "total_wall_s": round(wall, 1),
                    "load_average_at_end": common.load_average(), "method": "decoder",
                    "labels": "manual (pyradiomics 3.0.1 sample lesions)"}
            common.write_results("click-training", size_name, info, data, to_markdown(size_name, size, rows, summary,
                                                                                      wall))
            log(f"wrote results after {len(rows)} direction(s)")
        print(to_markdown(size_name, size, rows, summarise(rows, size["rounds"]), time.perf_counter() - start))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
