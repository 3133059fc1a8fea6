"""Interactive 3D segmentation as the CVPR 2025 challenge scores it: one 3D box, then 5 error-centre clicks, per
structure; and a clicks-only start. `make bench-interactive`, `--smoke` for CI.

The product is driven from the outside, as a server is: one `MedFMService` for the whole run, and every
interaction is one `MedFMService.interactive(path, params)` call whose `params` is the HTTP body of the
`medsam_interactive` model holding every prompt so far (`roi` = the truth's 3D bounding box as per-axis inclusive
pairs, `foreground`, `background`, `max_propagation`), plus `session` = "<case>:<structure>" and `reset_state`
on a structure's first interaction, so whatever the refinement keeps between clicks is used and measured.
The annotator and scores are the challenge's (interactive_protocol.py); the cases are in interactive_cases.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the domain core on sys.path)
import numpy as np  # noqa: E402
import plots  # noqa: E402
from interactive_cases import Case, lesion_cases, organ_cases, smoke_cases  # noqa: E402
from interactive_protocol import NSD_TOLERANCE_MM, challenge_click, dice, dsc_auc, nsd  # noqa: E402

from lib.medfm import precision  # noqa: E402
from lib.medfm.service import MedFMService  # noqa: E402
from lib.medfm.settings import Settings, default_batch_size  # noqa: E402
from lib.medfm.volume import load_label, load_volume  # noqa: E402

# clicks: after the box; clicks_only: clicks of the start without a box (the first at the structure's centre);
# max_propagation: sent in every request (the product's default is 32).
SIZES = {
    "smoke": dict(clicks=2, clicks_only=2, max_propagation=2),
    "cpu": dict(clicks=5, clicks_only=6, max_propagation=32),
    "cuda": dict(clicks=5, clicks_only=6, max_propagation=32),
}
TARGET_DICE = 0.90
CASE_DROP = 0.05  # a click that lowers one structure's Dice by more is flagged
MEAN_DROP = 0.01
# Issue 24's targets, and what it measured on the five lesions with today's product (2026-12-05, base FM, CPU).
ISSUE_BASELINE = {"box": 0.637, "final": 0.773, "dsc_auc": 2.90, "clicks_only_5": 0.506}


def truth_roi(truth: np.ndarray) -> list[int]:
    """The truth's 3D bounding box as the roi the stock Slicer plugin sends: [i0, i1, j0, j1, k0, k1], inclusive."""
    idx = np.nonzero(truth)
    return [int(v) for a in idx for v in (a.min(), a.max())]


def jittered_roi(roi: list[int], shape, rng: np.random.Generator) -> list[int]:
    """The truth's box widened by 0 or 1 voxel on each of its six sides, as a radiologist's box would be."""
    out = []
    for axis in range(3):
        lo, hi = roi[2 * axis], roi[2 * axis + 1]
        out += [max(0, lo - int(rng.integers(0, 2))), min(shape[axis] - 1, hi + int(rng.integers(0, 2)))]
    return out


def jittered_click(click: tuple[list[int], bool], truth: np.ndarray, slice_axis: int,
                   rng: np.random.Generator) -> tuple[list[int], bool]:
    """The click moved to a random in-plane neighbour (8-connected) that is still in the structure."""
    point = list(click[0])
    moves = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]
    axes = [a for a in range(3) if a != slice_axis]
    for n in rng.permutation(len(moves)):
        moved = list(point)
        moved[axes[0]] += moves[n][0]
        moved[axes[1]] += moves[n][1]
        if all(0 <= v < s for v, s in zip(moved, truth.shape, strict=True)) and truth[tuple(moved)]:
            return moved, click[1]
    return point, click[1]


