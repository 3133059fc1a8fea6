"""Today's point rule and the interval rule (issue 27) judging the same site-benchmark runs, from what each run
recorded (validation units in its evidence, the guard's held-out evaluations with per-slice Dice): no model runs.

Counts, over the runs of a `site.py` result JSON, what matters to a site on data the guard never saw (the
simulated-shift copies of the test volumes): versions that went live with box Dice below the base FM's by more than
0.01, and versions refused although better than the base FM by >= 0.02 box Dice. Writes `site-guards-<size>-<machine>
.{json,md}` beside the input. `python benchmarks/site_guards.py benchmarks/results/site-cpu-train-....json`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the domain core on sys.path)

from lib.medfm.adaptation.config import REGRESSION_MARGIN  # noqa: E402
from lib.medfm.evaluation import means  # noqa: E402
from lib.medfm.guard import decide  # noqa: E402

HARM, MISSED_GAIN = 0.01, 0.02  # the thresholds on shifted-copy box Dice against the base FM


def point_rule(evidence: dict | None, held_out: dict[str, tuple[dict, dict]], margin: float, floor: float) -> bool:
    """The guard before issue 27 (registry.py at 548070b): every mode's mean, from validation and from held-out
    images apart, at least the active one's less `margin`; held-out labels both versions score below `floor` left
    out; a check with nothing left to judge does not decide."""
    passed = []
    if evidence and evidence.get("compared_with") == "base":
        for mode, rec in evidence["modes"].items():
            if mode == "automatic" and rec["active"] is None:
                continue  # held against box prompts: decides serving, not activation
            passed.append(rec["new"] is not None and (rec["active"] is None or rec["new"] >= rec["active"] - margin))
    for mode, (new, old) in held_out.items():
        if mode != old["mode"]:
            continue
        new_by, old_by = new["mean"]["dice_by_label"], old["mean"]["dice_by_label"]
        unjudged = {n for n in new_by.keys() & old_by.keys() if max(new_by[n], old_by[n]) < floor}
        a, b = (means({i: {n: s for n, s in labels.items() if n not in unjudged} for i, labels in e["images"].items()})
                ["dice"] for e in (new, old))
        if a is not None and b is not None:
            passed.append(a >= b - margin)
    return bool(passed) and all(passed)


def judge_runs(data: dict, margin: float) -> list[dict]:
    zero = {z["split"]: z for z in data["zero_shot"]}
    rows = []
    for run in data["runs"]:
        inputs = run["guard_inputs"]
        held = {m: (e["new"], e["active"]) for m, e in inputs["held_out"].items()}
        base_shift = zero[run["split"]].get("dice_box_shift", {}).get("mean")
        shift = run.get("dice_box_shift", {}).get("mean")
        new = decide("base", run["evidence"], held, margin, inputs["floor"])
        rows.append({"run": f"{run['split']}:{run['method']}:K={run['K']}", "version": run["version"],
                     "recorded": run["activated"], "today": point_rule(run["evidence"], held, 0.0, inputs["floor"]),
                     "interval": new["activated"], "verdict": new["verdict"],
                     "states": {c["mode"]: [c["state"], c["interval"], c["n_units"]] for c in new["checks"]},
                     "box_shift": shift, "base_box_shift": base_shift,
                     "shift_gain": None if None in (shift, base_shift) else round(shift - base_shift, 4)})
    return rows


def counts(rows: list[dict], rule: str) -> dict:
    gains = [r for r in rows if r["shift_gain"] is not None]
    return {"activated": sum(r[rule] for r in rows), "runs": len(rows),
            "live_but_worse_on_unseen": sum(r[rule] and r["shift_gain"] < -HARM for r in gains),
            "refused_but_better_on_unseen": sum(not r[rule] and r["shift_gain"] >= MISSED_GAIN for r in gains)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    parser.add_argument("--margin", type=float, default=REGRESSION_MARGIN)
    args = parser.parse_args()
    data = json.loads(args.result.read_text())
    rows = judge_runs(data, args.margin)
    summary = {"today (point rule, margin 0)": counts(rows, "today"),
               f"interval rule (margin {args.margin})": counts(rows, "interval")}
    stem = args.result.with_name(args.result.name.replace("site-", "site-guards-", 1)).with_suffix("")
    out = {"source": args.result.name, "margin": args.margin, "thresholds": {"harm": HARM, "missed_gain": MISSED_GAIN},
           "summary": summary, "runs": rows}
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2))
    table = [{"rule": k, **v} for k, v in summary.items()]
    per_run = [{"run": r["run"], "today": r["today"], "interval": r["interval"], "verdict": r["verdict"],
                "box": "; ".join(f"{m} {s[0]} {s[1]} n={s[2]}" for m, s in r["states"].items()),
                "shift gain": r["shift_gain"]} for r in rows]
    agree = {rule: sum(r["recorded"] == r[rule] for r in rows) for rule in ("today", "interval")}
    md = "\n".join([f"Both rules over the runs of `{args.result.name}` ({len(rows)} runs; the decisions the run "
                    f"itself recorded match the point rule in {agree['today']}/{len(rows)}, the interval rule in "
                    f"{agree['interval']}/{len(rows)}, whichever guard the run's code had).",
                    "", common.markdown_table(table, list(table[0])), "",
                    common.markdown_table(per_run, list(per_run[0])) if per_run else "", ""])
    stem.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
