"""The CPU inference runtime (lib/medfm/runtime.py): agrees with PyTorch on real slices, rebuilds an export that does
not match its version, and falls back to PyTorch, with a warning, whenever it cannot serve."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lib.medfm import runtime as runtime_mod
from lib.medfm.adapter_store import BASE, AdapterStore
from lib.medfm.backends import SlicePrompt, get_backend
from lib.medfm.embedding_cache import EmbeddingCache
from lib.medfm.prompts import resolve
from lib.medfm.runtime import CompiledPart, ExportPart, RuntimeCache
from lib.medfm.segmenter import Segmenter
from lib.medfm.volume import load_label, load_volume
from Testing.helpers import dice, lesion_slice

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def studies(sample_datastore) -> Path:
    return sample_datastore


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The base FM exported once (fp32 hint: the reference numerics) into a folder the tests share."""
    backend = get_backend("litemedsam")
    model = backend.build_model("cpu")
    folder = tmp_path_factory.mktemp("runtime")
    cache = RuntimeCache(folder, "fp32")
    served = cache.serve(model, BASE, backend.runtime_parts(model), (backend.weights_sha256(), ""))
    return backend, model, served, cache, folder


def test_runtime_agrees_with_pytorch_on_lesion_slices(exported, studies):
    backend, model, served, cache, _ = exported
    assert cache.status[BASE]["runtime"] == "openvino", cache.status
    assert all(isinstance(served.get_submodule(p.path), CompiledPart) for p in backend.runtime_parts(model))
    assert not isinstance(model.sam.image_encoder, CompiledPart)  # the torch model itself is left untouched
    assert not isinstance(served.sam.mask_decoder, CompiledPart)  # PyTorch's own forward is the faster decoder
    slices = {case: lesion_slice(studies, case) for case in ("brain1", "lung2", "breast1")}
    batch = torch.stack([backend.prepare(image).tensor for image, _ in slices.values()])
    with torch.inference_mode():  # a batch: the encoder, traced at batch 1, runs it row by row
        ref_batch, batch_emb = backend.embed(model, batch).float(), backend.embed(served, batch).float()
    assert float((batch_emb - ref_batch).abs().max()) <= 1e-3 * float(ref_batch.abs().max())
    assert not served.sam.image_encoder.failures  # the runtime answered, not its PyTorch fallback
    for n, (case, (image, box)) in enumerate(slices.items()):
        prepared = backend.prepare(image)
        ref = ref_batch[n:n + 1]
        with torch.inference_mode():
            prompt = [SlicePrompt(box=box)]
            ref_logits, ref_iou = backend.decode(model, ref, prompt, [prepared])
            logits, iou = backend.decode(served, batch_emb[n:n + 1], prompt, [prepared])  # the runtime's embedding
        assert dice((logits > 0).numpy(), (ref_logits > 0).numpy()) >= 0.99, case
        assert (ref_logits > 0).sum() > 0, case  # a real lesion mask, not two empty ones
        assert abs(float(iou[0]) - float(ref_iou[0])) < 1e-3, case


def test_segmenter_on_runtime_matches_pytorch_in_3d(exported, studies, tmp_path):
    """The served path end to end: a lesion segmented in 3D with its label's box, reusing the shared export."""
    backend, _, _, _, folder = exported
    volume = load_volume(studies / "breast1.nii.gz")
    truth = load_label(studies / "labels" / "final" / "breast1.nii.gz", volume) > 0
    voxels = np.argwhere(truth)
    lo, hi = voxels.min(0).tolist(), voxels.max(0).tolist()
    prompts = resolve(volume, roi=[lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]])
    store = AdapterStore(tmp_path / "models", backend.name)
    answers = {}
    for runtime in ("torch", "openvino"):
        segmenter = Segmenter(backend, store, EmbeddingCache(), precision="fp32", runtime=runtime,
                              runtime_dir=folder)
        answers[runtime] = segmenter.interactive(volume, prompts).label > 0
    assert segmenter.runtime_cache.status[BASE] | {"rebuilt": False} == segmenter.runtime_cache.status[BASE]
    assert dice(answers["openvino"], truth) >= dice(answers["torch"], truth) - 0.01
    assert dice(answers["openvino"], answers["torch"]) >= 0.98