class Session:
    """One structure's interactions with the service: every request carries every prompt so far."""

    def __init__(self, service: MedFMService, case: Case, truth: np.ndarray, spacing, size: dict,
                 adapter: str | None, roi: list[int] | None):
        self.service, self.case, self.truth, self.spacing = service, case, truth, spacing
        self.base = {"max_propagation": size["max_propagation"], "session": case.session}
        if roi is not None:
            self.base["roi"] = roi
        if adapter:
            self.base["adapter"] = adapter
        self.foreground: list[list[int]] = []
        self.background: list[list[int]] = []
        self.pred = np.zeros_like(truth)
        self.steps: list[dict] = []

    def interact(self, click: tuple[list[int], bool] | None) -> dict:
        if click is not None:
            (self.foreground if click[1] else self.background).append(click[0])
        params = {**self.base, "foreground": [list(p) for p in self.foreground],
                  "background": [list(p) for p in self.background]}
        if not self.steps:
            params["reset_state"] = True
        start = time.perf_counter()
        _, result = self.service.interactive(self.case.image, params)
        seconds = time.perf_counter() - start
        self.pred = result.label > 0
        step = {"click": click[0] if click else None, "foreground": click[1] if click else None,
                "dice": round(dice(self.pred, self.truth), 4),
                "nsd": round(nsd(self.pred, self.truth, self.spacing), 4),
                "seconds": round(seconds, 3), "voxels": int(self.pred.sum()), "adapter": result.adapter,
                "timing": result.timing}
        self.steps.append(step)
        return step

    def click(self) -> dict:
        return self.interact(challenge_click(self.pred, self.truth))


def drops(dices: list[float]) -> list[float]:
    """Change of Dice at each click (negative: the click made it worse)."""
    return [round(b - a, 4) for a, b in zip(dices[:-1], dices[1:], strict=True)]


def noc(dices_from_box: list[float], target: float = TARGET_DICE) -> int:
    """Interactions after the box to reach `target` (0: the box alone did), len(clicks) + 1 when never."""
    return next((n for n, d in enumerate(dices_from_box) if d >= target), len(dices_from_box))


