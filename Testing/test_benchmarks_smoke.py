"""The benchmark scripts run end to end at their CI size and write what the README reads (issue 6).

Smoke runs check the scripts, never speed: no figure is asserted beyond being measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", ["speed", "adaptation"])
def test_benchmark_smoke_run_writes_json_table_and_plot(script, sample_datastore, tmp_path):
    run = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), "--smoke", "--studies",
                          str(sample_datastore), "--results", str(tmp_path)],
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    written = {p.suffix: p for p in tmp_path.iterdir()}
    assert set(written) == {".json", ".md", ".png"} and all(p.stat().st_size > 0 for p in written.values())
    data = json.loads(written[".json"].read_text())
    assert data["size"] == "smoke" and data["machine"]["torch"]
    markdown = written[".md"].read_text()
    assert markdown.startswith("Measured ") and "| --- |" in markdown
    if script == "speed":
        assert {r["variant"] for r in data["embedding"]} >= {"plain fp32", "product fp32"}
        assert all(r["slices_per_s"] > 0 for r in data["embedding"])
        assert data["interactive"]["cached"][1]["max_propagation"] == 0
        assert all(0 <= r["dice_fp32"] <= 1 for r in data["fidelity"])
        assert all(r["tensor_peak_mb"] > 0 for r in data["steps"])
        assert data["server"]["concurrent_interactive"]["ok"] == data["server"]["concurrent_interactive"]["requests"]
        # the runtime's rows beside PyTorch's (issue 25): on OpenVINO, not a silent fallback
        assert data["runtime_first_use"]["fp32"]["runtime"] == "openvino" and "openvino against PyTorch" in markdown
        assert all(0 <= r["dice_openvino_fp32"] <= 1 for r in data["fidelity"])
    else:
        methods = {r["method"] for r in data["summary"]}
        assert methods == {"zero_shot", "lora", "dora", "decoder", "full", "unet_scratch"}, data["skipped"]
        assert all(0 <= r["dice_auto"] <= 1 for r in data["summary"] if r.get("dice_auto") is not None)


def test_site_benchmark_smoke_run_writes_json_table_and_plot(sample_datastore, tmp_path):
    """benchmarks/site.py at its smoke size: every method through the product's job and guard, shifted copies,
    and the simulated annotator (NoC@90) all run and land in the JSON, table and plot."""
    # The budget only decides when a real size stops starting runs; a loaded CI machine must not turn that into a
    # failure here, so the smoke run gets all the time its subprocess timeout leaves.
    run = subprocess.run([sys.executable, str(BENCHMARKS / "site.py"), "--smoke", "--studies", str(sample_datastore),
                          "--results", str(tmp_path), "--budget-s", "540"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    written = {p.suffix: p for p in tmp_path.iterdir()}
    assert set(written) == {".json", ".md", ".png"} and all(p.stat().st_size > 0 for p in written.values())
    data = json.loads(written[".json"].read_text())
    assert data["size"] == "smoke" and data["machine"]["torch"] and not data["skipped"]
    assert {(r["part"], r["method"]) for r in data["runs"]} == {
        *(("slab", m) for m in ("lora", "dora", "decoder", "full")), ("pair", "decoder")}
    for r in data["runs"]:
        assert isinstance(r["decision"]["activated"], bool) and r["decision"]["reason"]
        assert 0 <= r["dice_box"]["mean"] <= 1 and 0 <= r["dice_auto"]["mean"] <= 1
        assert 0 <= r["dice_box_shift"]["mean"] <= 1
    sessions = [s for z in data["zero_shot"] for s in z.get("noc", [])]
    assert sessions and all(1 <= s["noc"] <= 3 and len(s["dice_per_click"]) == 2 for s in sessions)
    assert {t["target"] for t in data["targets"]} >= {"box Dice >= zero-shot - 0.01", "NoC@90 adapted <= base"}
    markdown = written[".md"].read_text()
    assert markdown.startswith("Measured ") and "| --- |" in markdown and "simulated" in markdown


def test_interactive_benchmark_smoke_run_scores_box_and_clicks(sample_datastore, tmp_path):
    """benchmarks/interactive.py at its smoke size (issue 24): box then 2 challenge clicks and a clicks-only start
    through the product; the JSON holds every per-structure column, Dice in [0, 1], and DSC_AUC is the trapezoid
    over the Dice after the clicks (the box excluded, as CVPR25_iter_eval.py computes it)."""
    run = subprocess.run([sys.executable, str(BENCHMARKS / "interactive.py"), "--smoke", "--studies",
                          str(sample_datastore), "--results", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    written = {p.suffix: p for p in tmp_path.iterdir()}
    assert set(written) == {".json", ".md", ".png"} and all(p.stat().st_size > 0 for p in written.values())
    data = json.loads(written[".json"].read_text())
    assert data["size"] == "smoke" and data["machine"]["torch"] and data["version"] == "base"
    (row,) = data["structures"]
    assert "error" not in row, row
    dices = [row["dice_box"], *row["dice_per_click"]]
    assert len(dices) == 3 and all(0 <= d <= 1 for d in dices) and row["final_dsc"] == dices[-1]
    assert row["dsc_auc"] == pytest.approx((dices[1] + dices[2]) / 2, abs=1e-3)
    assert row["dsc_auc_with_box"] == pytest.approx((dices[0] + 2 * dices[1] + dices[2]) / 2, abs=1e-3)
    assert 0 <= row["nsd_box"] <= 1 and 0 <= row["nsd_final"] <= 1
    assert 0 <= row["noc90"] <= 3 and row["s_p50"] > 0 and row["s_max"] >= row["s_p50"]
    assert row["drops"] == pytest.approx([b - a for a, b in zip(dices, dices[1:], strict=False)], abs=1e-3)
    assert len(row["steps"]) == 3 and row["steps"][0]["click"] is None
    assert all(s["click"] is not None for s in row["steps"][1:])
    only = row["clicks_only"]["dice_per_click"]
    assert len(only) == 2 and all(0 <= d <= 1 for d in only)
    summary = data["summary"]["smoke"]
    assert summary["structures"] == 1 and summary["mean_dice_per_step"] == pytest.approx(dices, abs=1e-3)
    markdown = written[".md"].read_text()
    assert markdown.startswith("Measured ") and "| --- |" in markdown and "DSC_AUC" in markdown
