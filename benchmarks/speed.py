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
import torch  # noqa: E402
from plots import bars  # noqa: E402
from server_load import measure as server_measure  # noqa: E402
from speed_core import adaptation_steps, automatic_volume, embedding_throughput, interactive_latency  # noqa: E402

from lib.medfm.backends import get_backend  # noqa: E402

SIZES = {
    "smoke": dict(batches=[1], reps=1, bf16=False, click_image="breast1", clicks=3, propagation=1, auto_slices=1,
                  step_batch=1, warmup=0, timed=1, methods=["lora", "decoder", "full"], concurrent=2, server=True,
                  train={"method": "decoder", "max_epochs": 1, "slices_per_image": 1, "images": "breast1"}),
    "cpu": dict(batches=[1, 2, 4], reps=1, bf16=True, click_image="lung2", clicks=50, auto_slices=4, step_batch=4,
                warmup=0, timed=1, methods=["lora", "decoder", "full"], concurrent=4, server=True,
                train={"method": "decoder", "max_epochs": 1, "slices_per_image": 2, "images": "breast1,brain2"}),
    "cuda": dict(batches=[1, 8, 32, 64, 128], reps=10, bf16=True, click_image="lung2", clicks=100, auto_slices=200,
                 step_batch=32, warmup=3, timed=10, methods=["lora", "decoder", "full"], concurrent=16, server=True,
                 train={"method": "lora", "max_epochs": 2, "slices_per_image": 8, "images": "breast1,brain2"}),
}
REFERENCE = {"h200_fp32_slices_per_s": 242, "h200_bf16_slices_per_s": 364, "h200_full_b32_s_per_step": 0.305,
             "h200_full_b32_peak_gb": 43, "h200_lora_r8_b32_s_per_step": 0.24, "h200_lora_r8_b32_peak_gb": 25,
             "cpu_2core_s_per_slice": 1.4}
TARGETS = {"gpu_embedding_slices_per_s": 4 * 364, "gpu_lora_b32_peak_gb": 8, "cpu_cached_click_s": 0.3}


def bf16_supported(dev: str) -> bool:
    if dev == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def to_markdown(data: dict, dev: str) -> str:
    lines = ["### Image-encoder throughput", "",
             common.markdown_table(data["embedding"], ["dtype", "batch", "reps", "slices_per_s", "s_per_slice",
                                                       "max_rel_diff_vs_fp32"]), ""]
    click = data["interactive"]
    lines += ["### One click (foreground point, propagated through neighbouring slices)", "",
              common.markdown_table([{"volume": f"{click['image']} {click['shape']}", "cold_s": click["cold_s"],
                                      "clicks": click["clicks"], "cached_p50_s": click["cached_p50_s"],
                                      "cached_p95_s": click["cached_p95_s"],
                                      "misses": click["cache_misses_during_cached_clicks"]}],
                                    ["volume", "cold_s", "clicks", "cached_p50_s", "cached_p95_s", "misses"]), ""]
    auto = data["automatic"]
    how = (f"EXTRAPOLATED from {auto['slices_measured']} measured slices" if auto["extrapolated"]
           else "measured on every slice")
    lines += ["### Automatic segmentation of a 512x512x200 CT volume", "",
              f"{auto['full_volume_s']:.1f} s for the volume ({auto['per_slice_s']:.3f} s per slice, {how}; "
              f"embedding {auto['timing']['embedding_s']} s + decode {auto['timing']['decode_s']} s over the "
              "measured slices).", ""]
    lines += ["### Adaptation step (product loss: box-prompted + prompt-free, Dice+BCE, AdamW)", "",
              common.markdown_table(data["steps"], ["method", "batch", "s_per_step", "timed_steps", "peak_memory_mb",
                                                    "memory_kind", "encoder_frozen"]), ""]
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
    if dev == "cpu":
        lines += ["bf16 on CPU uses torch autocast on the CPU's native bf16 instructions; the product's inference "
                  "path uses bf16 only on CUDA.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=Path, default=common.ROOT / "datastore")
    parser.add_argument("--smoke", action="store_true", help="CI-sized run: checks the script, asserts nothing")
    parser.add_argument("--size", choices=sorted(SIZES), help="override the size picked from --smoke and CUDA")
    parser.add_argument("--no-server", action="store_true", help="skip the server-under-load part")
    args = parser.parse_args()
    dev = common.device()
    size_name = args.size or ("smoke" if args.smoke else "cuda" if dev == "cuda" else "cpu")
    size = SIZES[size_name]
    info = common.machine()
    print(f"machine: {info}\nsize: {size_name} {size}", flush=True)
    start = time.perf_counter()
    backend = get_backend("litemedsam")
    base = backend.build_model(dev)
    data: dict = {"config": size, "device": dev, "reference": REFERENCE, "targets": TARGETS,
                  "note": "CPU shared with other work during this run" if dev == "cpu" else ""}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data["embedding"] = embedding_throughput(backend, base, dev, size["batches"], size["reps"],
                                                 size["bf16"] and bf16_supported(dev))
        data["interactive"] = interactive_latency(backend, args.studies, size["click_image"], size["clicks"], dev,
                                                  tmp, size.get("propagation", 32))
        print(f"interactive: {data['interactive']}", flush=True)
        data["automatic"] = automatic_volume(backend, args.studies, 200, size["auto_slices"], dev, tmp)
        print(f"automatic: {data['automatic']}", flush=True)
        data["steps"] = adaptation_steps(backend, base, args.studies, size["methods"], size["step_batch"],
                                         size["warmup"], size["timed"], dev)
        if size["server"] and not args.no_server:
            (tmp / "server").mkdir()
            data["server"] = server_measure(args.studies, tmp / "server", size["click_image"], size["concurrent"],
                                            size["train"])
    data["total_wall_s"] = round(time.perf_counter() - start, 1)
    markdown = to_markdown(data, dev)
    json_path, md_path = common.write_results("speed", size_name, info, data, markdown)
    png = bars({f"{r['dtype']} b{r['batch']}": r["slices_per_s"] for r in data["embedding"]},
               common.plot_path("speed", size_name, info), f"encoder slices/s, {common.machine_tag(info)}",
               "slices per second")
    print(markdown)
    print(f"wrote {json_path}, {md_path}, {png} in {data['total_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