def run_structure(service: MedFMService, case: Case, size: dict, adapter: str | None, log,
                  rng: np.random.Generator | None = None) -> dict:
    """The protocol on one structure; with `rng`, a jittered start (box and first clicks-only click, see
    `jittered_roi` and `jittered_click`), everything after it as the protocol says."""
    volume = load_volume(case.image, ct_window=service.settings.ct_window)
    truth = load_label(case.label, volume) == case.value
    spacing = volume.spacing
    row = {"group": case.group, "case": case.case, "structure": case.structure, "labels": case.labels,
           "image": Path(case.image).name, "value": case.value, "voxels": int(truth.sum()),
           "shape": list(volume.shape), "spacing_mm": [round(s, 4) for s in spacing], "modality": volume.modality}
    roi = truth_roi(truth) if rng is None else jittered_roi(truth_roi(truth), truth.shape, rng)
    box = Session(service, case, truth, spacing, size, adapter, roi)
    box.interact(None)
    for _ in range(size["clicks"]):
        box.click()
    dices = [s["dice"] for s in box.steps]
    seconds = [s["seconds"] for s in box.steps]
    row |= {"roi": box.base["roi"], "steps": box.steps, "dice_box": dices[0], "dice_per_click": dices[1:],
            "final_dsc": dices[-1], "dsc_auc": round(dsc_auc(dices[1:]), 4),
            "dsc_auc_with_box": round(dsc_auc(dices), 4), "nsd_box": box.steps[0]["nsd"],
            "nsd_final": box.steps[-1]["nsd"], "nsd_auc": round(dsc_auc([s["nsd"] for s in box.steps[1:]]), 4),
            "noc90": noc(dices), "reached90": max(dices) >= TARGET_DICE, "drops": drops(dices),
            "s_first": seconds[0], "s_p50": round(float(np.median(seconds)), 3), "s_max": max(seconds),
            "s_click_p50": round(float(np.median(seconds[1:])), 3) if len(seconds) > 1 else None}
    row["flags"] = [{"click": n + 1, "from": dices[n], "to": dices[n + 1], "drop": d}
                    for n, d in enumerate(row["drops"]) if d < -CASE_DROP]
    log(f"{case.session}: box {dices[0]:.3f} -> clicks {dices[1:]} (AUC {row['dsc_auc']}, NSD {row['nsd_box']} -> "
        f"{row['nsd_final']}) {sum(seconds):.1f} s")
    clicks = Session(service, case, truth, spacing, size, adapter, None)
    centre = challenge_click(clicks.pred, clicks.truth)
    clicks.interact(centre if rng is None else jittered_click(centre, truth, volume.slice_axis, rng))
    for _ in range(size["clicks_only"] - 1):
        clicks.click()
    only = [s["dice"] for s in clicks.steps]
    row["clicks_only"] = {"steps": clicks.steps, "dice_per_click": only, "drops": drops(only),
                          "dsc_auc_5": round(dsc_auc(only[:5]), 4), "noc90": noc([0.0, *only]),
                          "s_p50": round(float(np.median([s["seconds"] for s in clicks.steps])), 3)}
    row["clicks_only"]["flags"] = [{"click": n + 2, "from": only[n], "to": only[n + 1], "drop": d}
                                   for n, d in enumerate(row["clicks_only"]["drops"]) if d < -CASE_DROP]
    log(f"{case.session}: clicks only {only}")
    return row


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def summarise(rows: list[dict], size: dict) -> dict:
    """Per group: the mean of every column, the mean Dice at each step with its change, flagged clicks, NoC@90."""
    out = {}
    for group in dict.fromkeys(r["group"] for r in rows if "error" not in r):
        rs = [r for r in rows if r["group"] == group and "error" not in r]
        steps = [mean(r["dice_box"] if n == 0 else r["dice_per_click"][n - 1] for r in rs)
                 for n in range(size["clicks"] + 1)]
        only = [mean(r["clicks_only"]["dice_per_click"][n] for r in rs) for n in range(size["clicks_only"])]
        out[group] = {
            "structures": len(rs),
            **{k: mean(r[k] for r in rs) for k in ("dice_box", "final_dsc", "dsc_auc", "dsc_auc_with_box", "nsd_box",
                                                     "nsd_final", "nsd_auc", "noc90", "s_p50", "s_max", "s_first",
                                                     "s_click_p50")},
            "s_click_p50_all": round(float(np.median([s["seconds"] for r in rs for s in r["steps"][1:]])), 3)
            if size["clicks"] else None,
            "mean_dice_per_step": steps, "mean_drop_per_click": drops(steps),
            "reached90": sum(r["reached90"] for r in rs),
            "flags": [{"case": r["case"], "structure": r["structure"], **f} for r in rs for f in r["flags"]],
            "worst_case_drop": min((d for r in rs for d in r["drops"]), default=0.0),
            "clicks_only_mean_per_click": only, "clicks_only_mean_drop": drops(only),
            "clicks_only_flags": [{"case": r["case"], "structure": r["structure"], **f}
                                  for r in rs for f in r["clicks_only"]["flags"]],
            "clicks_only_reached90": sum(r["clicks_only"]["noc90"] <= size["clicks_only"] for r in rs),
        }
    return out


def compact(row: dict, size: dict) -> dict:
    """What a jittered run keeps of a structure's row: the target columns."""
    only = row["clicks_only"]["dice_per_click"]
    return {"group": row["group"], "case": row["case"], "structure": row["structure"], "roi": row["roi"],
            "clicks_only_first": row["clicks_only"]["steps"][0]["click"], "final_dsc": row["final_dsc"],
            "dsc_auc": row["dsc_auc"], "reached90": row["reached90"],
            "clicks_only_5": only[min(5, len(only)) - 1]}


