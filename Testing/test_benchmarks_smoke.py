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
    else:
        methods = {r["method"] for r in data["summary"]}
        assert methods == {"zero_shot", "lora", "dora", "decoder", "full", "unet_scratch"}, data["skipped"]
        assert all(0 <= r["dice_auto"] <= 1 for r in data["summary"] if r.get("dice_auto") is not None)
