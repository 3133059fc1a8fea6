"""Adaptation quality on the sample datastore: zero-shot FM, LoRA/DoRA/decoder/full for K labelled cases, and a
UNet from scratch on the same labels and step budget (issue 6). `make bench-adapt`, `--smoke` for CI.

The FM methods train through the product's own loop (`lib.medfm.adaptation.trainer.adapt`) with the product's
defaults, so what is measured is what a site gets; only the step budget and slice counts are sized per machine.
Dice is per slice and label, in the model's 256x256 frame, on held-out slices that no method trained on.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the domain core on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from adapt_data import Split, fixed_rng, lesion_splits, tissue_splits  # noqa: E402
from plots import dice_vs_k  # noqa: E402
from unet_baseline import predict_unet, save_unet, train_unet  # noqa: E402

from lib.medfm import precision  # noqa: E402
from lib.medfm.adaptation import AdaptConfig, adapt  # noqa: E402
from lib.medfm.adaptation.data import SliceSample, box_from_mask  # noqa: E402
from lib.medfm.adaptation.peft_setup import count_parameters, encoder_is_frozen, save_adapter  # noqa: E402
from lib.medfm.backends import SlicePrompt, get_backend  # noqa: E402
from lib.medfm.metrics import dice  # noqa: E402

FM_METHODS = ("lora", "dora", "decoder", "full")
TEST_JITTER = 0.1  # each side of the test box moved by up to 10 % of the box size, seeded per slice and label

SIZES = {  # held_out / seeds / K / slices per training case or set / held-out slices / steps / batch / budget
    "smoke": dict(held_out=["breast1"], seeds=[0], ks=[1], train_slices=1, test_slices=1, tissue_seeds=[0],
                  steps=1, batch=1, budget_s=300),
    "cpu": dict(held_out=["lung2"], seeds=[0], ks=[1, 2, 4], train_slices=2, test_slices=2, tissue_seeds=[0],
                steps=12, batch=2, budget_s=1050),
    "cuda": dict(held_out=["brain1", "brain2", "breast1", "lung1", "lung2"], seeds=[0], ks=[1, 2, 4],
                 train_slices=8, test_slices=8, tissue_seeds=[0, 1, 2], steps=60, batch=8, budget_s=500),
}


@torch.no_grad()
def embed_all(backend, model, samples: list[SliceSample], dev: str, batch: int) -> list[torch.Tensor]:
    out = []
    for n in range(0, len(samples), batch):
        images = torch.stack([s.prepared.tensor for s in samples[n:n + batch]]).to(dev)
        with precision.autocast(dev, precision.resolve("auto", dev)):  # as the product's inference runs
            out += list(backend.embed(model, images).float().split(1))
    return out


@torch.no_grad()
def score_fm(backend, model, test: list[SliceSample], embeddings, tokens: dict[int, int] | None, task: str) -> dict:
    """Box-prompted Dice (fixed jittered box per slice and label) and prompt-free Dice (label token, or no prompt
    at all when `tokens` is None: the zero-shot FM)."""
    model.eval()
    box, auto = [], []
    for s, emb in zip(test, embeddings, strict=True):
        unit = type(s.prepared)(tensor=s.prepared.tensor, scale=1.0, original_hw=s.prepared.original_hw)
        for value in s.targets:
            prompts = [SlicePrompt(label_index=tokens[value]) if tokens else SlicePrompt()]
            if value in s.present:
                rng = fixed_rng(task, s.image_id, s.slice_index, value)
                prompts.insert(0, SlicePrompt(box=box_from_mask(s.targets[value], TEST_JITTER, rng)))
            with precision.autocast(emb.device, precision.resolve("auto", emb.device)):
                logits, _ = backend.decode(model, emb.expand(len(prompts), -1, -1, -1), prompts,
                                           [unit] * len(prompts))
            masks = logits[:, 0] > 0
            if value in s.present:
                box.append(dice(masks[0], s.targets[value]))
            auto.append(dice(masks[-1], s.targets[value]))
    return {"dice_box": float(np.mean(box)) if box else None, "dice_auto": float(np.mean(auto)) if auto else None,
            "dice_box_slices": [round(d, 4) for d in box], "dice_auto_slices": [round(d, 4) for d in auto]}


def run_zero_shot(backend, base, split: Split, base_test_emb) -> dict:
    scores = score_fm(backend, base, split.test, base_test_emb, None, split.task)
    return {"method": "zero_shot", "K": 0, "trainable_params": 0, "trainable_fraction": 0.0, "adapter_bytes": 0,
            "peak_memory_mb": None, "wall_s": 0.0, "steps": 0, **scores}


def run_fm(backend, base, split: Split, k: int, method: str, size: dict, dev: str, base_test_emb) -> dict:
    train = split.train[k]
    batch = min(size["batch"], len(train))
    per_epoch = math.ceil(len(train) / batch)
    cfg = AdaptConfig(method=method, max_epochs=math.ceil(size["steps"] / per_epoch), batch_size=batch,
                      seed=split.seed, val_fraction=0.0, max_seconds=size["budget_s"])
    with common.PeakMemory(dev) as memory, common.Timer(dev) as timer:
        result = adapt(backend, base, train, [], cfg, split.tokens, dev, log=lambda _m: None)
        frozen = encoder_is_frozen(result.model)
        test_emb = base_test_emb if frozen else embed_all(backend, result.model, split.test, dev, size["batch"])
    scores = score_fm(backend, result.model, split.test, test_emb, split.tokens, split.task)
    with tempfile.TemporaryDirectory() as tmp:
        adapter_bytes = sum(save_adapter(result.model, Path(tmp)).values())
    trainable, total = count_parameters(result.model)
    return {"method": method, "K": k, "trainable_params": trainable, "trainable_fraction": trainable / total,
            "adapter_bytes": adapter_bytes, "peak_memory_mb": memory.peak_mb, "wall_s": round(timer.s, 2),
            "steps": cfg.max_epochs * per_epoch, **scores}


def run_unet(split: Split, k: int, size: dict, dev: str, fm_total: int) -> dict:
    train = split.train[k]
    batch = min(size["batch"], len(train))
    per_epoch = math.ceil(len(train) / batch)
    budget = math.ceil(size["steps"] / per_epoch) * per_epoch  # whole epochs, as the FM's training loop takes
    with common.PeakMemory(dev) as memory, common.Timer(dev) as timer:
        model, steps = train_unet(train, split.tokens, budget, batch, split.seed, dev)
    auto = [dice(predict_unet(model, s, split.tokens, dev)[v], s.targets[v]) for s in split.test
            for v in s.targets]
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        size_bytes = save_unet(model, Path(tmp) / "unet.safetensors")
    return {"method": "unet_scratch", "K": k, "trainable_params": params, "trainable_fraction": 1.0,
            "adapter_bytes": size_bytes, "peak_memory_mb": memory.peak_mb, "wall_s": round(timer.s, 2),
            "steps": steps, "dice_box": None, "dice_auto": float(np.mean(auto)),
            "dice_auto_slices": [round(d, 4) for d in auto], "note": f"{params / fm_total:.2f}x the FM's parameters"}


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and spread of Dice over splits (cases and seeds); one split gives the spread over its test slices."""
    rows = []
    for key in sorted({(r["task"], r["method"], r["K"]) for r in runs}, key=lambda t: (t[0], t[1], t[2])):
        group = [r for r in runs if (r["task"], r["method"], r["K"]) == key]
        row = {"task": key[0], "method": key[1], "K": key[2], "splits": len(group)}
        for metric in ("dice_box", "dice_auto"):
            per_split = [r[metric] for r in group if r[metric] is not None]
            if not per_split:
                continue
            spread = per_split if len(per_split) > 1 else group[0].get(f"{metric}_slices") or per_split
            row[metric] = round(float(np.mean(per_split)), 4)
            row[f"{metric}_std"] = round(float(np.std(spread)), 4)
        for field in ("trainable_params", "trainable_fraction", "adapter_bytes", "steps"):
            row[field] = group[0][field]
        peaks = [r["peak_memory_mb"] for r in group if r["peak_memory_mb"] is not None]
        row["peak_memory_mb"] = max(peaks) if peaks else None
        row["wall_s"] = round(float(np.mean([r["wall_s"] for r in group])), 2)
        rows.append(row)
    return rows