def summarise_repeats(exact: list[dict], repeats: list[list[dict]], size: dict) -> dict:
    """The lesions' target columns per run (run 0 = the exact protocol, then each jittered start) and their
    mean, min and max over runs: how much of a difference between two results the start alone explains."""
    runs = [[compact(r, size) for r in exact if r["group"] == "lesions" and "error" not in r],
            *[[r for r in rs if "error" not in r] for rs in repeats]]
    per_run = [{"run": n, "final_dsc": mean(r["final_dsc"] for r in rs), "dsc_auc": mean(r["dsc_auc"] for r in rs),
                "clicks_only_5": mean(r["clicks_only_5"] for r in rs), "reached90": sum(r["reached90"] for r in rs)}
               for n, rs in enumerate(runs)]
    keys = ("final_dsc", "dsc_auc", "clicks_only_5", "reached90")
    over = {f"{stat}": {k: round(float(fn([p[k] for p in per_run])), 4) for k in keys}
            for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max))}
    cases = sorted({r["case"] for rs in runs for r in rs})
    spread = {c: {k: [r[k] for rs in runs for r in rs if r["case"] == c] for k in ("final_dsc", "clicks_only_5")}
              for c in cases}
    return {"runs": per_run, **over, "per_case": spread}


def targets(summary: dict, size: dict) -> list[dict]:
    """Issue 24's targets (set on the five lesions) against what was measured; `by` > 0 is the margin met, < 0
    the miss."""
    out = []
    for group, s in summary.items():
        if group != "lesions":
            continue
        worst_mean = min(s["mean_drop_per_click"], default=0.0)
        only5 = s["clicks_only_mean_per_click"][min(5, len(s["clicks_only_mean_per_click"])) - 1]
        rows = [
            ("final DSC (box + clicks) mean >= 0.85", s["final_dsc"], 0.85, ISSUE_BASELINE["final"]),
            ("DSC_AUC (clicks 1-5, of 4) mean >= 3.3", s["dsc_auc"], 3.3, ISSUE_BASELINE["dsc_auc"]),
            ("no click lowers the mean Dice by > 0.01 (worst change)", worst_mean, -MEAN_DROP, -0.014),
            ("no click lowers any case by > 0.05 (worst change)", s["worst_case_drop"], -CASE_DROP, -0.192),
            ("clicks only, Dice after 5 clicks mean >= 0.80", only5, 0.80, ISSUE_BASELINE["clicks_only_5"]),
            (f"NoC@90 within {size['clicks']} clicks in >= 3 of 5 lesions", s["reached90"], 3, None),
        ]
        for name, value, threshold, issue in rows:
            out.append({"group": group, "target": name, "measured": value, "threshold": threshold,
                        "issue_2026_12_05": issue, "met": value is not None and value >= threshold,
                        "by": None if value is None else round(value - threshold, 4)})
    return out


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def repeats_markdown(rep: dict) -> list[str]:
    lines = ["### Jittered starts (lesions)", "",
             "Run 0 is the exact protocol; each further run starts from the truth's box widened by 0 or 1 voxel on "
             "each side and a clicks-only first click moved to a random in-plane neighbour inside the lesion "
             "(seeded by the run's number); every click after that is the protocol's. The spread is what the start "
             "alone moves the scores by: differences between two versions of the product smaller than it are not "
             "evidence.", ""]
    table = [{"run": "exact" if p["run"] == 0 else f"jitter {p['run']}", "final": p["final_dsc"],
              "DSC_AUC": p["dsc_auc"], "clicks only after 5": p["clicks_only_5"], "NoC@90 reached": p["reached90"]}
             for p in rep["runs"]]
    table += [{"run": f"**{stat}**", "final": rep[stat]["final_dsc"], "DSC_AUC": rep[stat]["dsc_auc"],
               "clicks only after 5": rep[stat]["clicks_only_5"], "NoC@90 reached": rep[stat]["reached90"]}
              for stat in ("mean", "min", "max")]
    lines += [common.markdown_table(table, list(table[0])), ""]
    lines += ["Per lesion over runs (min - max): " + "; ".join(
        f"{c} final {min(v['final_dsc']):.3f}-{max(v['final_dsc']):.3f}, clicks only "
        f"{min(v['clicks_only_5']):.2f}-{max(v['clicks_only_5']):.2f}" for c, v in rep["per_case"].items()) + ".", ""]
    return lines


