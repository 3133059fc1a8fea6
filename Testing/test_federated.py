"""A real federation on NVFlare's simulator, at CI size: two sites, one round, the product's own client script.

Checks the three promises of federated adaptation: only adapter tensors leave a site, the global adapter is the
weighted average of what the sites sent, and it enters each site's registry through the checked import and its
guard, never straight into service.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from Testing.conftest import ROOT

LABELS = {"lesion": 1, "gray_matter": 2, "white_matter": 3}


def _benchmark():
    spec = importlib.util.spec_from_file_location("federated_benchmark", ROOT / "benchmarks" / "federated.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def federation(sample_datastore, tmp_path_factory, monkeypatch_module):
    from lib.medfm.federated.config import FederatedConfig
    from lib.medfm.federated.simulation import run_simulation

    bench = _benchmark()
    work = tmp_path_factory.mktemp("fl")
    size = bench.SIZES["smoke"]
    specs = bench.build_sites(sample_datastore, work / "sites", size["slabs"], size["sites"], size["shifted"])
    cfg = FederatedConfig(rounds=1, local_epochs=1, slices_per_image=2, batch_size=2,
                          labels=["gray_matter", "white_matter"])
    monkeypatch_module.setenv("MEDFM_FL_KEEP_UPDATES", "1")
    result = run_simulation(specs, cfg, work / "federation", LABELS)
    return specs, cfg, result


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_only_adapter_tensors_cross(federation):
    from lib.medfm.errors import InputError
    from lib.medfm.federated.exchange import check_params

    specs, cfg, result = federation
    rows = result["exchange"]
    assert sorted(r["site"] for r in rows) == sorted(s.name for s in specs)
    initial = result["initial"]
    for row in rows:
        assert row["params_type"].endswith("DIFF")
        sent = set(row["tensors"])
        # Every tensor sent is one of the initial adapter's, with its shape; with FFA-LoRA the A factors stay home.
        assert sent and sent <= set(initial)
        assert all(tuple(row["tensors"][k]) == initial[k].shape for k in sent)
        assert not any(".lora_A." in k for k in sent) and any(".lora_B." in k for k in sent)
        assert row["bytes"] < 4 * 2**20  # a few MB, against ~40 MB for the whole FM
    # The adapter's names are LoRA factors and prompt-free tokens only: nothing of the base FM's own weights.
    assert all(".lora_" in k or "label_prompts" in k for k in initial)
    # A site refuses any received tensor that is not part of its adapter, or has another shape.
    expected = {k: v.shape for k, v in initial.items()}
    with pytest.raises(InputError, match="not part of this adapter"):
        check_params({"base_model.model.image_encoder.patch_embed.seq.0.c.weight": np.zeros(3)}, expected)
    name = next(iter(initial))
    with pytest.raises(InputError, match="shape"):
        check_params({name: np.zeros(initial[name].size + 1)}, expected)


def test_global_adapter_is_the_weighted_average(federation):
    specs, cfg, result = federation
    out = result["out_dir"]
    initial, final = result["initial"], result["final"]
    updates = [(load_file(f"{out}/update-r0-{r['site']}.safetensors"), r["weight"]) for r in result["exchange"]]
    weights = [w for _, w in updates]
    assert all(w > 0 for w in weights)
    total = sum(weights)
    for name in initial:
        if name in updates[0][0]:
            expected = initial[name] + sum(u[name].astype(np.float64) * w for u, w in updates) / total
        else:  # frozen at every site (FFA-LoRA's A): exactly the shared initial value
            expected = initial[name]
        np.testing.assert_allclose(final[name], expected, rtol=0, atol=1e-6, err_msg=name)
    assert any(np.abs(final[n] - initial[n]).max() > 0 for n in updates[0][0])  # the sites did train


def test_global_adapter_enters_each_registry_through_the_checked_import_and_guard(federation):
    specs, cfg, result = federation
    for spec in specs:
        received = result["received"][spec.name]
        folder = spec.models / "adapters" / "litemedsam" / received["version"]
        manifest = json.loads((folder / "manifest.json").read_text())
        federation_meta = manifest["imported_from"]["federation"]
        assert federation_meta["id"] == result["federation"]["id"] and federation_meta["rounds"] == 1
        assert set(federation_meta["sites"]) == {s.name for s in specs}
        assert manifest["files_sha256"] and (folder / "adapter_model.safetensors").exists()
        decision = received["decision"]
        held = [c for c in decision["checks"] if "held-out images" in c["by_source"]]
        assert {c["mode"] for c in held} >= {"interactive", "click"}
        deciding = [c for c in held if c["mode"] == c["against"] and c["state"] is not None]
        assert all(max(c["by_source"]["held-out images"]["new"], c["by_source"]["held-out images"]["active"])
                   < decision["floor"] for c in held if c["state"] is None)  # nothing left to judge
        assert decision["activated"] == (bool(deciding) and all(c["state"] in ("better", "not worse")
                                                                for c in deciding))
        active = json.loads((spec.models / "adapters" / "litemedsam" / "active.json").read_text()) \
            if (spec.models / "adapters" / "litemedsam" / "active.json").exists() else {"version": "base"}
        assert (active["version"] == received["version"]) == decision["activated"]


def test_privacy_filter_clips_the_whole_update_and_adds_noise():
    from nvflare.apis.dxo import DXO, DataKind
    from nvflare.apis.fl_context import FLContext
    from nvflare.apis.shareable import Shareable

    from lib.medfm.federated.privacy import ClipAndNoise

    update = {"a.lora_B.default.weight": np.full((4, 4), 3.0, np.float32), "b": np.full(9, -4.0, np.float32)}
    norm = float(np.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in update.values())))
    clipped = ClipAndNoise(clip_norm=1.0).process_dxo(DXO(DataKind.WEIGHT_DIFF, dict(update)), Shareable(),
                                                      FLContext()).data
    assert np.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in clipped.values())) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(clipped["b"], update["b"] / norm, rtol=1e-5)  # one scale for every tensor
    noised = ClipAndNoise(clip_norm=1.0, noise_multiplier=0.5, seed=3).process_dxo(
        DXO(DataKind.WEIGHT_DIFF, dict(update)), Shareable(), FLContext()).data
    spread = np.concatenate([(noised[k] - clipped[k]).ravel() for k in update])
    assert 0.2 < spread.std() < 0.9  # N(0, 0.5^2) noise on 25 values
    untouched = {"a": np.full(3, 10.0, np.float32)}
    small = ClipAndNoise(clip_norm=100.0).process_dxo(DXO(DataKind.WEIGHT_DIFF, dict(untouched)), Shareable(),
                                                      FLContext()).data
    np.testing.assert_array_equal(small["a"], untouched["a"])  # within the clip: unchanged
