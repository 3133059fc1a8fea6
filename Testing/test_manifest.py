"""The typed version manifest: versions written before it (plain JSON) load unchanged, missing fields get defaults,
and writing one back changes no field name, adds no field and drops none."""

from __future__ import annotations

import json

from lib.medfm.adapter_store import BASE, MANIFEST, AdapterStore
from lib.medfm.manifest import Manifest

# A supervised version as the job wrote it before the typed manifest (trimmed), plus a key no reader knows.
OLD = {
    "id": "v0001", "fm": "litemedsam", "fm_sha256": "ab" * 32, "method": "lora", "config": {"rank": 8, "parent": None},
    "labels": {"lesion": {"value": 1, "token": 0}, "gray_matter": {"value": 2, "token": 1}}, "auto_head": True,
    "parent": "base", "train_images": [{"id": "brain2", "label_sha256": "cd" * 32, "slices": [3, 5]}],
    "val_images": [], "val_gap_slices": None, "evidence": None, "metrics": {"best": {"val_dice": 0.7}},
    "trainable_params": 10, "total_params": 100, "trainable_fraction": 0.1, "files": {"adapter_model.safetensors": 4},
    "files_sha256": {"adapter_model.safetensors": "ef" * 32}, "adapter_bytes": 4, "peak_memory_mb": 12.5,
    "wall_s": 1.25, "stopped_early": "", "note": "first", "created": "2026-11-28T10:00:00+00:00",
    "machine": {"device": "cpu", "torch": "2.14.1", "host": "x86_64", "precision": "bf16"}, "from_the_future": [1],
}


def test_an_old_version_loads_and_writes_back_unchanged(tmp_path):
    store = AdapterStore(tmp_path, "litemedsam")
    (store.root / "v0001").mkdir()
    (store.root / "v0001" / MANIFEST).write_text(json.dumps(OLD))
    manifest = store.manifest("v0001")
    assert manifest.to_json() == OLD  # nothing added, renamed or dropped, the unknown key included
    assert manifest.label_tokens() == {1: 0, 2: 1} and sorted(manifest.learned_labels()) == ["gray_matter", "lesion"]
    assert manifest.train_images[0].slices == [3, 5] and manifest.metrics["best"]["val_dice"] == 0.7


def test_missing_fields_read_as_defaults():
    bare = Manifest.parse({"method": "decoder"})  # e.g. a version written with fewer fields
    assert (bare.labels, bare.auto_head, bare.train_images, bare.note, bare.evidence) == ({}, False, [], "", None)
    assert bare.label_tokens() == {} and bare.to_json() == {"method": "decoder"}
    no_head = Manifest.parse({**OLD, "auto_head": False})
    assert no_head.label_tokens() == {} and no_head.learned_labels() == {}  # labels, but no prompt-free head


def test_the_base_fm_has_a_manifest_with_no_prompt_free_labels(tmp_path):
    base = AdapterStore(tmp_path, "litemedsam").manifest(BASE)
    assert base.to_json() == {"id": BASE} and base.method is None and base.label_tokens() == {}


def test_a_committed_manifest_gets_its_id_and_only_the_fields_set(tmp_path):
    store = AdapterStore(tmp_path, "litemedsam")
    version = store.commit(store.staging(), Manifest(method="decoder", note="n"))
    on_disk = json.loads((store.root / version / MANIFEST).read_text())
    assert on_disk == {"id": version, "method": "decoder", "note": "n"}
