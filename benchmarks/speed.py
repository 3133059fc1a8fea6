"""Speed and memory of the product's inference, training and server (issue 6). `make bench-speed`, `--smoke`.

Measures, on whatever machine it runs on: encoder throughput (fp32, bf16 where supported), one-click latency on a
cold and a cached volume, full-volume automatic segmentation of a 512x512x200 CT (extrapolated from a measured
subset on CPU, and labelled so), training step time and peak memory per method, and the real server under load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the domain core on sys.path)
import speed_runtime  # noqa: E402
from plots import bars  # noqa: E402
from server_load import measure as server_measure  # noqa: E402
from speed_core import (  # noqa: E402
    adaptation_steps,
    automatic_volume,
    embedding_throughput,
    interactive_latency,
    precision_fidelity,
)
from speed_runtime import RUNTIME  # noqa: E402

from lib.medfm import precision  # noqa: E402
from lib.medfm import runtime as runtime_mod  # noqa: E402
from lib.medfm.adapter_store import BASE  # noqa: E402
from lib.medfm.backends import get_backend  # noqa: E402
from lib.medfm.runtime import RuntimeCache  # noqa: E402


def _variants(batch: int, big: int | None = None, timed_big: bool = True) -> list[dict]:
    """Training-step rows: each method with gradient checkpointing on (the product's GPU default) and off (CPU)."""
    rows = [{"method": m, "batch": batch, "gradient_checkpointing": flag}
            for m in ("lora", "decoder", "full") for flag in (True, False)]
    if big:  # the target's batch: on a CPU only its memory is counted (one untimed step)
        rows.append({"method": "lora", "batch": big, "gradient_checkpointing": True, "timed": timed_big})
    return rows


LESIONS = ["brain1", "brain2", "breast1", "lung1", "lung2"]
SIZES = {
    "smoke": dict(batches=[1], reps=1, bf16=True, fidelity=["breast1"], click_image="breast1", clicks=3,
                  propagation=1, auto_slices=1,
                  variants=[{"method": "lora", "batch": 1}, {"method": "decoder", "batch": 1}], warmup=0, timed=1,
                  concurrent=2, server=True, runtime_auto_slices=0,  # 0: no second export in CI
                  train={"method": "decoder", "max_epochs": 1, "slices_per_image": 1, "images": "breast1"}),
    "cpu": dict(batches=[1, 2, 4], reps=2, bf16=True, fidelity=LESIONS, click_image="lung2", clicks=50, auto_slices=4,
                variants=_variants(4, big=32, timed_big=False), warmup=0, timed=1, concurrent=4, server=True,
                runtime_auto_slices=200,
                train={"method": "decoder", "max_epochs": 1, "slices_per_image": 2, "images": "breast1,brain2"}),
    # issue 25's rows only (no training steps, no server): the runtime beside PyTorch when the CPU is short
    "cpu-runtime": dict(batches=[1], reps=3, bf16=True, fidelity=LESIONS, click_image="lung2", clicks=20,
                        auto_slices=4, variants=[], warmup=0, timed=1, concurrent=4, server=False,
                        runtime_auto_slices=200),
    "cuda": dict(batches=[1, 8, 32, 64, 128], reps=10, bf16=True, fidelity=LESIONS, click_image="lung2", clicks=100,
                 auto_slices=200,
                 variants=_variants(32), warmup=3, timed=10, concurrent=16, server=True,
                 train={"method": "lora", "max_epochs": 2, "slices_per_image": 8, "images": "breast1,brain2"}),
}
REFERENCE = {"h200_fp32_slices_per_s": 242, "h200_bf16_slices_per_s": 364, "h200_full_b32_s_per_step": 0.305,
             "h200_full_b32_peak_gb": 43, "h200_lora_r8_b32_s_per_step": 0.24, "h200_lora_r8_b32_peak_gb": 25,
             "cpu_2core_s_per_slice": 1.4}
TARGETS = {"gpu_embedding_slices_per_s": 4 * 364, "gpu_lora_b32_peak_gb": 8, "cpu_cached_click_s": 0.3}


def against_targets(data: dict, dev: str) -> list[dict]:
    """The issue's reference points and targets next to what this run measured on this machine."""
    best = max(data["embedding"], key=lambda r: r["slices_per_s"])
    plain = min((r for r in data["embedding"] if r["variant"] == "plain fp32"), key=lambda r: r["s_per_slice"])
    default_click = data["interactive"]["cached"][0]
    lora_big = [r for r in data["steps"] if r["method"] == "lora" and r["checkpointing"]]
    lora_big = max(lora_big, key=lambda r: r["batch"]) if lora_big else None
    rows = [{"what": "encoder, plain fp32 code", "reference": "1.4 s/slice (2-core CPU); 242 slices/s (H200)",
             "target": "", "measured": f"{plain['s_per_slice']:.3f} s/slice = {plain['slices_per_s']:.2f} slices/s "
                                       f"(batch {plain['batch']})"},
            {"what": "encoder, product settings, best batch", "reference": "364 slices/s (H200 bf16, plain code)",
             "target": f">= {TARGETS['gpu_embedding_slices_per_s']} slices/s on an H100/H200",
             "measured": f"{best['slices_per_s']:.2f} slices/s ({best['variant']}, batch {best['batch']}; "
                         f"{best['slices_per_s'] / plain['slices_per_s']:.2f}x the plain code here)"},
            {"what": f"cached click, propagated (max_propagation {default_click['max_propagation']}; product "
                     "default 32)", "reference": "",
             "target": f"< {TARGETS['cpu_cached_click_s']} s on the 2-core CPU",
             "measured": f"p50 {default_click['p50_s']:.3f} s, p95 {default_click['p95_s']:.3f} s"},
            {"what": "cached click, clicked slice only (max_propagation 0)", "reference": "",
             "target": f"< {TARGETS['cpu_cached_click_s']} s on the 2-core CPU",
             "measured": f"p50 {data['interactive']['cached'][1]['p50_s']:.3f} s, "
                         f"p95 {data['interactive']['cached'][1]['p95_s']:.3f} s"}]
    if lora_big:
        rows.append({"what": f"LoRA r8 step, batch {lora_big['batch']}, checkpointing, {lora_big['precision']}",
                     "reference": "H200 plain code: 25 GB, 0.24 s/step",
                     "target": f"<= {TARGETS['gpu_lora_b32_peak_gb']} GB GPU memory at batch 32",
                     "measured": f"{lora_big['tensor_peak_mb'] / 1024:.2f} GB peak tensor memory"
                                 + (f", {lora_big['s_per_step']:.2f} s/step" if lora_big["s_per_step"] else "")
                                 + ("" if dev == "cuda" else " (counted on the CPU: an estimate of the GPU need)")})
    return rows


def to_markdown(data: dict, dev: str) -> str:
    lines = [*speed_runtime.markdown(data), "### Against the reference points and targets", "",
             common.markdown_table(against_targets(data, dev), ["what", "reference", "target", "measured"]), "",
             "### Image-encoder throughput", "",
             common.markdown_table(data["embedding"], ["variant", "batch", "reps", "slices_per_s", "s_per_slice",
                                                       "max_abs_diff_vs_plain_fp32", "max_rel_diff_vs_plain_fp32",
                                                       "load_1min"]), ""]
    fidelity = data["fidelity"]
    product = fidelity[0]["precision"]
    lines += [f"### Zero-shot Dice in fp32 and in the product's precision ({product})", "",
              common.markdown_table(fidelity, ["image", "dice_fp32", f"dice_{product}", "dice_change",
                                               *(k for k in fidelity[0] if k.startswith(f"dice_{RUNTIME}")),
                                               *(k for k in fidelity[0] if k.startswith(f"dice_change_{RUNTIME}")),
                                               "embedding_s_fp32", f"embedding_s_{product}"]), "",
              "Each lesion segmented in 3D with its label's box as the roi (interactive mode, base FM).", ""]
    for click in (data[k] for k in ("interactive", "interactive_runtime") if k in data):
        rows = [{"clicks": f"cold volume (empty cache), max_propagation {c['max_propagation']}", "n": 1,
                 "p50_s": click["cold_s"], "p95_s": click["cold_s"], "decode_s": click["cold_timing"]["decode_s"],
                 "embedding_s": click["cold_timing"]["embedding_s"], "slices": None,
                 "misses": click["cold_timing"]["cache_misses"]} for c in click["cached"][:1]]
        rows += [{"clicks": f"cached volume, max_propagation {c['max_propagation']}", "n": c["clicks"],
                  "p50_s": c["p50_s"], "p95_s": c["p95_s"], "decode_s": c["mean_decode_s"],
                  "embedding_s": c["mean_embedding_s"], "slices": c["mean_slices"], "misses": c["cache_misses"]}
                 for c in click["cached"]]
        lines += [f"### One foreground click on {click['image']} {click['shape']} ({click['precision']}, "
                  f"{click.get('runtime', 'torch')})", "",
                  common.markdown_table(rows, ["clicks", "n", "p50_s", "p95_s", "decode_s", "embedding_s", "slices",
                                               "misses"]), "",
                  "decode_s, embedding_s and slices are means per click; slices is how many slices the answer "
                  "covers.", ""]
    lines += ["### Automatic segmentation of a 512x512x200 CT volume", ""]
    for auto in (data[k] for k in ("automatic", "automatic_runtime") if k in data):
        how = (f"EXTRAPOLATED from {auto['slices_measured']} measured slices" if auto["extrapolated"]
               else "measured on every slice")
        lines += [f"{auto.get('runtime', 'torch')}: {auto['full_volume_s']:.1f} s for the volume "
                  f"({auto['per_slice_s']:.3f} s per slice, {how}; embedding {auto['timing']['embedding_s']} s + "
                  f"decode {auto['timing']['decode_s']} s over the measured slices).", ""]
    if data["steps"]:
        lines += ["### Adaptation step (product loss: box-prompted + prompt-free, Dice+BCE, AdamW)", "",
                  common.markdown_table(data["steps"], ["method", "batch", "precision", "checkpointing", "s_per_step",
                                                        "timed_steps", "process_peak_mb", "tensor_peak_mb",
                                                        "encoder_frozen"]), "",
                  f"process_peak_mb is {data['steps'][0]['process_memory_kind']}; tensor_peak_mb is the peak of "
                  "live tensors in one step (benchmarks/tensor_memory.py), the figure a GPU's max_memory_allocated "
                  "gives, without allocator overhead or kernel workspaces.", ""]
    srv = data.get("server")
    if srv:
        rows = [{"phase": p, **{k: srv[p].get(k) for k in ("n", "p50_s", "p95_s", "max_s")}}
                for p in ("idle_info", "info_during_infer", "info_during_train")]
        lines += ["### Server under load (GET /info/ latency, localhost)", "",
                  common.markdown_table(rows, ["phase", "n", "p50_s", "p95_s", "max_s"]), "",
                  f"Inference during polling: {srv['info_during_infer'].get('infer_s', 0):.1f} s "
                  f"({'ok' if srv['info_during_infer'].get('ok') else srv['info_during_infer'].get('error')}); "
                  f"training {srv['info_during_train']['train_request']} took "
                  f"{srv['info_during_train']['train_s']:.1f} s, status {srv['info_during_train']['train_status']}; "
                  f"{srv['concurrent_interactive']['ok']}/{srv['concurrent_interactive']['requests']} concurrent "
                  f"interactive requests completed without error (slowest "
                  f"{srv['concurrent_interactive']['slowest_s']:.1f} s). Server start-up {srv['startup_s']:.1f} s.",
                  ""]
    return "\n".join(lines)


def _served(backend, base, dev: str, folder: Path, data: dict) -> dict:
    """The base FM on the runtime in fp32 and in the product's precision, its first-use cost recorded."""
    served, data["runtime_first_use"] = {}, {}
    for mode in dict.fromkeys(("fp32", precision.resolve("auto", dev))):
        cache = RuntimeCache(folder, mode)
        served[f"{RUNTIME} {mode}"] = cache.serve(base, BASE, backend.runtime_parts(base),
                                                  (backend.weights_sha256(), ""))
        data["runtime_first_use"][mode] = cache.status[BASE] | {"load_1min": common.load_average()[0]}
        print(f"runtime {mode}: {cache.status[BASE]}", flush=True)
    return served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-server", action="store_true", help="skip the server-under-load part")
    args, size_name = common.parse_args(parser, SIZES)
    dev = common.device()
    size = SIZES[size_name]
    info = common.machine()
    print(f"machine: {info}\nsize: {size_name} {size}", flush=True)
    start = time.perf_counter()
    backend = get_backend("litemedsam")
    base = backend.build_model(dev)
    data: dict = {"config": size, "device": dev, "reference": REFERENCE, "targets": TARGETS}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runtime = runtime_mod.resolve(RUNTIME, dev) != "torch"  # a GPU, or no OpenVINO: PyTorch rows only
        served = _served(backend, base, dev, tmp / "runtime", data) if runtime else {}
        data["embedding"] = embedding_throughput(backend, base, dev, size["batches"], size["reps"],
                                                 size["bf16"] and precision.resolve("auto", dev) == "bf16", served)
        data["fidelity"] = precision_fidelity(backend, args.studies, size["fidelity"], dev, tmp,
                                              (RUNTIME,) if runtime else ())
        for suffix, name in (("", "torch"), ("_runtime", RUNTIME))[:1 + runtime]:  # same run, same volume
            data[f"interactive{suffix}"] = interactive_latency(backend, args.studies, size["click_image"],
                                                               size["clicks"], dev, tmp, size.get("propagation", 32),
                                                               runtime=name)
            print(f"interactive {name}: {data[f'interactive{suffix}']}", flush=True)
            measured = size["runtime_auto_slices"] if suffix else size["auto_slices"]
            if measured:
                data[f"automatic{suffix}"] = automatic_volume(backend, args.studies, 200, measured, dev, tmp, name)
                print(f"automatic {name}: {data[f'automatic{suffix}']}", flush=True)
        data["steps"] = adaptation_steps(backend, base, args.studies, size["variants"], size["warmup"],
                                         size["timed"], dev) if size["variants"] else []
        if size["server"] and not args.no_server:
            (tmp / "server").mkdir()
            data["server"] = server_measure(args.studies, tmp / "server", size["click_image"], size["concurrent"],
                                            size["train"])
    data["total_wall_s"] = round(time.perf_counter() - start, 1)
    data["load_average_at_end"] = common.load_average()
    markdown = to_markdown(data, dev)
    json_path, md_path = common.write_results("speed", size_name, info, data, markdown)
    png = bars({f"{r['variant']} b{r['batch']}": r["slices_per_s"] for r in data["embedding"]},
               common.plot_path("speed", size_name, info), f"encoder slices/s, {common.machine_tag(info)}",
               "slices per second")
    print(markdown)
    print(f"wrote {json_path}, {md_path}, {png} in {data['total_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
