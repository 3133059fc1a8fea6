"""The inference runtime's rows beside PyTorch's, from one `speed.py` run: ratios and issue 25's targets.

Both sides are timed in the same run on the same machine, so a ratio holds even when other work slows both; the
seconds are also given, with the load average when each side was timed.
"""

from __future__ import annotations

import common

RUNTIME = "openvino"
# Issue 25, on the 2-core CPU, against today's PyTorch path in one benchmark run
TARGETS = {"encoder_s": 0.15, "encoder_speedup": 2.7, "propagated_click_p50_s": 0.3, "clicked_slice_s": 0.1,
           "ct_automatic_s": 40.0, "dice_change": 0.01, "first_use_s": 60.0}


def _verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "met"
    return f"missed by {abs(value - target):.3g} ({(target / value if higher_is_better else value / target):.2f}x)"


def _encoder(data: dict, variant: str) -> dict:
    return min((r for r in data["embedding"] if r["variant"] == variant), key=lambda r: r["batch"])


def rows(data: dict) -> list[dict]:
    """One row per target: PyTorch (the product's path), the runtime, their ratio, the target and the verdict."""
    product = data["fidelity"][0]["precision"]
    torch_enc, out = _encoder(data, f"product {product}"), []
    for mode in dict.fromkeys(("fp32", product)):  # the runtime's default (f32) and its fastest (the product's)
        rt_enc = _encoder(data, f"{RUNTIME} {mode}")
        speedup = torch_enc["s_per_slice"] / rt_enc["s_per_slice"]
        out.append({"what": f"encoder, s per slice, batch 1 (PyTorch {product}, runtime {mode})",
                    "pytorch": torch_enc["s_per_slice"], "runtime": rt_enc["s_per_slice"], "ratio": speedup,
                    "target": f"<= {TARGETS['encoder_s']} s and >= {TARGETS['encoder_speedup']}x",
                    "verdict": f"{_verdict(rt_enc['s_per_slice'], TARGETS['encoder_s'])}; speed-up "
                               f"{_verdict(speedup, TARGETS['encoder_speedup'], True)}"})
    runtime_precision = data["interactive_runtime"]["precision"]
    for n, (what, key) in enumerate(((f"cached click, propagated, p50 s (runtime {runtime_precision})",
                                      "propagated_click_p50_s"),
                                     (f"cached click, clicked slice only, p50 s (runtime {runtime_precision})",
                                      "clicked_slice_s"))):
        t, r = data["interactive"]["cached"][n]["p50_s"], data["interactive_runtime"]["cached"][n]["p50_s"]
        out.append({"what": what, "pytorch": t, "runtime": r, "ratio": t / r, "target": f"<= {TARGETS[key]} s",
                    "verdict": _verdict(r, TARGETS[key])})
    t, r = data["automatic"], data.get("automatic_runtime")
    how = {True: "extrapolated", False: "measured"}
    if r is not None:  # the smoke size skips it (a second export)
        out.append({"what": f"512x512x200 CT automatic, s (runtime {runtime_precision}; PyTorch "
                            f"{how[t['extrapolated']]} from {t['slices_measured']} slices, runtime "
                            f"{how[r['extrapolated']]} from {r['slices_measured']})",
                    "pytorch": t["full_volume_s"], "runtime": r["full_volume_s"],
                    "ratio": t["full_volume_s"] / r["full_volume_s"],
                    "target": f"<= {TARGETS['ct_automatic_s']} s measured end to end",
                    "verdict": _verdict(r["full_volume_s"], TARGETS["ct_automatic_s"])
                    + ("" if not r["extrapolated"] else " (extrapolated: not the target's measure)")})
    for mode in dict.fromkeys(("fp32", product)):
        worst = max(abs(c[f"dice_change_{RUNTIME}_{mode}"]) for c in data["fidelity"])
        torch_worst = max(abs(c["dice_change"]) for c in data["fidelity"]) if mode != "fp32" else 0.0
        out.append({"what": f"zero-shot lesion Dice, largest change vs PyTorch fp32 per case ({mode})",
                    "pytorch": torch_worst, "runtime": worst, "ratio": None,
                    "target": f"<= {TARGETS['dice_change']}", "verdict": _verdict(worst, TARGETS["dice_change"])})
    first = data["runtime_first_use"]
    for mode, status in first.items():
        if status.get("export_s") is not None:  # the first mode exports; the others reuse it and only compile
            total = status["export_s"] + status["compile_s"]
            out.append({"what": f"first use of a version: export + compile, s ({mode})", "pytorch": None,
                        "runtime": total, "ratio": None, "target": f"<= {TARGETS['first_use_s']} s",
                        "verdict": _verdict(total, TARGETS["first_use_s"])})
    return out


def markdown(data: dict) -> list[str]:
    """The runtime section of speed.py's table; empty when the run had no runtime (a GPU, or no OpenVINO)."""
    if "interactive_runtime" not in data:
        return []
    loads = (f"load average (1 min) when timed: encoder PyTorch {_encoder(data, 'product fp32')['load_1min']}, "
             f"clicks PyTorch {data['interactive']['load_1min']} / runtime {data['interactive_runtime']['load_1min']}, "
             f"CT PyTorch {data['automatic']['load_1min']} / runtime "
             f"{data.get('automatic_runtime', {}).get('load_1min', '-')}")
    return [f"### {RUNTIME} against PyTorch (same run; ratio = PyTorch / runtime, above 1 = runtime faster)", "",
            common.markdown_table(rows(data), ["what", "pytorch", "runtime", "ratio", "target", "verdict"]), "",
            f"{loads}. First use: {data['runtime_first_use']}.", ""]