def to_markdown(size_name: str, size: dict, rows: list[dict], summary: dict, checks: list[dict], notes: dict,
                repeats: dict | None = None) -> str:
    n = size["clicks"]
    lines = [
        f"Size `{size_name}`: per structure one 3D box (the truth's bounding box as `roi`), then {n} clicks; and a "
        f"clicks-only start of {size['clicks_only']} clicks; `max_propagation` {size['max_propagation']}; version "
        f"`{notes['version']}`; {notes['wall_s']:.0f} s in all; precision {notes['precision']}.", "",
        "Protocol: CVPR 2025 interactive 3D challenge (CVPR25_iter_eval.py): each click at the voxel farthest from the "
        "border (distance in voxels) of the largest 26-connected error component (misses and over-segmentation "
        "together), foreground if the truth is the structure there, else background; every request sends every "
        "prompt so far through `MedFMService.interactive` with the `medsam_interactive` HTTP body. "
        f"`DSC_AUC` = the challenge's: trapezoid over the Dice after clicks 1..{n} (box excluded, max {n - 1}); "
        f"`AUC+box` = the same over box and clicks (max {n}). `NSD` = normalised surface Dice at "
        f"{NSD_TOLERANCE_MM:g} mm (MONAI). `NoC@90` = clicks after the box to Dice >= 0.90 (0 = the box did, {n + 1} "
        f"= not within {n}). `s p50/max` = seconds per interaction (the first embeds the structure's slices); "
        "`click s` = p50 of the clicks alone (embeddings cached). Clicks only: the first click at the structure's "
        "centre (the challenge's click on an empty prediction).", ""]
    for group in summary:
        rs = [r for r in rows if r["group"] == group and "error" not in r]
        lines += [f"### {group} (labels: {rs[0]['labels']})", ""]
        table = [{"structure": f"{r['case']}:{r['structure']}", "box": r["dice_box"],
                  **{f"c{i + 1}": d for i, d in enumerate(r["dice_per_click"])}, "final": r["final_dsc"],
                  "DSC_AUC": r["dsc_auc"], "AUC+box": r["dsc_auc_with_box"], "NSD box": r["nsd_box"],
                  "NSD final": r["nsd_final"], "NoC@90": r["noc90"], "s p50": r["s_p50"], "s max": r["s_max"],
                  "click s": r["s_click_p50"], "worst change": min(r["drops"], default=0.0),
                  "clicks only": " / ".join(f"{d:.2f}" for d in r["clicks_only"]["dice_per_click"])} for r in rs]
        s = summary[group]
        table.append({"structure": "**mean**", "box": s["dice_box"],
                      **{f"c{i}": d for i, d in enumerate(s["mean_dice_per_step"]) if i},
                      "final": s["final_dsc"], "DSC_AUC": s["dsc_auc"], "AUC+box": s["dsc_auc_with_box"],
                      "NSD box": s["nsd_box"], "NSD final": s["nsd_final"], "NoC@90": s["noc90"], "s p50": s["s_p50"],
                      "s max": s["s_max"], "click s": s["s_click_p50"], "worst change": s["worst_case_drop"],
                      "clicks only": " / ".join(f"{d:.2f}" for d in s["clicks_only_mean_per_click"])})
        lines += [common.markdown_table(table, list(table[0])), ""]
        per_click = [{"step": "box" if i == 0 else f"click {i}", "mean Dice": d,
                      "change": None if i == 0 else s["mean_drop_per_click"][i - 1],
                      "cases down > 0.05": ", ".join(f"{f['case']}:{f['structure']} {f['from']:.2f}->{f['to']:.2f}"
                                                     for f in s["flags"] if f["click"] == i) or "-"}
                     for i, d in enumerate(s["mean_dice_per_step"])]
        lines += [common.markdown_table(per_click, list(per_click[0])), ""]
        if s["clicks_only_flags"]:
            lines += ["Clicks only, clicks that lowered a case by > 0.05: " + "; ".join(
                f"{f['case']}:{f['structure']} click {f['click']} {f['from']:.2f}->{f['to']:.2f}"
                for f in s["clicks_only_flags"]) + ".",
                ""]
        lines += [f"NoC@90 reached in {s['reached90']} of {s['structures']} (box + {n} clicks), "
                  f"{s['clicks_only_reached90']} of {s['structures']} (clicks only); all {n}-click sessions' clicks "
                  f"p50 {fmt(s['s_click_p50_all'])} s.", ""]
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["Failed: " + "; ".join(f"{r['case']}:{r['structure']}: {r['error']}" for r in errors) + ".", ""]
    if notes.get("skipped"):
        lines += [f"Not run: {notes['skipped']}.", ""]
    if checks:
        lines += ["### Issue 24's targets", "",
                  "`issue` = what the issue measured on the five lesions with the product of 2026-12-05 (its worst "
                  "mean change is 0.666 - 0.680 at click 2 and its worst case change lung2 0.926 -> 0.734).", ""]
        table = [{"group": c["group"], "target": c["target"], "measured": fmt(c["measured"]),
                  "issue": fmt(c["issue_2026_12_05"]), "met": "yes" if c["met"] else "**no**",
                  "by": fmt(c["by"])} for c in checks]
        lines += [common.markdown_table(table, list(table[0])), ""]
    if repeats:
        lines += repeats_markdown(repeats)
    lines += ["Lesions: five cases, one structure each; organs (when run): one CT with TotalSegmentator's own output "
              "as **silver** labels. Means over structures, not patients; no spread is given over so few. Seconds "
              "are wall time of the service call on whatever else the machine was running (see the load averages "
              "above): on a shared CPU read them as upper bounds; `speed.py` times a click on an idle machine."]
    return "\n".join(lines)