def to_markdown(rows: list[dict], size_name: str, size: dict, skipped: list[str], memory_kind: str,
                dev: str) -> str:
    lines = [f"Held-out lesion cases: {size['held_out']} (leave-one-case-out, seeds {size['seeds']}); MNI152 slice "
             f"seeds {size['tissue_seeds']}; {size['train_slices']} slice(s) per training case or slice set, "
             f"{size['test_slices']} held-out slice(s) per case; every method {size['steps']} optimizer step(s) at "
             f"batch {size['batch']}, rounded up to whole epochs (the product's loop trains whole epochs), the `steps` "
             "column says how many each took. Dice in the 256x256 model frame; "
             "`dice_box`: box from the label's extent with a fixed, seeded 10 % jitter; `dice_auto`: prompt-free "
             "(learned label token; for zero-shot no prompt at all). `±`: std over splits, or over held-out slices "
             f"when there is one split. Peak memory: {memory_kind}. Precision: {precision.resolve('auto', dev)}, "
             "gradient checkpointing " + ("on" if dev == "cuda" else "off") + " (the product's defaults on this "
             "machine).", ""]
    for task in sorted({r["task"] for r in rows}):
        lines += [f"### {task}", ""]
        table = []
        for r in (r for r in rows if r["task"] == task):
            fmt = {m: (f"{r[m]:.3f} ± {r[m + '_std']:.3f}" if r.get(m) is not None else "-")
                   for m in ("dice_box", "dice_auto")}
            table.append({**r, **fmt, "trainable": f"{r['trainable_params']:,} ({100 * r['trainable_fraction']:.2f} %)"
                          if r["method"] != "unet_scratch" else f"{r['trainable_params']:,} (all, scratch)"})
        lines += [common.markdown_table(table, ["method", "K", "splits", "dice_box", "dice_auto", "trainable",
                                                "adapter_bytes", "peak_memory_mb", "wall_s", "steps"]), ""]
    if skipped:
        lines += [f"Skipped for the time budget: {', '.join(skipped)}", ""]
    if size_name != "cuda":
        lines += ["CPU sizes train for only a few steps: they prove the pipeline and give memory, size and time "
                  "figures; Dice differences between methods at this budget say little about adaptation quality.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, help="stop starting new runs after this many seconds")
    args, size_name = common.parse_args(parser, SIZES)
    dev = common.device()
    size = dict(SIZES[size_name])
    size["budget_s"] = args.budget_s or size["budget_s"]
    info = common.machine()
    print(f"machine: {info}\nsize: {size_name} {size}", flush=True)
    start = time.perf_counter()
    backend = get_backend("litemedsam")
    base = backend.build_model(dev)
    fm_total = count_parameters(base)[1]
    splits = lesion_splits(args.studies, backend, size["held_out"], size["seeds"], size["ks"], size["train_slices"],
                           size["test_slices"])
    splits += tissue_splits(args.studies, backend, size["tissue_seeds"], size["ks"], size["train_slices"],
                            size["test_slices"])
    runs, skipped = [], []
    base_emb = {id(split): embed_all(backend, base, split.test, dev, size["batch"]) for split in splits}
    todo = [(split, "zero_shot", 0) for split in splits]
    todo += [(split, m, k) for k in size["ks"] for split in splits if k in split.train
             for m in (*FM_METHODS, "unet_scratch")]  # K outermost: a budget stop loses the largest K everywhere
    for split, method, k in todo:
        if time.perf_counter() - start > size["budget_s"]:
            skipped.append(f"{split.task}:{split.name}:{method}:K={k}")
            continue
        if method == "zero_shot":
            run = run_zero_shot(backend, base, split, base_emb[id(split)])
        elif method == "unet_scratch":
            run = run_unet(split, k, size, dev, fm_total)
        else:
            run = run_fm(backend, base, split, k, method, size, dev, base_emb[id(split)])
        run.update(task=split.task, split=split.name, train_slices=len(split.train.get(k, [])),
                   test_slices=len(split.test))
        runs.append(run)
        print(f"[{time.perf_counter() - start:7.1f}s] {split.task} {split.name} {method} K={k} "
              f"box={run['dice_box']} auto={run['dice_auto']} wall={run['wall_s']}s "
              f"peak={run['peak_memory_mb']}MB", flush=True)
    rows = summarise(runs)
    memory_kind = common.PeakMemory(dev).kind
    markdown = to_markdown(rows, size_name, size, skipped, memory_kind, dev)
    data = {"config": size, "device": dev, "peak_memory_kind": memory_kind, "summary": rows, "runs": runs,
            "skipped": skipped, "total_wall_s": round(time.perf_counter() - start, 1),
            "precision": precision.resolve("auto", dev), "load_average_at_end": common.load_average()}
    json_path, md_path = common.write_results("adaptation", size_name, info, data, markdown)
    png = dice_vs_k(rows, common.plot_path("adaptation", size_name, info), f"{size_name} on {common.machine_tag(info)}")
    print(markdown)
    print(f"wrote {json_path}, {md_path}, {png} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