class _Toy(nn.Module):
    """A model with one part the runtime takes: exports in well under a second."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = _Scaled()

    def forward(self, x):
        return self.body(x, double=True)


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x, double: bool):
        return self.conv(x) * (2 if double else 1)


TOY_PART = ExportPart("body", ("x",), (torch.rand(1, 3, 8, 8),), ((-1, 3, 8, 8),), {"double": True})


def _serve_toy(folder: Path, hashes=("weights-a",)):
    model = _Toy().eval()
    cache = RuntimeCache(folder, "fp32")
    return model, cache.serve(model, "v0001", [TOY_PART], hashes), cache.status["v0001"]


def _agrees(model, served) -> bool:
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        return torch.allclose(model(x), served(x), atol=1e-5)


def test_export_is_reused_then_rebuilt_when_the_version_hashes_change(tmp_path):
    model, served, status = _serve_toy(tmp_path)
    assert status["runtime"] == "openvino" and status["rebuilt"] and _agrees(model, served)
    key = json.loads((tmp_path / "v0001" / "meta.json").read_text())["key"]
    _, _, again = _serve_toy(tmp_path)
    assert again["runtime"] == "openvino" and not again["rebuilt"]
    model, served, changed = _serve_toy(tmp_path, ("weights-b",))  # same version name, other weights
    assert changed["rebuilt"] and _agrees(model, served)
    assert json.loads((tmp_path / "v0001" / "meta.json").read_text())["key"] != key
    assert not list(tmp_path.glob(".tmp-*"))  # staging and the old export are gone


def test_corrupt_export_is_rebuilt_never_used(tmp_path):
    _serve_toy(tmp_path)
    weights = tmp_path / "v0001" / "body.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: OpenVINO would load it silently
    weights.write_bytes(bytes(data))
    model, served, status = _serve_toy(tmp_path)
    assert status["rebuilt"] and _agrees(model, served)
    (tmp_path / "v0001" / "meta.json").write_text("{not json")
    model, served, status = _serve_toy(tmp_path)
    assert status["rebuilt"] and _agrees(model, served)


def test_a_runtime_that_fails_to_compile_falls_back_to_pytorch(tmp_path, monkeypatch, caplog):
    def broken(*_):
        raise RuntimeError("unsupported CPU")

    monkeypatch.setattr(RuntimeCache, "_compile", broken)
    with caplog.at_level(logging.WARNING, logger=runtime_mod.__name__):
        model, served, status = _serve_toy(tmp_path)
    assert served is model and status["runtime"] == "torch" and "unsupported CPU" in status["reason"]
    assert "serving it with PyTorch" in caplog.text


def test_a_failing_call_is_answered_by_pytorch(tmp_path, caplog):
    model, served, _ = _serve_toy(tmp_path)
    wrong = torch.rand(1, 3, 9, 9)  # exported for 8x8 inputs
    with caplog.at_level(logging.WARNING, logger=runtime_mod.__name__), torch.inference_mode():
        assert torch.allclose(served(wrong), model(wrong))
        assert torch.allclose(served(wrong), model(wrong))
    assert served.body.failures == {next(iter(served.body.failures)): 2}  # answered twice, warned once
    assert caplog.text.count("answered by PyTorch") == 1
    assert _agrees(model, served)  # the next good call runs on the runtime again


def test_missing_runtime_or_a_gpu_keeps_pytorch(monkeypatch, caplog):
    assert runtime_mod.resolve("openvino", "cpu") == "openvino"
    assert runtime_mod.resolve("openvino", "cuda") == "torch"
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails, as on a machine without the wheel
    with caplog.at_level(logging.WARNING, logger=runtime_mod.__name__):
        assert runtime_mod.resolve("openvino", "cpu") == "torch"
    assert "not usable here" in caplog.text
    with pytest.raises(Exception, match="runtime must be one of"):
        runtime_mod.resolve("tensorrt", "cpu")