def plot(rows: list[dict], size: dict, path: Path, title: str) -> Path:
    fig, axes = plots.plt.subplots(1, 2, figsize=(12, 4.5))
    ok = [r for r in rows if "error" not in r]
    for r in ok:
        axes[0].plot(range(size["clicks"] + 1), [r["dice_box"], *r["dice_per_click"]], marker="o",
                     label=f"{r['case']}:{r['structure']}", linestyle="-" if r["group"] != "organs" else "--")
        axes[1].plot(range(1, size["clicks_only"] + 1), r["clicks_only"]["dice_per_click"], marker="o",
                     label=f"{r['case']}:{r['structure']}", linestyle="-" if r["group"] != "organs" else "--")
    for ax, name, xlabel in ((axes[0], "box, then clicks", "clicks after the box (0 = box)"),
                             (axes[1], "clicks only", "clicks")):
        ax.axhline(TARGET_DICE, color="black", linewidth=0.5)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Dice (3D)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    return plots.save(fig, path, title)


def render(json_path: Path) -> None:
    """Rebuild the summary, targets, markdown and plot of an earlier run from its JSON (after a change to the
    report), without measuring again; the markdown keeps the run's own date, machine and load averages."""
    data = json.loads(json_path.read_text())
    info, size, rows = data["machine"], data["config"], data["structures"]
    summary = summarise(rows, size)
    checks = targets(summary, size) if size["clicks"] == 5 else []
    notes = {"version": data["version"], "wall_s": data["total_wall_s"], "precision": data["precision"],
             "skipped": "; ".join(data["skipped"])}
    rep = summarise_repeats(rows, data["repeats"], size) if data.get("repeats") else None
    markdown = to_markdown(data["size"], size, rows, summary, checks, notes, rep)
    data.update(summary=summary, targets=checks, repeat_summary=rep)
    json_path.write_text(json.dumps(data, indent=2, default=str))
    header = json_path.with_suffix(".md").read_text().split("\n\n", 1)[0]
    json_path.with_suffix(".md").write_text(header + "\n\n" + markdown + "\n")
    plot(rows, size, json_path.with_suffix(".png"), f"interactive benchmark, {data['size']} on "
                                                    f"{common.machine_tag(info)}")
    print(markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", choices=("lesions", "organs", "all"), default="lesions")
    parser.add_argument("--adapter", help="the version to run (e.g. v0003; default: base FM, or the active version "
                                          "of --models)")
    parser.add_argument("--models", type=Path, help="the models folder holding --adapter (default: a temporary one, "
                                                    "base FM only)")
    parser.add_argument("--cache", type=Path, default=common.ROOT / "build" / "cache",
                        help="where the TotalSegmentator sdist is kept")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=0,
                        help="jittered starts to run on the lesions after the exact protocol (see jittered_roi)")
    parser.add_argument("--render", type=Path, help="rewrite the tables and plot of a result JSON, measuring nothing")
    args, size_name = common.parse_args(parser, SIZES)
    if args.render:
        return render(args.render)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    size = SIZES[size_name]
    dev = common.device()
    info = common.machine()
    print(f"machine: {info}\nsize: {size_name} {size}", flush=True)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="medfm-interactive-"))
    try:
        skipped = []
        if size_name == "smoke":
            cases = smoke_cases(args.studies, work / "smoke")
        else:
            cases = lesion_cases(args.studies) if args.cases in ("lesions", "all") else []
            if args.cases in ("organs", "all"):
                try:
                    cases += organ_cases(args.cache)
                except Exception as err:  # the organ set is optional: its failure never stops the lesions
                    skipped.append(f"organs ({err})")
                    log(f"organs skipped: {err}")
        settings = Settings(models_dir=args.models or work / "models", device=dev, embedding_cache_mb=1024,
                            batch_size=default_batch_size(dev))
        service = MedFMService(settings)  # one per run, as one server
        version = service.store.resolve(args.adapter)  # an unknown version stops here, before any case runs
        rows = []
        for case in cases:
            try:
                rows.append(run_structure(service, case, size, args.adapter, log))
            except Exception as err:  # one structure's failure is reported, the others still run
                log(f"{case.session} failed: {err!r}")
                rows.append({"group": case.group, "case": case.case, "structure": case.structure,
                             "labels": case.labels, "error": repr(err)})
        repeats = []
        for n in range(1, args.repeats + 1):
            rng = np.random.default_rng(n)
            repeats.append([])
            for case in (c for c in cases if c.group == "lesions"):
                try:
                    repeats[-1].append(compact(run_structure(service, case, size, args.adapter, log, rng), size))
                except Exception as err:
                    log(f"{case.session} jitter {n} failed: {err!r}")
                    repeats[-1].append({"case": case.case, "structure": case.structure, "error": repr(err)})
        summary = summarise(rows, size)
        checks = targets(summary, size) if size["clicks"] == 5 else []
        rep = summarise_repeats(rows, repeats, size) if repeats else None
        wall = time.perf_counter() - start
        notes = {"version": version, "wall_s": wall, "precision": precision.resolve(settings.precision, dev),
                 "skipped": "; ".join(skipped)}
        markdown = to_markdown(size_name, size, rows, summary, checks, notes, rep)
        tag = size_name + ("" if args.cases == "lesions" or size_name == "smoke" else f"-{args.cases}") + \
            (f"-{args.adapter}" if args.adapter else "")
        data = {"config": size, "cases": args.cases, "version": version, "device": dev,
                "precision": notes["precision"], "summary": summary, "targets": checks, "structures": rows,
                "repeats": repeats, "repeat_summary": rep,
                "skipped": skipped, "issue_baseline_2026_12_05": ISSUE_BASELINE, "total_wall_s": round(wall, 1),
                "load_average_at_end": common.load_average(),
                "protocol": "CVPR 2025 interactive 3D (CVPR25_iter_eval.py): box, then error-centre clicks, "
                            "26-connectivity, voxel-unit EDT; DSC_AUC over clicks 1..n (max n - 1)",
                "labels": {"lesions": "manual (pyradiomics 3.0.1 sample data)",
                           "organs": "silver: TotalSegmentator 2.18.0's own output on its test CT"}}
        json_path, md_path = common.write_results("interactive", tag, info, data, markdown)
        png = plot(rows, size, common.plot_path("interactive", tag, info),
                   f"interactive benchmark, {tag} on {common.machine_tag(info)}")
        print(markdown)
        print(f"wrote {json_path}, {md_path}, {png} in {time.perf_counter() - start:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
